"""Hanging requests, kill -9 at several points, SIGTERM and Ctrl-C: the same dataset, nothing
paid twice beyond the requests that were on the wire when the process died."""

from __future__ import annotations

import random
import re
import signal
import time
from pathlib import Path

import pytest

from tests.faults.conftest import (
    CONCURRENCY,
    TIMEOUT_S,
    assert_same_dataset,
    llm_failure_drops,
    recorded_messages,
    start_build,
    traffic,
    wait_until,
)
from tests.pipeline.conftest import build_cmd, check_ok, cli_env, flat, query, run_factory


def test_hanging_requests_time_out_and_retry(tmp_path: Path, recipe: Path, reference, logged) -> None:  # noqa: ANN001
    n = 10
    hangs = 3
    server = logged()
    server.script([{"kind": "hang", "seconds": TIMEOUT_S * 2, "times": hangs}])
    db = tmp_path / "b.duckdb"
    cmd = [a for a in build_cmd(db, recipe, n) if a != "--no-progress"]  # plain progress lines
    t0 = time.monotonic()
    result = check_ok(run_factory(cmd, cli_env(server.url, tmp=tmp_path), tmp_path))
    took = time.monotonic() - t0
    retries = [int(m) for m in re.findall(r"^\[build\] .* retries (\d+),", result.stderr, re.M)]
    assert retries and retries[-1] >= hangs, result.stderr
    assert server.stats()["faults_by_kind"] == {"hang": hangs}
    assert_same_dataset(db, reference(n), n)
    assert llm_failure_drops(db) == 0
    seen = traffic(tmp_path / "bodies.log")
    assert seen.paid_twice == 0  # a request that timed out was never answered
    assert seen.repeated == hangs  # each hung request was sent once more
    print(
        f"\n[hang x{hangs}] exit 0 in {took:.1f}s, progress shows retries {retries[-1]}, repeated {seen.repeated}"
    )


def _unrecorded_answers(db: Path, log: Path, since: int) -> int:
    """Answers the server gave since its `since`-th one that the store does not hold (the client
    died before keeping them)."""
    answers = traffic(log).answers[since:]
    return len({m for _, m, _ in answers} - recorded_messages(db))


def test_kill9_at_three_points(tmp_path: Path, recipe: Path, reference, logged) -> None:  # noqa: ANN001
    n = 30
    log = tmp_path / "bodies.log"
    server = logged(latency=0.05)
    db = tmp_path / "b.duckdb"
    cmd = build_cmd(db, recipe, n)
    env = cli_env(server.url, tmp=tmp_path)
    rng = random.Random(6)
    lost: list[int] = []
    committed: list[int] = []
    # kill points by the server's answer count (a full build takes ~150 answers): the heartbeat
    # file moves in steps of ~10 samples here, too coarse to aim with
    for threshold in (15, 60, 110):
        since = len(traffic(log).answers)
        run = start_build(cmd, env, tmp_path)
        try:
            at = threshold + rng.randrange(10)
            wait_until(f"{at} answers", lambda a=at: len(traffic(log).answers) >= a, run, timeout=90)
            assert run.proc.poll() is None, "the build finished before the kill"
        finally:
            run.kill()
        assert run.proc.returncode == -signal.SIGKILL
        time.sleep(0.3)  # let the server finish answering the dead client
        lost.append(_unrecorded_answers(db, log, since))
        committed.append(query(db, "SELECT count(*) FROM samples")[0][0])
    assert all(0 <= x <= CONCURRENCY for x in lost), lost
    assert committed == sorted(committed) and committed[-1] < n, committed

    final = check_ok(run_factory(cmd, env, tmp_path))
    assert f"done: {n} samples" in flat(final.stderr)
    assert_same_dataset(db, reference(n), n)
    seen = traffic(log)
    assert seen.paid_twice <= sum(lost), (seen.paid_twice, lost)
    assert seen.repeated <= 3 * CONCURRENCY, seen.repeated  # re-sent: what was on the wire at each kill
    assert query(db, "SELECT count(*) - count(DISTINCT key) FROM llm_calls")[0][0] == 0
    runs = query(db, "SELECT status FROM runs ORDER BY started_at")
    assert [r[0] for r in runs] == ["running"] * 3 + ["finished"]
    print(
        f"\n[kill -9 x3] committed at kills {committed}; answers lost per kill {lost} "
        f"(bound {CONCURRENCY} each); paid twice {seen.paid_twice}, repeated {seen.repeated}"
    )


@pytest.mark.parametrize(
    ("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"]
)
def test_signal_drains_and_resumes(
    tmp_path: Path,
    recipe: Path,
    reference,  # noqa: ANN001
    logged,  # noqa: ANN001
    sig: signal.Signals,
    code: int,
) -> None:
    n = 20
    log = tmp_path / "bodies.log"
    server = logged(latency=0.5)  # requests stay on the wire long enough to be caught by the signal
    db = tmp_path / "b.duckdb"
    cmd = build_cmd(db, recipe, n)
    env = cli_env(server.url, tmp=tmp_path)
    run = start_build(cmd, env, tmp_path)
    try:

        def busy() -> bool:  # 10 answers in, and requests on the wire now
            t = traffic(log)
            return len(t.answers) >= 10 and t.requests - len(t.answers) >= 2

        wait_until("requests on the wire", busy, run)
        on_wire = traffic(log)
        in_flight = on_wire.requests - len(on_wire.answers)
        run.proc.send_signal(sig)
        t0 = time.monotonic()
        rc = run.wait(timeout=60)
        exited = time.time()
        took = time.monotonic() - t0
    finally:
        run.kill()
    assert rc == code, run.stderr
    stderr = flat(run.stderr)
    assert "Traceback" not in stderr, run.stderr
    assert "every answer received was journaled" in stderr, run.stderr
    kept = re.search(r"kept (\d+) answer\(s\) that were on the wire", stderr)
    assert kept and int(kept.group(1)) >= 1, run.stderr
    assert "got no answer" not in stderr, run.stderr
    at_exit = traffic(log)
    answered = at_exit.answered_messages(before=exited)
    assert answered <= recorded_messages(db), "an answer the server gave before the exit was lost"
    assert query(db, "SELECT count(*) FROM llm_calls")[0][0] == len(answered)
    unanswered = at_exit.requests - len(at_exit.answers)
    assert unanswered == 0
    assert query(db, "SELECT status FROM runs") == [("interrupted",)]

    final = check_ok(run_factory(cmd, env, tmp_path))
    assert f"done: {n} samples" in flat(final.stderr)
    assert_same_dataset(db, reference(n), n)
    seen = traffic(log)
    assert seen.paid_twice <= unanswered, seen.paid_twice
    assert seen.repeated <= unanswered, seen.repeated
    print(
        f"\n[{sig.name}] exit {rc} {took:.2f}s after the signal, {in_flight} on the wire at the signal, "
        f"kept {kept.group(1)}; server answered {len(answered)} = llm_calls rows; rerun paid twice "
        f"{seen.paid_twice}"
    )
