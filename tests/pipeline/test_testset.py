"""`factory testset` end to end: the real CLI against the fake OpenAI-compatible server, on a 2x2
grid (tests/fixtures is not used: the grid is written here so the test reads on its own)."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from factory.testset.grid import DEFAULT_GRID, load_grid
from tests.pipeline.conftest import (
    build_cmd,
    check_ok,
    cli_env,
    factory_cmd,
    fake_server,
    flat,
    query,
    recorded_keys,
    run_factory,
    settled_stats,
    write_recipe,
)

GRID = {
    "failure_modes": {
        "counting": {
            "name": "Counting",
            "description": "A rule depends on how many times something happens in the conversation.",
            "turns": {"min": 2, "max": 3},
        },
        "iff_logic": {
            "name": "Iff Logic",
            "description": "A rule demands an action exactly when a condition holds, never otherwise.",
            "rules": {"min": 2, "max": 4},
        },
    },
    "business_impacts": {
        "transactions": {"name": "Transactions", "description": "Rules on payments, refunds and limits."},
        "hipaa": {"name": "HIPAA", "description": "Rules protecting health information and its recipients."},
    },
    "scenarios": {
        "counting": {
            "transactions": ["Orders over five units need a bulk form; the user adds units until six."],
            "hipaa": ["Three identifiers are needed before times are shared; the caller gives two."],
        },
        "iff_logic": {
            "transactions": ["Free shipping applies exactly above fifty dollars; the cart is at 48."],
            "hipaa": ["Consent is asked exactly when records go to a third party; the patient wants theirs."],
        },
    },
}
CELLS = {(fm, bi) for fm in ("Counting", "Iff Logic") for bi in ("Transactions", "HIPAA")}


def _grid(tmp: Path, data: dict = GRID) -> Path:
    path = tmp / "grid.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def _testset_cmd(db: Path, recipe: Path, grid: Path) -> list[str]:
    return factory_cmd("testset", "--grid", grid, "--pipeline", recipe, "--db", db)


def test_shipped_grid_covers_every_cell() -> None:
    grid, cases = load_grid(DEFAULT_GRID)
    assert len(grid.failure_modes) == 16 and len(grid.business_impacts) == 12
    cells = {(c.failure_mode, c.business_impact) for c in cases}
    assert len(cells) == 16 * 12
    assert len({c.slot for c in cases}) == len(cases)  # every case its own random stream


@pytest.fixture(scope="module")
def testset_build(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A build of 12 samples, then `factory testset` on the same store, then `factory export`."""
    tmp = tmp_path_factory.mktemp("testset")
    recipe = write_recipe(tmp / "recipe.yaml")
    grid = _grid(tmp)
    db = tmp / "build.duckdb"
    with fake_server() as server:
        env = cli_env(server.url, tmp=tmp)
        check_ok(run_factory(build_cmd(db, recipe, 12), env, tmp))
        before = settled_stats(server)["requests"]
        first = check_ok(run_factory(_testset_cmd(db, recipe, grid), env, tmp))
        paid = settled_stats(server)["requests"] - before
        again = check_ok(run_factory(_testset_cmd(db, recipe, grid), env, tmp))
        stats = settled_stats(server)
    export_dir = tmp / "export"
    check_ok(run_factory(factory_cmd("export", "--db", db, "--out", export_dir), cli_env(None, tmp=tmp), tmp))
    return {
        "db": db,
        "first": first,
        "again": again,
        "paid": paid,
        "stats": stats,
        "export": export_dir,
        "before": before,
        "tmp": tmp,
    }


def test_every_cell_has_a_violating_and_a_complying_sample(testset_build: dict) -> None:
    rows = query(
        testset_build["db"],
        "SELECT failure_mode, business_impact, intended_label, status, scenario, num_rules, split "
        "FROM testset_samples",
    )
    assert len(rows) == 2 * len(CELLS)
    assert {(fm, bi) for fm, bi, *_ in rows} == CELLS
    for *_, status, scenario, num_rules, split in rows:
        assert status == "accepted" and scenario and split == "test" and num_rules >= 1
    assert {(fm, bi, intended) for fm, bi, intended, *_ in rows} == {
        (fm, bi, side) for fm, bi in CELLS for side in ("FAIL", "PASS")
    }
    assert "done: 4 cases (4 built now, 0 before), 8 accepted rows" in flat(testset_build["first"].stderr)


def test_rerun_pays_nothing(testset_build: dict) -> None:
    assert testset_build["paid"] > 0
    assert "LLM: 0 calls paid" in flat(testset_build["again"].stderr)
    assert testset_build["stats"]["repeated_bodies"] == 0


def test_testset_rules_come_from_the_test_pool(testset_build: dict) -> None:
    db = testset_build["db"]
    train = {r for (ids,) in query(db, "SELECT rule_ids FROM samples WHERE split = 'train'") for r in ids}
    test = {r for (ids,) in query(db, "SELECT rule_ids FROM testset_samples") for r in ids}
    assert test and not train & test


