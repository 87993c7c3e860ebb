"""Bad input through the real CLI: one line `error: ...` naming the file, row or flag, no
traceback, exit code 2, and the store left as it was. Also: the heartbeat line while a build holds
the database, BuildStopped's exit code, and the last-resort handler for unexpected exceptions."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from factory.paths import PROJECT_ROOT
from factory.store.db import Store, wal_path
from tests.banks.conftest import write_bank
from tests.pipeline.conftest import (
    build_cmd,
    cli_env,
    factory_cmd,
    fake_server,
    query,
    run_factory,
    write_recipe,
)

NOWHERE = "http://127.0.0.1:9"  # an endpoint no test reaches: these runs stop before any call


def _env(tmp: Path, url: str | None = None, **extra: str) -> dict[str, str]:
    """cli_env, importing this checkout's `factory` whatever is installed in the interpreter."""
    env = cli_env(url, tmp=tmp)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p)
    env.pop("FACTORY_DEBUG", None)
    env.update(extra)
    return env


def _run(
    tmp: Path, *args: str | Path, url: str | None = None, **extra: str
) -> subprocess.CompletedProcess[str]:
    return run_factory(factory_cmd(*args), _env(tmp, url, **extra), tmp, timeout=120)


def _error_line(result: subprocess.CompletedProcess[str], code: int = 2) -> str:
    """The one `error:` line of a failed run (and no traceback)."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout, result.stderr
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def _only_line(result: subprocess.CompletedProcess[str], code: int = 2) -> str:
    """A read-only command's whole output: exactly one line."""
    line = _error_line(result, code)
    assert result.stdout == "" and result.stderr.strip() == line, result.stderr
    return line


def _snapshot(*paths: Path) -> dict[str, bytes | None]:
    return {str(p): (p.read_bytes() if p.exists() else None) for p in paths}


@pytest.fixture(scope="module")
def store_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small, checkpointed factory store (no LLM involved)."""
    db = tmp_path_factory.mktemp("store") / "good.duckdb"
    store = Store(db)
    store.add("runs", {"run_id": "r", "seed": 0, "n_target": 5, "pipeline": "p", "status": "finished"})
    for i in range(3000):
        store.add("filter_log", {"slot": i, "stage": "f", "reason": "r", "detail": os.urandom(64).hex()})
        store.add("slot_status", {"slot": i, "status": "dropped", "reason": "r"})
    store.close()
    return db


# -- 1. a database without factory tables --------------------------------------------------------


@pytest.mark.parametrize("cmd", ["status", "stats"])
def test_tableless_or_empty_db(tmp_path: Path, cmd: str) -> None:
    import duckdb

    tableless = tmp_path / "tableless.duckdb"
    duckdb.connect(str(tableless)).close()
    line = _only_line(_run(tmp_path, cmd, "--db", tableless))
    assert line == (
        f"error: {tableless} holds no factory tables: no build has written to it yet (was one stopped "
        f"before it created them?); run `factory build --db {tableless}` to start one"
    )
    empty = tmp_path / "empty.duckdb"
    empty.touch()
    line = _only_line(_run(tmp_path, cmd, "--db", empty))
    assert line.startswith(f"error: {empty} is empty (0 bytes): no build has written to it yet")
    assert empty.stat().st_size == 0


# -- 2. a build holds the database ---------------------------------------------------------------

HOLDER = """
import sys, time
from pathlib import Path
import duckdb
from factory.store.live_status import write_live_status
db = Path(sys.argv[1])
con = duckdb.connect(str(db))
if sys.argv[2] == "beat":
    write_live_status(db, accepted=12, target=40, slots=13, state="running")
