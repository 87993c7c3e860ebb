"""`factory export` loses nothing: it refuses a non-empty --out unless --overwrite, swaps a complete
export into place atomically (a SIGKILL never leaves a complete-looking --out), says loudly when the
build is unfinished, and writes every split, even an empty one, so that it loads.

Stores are made with the real CLI against the fake OpenAI-compatible server (tiny builds); the
exports run as `python -m factory.cli.main export` subprocesses, except where noted.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import stat
import subprocess
import time
from pathlib import Path

import datasets
import pyarrow.parquet as pq
import pytest

from factory.export.hf import _features, export, split_of
from factory.export.target import EXPORT_ENTRIES
from factory.llm.errors import ConfigError
from tests.pipeline.conftest import (
    build_cmd,
    check_ok,
    cli_env,
    factory_cmd,
    fake_server,
    query,
    run_factory,
    write_recipe,
)

SPLITS = ("train", "validation", "test")
REPO = Path(__file__).resolve().parents[2]
N = 4


def _env(tmp: Path, url: str | None = None, **extra: str) -> dict[str, str]:
    """The CLI's environment, importing this checkout's `factory` whatever the installed copy."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return cli_env(url, tmp=tmp, PYTHONPATH=path, **extra)


def _build(workdir: Path, n: int, db: Path | None = None, **server: object) -> Path:
    db = db or workdir / "build.duckdb"
    # policy-level splits: these tests exercise the export's --val-frac/--test-frac hashing
    recipe = write_recipe(workdir / "pipetest.yaml", splits={"method": "policy"})
    with fake_server(**server) as srv:
        check_ok(run_factory(build_cmd(db, recipe, n), _env(workdir, srv.url), workdir))
    return db


