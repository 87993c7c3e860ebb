"""Cost before and during a build: `--dry-run` estimates against the actual ledger, `--max-cost`
stops a build cleanly and a rerun with a larger budget finishes it as if never stopped.

The fake server's answers are random schema instances, not the lengths a real model writes, so the
estimate is checked with `--pilot` (which measures the rates and lengths on a small real build);
the estimate from the recipe's typical lengths alone is only checked for its shape here."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from tests.pipeline.conftest import (
    build_cmd,
    check_ok,
    cli_env,
    factory_cmd,
    fake_server,
    flat,
    query,
    run_factory,
    samples,
    write_recipe,
)

SMALL = {
    "policy": {"rules_law": {"mu": 0.8, "sigma": 0.6, "max": 8}},
    "dialogue": {"turns_law": {"mu": 0.2, "sigma": 0.5, "max": 4}},
    # a rate-limited endpoint's worth of slots in flight (the window is 2 x concurrency)
    "endpoint_defaults": {"concurrency": 4},
}
PRICED = {"pricing": {"fake-model": {"input": 1.0, "output": 4.0}}}
KEYS = ("calls", "input_tokens", "output_tokens", "cost_usd")


def _actual(db: Path) -> tuple[int, int, int, float]:
    return query(db, "SELECT count(*), sum(input_tokens), sum(output_tokens), sum(cost_usd) FROM llm_calls")[
        0
    ]


def test_dry_run_with_a_pilot_is_within_the_acceptance_bounds(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path / "small.yaml", **SMALL, **PRICED)
    db = tmp_path / "b.duckdb"
    n = 30
    with fake_server() as server:
        env = cli_env(server.url, tmp=tmp_path)
        dry = check_ok(
            run_factory(
                factory_cmd(
                    "build", "--n", n, "--pipeline", recipe, "--db", db, "--dry-run", "--json", "--pilot", 10
                ),
                env,
                tmp_path,
            )
        )
        est = orjson.loads(dry.stdout)
        assert est["source"] == "pilot" and est["n"] == n
        for stage in ("paraphrase", "persona", "dialogue", "label", "trace"):
            assert all(k in est["stages"][stage] for k in KEYS)
        assert all(k in est["total"] for k in KEYS)
        assert query(db, "SELECT count(*) FROM runs") == [(0,)]  # the pilot went to a temporary file
        check_ok(run_factory(build_cmd(db, recipe, n), env, tmp_path))
        calls, tokens_in, tokens_out, cost = _actual(db)
        status = check_ok(run_factory(factory_cmd("status", "--db", db), env, tmp_path))
    total = est["total"]
    assert abs(total["calls"] - calls) <= 0.10 * calls, (total, calls)
    assert abs(total["input_tokens"] - tokens_in) <= 0.15 * tokens_in, (total, tokens_in)
    assert abs(total["output_tokens"] - tokens_out) <= 0.15 * tokens_out, (total, tokens_out)
    assert abs(total["cost_usd"] - cost) <= 0.15 * cost
    text = flat(status.stdout)
    assert f"estimate (pilot, --n {n}) against actual:" in text
    assert "per accepted sample" in text


def test_dry_run_makes_no_call_and_shows_unpriced_models(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path / "r.yaml", **SMALL)
    with fake_server() as server:
        env = cli_env(server.url, tmp=tmp_path)
        cmd = factory_cmd(
            "build", "--n", 40000, "--pipeline", recipe, "--db", tmp_path / "d.duckdb", "--dry-run"
        )
        text = check_ok(run_factory(cmd, env, tmp_path)).stdout
        as_json = check_ok(run_factory([*cmd, "--json"], env, tmp_path)).stdout
        paper = check_ok(
            run_factory(
                [*cmd, "--json", "--model", "openai:gpt-4.1-mini", "--model-for", "label=openai:gpt-4o"],
                env,
                tmp_path,
            )
        ).stdout
        assert server.stats()["requests"] == 0
    assert "unpriced" in text and "estimate for --n 40000" in text
    est = orjson.loads(as_json)
    assert est["total"]["cost_usd"] is None and est["total"]["unpriced"] == ["openai:fake-model"]
    assert est["stages"]["label"]["calls"] > est["stages"]["dialogue"]["calls"]  # one call per rule
    priced = orjson.loads(paper)
    assert priced["total"]["cost_usd"] > priced["total"]["cost_usd_with_caching"] > 0
    assert priced["stages"]["label"]["model"] == "openai:gpt-4o"


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> list[tuple]:
    tmp = tmp_path_factory.mktemp("uninterrupted")
    recipe = write_recipe(tmp / "r.yaml", **SMALL, **PRICED)
    with fake_server() as server:
        check_ok(run_factory(build_cmd(tmp / "u.duckdb", recipe, 30), cli_env(server.url, tmp=tmp), tmp))
    return samples(tmp / "u.duckdb")


def test_max_cost_stops_within_a_window_and_a_larger_budget_finishes_the_same_dataset(
    tmp_path: Path, uninterrupted: list[tuple]
) -> None:
    budget = 0.12
    # the budget from the recipe key; the rerun's --max-cost overrides it
    recipe = write_recipe(tmp_path / "r.yaml", **SMALL, **PRICED, cost={"max_usd": budget})
    db = tmp_path / "b.duckdb"
    with fake_server() as server:
        env = cli_env(server.url, tmp=tmp_path)
        stopped = run_factory(build_cmd(db, recipe, 30), env, tmp_path)
        assert stopped.returncode == 5, stopped.stderr
        message = flat(stopped.stderr)
        assert "budget reached" in message and "rerun with a larger --max-cost" in message
        calls, _, _, spent = _actual(db)
        slots = query(db, "SELECT count(*) FROM slot_status")[0][0]
        per_slot = spent / max(1, query(db, "SELECT count(*) FROM policies")[0][0])
        window = 8  # 2 x concurrency 4
        assert spent <= budget + window * per_slot, (spent, per_slot)  # within one in-flight window
        assert spent > budget - window * per_slot
        assert 0 < len(samples(db)) < 30 and slots < 34
        status = flat(check_ok(run_factory(factory_cmd("status", "--db", db), env, tmp_path)).stdout)
        assert "per accepted sample" in status
        check_ok(run_factory([*build_cmd(db, recipe, 30), "--max-cost", "100"], env, tmp_path))
    assert samples(db) == uninterrupted