print("ready", flush=True)
time.sleep(60)
"""


def _hold(tmp: Path, db: Path, beat: bool) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(db), "beat" if beat else "quiet"],
        env=_env(tmp),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def test_status_and_stats_while_a_build_holds_the_db(tmp_path: Path, store_db: Path) -> None:
    db = tmp_path / "held.duckdb"
    shutil.copyfile(store_db, db)
    holder = _hold(tmp_path, db, beat=True)
    try:
        result = _run(tmp_path, "status", "--db", db)
        assert result.returncode == 0, result.stderr
        assert result.stderr == "" and len(result.stdout.splitlines()) == 1, result.stdout
        assert result.stdout.startswith(f"a build is running on {db} (pid {holder.pid}): 12/40 samples")
        line = _only_line(_run(tmp_path, "stats", "--db", db, "--out", tmp_path / "plots"))
        assert f"(pid {holder.pid}): 12/40 samples" in line and "needs the finished file" in line
        assert not (tmp_path / "plots").exists()
    finally:
        holder.kill()
        holder.wait()


def test_locked_db_without_heartbeat_names_the_pid(tmp_path: Path, store_db: Path) -> None:
    db = tmp_path / "held.duckdb"
    shutil.copyfile(store_db, db)
    holder = _hold(tmp_path, db, beat=False)
    try:
        for cmd in ("status", "stats"):
            line = _only_line(_run(tmp_path, cmd, "--db", db))
            assert line.startswith(f"error: {db} is in use by another process (pid {holder.pid})"), line
        recipe = write_recipe(tmp_path / "r.yaml")
        line = _error_line(run_factory(build_cmd(db, recipe, 2), _env(tmp_path, NOWHERE), tmp_path))
        assert f"(pid {holder.pid})" in line
    finally:
        holder.kill()
        holder.wait()


# -- 3. / 4. the request journal ------------------------------------------------------------------


def test_rerun_with_a_wrongly_typed_journal_line(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path / "r.yaml")
    db = tmp_path / "j.duckdb"
    journal = db.with_name(db.name + ".journal")
    with fake_server() as server:
        first = run_factory(build_cmd(db, recipe, 2), _env(tmp_path, server.url), tmp_path)
        assert first.returncode == 0, first.stderr
        good = {
            "key": "k-good",
            "provider": "openai",
            "model": "fake-model",
            "stage": "s",
            "prompt_hash": "p",
            "request_json": "[]",
            "text": "t",
            "finish_reason": "stop",
            "input_tokens": 1,
            "output_tokens": 1,
            "cost_usd": 0.0,
            "latency_s": 0.0,
            "response_model": "fake-model",
            "created_at": 0.0,
        }
        journal.write_bytes(
            orjson.dumps({**good, "key": "k-bad", "input_tokens": "abc"})
            + b"\n"
            + orjson.dumps([1, 2])
            + b"\n"
            + orjson.dumps(good)
            + b"\n"
        )
        again = run_factory(build_cmd(db, recipe, 3), _env(tmp_path, server.url), tmp_path)
    assert again.returncode == 0, again.stderr
    assert "Traceback" not in again.stderr
    warnings = [ln for ln in again.stderr.splitlines() if ln.startswith("warning:")]
    assert (
        f"warning: {journal}:1: skipped a journal entry (input_tokens is 'abc', expected a non-negative integer)"
        in warnings
    )
    assert f"warning: {journal}:2: skipped a journal entry (expected a JSON object, got list)" in warnings
    assert query(db, "SELECT count(*) FROM llm_calls WHERE key = 'k-good'") == [(1,)]
    assert query(db, "SELECT count(*) FROM samples") == [(3,)]
    assert len(journal.with_name(journal.name + ".rejected").read_bytes().splitlines()) == 2


def test_journal_path_is_a_folder(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path / "r.yaml")
    db = tmp_path / "j.duckdb"
    journal = db.with_name(db.name + ".journal")
    journal.mkdir()
    line = _error_line(run_factory(build_cmd(db, recipe, 2), _env(tmp_path, NOWHERE), tmp_path))
    assert line.startswith(f"error: {journal}: the request journal must be a file, but this is a folder")
    assert not db.exists() and journal.is_dir()


# -- 5. garbage and truncated files ---------------------------------------------------------------


def _damage(kind: str, db: Path, store_db: Path) -> Path:
    """The damaged file, and the one the message must name."""
    if kind == "garbage":
        db.write_bytes(os.urandom(50_000))
        return db
    if kind == "half":
        data = store_db.read_bytes()
        db.write_bytes(data[: len(data) // 2])
        return db
    # a good database and a write-ahead log whose entries are damaged
    live = Store(db)
    live.add("runs", {"run_id": "r", "seed": 0, "n_target": 5, "pipeline": "p", "status": "finished"})
    for i in range(2000):
        live.add("filter_log", {"slot": i, "stage": "f", "reason": "r", "detail": os.urandom(64).hex()})
    live.flush()
    copy = db.with_name("crashed.duckdb")
    shutil.copyfile(db, copy)
    shutil.copyfile(wal_path(db), wal_path(copy))
    live.close()
    db.unlink()
    copy.rename(db)
    wal_path(copy).rename(wal_path(db))
    data = bytearray(wal_path(db).read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = os.urandom(64)
    wal_path(db).write_bytes(bytes(data))
    return wal_path(db)


@pytest.mark.parametrize("kind", ["garbage", "half", "wal"])
def test_unreadable_db_every_command(tmp_path: Path, store_db: Path, kind: str) -> None:
    db = tmp_path / "bad.duckdb"
    named = _damage(kind, db, store_db)
    before = _snapshot(db, wal_path(db))
    recipe = write_recipe(tmp_path / "r.yaml")
    for result in (
        _run(tmp_path, "status", "--db", db),
        _run(tmp_path, "stats", "--db", db, "--out", tmp_path / "plots"),
        run_factory(build_cmd(db, recipe, 2), _env(tmp_path, NOWHERE), tmp_path),
    ):
        line = _error_line(result)
        assert line.startswith(f"error: {named}"), line
        assert re.search(r"is not (a )?readable", line) and "use another --db" in line, line
    assert _snapshot(db, wal_path(db)) == before  # never overwritten, deleted or "repaired"


# -- 7. recipe validation through the CLI ----------------------------------------------------------


def test_bad_recipe_names_file_and_key(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path / "r.yaml", policy={"industry_share": [0.9, 0.1]})
    line = _error_line(
        run_factory(build_cmd(tmp_path / "x.duckdb", recipe, 2), _env(tmp_path, NOWHERE), tmp_path)
    )
    assert line == f"error: {recipe}: policy.industry_share: low 0.9 is above high 0.1"
    assert not (tmp_path / "x.duckdb").exists()


# -- 8. / 9. flags ----------------------------------------------------------------------------------


def _build_stopped_by_input(tmp_path: Path, *flags: str, **env: str) -> str:
    """A 2-sample build with these flags / environment: its one error line (no store created)."""
    db = tmp_path / "x.duckdb"
    recipe = write_recipe(tmp_path / "r.yaml")
    result = _run(tmp_path, "build", "--n", "2", "--db", db, "--pipeline", recipe, *flags, url=NOWHERE, **env)
    line = _only_line(result)
    assert not db.exists()
    return line


@pytest.mark.parametrize(
    ("flags", "start"),
    [
        (["--model", "openai:"], "error: --model 'openai:': model spec 'openai:' names no model"),
        (["--model", "bogus"], "error: --model 'bogus': model spec 'bogus' must look like 'provider:model'"),
        (["--model", ""], "error: --model '': empty model spec"),
        (["--model-for", "label="], "error: --model-for 'label=': empty model spec"),
        (["--model-for", "label=cohere:x"], "error: --model-for 'label=cohere:x': unknown provider 'cohere'"),
        (["--seed", str(2**70)], f"error: --seed {2**70}: must be between 0 and 2**63 - 1"),
        (["--seed", "-1"], "error: --seed -1: must be between 0 and 2**63 - 1"),
        (["--seed", str(2**63)], f"error: --seed {2**63}: must be between 0 and 2**63 - 1"),
    ],
)
def test_bad_flag_is_named(tmp_path: Path, flags: list[str], start: str) -> None:
    line = _build_stopped_by_input(tmp_path, *flags)
    assert line.startswith(start), line


def test_bad_collector_setting_is_named(tmp_path: Path) -> None:
    assert _build_stopped_by_input(tmp_path, FACTORY_GC_THRESHOLDS="10k") == (
        "error: FACTORY_GC_THRESHOLDS='10k': expected three positive integers, e.g. '10000,10,10'"
    )


def test_largest_seed_is_accepted(tmp_path: Path) -> None:
    """2**63 - 1 passes the flag check and is stored (the run then stops at the unreachable endpoint)."""
    db = tmp_path / "x.duckdb"
    recipe = write_recipe(tmp_path / "r.yaml", endpoint_defaults={"max_retries": 0})
    result = run_factory(build_cmd(db, recipe, 1, seed=2**63 - 1), _env(tmp_path, NOWHERE), tmp_path)
    assert "--seed" not in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert query(db, "SELECT seed FROM runs") == [(2**63 - 1,)]


# -- 10. banks --------------------------------------------------------------------------------------


def _bank(tmp: Path, change: str) -> tuple[Path, Path]:
    root = write_bank(tmp / "banks")
    if change == "one-hobby":
        path = root / "user_traits" / "hobbies.txt"
        path.write_text("Birdwatching\n", encoding="utf-8")
    elif change == "generic-empty":
        for p in (root / "rules" / "misc").glob("*.txt"):
            p.write_text("# nothing\n", encoding="utf-8")
        path = root / "rules" / "misc"
    elif change == "no-industry-file":
        path = root / "rules" / "industry" / "pet-grooming.txt"
        path.unlink()
    elif change == "folder-for-file":
        path = root / "agent_traits" / "roles.txt"
        path.unlink()
        path.mkdir()
    else:  # a file where a folder belongs
        path = root / "rules" / "misc"
        shutil.rmtree(path)
        path.write_text("tone\n", encoding="utf-8")
    return root, path


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ("one-hobby", "1 entry, needs at least 2 (each user persona draws 2 distinct hobbies)"),
        ("generic-empty", "every generic rule file is empty"),
        ("no-industry-file", "no rule file for industry 'Pet Grooming'"),
        ("folder-for-file", "is a folder, expected a bank file"),
        ("file-for-folder", "is a file, expected the generic rules folder"),
    ],
)
def test_unusable_banks_stop_the_build_before_any_call(tmp_path: Path, change: str, needle: str) -> None:
    root, path = _bank(tmp_path, change)
    db = tmp_path / "b.duckdb"
    with fake_server() as server:
        result = run_factory(
            build_cmd(db, write_recipe(tmp_path / "r.yaml"), 2),
            _env(tmp_path, server.url, FACTORY_BANKS=str(root)),
            tmp_path,
        )
        requests = server.stats()["requests"]
    line = _error_line(result)
    assert line.startswith(f"error: {path}: ") and needle in line, line
    assert requests == 0 and not db.exists()


# -- BuildStopped and the last-resort handler ----------------------------------------------------

PATCHED = """
import sys
import factory.cli.main as cli
import factory.runner.build as runner
import factory.stats.report as report
from factory.errors import BuildStopped

