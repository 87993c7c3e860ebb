"""The disk fills up mid-build: one line, nothing committed is damaged, and once there is space
again the same command finishes with the same dataset.

The build writes into a small tmpfs (needs root to mount; skipped otherwise); after some samples
are committed a filler file takes the rest of the space.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from tests.faults.conftest import (
    CONCURRENCY,
    assert_one_line_error,
    assert_same_dataset,
    live_accepted,
    recorded_messages,
    start_build,
    traffic,
    wait_until,
)
from tests.pipeline.conftest import build_cmd, check_ok, cli_env, flat, run_factory


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def fill(path: Path) -> int:
    """Write zeros into `path` until the file system is full; returns the bytes written."""
    chunk = b"\0" * 65536
    written = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            try:
                written += os.write(fd, chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                if len(chunk) == 1:
                    return written
                chunk = chunk[: len(chunk) // 2]
    finally:
        os.close(fd)


def check_committed(db: Path, scratch: Path) -> int:
    """Open a copy of what the full disk holds (DuckDB replays its WAL) and check it is whole."""
    scratch.mkdir()
    for f in db.parent.iterdir():
        if f.name.startswith(db.name) and not f.name.endswith(".live.json"):
            shutil.copy(f, scratch / f.name)
    con = duckdb.connect(str(scratch / db.name))
    try:
        slots = [r[0] for r in con.execute("SELECT slot FROM slot_status ORDER BY slot").fetchall()]
        assert slots == list(range(len(slots)))  # the resume point: a prefix of slots
        accepted = con.execute("SELECT slot FROM slot_status WHERE status = 'accepted' ORDER BY slot")
        accepted_slots = accepted.fetchall()
        assert accepted_slots == con.execute("SELECT slot FROM samples ORDER BY slot").fetchall()
        assert con.execute("SELECT count(*) - count(DISTINCT key) FROM llm_calls").fetchall() == [(0,)]
        return len(slots)
    finally:
        con.close()


def test_disk_full_mid_build(tmp_path: Path, recipe: Path, reference, logged, small_disk: Path) -> None:  # noqa: ANN001
    n = 30
    log = tmp_path / "bodies.log"
    server = logged(latency=0.05)
    db = small_disk / "b.duckdb"
    cmd = build_cmd(db, recipe, n)
    env = cli_env(server.url, tmp=tmp_path)
    run = start_build(cmd, env, tmp_path)
    try:
        wait_until("5 samples committed", lambda: live_accepted(db) >= 5, run)
        time.sleep(0.3)
        filler = small_disk / "filler"
        fill(filler)
        t0 = time.monotonic()
        rc = run.wait(timeout=60)
        took = time.monotonic() - t0
    finally:
        run.kill()
    assert rc == 2, run.stderr
    line = assert_one_line_error(run.stderr)
    assert "is full (no space left)" in line and "rerun the command to resume" in line, line
    slots = check_committed(db, tmp_path / "copy")
    assert "answer(s) that were on the wire" not in run.stderr  # they could not be journaled
    # answers that reached the process but not the disk: the one whose journal write failed and
    # the others on the wire then (no request is sent after a journal write failed)
    lost = len(traffic(log).answered_messages() - recorded_messages(tmp_path / "copy" / db.name))
    assert lost <= CONCURRENCY, lost
    assert 0 < slots < n
    print(
        f"\n[disk full] exit {rc} {took:.1f}s after the disk filled, {slots} slots committed: {line[:120]}..."
    )

    filler.unlink()  # free the space; the same command resumes
    final = check_ok(run_factory(cmd, env, tmp_path))
    assert f"done: {n} samples" in flat(final.stderr)
    assert_same_dataset(db, reference(n), n)
    seen = traffic(log)
    assert seen.paid_twice <= lost, (seen.paid_twice, lost)
    print(
        f"    rerun exit 0; paid twice {seen.paid_twice} (answers lost at the fault {lost}, bound {CONCURRENCY})"
    )
