"""The store never corrupts or replaces a file it cannot read: garbage, truncated or foreign
databases and unreadable write-ahead logs are one-line StoreErrors naming the file, and the files
are left byte for byte as they were. A failed final CHECKPOINT (disk full) after everything was
committed is a one-line warning, and the data is all there on the next open."""

from __future__ import annotations

import base64
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from factory.store.db import (
    _HEADERS,
    Store,
    StoreCorruptError,
    StoreError,
    StoreLockedError,
    StoreNotBuiltError,
    connect,
    open_readonly,
    wal_path,
)


def _rows(n: int, width: int = 64) -> list[dict]:
    """filter_log rows whose detail is random base64 (DuckDB's compression gains little on it)."""
    return [
        {
            "slot": i,
            "stage": "filter",
            "reason": "test",
            "detail": base64.b64encode(os.urandom(width * 3 // 4)).decode(),
            "dropped": False,
        }
        for i in range(n)
    ]


def _snapshot(*paths: Path) -> dict[str, bytes | None]:
    return {str(p): (p.read_bytes() if p.exists() else None) for p in paths}


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text, text
    return text


@pytest.fixture(scope="module")
def crashed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A factory store as a crash leaves it: rows committed to the WAL, no checkpoint."""
    work = tmp_path_factory.mktemp("crashed")
    live = work / "live.duckdb"
    store = Store(live)
    store.add("runs", {"run_id": "r", "seed": 0, "n_target": 5, "pipeline": "p", "status": "running"})
    for row in _rows(3000, 128):
        store.add("filter_log", row)
    store.flush()
    out = work / "copy"
    out.mkdir()
    for src in (live, wal_path(live)):
        shutil.copyfile(src, out / src.name)
    store.close()
    assert (out / "live.duckdb.wal").stat().st_size > 100_000
    return out / "live.duckdb"


def _copy(src: Path, dst_dir: Path) -> Path:
    dst_dir.mkdir(exist_ok=True)
    for p in (src, wal_path(src)):
        if p.exists():
            shutil.copyfile(p, dst_dir / p.name)
    return dst_dir / src.name


def test_crashed_copy_is_readable(crashed: Path, tmp_path: Path) -> None:
    db = _copy(crashed, tmp_path)
    con = open_readonly(db)
    try:
        assert con.execute("SELECT count(*) FROM filter_log").fetchall() == [(3000,)]
    finally:
        con.close()


def _garbage(db: Path) -> None:
    db.write_bytes(os.urandom(20_000))


def _truncated(db: Path, crashed: Path, keep: float) -> None:
    """A checkpointed store cut short (a partial copy): `keep` of its bytes survive."""
    good = _copy(crashed, db.parent / "good")
    Store(good).close()  # checkpointed: everything in the main file
    data = good.read_bytes()
    db.write_bytes(data[: int(len(data) * keep)])


@pytest.mark.parametrize("kind", ["garbage", "cut-to-10%", "cut-to-50%", "cut-to-99%"])
@pytest.mark.parametrize("read_only", [True, False])
def test_unreadable_database_file(crashed: Path, tmp_path: Path, kind: str, read_only: bool) -> None:
    db = tmp_path / "bad.duckdb"
    if kind == "garbage":
        _garbage(db)
    else:
        _truncated(db, crashed, int(kind.removeprefix("cut-to-").removesuffix("%")) / 100)
    before = _snapshot(db, wal_path(db))
    with pytest.raises(StoreCorruptError) as err:
        open_readonly(db) if read_only else Store(db)
    message = _one_line(err.value)
    assert message.startswith(f"{db} is not a readable DuckDB database (")
    assert "restore it from a backup or use another --db" in message
    assert _snapshot(db, wal_path(db)) == before


def test_file_shortened_by_duckdb_itself_opens(tmp_path: Path) -> None:
    """DuckDB cuts free blocks off the end of the file at a checkpoint while its header still
    counts them (seen on finished 2k and 10k builds): such a file is whole and must open."""
    db = tmp_path / "shortened.duckdb"
    store = Store(db)
    for row in _rows(3000, 128):
        store.add("filter_log", row)
    store.flush()
    store.con.execute("CHECKPOINT")
    store.con.execute(
        "CREATE TABLE scratch AS SELECT range AS i, md5(range::VARCHAR) AS s FROM range(300000)"
    )
    store.con.execute("CHECKPOINT")
    store.con.execute("DROP TABLE scratch")
    store.close()
    con = duckdb.connect(str(db), read_only=True)
    block_size, total_blocks = con.execute(
        "SELECT block_size, total_blocks FROM pragma_database_size()"
    ).fetchall()[0]
    con.close()
    assert db.stat().st_size < _HEADERS + block_size * total_blocks  # the case this test is about
    con = open_readonly(db)
    try:
        assert con.execute("SELECT count(*) FROM filter_log").fetchall() == [(3000,)]
    finally:
        con.close()
    Store(db).close()
    # the same file cut into its data is still refused
    data = db.read_bytes()
    cut = tmp_path / "cut.duckdb"
    cut.write_bytes(data[: len(data) - block_size])
    with pytest.raises(StoreCorruptError, match="the file was cut short"):
        open_readonly(cut)


@pytest.mark.parametrize("read_only", [True, False])
def test_corrupt_wal_next_to_a_good_database(crashed: Path, tmp_path: Path, read_only: bool) -> None:
    db = _copy(crashed, tmp_path)
    wal = wal_path(db)
    data = bytearray(wal.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 64] = os.urandom(64)
    wal.write_bytes(bytes(data))
    before = _snapshot(db, wal)
    with pytest.raises(StoreCorruptError) as err:
        open_readonly(db) if read_only else Store(db)
    message = _one_line(err.value)
    assert message.startswith(f"{wal}: the write-ahead log of {db} is not readable (")
    assert _snapshot(db, wal) == before


def test_random_bytes_wal_is_ignored_by_duckdb(crashed: Path, tmp_path: Path) -> None:
    """A .wal that is pure noise is not this database's log: DuckDB ignores it and the data is intact."""
    db = _copy(crashed, tmp_path)
    Store(db).close()
    wal_path(db).write_bytes(os.urandom(4096))
    con = open_readonly(db)
    try:
        assert con.execute("SELECT count(*) FROM filter_log").fetchall() == [(3000,)]
    finally:
        con.close()


def test_empty_file(tmp_path: Path) -> None:
    db = tmp_path / "empty.duckdb"
    db.touch()
    with pytest.raises(StoreNotBuiltError) as err:
        open_readonly(db)
    assert _one_line(err.value).startswith(f"{db} is empty (0 bytes): no build has written to it yet")
    # a build starts the database in it (nothing to lose), DuckDB alone would refuse the file
    Store(db).close()
    con = open_readonly(db)
    con.close()


def test_database_without_factory_tables(tmp_path: Path) -> None:
    empty = tmp_path / "tableless.duckdb"
    duckdb.connect(str(empty)).close()
    with pytest.raises(StoreNotBuiltError) as err:
        open_readonly(empty)
    assert _one_line(err.value).startswith(f"{empty} holds no factory tables: no build has written to it yet")

    foreign = tmp_path / "foreign.duckdb"
    con = duckdb.connect(str(foreign))
    con.execute("CREATE TABLE invoices AS SELECT range AS id FROM range(10)")
    con.close()
    before = _snapshot(foreign, wal_path(foreign))
    with pytest.raises(StoreNotBuiltError, match="holds invoices"):
        open_readonly(foreign)
    with pytest.raises(StoreNotBuiltError) as err:
        Store(foreign)  # never adds factory tables to somebody else's database
    assert "will not add its tables" in _one_line(err.value)
    assert _snapshot(foreign, wal_path(foreign)) == before

    partial = tmp_path / "partial.duckdb"
    con = duckdb.connect(str(partial))
    con.execute("CREATE TABLE runs (run_id VARCHAR)")
    con.close()
    with pytest.raises(StoreNotBuiltError, match="lacks the factory table"):
        open_readonly(partial)
    Store(partial).close()  # a build completes the tables
    open_readonly(partial).close()


def test_folder_as_database(tmp_path: Path) -> None:
    with pytest.raises(StoreError) as err:
        connect(tmp_path, read_only=True)
    assert _one_line(err.value) == f"{tmp_path} is a folder, not a DuckDB file; pass a file to --db"
    with pytest.raises(StoreError, match="is a folder"):
        Store(tmp_path)


def test_locked_database_names_the_pid(tmp_path: Path) -> None:
    db = tmp_path / "held.duckdb"
    Store(db).close()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import duckdb, time; c = duckdb.connect({str(db)!r}); print('ok', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ok"
        for opener in (lambda: open_readonly(db), lambda: Store(db)):
            with pytest.raises(StoreLockedError) as err:
                opener()
            assert err.value.pid == holder.pid
            assert _one_line(err.value).startswith(f"{db} is in use by another process (pid {holder.pid})")
    finally:
        holder.kill()
        holder.wait()


class _Failing:
    """A connection whose statements matching `fail` raise a disk-full IOException."""

    def __init__(self, con: duckdb.DuckDBPyConnection, fail: str) -> None:
        self._con = con
        self._fail = fail

    def execute(self, sql: str, *args: object):  # noqa: ANN201
        if sql.strip().upper() == self._fail:
            raise duckdb.IOException('IO Error: Could not write file "x.duckdb": No space left on device')
        return self._con.execute(sql, *args)

    def __getattr__(self, name: str):  # noqa: ANN204
        return getattr(self._con, name)


def test_failed_final_checkpoint_is_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    db = tmp_path / "full.duckdb"
    store = Store(db)
    for row in _rows(50):
        store.add("filter_log", row)
    store.flush()
    store.con = _Failing(store.con, "CHECKPOINT")  # type: ignore[assignment]
    with caplog.at_level(logging.WARNING, logger="factory"):
        store.close()  # no exception
    [record] = [r for r in caplog.records if "checkpoint" in r.getMessage()]
    message = record.getMessage()
    assert message.startswith(f"{db}: the final checkpoint failed (") and "No space left" in message
    assert f"committed in {wal_path(db)}" in message and "\n" not in message
    con = open_readonly(db)
    try:
        assert con.execute("SELECT count(*) FROM filter_log").fetchall() == [(50,)]
    finally:
        con.close()


def test_failed_write_is_a_store_error_and_keeps_the_rows(tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    store = Store(db)
    real = store.con
    for row in _rows(10):
        store.add("filter_log", row)
    store.con = _Failing(real, "COMMIT")  # type: ignore[assignment]
    with pytest.raises(StoreError) as err:
        store.flush()
    message = _one_line(err.value)
    assert message.startswith(f"the disk holding {db} is full (no space left)") and "rerun" in message
    # a full disk is sticky for this process: nothing more is written (the rerun resumes), and the
    # failed transaction left nothing half-written
    store.con = real
    with pytest.raises(StoreError):
        store.flush()
    assert store.query("SELECT count(*) FROM filter_log") == [(0,)]
    store.close()
    again = Store(db)
    assert again.query("SELECT count(*) FROM filter_log") == [(0,)]
    again.close()


@pytest.fixture
def tiny_fs(tmp_path: Path):  # noqa: ANN201
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    try:
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        pytest.skip("cannot run mount")
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {result.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=10)


def test_disk_full_at_the_final_checkpoint(tiny_fs: Path, tmp_path: Path, caplog) -> None:
    """On a real 2 MB filesystem: fill the WAL with committed rows, then close; the checkpoint
    runs out of space, close() warns, and the copied files hold every row."""
    db = tiny_fs / "full.duckdb"
    store = Store(db)
    written = 0
    while True:
        for row in _rows(1000):
            store.add("filter_log", {**row, "slot": written + row["slot"]})
        store.flush()
        written += 1000
        st = os.statvfs(tiny_fs)
        if st.f_bavail * st.f_frsize < 500_000:  # the WAL holds ~1.6 MB; its checkpoint cannot fit
            break
    with caplog.at_level(logging.WARNING, logger="factory"):
        store.close()
    messages = [r.getMessage() for r in caplog.records]
    assert any("the final checkpoint failed" in m and "No space left" in m for m in messages), messages
    out = _copy(db, tmp_path / "rescued")
    con = open_readonly(out)
    try:
        assert con.execute("SELECT count(*) FROM filter_log").fetchall() == [(written,)]
    finally:
        con.close()


class _FailingInsert:
    """The store's connection, except that its INSERT into slot_status runs a statement DuckDB
    refuses (aborting the transaction, as an out-of-memory error does)."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self._con = con

    def execute(self, sql: str, *args: object):
        if sql.startswith("INSERT OR REPLACE INTO slot_status"):
            sql = "SELECT CAST('not a number' AS INTEGER)"
        return self._con.execute(sql, *args)

    def __getattr__(self, name: str):
        return getattr(self._con, name)


def test_a_failed_write_reports_duckdbs_own_error(tmp_path: Path) -> None:
    """After a failed INSERT, DuckDB refuses even the unregister of the batch ("Current transaction
    is aborted"); that must not replace the error that says what went wrong."""
    store = Store(tmp_path / "s.duckdb")
    real = store.con
    store.con = _FailingInsert(real)  # type: ignore[assignment]
    store.add("slot_status", {"slot": 1, "status": "accepted", "reason": ""})
    with pytest.raises(StoreError) as err:
        store.flush()
    message = _one_line(err.value)
    assert "not a number" in message and "Current transaction is aborted" not in message
    store.con = real  # the fault is gone: the rows kept in the buffers are written now
    store.flush()
    assert store.query("SELECT slot, status FROM slot_status") == [(1, "accepted")]
    store.close()
