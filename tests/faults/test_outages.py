"""The provider is not there, goes away, or answers only 429: outages are never data.

Each build is the real CLI against the logged fake server; after the fault and a rerun of the same
command the dataset equals an uninterrupted build, and no answer is paid for twice beyond the
requests that were on the wire when the fault hit (at most CONCURRENCY).
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

from tests.faults.conftest import (
    CONCURRENCY,
    STARTUP_PATIENCE_S,
    Running,
    assert_one_line_error,
    assert_same_dataset,
    fault_recipe,
    live_accepted,
    llm_failure_drops,
    start_build,
    traffic,
    wait_until,
)
from tests.pipeline.conftest import build_cmd, check_ok, cli_env, flat, query, run_factory


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_nothing_listens_then_resume(tmp_path: Path, recipe: Path, reference, logged) -> None:  # noqa: ANN001
    n = 10
    port = free_port()
    db = tmp_path / "b.duckdb"
    cmd = build_cmd(db, recipe, n)
    env = cli_env(f"http://127.0.0.1:{port}", tmp=tmp_path)
    t0 = time.monotonic()
    first = run_factory(cmd, env, tmp_path, timeout=90)
    elapsed = time.monotonic() - t0
    assert first.returncode == 3, first.stderr
    assert STARTUP_PATIENCE_S < elapsed < 60, elapsed
    line = assert_one_line_error(first.stderr)
    assert "openai:fake-model" in line and "connection refused" in line, line
    # the short startup patience applied (a server that never answered refuses connections), not
    # the outage patience of a provider that went away mid-build
    assert f"did not come back within {STARTUP_PATIENCE_S:.0f}s" in line, line
    assert "rerun the same command" in line, line
    assert query(db, "SELECT count(*) FROM slot_status")[0][0] == 0
    print(f"\n[nothing listens] exit {first.returncode} after {elapsed:.1f}s: {line}")

    logged(port=port)
    check_ok(run_factory(cmd, env, tmp_path))
    assert_same_dataset(db, reference(n), n)
    seen = traffic(tmp_path / "bodies.log")
    assert seen.repeated == 0 and seen.paid_twice == 0, seen.statuses


def _kill_server_after(run: Running, db: Path, server, accepted: int) -> None:  # noqa: ANN001
    wait_until(f"{accepted} samples committed", lambda: live_accepted(db) >= accepted, run)
    server.kill()


def test_outage_shorter_than_patience(tmp_path: Path, recipe: Path, reference, logged) -> None:  # noqa: ANN001
    n = 30
    db = tmp_path / "b.duckdb"
    server = logged(latency=0.05)
    port = server.port
    run = start_build(build_cmd(db, recipe, n), cli_env(server.url, tmp=tmp_path), tmp_path)
    try:
        _kill_server_after(run, db, server, accepted=5)
        killed_at = time.monotonic()
        before = traffic(tmp_path / "bodies.log")
        time.sleep(8)
        assert run.proc.poll() is None, run.stderr  # riding it out
        logged(port=port, latency=0.05)
        rc = run.wait(timeout=120)
    finally:
        run.kill()
    assert rc == 0, run.stderr
    took = time.monotonic() - killed_at
    assert_same_dataset(db, reference(n), n)
    assert llm_failure_drops(db) == 0
    seen = traffic(tmp_path / "bodies.log")
    lost = before.requests - len(before.answers)  # received by the dying server, never answered
    # re-sent: what was on the wire when the provider vanished (an answer it gave that never got
    # through would count in paid_twice too)
    assert seen.repeated <= CONCURRENCY, (seen.repeated, lost)
    assert seen.paid_twice <= seen.repeated
    print(
        f"\n[outage 8s] exit 0, resumed {took:.1f}s after the kill; repeated bodies {seen.repeated} "
        f"(lost at the kill {lost}, bound {CONCURRENCY}), paid twice {seen.paid_twice}"
    )


def test_outage_longer_than_patience(tmp_path: Path, reference, logged) -> None:  # noqa: ANN001
    n = 30
    patience = 8.0
    recipe = fault_recipe(tmp_path / "faults.yaml", outage_patience_s=patience)
    db = tmp_path / "b.duckdb"
    server = logged(latency=0.05)
    port = server.port
    cmd = build_cmd(db, recipe, n)
    env = cli_env(server.url, tmp=tmp_path)
    run = start_build(cmd, env, tmp_path)
    try:
        _kill_server_after(run, db, server, accepted=5)
        killed_at = time.monotonic()
        rc = run.wait(timeout=90)
    finally:
        run.kill()
    took = time.monotonic() - killed_at
    assert rc == 3, run.stderr
    assert patience <= took < patience + 30, took  # slack for a loaded machine
    line = assert_one_line_error(run.stderr)
    assert "openai:fake-model is unavailable" in line and "connection" in line, line
    assert "rerun the same command to resume" in line, line
    committed = query(db, "SELECT count(*) FROM samples")[0][0]
    assert 5 <= committed < n
    assert llm_failure_drops(db) == 0
    print(f"\n[outage > patience] exit 3 {took:.1f}s after the kill, {committed} committed: {line}")

    logged(port=port)
    final = check_ok(run_factory(cmd, env, tmp_path))
    assert f"done: {n} samples" in flat(final.stderr)
    assert_same_dataset(db, reference(n), n)
    seen = traffic(tmp_path / "bodies.log")
    assert seen.repeated <= CONCURRENCY, seen.repeated
    assert seen.paid_twice <= seen.repeated
    print(
        f"    rerun exit 0; repeated bodies {seen.repeated} (bound {CONCURRENCY}), paid twice {seen.paid_twice}"
    )


def test_all_requests_rate_limited(tmp_path: Path, reference, logged) -> None:  # noqa: ANN001
    n = 10
    patience = 8.0
    recipe = fault_recipe(tmp_path / "faults.yaml", outage_patience_s=patience)
    db = tmp_path / "b.duckdb"
    server = logged()
    server.script([{"kind": "rate_limit", "retry_after": 1, "times": 100_000}])
    port = server.port
    cmd = build_cmd(db, recipe, n)
    env = cli_env(server.url, tmp=tmp_path)
    t0 = time.monotonic()
    first = run_factory(cmd, env, tmp_path, timeout=120)
    took = time.monotonic() - t0
    assert first.returncode == 3, first.stderr
    assert took < patience + 30, took  # the breaker opens within seconds; slack for load
    line = assert_one_line_error(first.stderr)
    assert "429" in line, line
    assert query(db, "SELECT count(*) FROM slot_status")[0][0] == 0
    assert llm_failure_drops(db) == 0
    limited = traffic(tmp_path / "bodies.log")
    assert not limited.answers and limited.statuses["429"] == limited.requests
    print(f"\n[429 only] exit 3 after {took:.1f}s, {limited.requests} requests all 429: {line}")

    server.stop()
    logged(port=port)
    check_ok(run_factory(cmd, env, tmp_path))
    assert_same_dataset(db, reference(n), n)
    assert llm_failure_drops(db) == 0
    assert traffic(tmp_path / "bodies.log").paid_twice == 0