def _export(
    db: Path, out: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    cwd = out.parent if out.parent.is_dir() else db.parent
    return run_factory(factory_cmd("export", "--db", db, "--out", out, *args), env or _env(cwd), cwd)


def _one_error_line(result: subprocess.CompletedProcess, *needles: str) -> str:
    assert result.returncode == 2, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def _snapshot(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


def _assert_complete(out: Path, n: int) -> dict[str, int]:
    """Every part of an export is there and loads; returns the split sizes."""
    assert sorted(p.name for p in out.iterdir()) == sorted(EXPORT_ENTRIES)
    dd = datasets.load_from_disk(str(out / "hf"))
    assert set(dd) == set(SPLITS)
    sizes = {s: len(dd[s]) for s in SPLITS}
    assert sum(sizes.values()) == n
    for s in SPLITS:
        assert dd[s].features == _features()
        assert pq.ParquetFile(out / "parquet" / f"{s}.parquet").metadata.num_rows == sizes[s]
        assert len((out / "jsonl" / f"{s}.jsonl").read_bytes().splitlines()) == sizes[s]
    assert sorted(p.name for p in (out / "parquet").iterdir()) == [f"{s}.parquet" for s in sorted(SPLITS)]
    assert sorted(p.name for p in (out / "jsonl").iterdir()) == [f"{s}.jsonl" for s in sorted(SPLITS)]
    card = (out / "README.md").read_text(encoding="utf-8")
    assert card.startswith("---\n") and "## Statistics" in card
    return sizes


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished build of N=4."""
    return _build(tmp_path_factory.mktemp("export-safety"), N)


@pytest.fixture(scope="module")
def unfinished_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """N=3 finished, then `--n 8` against a server that rejects the key: the last run is interrupted."""
    workdir = tmp_path_factory.mktemp("unfinished")
    db = _build(workdir, 3)
    recipe = workdir / "pipetest.yaml"
    with fake_server(require_key="another-key") as srv:
        result = run_factory(build_cmd(db, recipe, 8), _env(workdir, srv.url), workdir)
    assert result.returncode != 0 and "401" in result.stderr
    return db


# -- refusing targets ---------------------------------------------------------------------------


def test_second_export_without_overwrite_is_refused(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "export"
    first = check_ok(_export(store, out))
    assert "exported 4 samples" in " ".join(first.stderr.split())
    assert "unfinished" not in first.stderr.lower()
    _assert_complete(out, N)
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "unfinished" not in card.lower()
    before = _snapshot(out)

    second = _export(store, out)
    _one_error_line(second, str(out), "--overwrite", "not empty")
    assert _snapshot(out) == before
    assert _leftovers(out) == []


def test_overwrite_replaces_whole_folder(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "export"
    check_ok(_export(store, out, "--val-frac", "0", "--test-frac", "0"))
    assert _assert_complete(out, N) == {"train": N, "validation": 0, "test": 0}
    # files of an earlier export that this one does not write: a split file, a stray plot
    (out / "parquet" / "dev.parquet").write_bytes((out / "parquet" / "train.parquet").read_bytes())
    (out / "stats" / "old.png").write_bytes(b"x")

    check_ok(_export(store, out, "--overwrite", "--val-frac", "0.45", "--test-frac", "0.45"))
    sizes = _assert_complete(out, N)
    assert not (out / "parquet" / "dev.parquet").exists() and not (out / "stats" / "old.png").exists()
    db_ids = [r[0] for r in query(store, "SELECT policy_id FROM samples")]
    expected = [split_of(p, 0, 0.45, 0.45) for p in db_ids]
    assert sizes == {s: expected.count(s) for s in SPLITS}
    assert _leftovers(out) == []


def test_overwrite_refuses_a_folder_that_is_not_an_export(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    (out / "hf").mkdir()
    _one_error_line(_export(store, out, "--overwrite"), str(out), "notes.txt")
    assert (out / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in out.iterdir()) == ["hf", "notes.txt"]


def test_empty_folder_is_used(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "empty"
    out.mkdir()
    check_ok(_export(store, out))
    _assert_complete(out, N)


def test_out_is_a_file(store: Path, tmp_path: Path) -> None:
    target = tmp_path / "export"
    target.write_text("not a folder")
    _one_error_line(_export(store, target), str(target), "is a file")
    assert target.read_text() == "not a folder"


def test_out_under_a_file(store: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "somefile"
    blocker.write_text("x")
    _one_error_line(_export(store, blocker / "sub"), str(blocker / "sub"), f"{blocker} is a file")
    assert blocker.read_text() == "x"


def test_out_inside_a_read_only_folder(store: Path, tmp_path: Path) -> None:
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    try:
        if os.access(parent, os.W_OK):
            pytest.skip("running as root: chmod 555 does not stop writes (test_out_under_a_file covers it)")
        out = parent / "export"
        _one_error_line(_export(store, out, env=_env(tmp_path)), str(out), "no permission", str(parent))
        assert list(parent.iterdir()) == []
    finally:
        parent.chmod(0o755)


def test_unwritable_folder_message_in_process(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same check as above, in-process, where root would bypass the permission bits."""
    parent = tmp_path / "ro"
    parent.mkdir()
    monkeypatch.setattr(os, "access", lambda *_a, **_k: False)
    with pytest.raises(ConfigError, match=r"no permission to write in .*ro$"):
        export(store, parent / "export")
    assert list(parent.iterdir()) == []


def test_out_containing_the_database_is_refused(tmp_path: Path) -> None:
    db = _build(tmp_path, 3)
    _one_error_line(_export(db, tmp_path, "--overwrite"), "contains the database", str(db))
    assert db.exists()


# -- a kill during the export --------------------------------------------------------------------


def _start_export(db: Path, out: Path, *args: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        factory_cmd("export", "--db", db, "--out", out, *args),
        env=env,
        cwd=out.parent,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _wait_for(predicate, proc: subprocess.Popen, limit: float = 120) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + limit
    while not predicate():
        if proc.poll() is not None:
            return False
        assert time.monotonic() < deadline, "export made no progress"
        time.sleep(0.005)
    return True


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def _partials(out: Path) -> list[Path]:
    return [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.partial-")]


def test_sigkill_at_real_moments_never_leaves_a_complete_looking_out(store: Path, tmp_path: Path) -> None:
    """No hook: kill the export as soon as its partial folder appears, and later; whatever the
    moment, --out is absent or a complete export. The next export finishes and cleans up."""
    out = tmp_path / "export"
    env = _env(tmp_path)
    killed_mid_export = 0
    for delay in (0.0, 0.3, 1.0, 2.5):
        proc = _start_export(store, out, "--overwrite", env=env)
        try:
            if _wait_for(lambda: bool(_partials(out)), proc):
                time.sleep(delay)
                if proc.poll() is None:
                    killed_mid_export += 1
                    _kill(proc)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)
        if out.exists():
            _assert_complete(out, N)
    assert killed_mid_export >= 1
    check_ok(_export(store, out, "--overwrite", env=env))
    _assert_complete(out, N)
    assert _leftovers(out) == []


def test_sigkill_mid_export_then_rerun(store: Path, tmp_path: Path) -> None:
    """With the test hook, the kill lands after hf/ and parquet/ are written: --out does not exist,
    the partial folder is left behind, and the next export removes it and writes a complete one."""
    out = tmp_path / "export"
    proc = _start_export(store, out, env=_env(tmp_path, FACTORY_EXPORT_PAUSE_S="60"))
    try:
        written = lambda: any((p / "parquet" / "test.parquet").exists() for p in _partials(out))  # noqa: E731
        assert _wait_for(written, proc), "export ended before the kill"
        _kill(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    assert not out.exists()
    assert len(_partials(out)) == 1 and (_partials(out)[0] / "hf" / "dataset_dict.json").exists()

    check_ok(_export(store, out))
    _assert_complete(out, N)
    assert _leftovers(out) == []


def test_sigkill_during_overwrite_keeps_the_previous_export(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "export"
    check_ok(_export(store, out, "--test-frac", "0"))
    before = _snapshot(out)
    proc = _start_export(store, out, "--overwrite", env=_env(tmp_path, FACTORY_EXPORT_PAUSE_S="60"))
    try:
        written = lambda: any((p / "parquet" / "test.parquet").exists() for p in _partials(out))  # noqa: E731
        assert _wait_for(written, proc), "export ended before the kill"
        _kill(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    assert _snapshot(out) == before

    second = _export(store, out)  # still refused without --overwrite; the leftover goes anyway
    _one_error_line(second, "--overwrite")
    assert _snapshot(out) == before and _leftovers(out) == []
    check_ok(_export(store, out, "--overwrite"))
    _assert_complete(out, N)
    assert _leftovers(out) == []


# -- empty splits ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def empty_split_export(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An export whose validation and test splits are empty (both fractions 0)."""
    out = tmp_path_factory.mktemp("empty-splits") / "export"
    check_ok(_export(store, out, "--val-frac", "0", "--test-frac", "0"))
    return out


def test_empty_splits_load_every_way(empty_split_export: Path, tmp_path: Path) -> None:
    from training.data import load_split

    out = empty_split_export
    features = _features()

    dd = datasets.load_from_disk(str(out / "hf"))
    assert {s: len(dd[s]) for s in SPLITS} == {"train": N, "validation": 0, "test": 0}
    assert all(dd[s].features == features for s in SPLITS)

    for s in SPLITS:
        ds = load_split(out, s)
        assert len(ds) == (N if s == "train" else 0) and {"policy", "transcript", "label"} <= set(
            ds.column_names
        )

    cache = str(tmp_path / "hf-cache")
    files = {s: str(out / "parquet" / f"{s}.parquet") for s in SPLITS}
    assert (
        len(datasets.load_dataset("parquet", data_files={"train": files["train"]}, cache_dir=cache)["train"])
        == N
    )
    for s in ("validation", "test"):
        assert pq.read_schema(files[s]).remove_metadata() == pq.read_schema(files["train"]).remove_metadata()
        streamed = datasets.load_dataset("parquet", data_files={s: files[s]}, streaming=True)[s]
        assert streamed.features == features and list(streamed) == []
        try:
            loaded = datasets.load_dataset("parquet", data_files={s: files[s]}, cache_dir=cache)[s]
        except ValueError as exc:  # datasets cannot materialise a 0-row split (huggingface/datasets#8401)
            assert "corresponds to no data" in str(exc)
        else:
            assert len(loaded) == 0 and loaded.features == features

    # the card lists only the loadable splits, so loading the folder as a Hub repo works
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "parquet/train.parquet" in card and "path: parquet/test.parquet" not in card
    assert "Empty split(s): validation, test" in card
    hub_like = datasets.load_dataset(str(out), cache_dir=cache)
    assert set(hub_like) == {"train"} and len(hub_like["train"]) == N


def test_factory_eval_reads_an_export_with_empty_splits(empty_split_export: Path, tmp_path: Path) -> None:
    """`factory eval` (training.data.load_split) on the full split and on an empty one."""
    with fake_server() as srv:
        for split, n in (("train", 2), ("test", 0)):
            report = tmp_path / f"eval-{split}"
            cmd = factory_cmd(
                "eval", "--model", "openai:fake-guard", "--data", empty_split_export, "--split", split,
                "--limit", "2", "--mode", "answer", "--no-plots", "--out", report,
            )  # fmt: skip
            check_ok(run_factory(cmd, _env(tmp_path, srv.url), tmp_path))
            assert json.loads((report / "metrics.json").read_text())["overall"]["n"] == n


def test_empty_train_split_loads(store: Path, tmp_path: Path) -> None:
    """In-process export with a split seed chosen so that train gets no policy at all."""
    from training.data import load_split

    policies = [r[0] for r in query(store, "SELECT policy_id FROM samples")]
    seed = next(s for s in range(1000) if all(split_of(p, s, 0.49, 0.49) != "train" for p in policies))
    out = tmp_path / "export"
    summary = export(store, out, seed=seed, val_frac=0.49, test_frac=0.49)
    assert "train=0" in summary
    dd = datasets.load_from_disk(str(out / "hf"))
    assert len(dd["train"]) == 0 and dd["train"].features == _features()
    assert sum(len(load_split(out, s)) for s in SPLITS) == N


# -- unfinished builds -------------------------------------------------------------------------------


def test_unfinished_build_is_marked_on_screen_and_in_the_card(unfinished_store: Path, tmp_path: Path) -> None:
    have = query(unfinished_store, "SELECT count(*) FROM samples")[0][0]
    assert 3 <= have < 8
    assert query(unfinished_store, "SELECT n_target, status FROM runs ORDER BY started_at DESC LIMIT 1") == [
        (8, "interrupted")
    ]
    out = tmp_path / "export"
    result = check_ok(_export(unfinished_store, out))
    warning = [ln for ln in result.stderr.splitlines() if "unfinished" in ln and "WARNING" in ln]
    assert len(warning) == 1, result.stderr
    assert f"the build is unfinished: {have}/8 samples" in warning[0]
    assert "rerun `factory build` to finish it" in warning[0]
    _assert_complete(out, have)

    card = (out / "README.md").read_text(encoding="utf-8")
    body = card.split("\n---\n", 1)[1]
    top = body[: body.index("## Splits")]
    assert re.search(rf"\*\*Unfinished build: {have} of 8 samples\.\*\*", top)
    assert top.index("Unfinished build") < top.index("Generated with the DynaBench factory")
