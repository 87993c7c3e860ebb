"""Kill -9 during a build, twice, at two different moments; rerun the same command to completion.

The result has exactly N samples, equal row for row to an uninterrupted build with the same seed
against a fresh server, and the server sees no request body twice except the ones that were in
flight when the process died (their answers never reached the store, so they must be asked again).
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from pathlib import Path

from tests.pipeline.conftest import (
    Built,
    build_cmd,
    check_ok,
    cli_env,
    fake_server,
    flat,
    query,
    recorded_keys,
    run_factory,
    samples,
    settled_stats,
)

N = 150


def _start_and_kill(cmd: list[str], env: dict[str, str], cwd: Path, server, min_requests: int) -> None:  # noqa: ANN001
    """Start a build, wait until the server has seen `min_requests` requests, then SIGKILL it."""
    proc = subprocess.Popen(
        cmd,
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while server.stats()["requests"] < min_requests:
            assert proc.poll() is None, (
                f"build ended before the kill (exit {proc.returncode}): "
                f"{proc.stderr.read() if proc.stderr else ''}"
            )
            assert time.monotonic() < deadline, "no progress on the fake server"
            time.sleep(0.02)
        assert proc.poll() is None, "build finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        if proc.stderr is not None:
            proc.stderr.close()


def _paid_and_cached(stderr: str) -> tuple[int, int]:
    m = re.search(r"LLM: (\d+) calls paid, (\d+) answered from cache", flat(stderr))
    assert m, stderr
    return int(m.group(1)), int(m.group(2))


def test_kill9_twice_then_resume(tmp_path: Path, reference150: Built) -> None:
    db = tmp_path / "resume.duckdb"
    cmd = build_cmd(db, reference150.recipe, N)
    with fake_server(latency=0.05) as server:
        env = cli_env(server.url, tmp=tmp_path)

        # kill 1: early, before any sample is committed
        _start_and_kill(cmd, env, tmp_path, server, min_requests=200)
        stats1 = settled_stats(server)
        lost1 = stats1["requests"] - len(recorded_keys(db))
        assert 0 <= lost1 <= stats1["requests"]
        committed1 = query(db, "SELECT count(*) FROM samples")[0][0]
        assert committed1 < N
        assert query(db, "SELECT status FROM runs") == [("running",)]  # it died without a word

        # kill 2: later, in the middle of the resumed build
        _start_and_kill(cmd, env, tmp_path, server, min_requests=stats1["requests"] + 450)
        stats2 = settled_stats(server)
        lost_total = stats2["requests"] - len(recorded_keys(db))
        committed2 = query(db, "SELECT count(*) FROM samples")[0][0]
        assert committed1 <= committed2 < N

        # rerun the same command to completion
        final = check_ok(run_factory(cmd, env, tmp_path))
        stats3 = settled_stats(server)

    assert query(db, "SELECT count(*) FROM samples")[0][0] == N
    assert query(db, "SELECT count(*) FROM slot_status WHERE status = 'accepted'")[0][0] == N
    assert f"done: {N} samples" in flat(final.stderr)
    _, cached = _paid_and_cached(final.stderr)
    assert cached > 0, "the resumed build should answer earlier calls from the store"
    # no answer that reached the store was paid again: the only repeated bodies are requests that were
    # in flight at a kill (received by the server, never recorded by the killed process)
    assert stats3["repeated_bodies"] <= lost_total, (stats1, stats2, stats3, lost1, lost_total)
    assert stats3["faults_applied"] == 0 and stats3["auth_failures"] == 0
    # the ledger holds each call once
    assert query(db, "SELECT count(*) - count(DISTINCT key) FROM llm_calls")[0][0] == 0
    runs = query(db, "SELECT status FROM runs ORDER BY started_at")
    assert runs[-1] == ("finished",) and len(runs) == 3

    # same seed + same model outputs => the same dataset as the uninterrupted reference build
    assert reference150.server_stats["repeated_bodies"] == 0
    got, want = samples(db), samples(reference150.db)
    assert len(want) == N
    cols = [r[0] for r in query(db, "DESCRIBE samples")]
    core = [cols.index(c) for c in ("sample_id", "label", "policy", "transcript")]
    assert [[r[i] for i in core] for r in got] == [[r[i] for i in core] for r in want]
    assert got == want  # every column, not only the four published ones
    # the stage tables agree too (the rows of committed slots)
    for table in ("policies", "paraphrases", "dialogues", "traces"):
        sql = f"SELECT * FROM {table} WHERE slot < {N} ORDER BY slot"
        assert query(db, sql) == query(reference150.db, sql), table