async def stopped(*args, **kwargs):
    raise BuildStopped("the provider is down: 5 slots in a row failed; rerun to resume", exit_code=3)

def broken(db):
    raise KeyError("samples")

runner.build = stopped
report.status_text = broken
sys.argv = ["factory", *sys.argv[1:]]
cli.main()
"""


def _patched(tmp: Path, *args: str | Path, **extra: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-c", PATCHED, *(str(a) for a in args)]
    return run_factory(cmd, _env(tmp, NOWHERE, **extra), tmp, timeout=120)


def test_build_stopped_exits_with_its_code(tmp_path: Path) -> None:
    result = _patched(
        tmp_path,
        "build",
        "--n",
        "2",
        "--db",
        tmp_path / "x.duckdb",
        "--pipeline",
        write_recipe(tmp_path / "r.yaml"),
    )
    assert (
        _error_line(result, code=3) == "error: the provider is down: 5 slots in a row failed; rerun to resume"
    )


def test_unexpected_exception_is_one_line_unless_debugging(tmp_path: Path, store_db: Path) -> None:
    result = _patched(tmp_path, "status", "--db", store_db)
    assert _only_line(result, code=1) == (
        "error: internal error: KeyError: 'samples' (set FACTORY_DEBUG=1 for the traceback)"
    )
    t0 = time.monotonic()
    debug = _patched(tmp_path, "status", "--db", store_db, FACTORY_DEBUG="1")
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "KeyError" in debug.stderr
    assert time.monotonic() - t0 < 60