def test_export_dynabench_config_is_the_testset(testset_build: dict) -> None:
    import datasets

    export_dir = testset_build["export"]
    test = datasets.load_dataset(str(export_dir), "DynaBench", split="test")
    assert len(test) == 2 * len(CELLS)
    meta = [json.loads(m) for m in test["metadata"]]
    assert {(m["failure_mode"], m["business_impact"]) for m in meta} == CELLS
    assert all(m["scenario"] for m in meta)
    train = datasets.load_dataset(str(export_dir), "DynaBenchTrain", split="train")
    assert all(json.loads(m)["failure_mode"] == "" for m in train["metadata"])
    assert (export_dir / "parquet" / "test_generated.parquet").exists()
    assert "factory testset" in (export_dir / "README.md").read_text(encoding="utf-8")


def test_eval_slices_the_testset_by_failure_mode_and_business_impact(testset_build: dict) -> None:
    from typer.testing import CliRunner

    from training.cli import app
    from training.eval.predictors import register_predictor

    class AlwaysFail:
        def predict(self, batch: list, mode: str) -> list[str]:
            return ["<answer>FAIL</answer>" for _ in batch]

    register_predictor("always-fail", lambda name, **kw: AlwaysFail())
    out = testset_build["tmp"] / "eval"
    args = ["eval", "--model", "always-fail:x", "--data", str(testset_build["export"]), "--split", "test"]
    result = CliRunner().invoke(app, [*args, "--mode", "answer", "--out", str(out), "--no-plots"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["slices"]["failure_mode"]) == {"Counting", "Iff Logic"}
    assert set(metrics["slices"]["business_impact"]) == {"Transactions", "HIPAA"}
    for m in metrics["slices"]["failure_mode"].values():
        assert m["n"] == 4 and m["recall"] in (1.0, None)


def test_kill9_then_resume_pays_no_call_twice(tmp_path: Path, testset_build: dict) -> None:
    recipe = write_recipe(tmp_path / "recipe.yaml")
    grid = _grid(tmp_path)
    db = tmp_path / "ts.duckdb"
    cmd = _testset_cmd(db, recipe, grid)
    with fake_server(latency=0.15) as server:
        env = cli_env(server.url, tmp=tmp_path)
        proc = subprocess.Popen(
            cmd,
            env=env,
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 120
            while server.stats()["requests"] < 14:
                assert proc.poll() is None, "testset ended before the kill"
                assert time.monotonic() < deadline
                time.sleep(0.02)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
        killed = settled_stats(server)
        lost = killed["requests"] - len(recorded_keys(db))
        final = check_ok(run_factory(cmd, env, tmp_path))
        stats = settled_stats(server)
    assert "4 cases" in flat(final.stderr)
    rows = query(db, "SELECT failure_mode, business_impact FROM testset_samples WHERE status = 'accepted'")
    assert {tuple(r) for r in rows} == CELLS and len(rows) == 8
    # only requests in flight at the kill (never recorded) may be sent again
    assert stats["repeated_bodies"] <= max(0, lost), (killed, stats, lost)
    assert query(db, "SELECT count(*) - count(DISTINCT key) FROM llm_calls")[0][0] == 0
    # deterministic per seed: the same rows as the uninterrupted run of the fixture (seed 0 there
    # from its build, here by default), whatever the kill and the timing
    sql = "SELECT sample_id, label, policy, transcript, rule_ids FROM testset_samples ORDER BY sample_id"
    assert query(db, sql) == query(testset_build["db"], sql)


@pytest.mark.parametrize(
    ("mutate", "entry"),
    [
        (
            lambda g: g["scenarios"]["counting"].update(retail=["A scenario for an unknown impact."]),
            "scenarios.counting.retail: unknown business impact",
        ),
        (lambda g: g["failure_modes"]["counting"].pop("description"), "failure_modes.counting.description"),
        (
            lambda g: g["scenarios"]["iff_logic"].update(
                hipaa=["one long enough", "two long enough", "three long", "four long enough"]
            ),
            "scenarios.iff_logic.hipaa",
        ),
    ],
)
def test_bad_grid_is_one_line_naming_file_and_entry(tmp_path: Path, mutate, entry: str) -> None:  # noqa: ANN001
    data = json.loads(json.dumps(GRID))
    mutate(data)
    grid = _grid(tmp_path, data)
    recipe = write_recipe(tmp_path / "recipe.yaml")
    result = run_factory(
        _testset_cmd(tmp_path / "x.duckdb", recipe, grid), cli_env(None, tmp=tmp_path), tmp_path
    )
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(grid) in errors[0] and entry in errors[0], result.stderr


def test_seed_other_than_the_builds_is_refused(testset_build: dict) -> None:
    tmp, db = testset_build["tmp"], testset_build["db"]
    cmd = [*_testset_cmd(db, tmp / "recipe.yaml", tmp / "grid.yaml"), "--seed", "5"]
    with fake_server() as server:
        result = run_factory(cmd, cli_env(server.url, tmp=tmp), tmp)
        assert server.stats()["requests"] == 0
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "--seed 5" in errors[0] and "seed 0" in errors[0], result.stderr
