"""Open the DuckDB file, create the tables, and write rows in Arrow batches.

Row writes are buffered per table and flushed in batches (DuckDB is fast at bulk inserts and slow
at many tiny ones). Losing a buffer to a crash loses no money: every LLM answer is already in the
request-cache journal, so a rerun rebuilds the missing rows from the cache without a network call.

Every way of opening the file goes through `connect`, which turns DuckDB's errors into one-line
`StoreError`s naming the file: locked by another process (`StoreLockedError`, with the pid when
DuckDB names it), not a readable DuckDB database or write-ahead log (`StoreCorruptError`), or a
database that holds no factory tables. Nothing here deletes or rewrites a file it cannot read
(the one exception: a 0-byte file, which holds nothing and which DuckDB refuses to open, is
replaced by a new database when a build opens it).
"""

from __future__ import annotations

import concurrent.futures
import errno
import logging
import os
import re
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from factory.duckdb_views import registered
from factory.llm.cache import CACHE_DDL, RequestCache, check_journal_path, indexed_by_key_id
from factory.store.allocators import limit_allocator_retention
from factory.store.live_status import describe_live_status
from factory.store.tables import MIGRATIONS, TABLES, TESTSET_TABLES

log = logging.getLogger(__name__)

# Every table a build creates (TABLES plus the request cache's ledger).
FACTORY_TABLES: tuple[str, ...] = (*TABLES, "llm_calls")


class StoreError(RuntimeError):
    """The store cannot be opened, read or written; the message names the file (one line)."""


class StoreLockedError(StoreError):
    """Another process holds the database (DuckDB allows one writer and no reader beside it)."""

    def __init__(self, message: str, *, path: Path, pid: int | None) -> None:
        self.path = path
        self.pid = pid
        super().__init__(message)


class StoreCorruptError(StoreError):
    """The file (or its write-ahead log) is not a readable DuckDB database."""


class StoreNotBuiltError(StoreError):
    """A readable DuckDB file without (all of) the factory's tables."""


def wal_path(path: Path) -> Path:
    return path.with_name(path.name + ".wal")


def _detail(exc: BaseException) -> str:
    """DuckDB's message on one line, without its 'IO Error: ' style prefix."""
    text = " ".join(str(exc).split())
    return re.sub(r"^(?:[A-Z][A-Za-z]* )?Error: ", "", text)


def _pid_of(exc: BaseException) -> int | None:
    match = re.search(r"\(PID (\d+)\)", str(exc))
    return int(match.group(1)) if match else None


def locked_error(path: Path, pid: int | None) -> StoreLockedError:
    live = describe_live_status(path)
    holder = f"another process (pid {pid})" if pid is not None else "another process"
    message = f"{path} is in use by {holder}"
    if live:
        message += f": {live}"
    else:
        message += "; wait for it to finish (or stop it), or use another --db"
    return StoreLockedError(message, path=path, pid=pid)


def open_error(path: Path, exc: BaseException) -> StoreError:
    """The StoreError for a DuckDB error raised while opening or reading `path`."""
    text = str(exc)
    if "Could not set lock" in text or "Conflicting lock" in text:
        return locked_error(path, _pid_of(exc))
    if "WAL" in text or ".wal" in text:
        return StoreCorruptError(
            f"{wal_path(path)}: the write-ahead log of {path} is not readable ({_detail(exc)}); restore "
            f"both files from a backup or use another --db (nothing was changed)"
        )
    corrupt = (
        "not a valid DuckDB database",
        "Could not read enough bytes",
        "Corrupt",
        "corrupt",
        "checksum",
        "Serialization",
        "INTERNAL",
        "database file with version",
    )
    if isinstance(exc, duckdb.SerializationException | duckdb.InternalException) or any(
        k in text for k in corrupt
    ):
        return StoreCorruptError(
            f"{path} is not a readable DuckDB database ({_detail(exc)}); restore it from a backup or "
            f"use another --db (nothing was changed)"
        )
    return StoreError(f"cannot open {path}: {_detail(exc)}")


def connect(
    path: Path, *, read_only: bool, config: dict[str, Any] | None = None
) -> duckdb.DuckDBPyConnection:
    """duckdb.connect with errors as one-line StoreErrors naming the file."""
    path = Path(path)
    if path.is_dir():
        raise StoreError(f"{path} is a folder, not a DuckDB file; pass a file to --db")
    if read_only and not path.exists():
        raise StoreError(f"{path} does not exist; run `factory build` first")
    if path.is_file() and path.stat().st_size == 0 and not wal_path(path).exists():
        # What a build killed as it created the file leaves; DuckDB refuses to open it at all.
        if read_only:
            raise StoreNotBuiltError(
                f"{path} is empty (0 bytes): no build has written to it yet; run "
                f"`factory build --db {path}` to start one"
            )
        path.unlink()  # nothing in it to lose: let DuckDB create the database afresh
    try:
        con = duckdb.connect(str(path), read_only=read_only, config=config or {})
    except duckdb.Error as exc:
        raise open_error(path, exc) from exc
    try:
        _check_length(con, path)
    except BaseException:
        con.close()
        raise
    return con


_HEADERS = 3 * 4096  # DuckDB's file header and its two database headers


def _check_length(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """A file cut short (a partial copy, a truncation) opens fine and fails on the first read of a
    missing block; its header still counts every block, so compare that with the file's length."""
    try:
        rows = con.execute(
            "SELECT block_size, total_blocks FROM pragma_database_size() "
            "WHERE database_name = current_database()"
        ).fetchall()
        size = path.stat().st_size
    except (duckdb.Error, OSError):
        return
    if not rows or rows[0][0] is None or rows[0][1] is None:
        return
    block_size = int(rows[0][0])
    if size >= _HEADERS + block_size * int(rows[0][1]):
        return
    # DuckDB cuts free blocks off the end of the file at a checkpoint but its header still counts
    # them, so a shorter file is only cut short if it lacks a block the tables' data lives in.
    try:
        last = _last_data_block(con)
    except duckdb.Error:
        return
    expected = _HEADERS + block_size * (last + 1)
    if size < expected:
        raise StoreCorruptError(
            f"{path} is not a readable DuckDB database (it is {size} bytes but its data reaches "
            f"{expected}: the file was cut short); restore it from a backup or use another --db "
            f"(nothing was changed)"
        )


def _last_data_block(con: duckdb.DuckDBPyConnection) -> int:
    """The highest block id any table's stored data is in (-1: none)."""
    last = -1
    tables = con.execute(
        "SELECT schema_name, table_name FROM duckdb_tables() "
        "WHERE database_name = current_database() AND NOT temporary"
    ).fetchall()
    for schema, table in tables:
        name = '"' + schema.replace('"', '""') + '"."' + table.replace('"', '""') + '"'
        row = con.execute(
            "SELECT max(block_id), max(list_max(additional_block_ids)) "
            "FROM pragma_storage_info(?) WHERE persistent",
            [name],
        ).fetchall()[0]
        last = max([last, *(int(b) for b in row if b is not None)])
    return last


def table_names(con: duckdb.DuckDBPyConnection) -> set[str]:
    rows = con.execute("SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main'").fetchall()
    return {r[0] for r in rows}


def check_tables(con: duckdb.DuckDBPyConnection, path: Path, need: Iterable[str] = FACTORY_TABLES) -> None:
    """Raise StoreNotBuiltError unless the database holds every table in `need`."""
    try:
        have = table_names(con)
    except duckdb.Error as exc:
        raise open_error(path, exc) from exc
    missing = [t for t in need if t not in have]
    if not missing:
        return
    if not have & set(FACTORY_TABLES):
        others = sorted(have)
        if others:
            shown = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
            raise StoreNotBuiltError(
                f"{path} is a DuckDB database without factory tables (it holds {shown}); is --db the "
                f"right file?"
            )
        raise StoreNotBuiltError(
            f"{path} holds no factory tables: no build has written to it yet (was one stopped before it "
            f"created them?); run `factory build --db {path}` to start one"
        )
    raise StoreNotBuiltError(
        f"{path} lacks the factory table(s) {', '.join(missing)} (a build stopped while creating "
        f"them?); rerun `factory build` with this --db to complete it"
    )


def open_readonly(path: Path, need: Iterable[str] = FACTORY_TABLES) -> duckdb.DuckDBPyConnection:
    """A read-only connection to a factory database, checked to hold the tables in `need`.

    Raises StoreLockedError while a build holds the file (factory.store.live_status then
    describes the build), StoreCorruptError for a file DuckDB cannot read, StoreNotBuiltError
    for a database without the factory tables."""
    con = connect(path, read_only=True)
    try:
        check_tables(con, Path(path), need)
    except BaseException:
        con.close()
        raise
    return con


def is_disk_full(exc: BaseException) -> bool:
    """A write failed for lack of space (an OSError, or DuckDB's error text for one)."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc)
    return "No space left on device" in text or "Disk quota exceeded" in text


# DuckDB ART memory per PRIMARY KEY row: ~50 bytes for llm_calls' key_id (UHUGEINT), ~72 in files
# from before it, indexed by the 32-hex key (1.6M keys filled a 128MB pool). The slot tables' keys
# come in order, so their indexes stay small: about 1 MiB a table plus a few bytes a row (measured
# with 10k and 40k slots inserted 40 at a time: 1.2 and 1.5 MiB; (slot, rule_index): 2.2 and 3.2).
CACHE_INDEX_BYTES = 50
CACHE_INDEX_BYTES_OLD = 72
SLOT_INDEX_BYTES = 8
TABLE_INDEX_BYTES = 1 << 20  # each indexed table's own
# What the pool holds besides the indexes while a store is written. DuckDB's checkpoints take
# pool memory up to the limit (60-100 MB above the resident set in a synthetic 60,000-row insert
# with a 128MB pool, 35 MB with 48MB), so the pool is kept to the indexes plus this.
WORKING_ROOM = 48 << 20
POOL_STEP = 16 << 20
# A write DuckDB refuses for lack of pool memory is rolled back and written again with a pool
# POOL_GROWTH times larger, up to MAX_POOL: the estimate above is a measurement, not a bound (a
# 40,000-sample build with the http transport ran out of an 80MB pool at 19,235 samples). The
# growth is large because a COMMIT that runs out (merging the transaction's rows and index into
# the table) invalidates the connection: the retry must not come near the limit again.
POOL_GROWTH = 4
MAX_POOL = 4 << 30
# DuckDB checkpoints a written store when its write-ahead log passes this (its default: 16MB).
# Each checkpoint of a growing llm_calls stalls the commit that triggers it, and at DuckDB's
# default the stalls grew with the table: 17-20 s once a 500,000-row table passed each
# 122,880-row group (synthetic insert of 1,100 rows a transaction, 128MB pool), long enough for
# the next write to pile up 10-17k rows and run out of pool memory. At 256MB they were 3.5-4.0 s
# every ~95,000 rows and the insert took 76 s instead of 163 s. In a 40,000-sample build with
# the http transport (bench/build_scale.py; about 2.5 GB of log) the store was checkpointed about
# 10 times instead of about 150, no write ran out of pool memory, and the peak was 557 MB (638 MB
# before, after two pool growths); the last checkpoints still took 10-16 s. The
# cost: a log of up to this size on disk next to the store, replayed on the next open after a
# crash (a 232MB log: about 1 s and 200 MB of memory with a 128MB pool).
CHECKPOINT_THRESHOLD = "256MB"
# The most request-cache entries one background write commits in a transaction (Store._write_batch).
CACHE_ROWS_PER_TRANSACTION = 2000
READ_POOL = "128MB"  # read-only opens (export, stats) when FACTORY_DUCKDB_MEMORY is not set
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def _parse_bytes(value: str) -> int | None:
    """'128MB' -> bytes (DuckDB's units; decimal and binary); None for anything else."""
    text = value.strip().upper().replace(" ", "")
    digits = text.rstrip("KMGIB")
    unit = text[len(digits) :]
    try:
        return int(float(digits) * _UNITS[unit])
    except (ValueError, KeyError):
        return None


def _duckdb_config() -> dict[str, str]:
    """DuckDB's settings for a store: `FACTORY_DUCKDB_MEMORY` (default READ_POOL; a written store
    then sizes its pool itself, see Store._size_pool) and, when set, `FACTORY_DUCKDB_THREADS`; a
    value DuckDB would refuse is a one-line StoreError naming it."""
    memory = os.environ.get("FACTORY_DUCKDB_MEMORY", READ_POOL)
    if _parse_bytes(memory) is None and not re.fullmatch(r"\s*\d+(\.\d+)?\s*%\s*", memory):
        raise StoreError(f"FACTORY_DUCKDB_MEMORY={memory!r}: expected a size such as 128MB or 1GiB")
    config = {"memory_limit": memory}
    threads = os.environ.get("FACTORY_DUCKDB_THREADS")
    if threads:
        if not threads.strip().isdigit() or int(threads) < 1:
            raise StoreError(
                f"FACTORY_DUCKDB_THREADS={threads!r}: expected a whole number of threads, 1 or more"
            )
        config["threads"] = threads.strip()
    return config


def out_of_memory(exc: BaseException) -> bool:
    """DuckDB ran out of pool memory: an OutOfMemoryException, or a COMMIT that could not get a
    block (DuckDB reports that one as a failed commit)."""
    text = str(exc)
    return isinstance(exc, duckdb.OutOfMemoryException) or (
        "could not allocate block" in text or "failed to allocate data" in text
    )


class Store:
    def __init__(self, path: Path, *, read_only: bool = False) -> None:
        self.path = Path(path)
        self.read_only = read_only
        if not read_only:
            # Before the database is touched: a journal that cannot be used stops the build here,
            # not after its first rows are written.
            check_journal_path(self.journal_path)
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(
                    f"cannot create the folder {self.path.parent} for {self.path}: {exc.strerror or exc}"
                ) from exc
        # DuckDB's buffer pool defaults to 80% of RAM; a build needs little of it (writes are
        # appends, reads are point lookups), so it is capped to keep a long build's memory flat:
        # READ_POOL for reads, the indexes plus WORKING_ROOM for writes (_size_pool; a journal is
        # replayed REPLAY_CHUNK entries at a time, so replay fits too). Peak RSS of a 3,000-sample
        # build (bench/build_scale.py): 589 MB with 256MB and the default allocators; about 390 MB
        # with 128MB, store/allocators.py and long system prompts stored once (llm_prompts).
        config = _duckdb_config()
        if not read_only:
            limit_allocator_retention()
        if not read_only and self.path.exists() and self.path.stat().st_size > 0:
            # Look before writing: a read-only open changes nothing on disk, so a damaged file or
            # write-ahead log is refused before DuckDB could replay, checkpoint or extend it.
            connect(self.path, read_only=True, config=config).close()
        self.con = connect(self.path, read_only=read_only, config=config)
        self.lock = threading.RLock()
        self._buffers: dict[str, list[dict[str, Any]]] = {}
        self._columns: dict[str, list[str]] = {}
        self._schemas: dict[str, pa.Schema] = {}
        self._last_flush = time.monotonic()
        self._background: concurrent.futures.Future | None = None  # a write in a worker thread
        self._detached: tuple[dict[str, list[dict[str, Any]]], int] | None = None  # its rows, journal length
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self.writes_started = 0  # batches handed to DuckDB (flush or flush_in_background)
        self.writes_committed = 0  # the number of the last batch committed
        self.failed: StoreError | None = None  # set when a write failed for lack of disk space
        self._cache: RequestCache | None = None
        # The PRIMARY KEY indexes live in DuckDB's buffer pool and cannot be evicted (1.6M 32-hex
        # keys filled a 128MB pool), so a written store's pool follows them (_size_pool): the
        # indexes plus WORKING_ROOM, at least FACTORY_DUCKDB_MEMORY when that is set.
        explicit = bool(os.environ.get("FACTORY_DUCKDB_MEMORY"))
        self._base_memory = _parse_bytes(config["memory_limit"]) if explicit else 0
        self._memory_limit: int | None = self._base_memory if explicit else None  # None: as connected
        self._index_bytes = 0
        self._working_room = WORKING_ROOM  # raised when a write ran out of pool memory
        self.pool_growths = 0  # writes retried with a larger pool after DuckDB ran out of memory
        self._cache_index_bytes = CACHE_INDEX_BYTES
        if not read_only:
            try:
                self.con.execute(f"SET checkpoint_threshold = '{CHECKPOINT_THRESHOLD}'").fetchall()
                self._create_tables()
                self._cache_index_bytes = (
                    CACHE_INDEX_BYTES if indexed_by_key_id(self.con) else CACHE_INDEX_BYTES_OLD
                )
                for table, rows in self.con.execute(
                    "SELECT table_name, estimated_size FROM duckdb_tables() WHERE has_primary_key"
                ).fetchall():
                    per_row = self._cache_index_bytes if table == "llm_calls" else SLOT_INDEX_BYTES
                    self._index_bytes += TABLE_INDEX_BYTES + per_row * int(rows or 0)
                self._size_pool(0, 0)
            except BaseException:
                self.con.close()
                raise

    @property
    def journal_path(self) -> Path:
        return self.path.with_suffix(self.path.suffix + ".journal")

    def _create_tables(self) -> None:
        try:
            have = table_names(self.con)
        except duckdb.Error as exc:
            raise open_error(self.path, exc) from exc
        if have and not have & set(FACTORY_TABLES):
            shown = ", ".join(sorted(have)[:5]) + (", ..." if len(have) > 5 else "")
            raise StoreNotBuiltError(
                f"{self.path} is a DuckDB database of something else (it holds {shown}); the factory "
                f"will not add its tables to it: use another --db"
            )
        try:
            for ddl in (*TABLES.values(), CACHE_DDL, *MIGRATIONS):
                self.con.execute(ddl).fetchall()
        except duckdb.Error as exc:
            raise StoreError(f"cannot create the factory tables in {self.path}: {_detail(exc)}") from exc

    @property
    def cache(self) -> RequestCache:
        if self._cache is None:
            # The store decides when to flush (one transaction for cache and tables together).
            self._cache = RequestCache(
                self.con,
                self.journal_path,
                lock=self.lock,
                flush_every=1 << 30,
            )
        return self._cache

    def columns(self, table: str) -> list[str]:
        if table not in self._columns:
            self._columns[table] = [r[0] for r in self.con.execute(f"DESCRIBE {table}").fetchall()]
        return self._columns[table]

    # -- buffered writes ---------------------------------------------------------------------
    def add(self, table: str, row: dict[str, Any]) -> None:
        self._buffers.setdefault(table, []).append(row)

    def maybe_flush(self, every_s: float = 1.0, max_rows: int = 2000) -> None:
        pending = sum(len(v) for v in self._buffers.values()) + (self._cache.pending if self._cache else 0)
        if pending >= max_rows or (pending and time.monotonic() - self._last_flush >= every_s):
            self.flush()

    def flush_in_background(self, every_s: float = 1.0, max_rows: int = 2000) -> None:
        """`maybe_flush` for an event loop: the write runs in a worker thread (DuckDB releases the
        GIL) while the loop goes on sending requests; a DuckDB commit, and the checkpoint it may
        trigger, used to stall every request for up to seconds. Called again, it first collects
        the finished write (raising its error, as `flush` would) and then may start the next.

        The rows being written are out of the buffers, and the cache's entries stay answerable
        from memory until their commit; only then does the journal lose them (RequestCache.detach)."""
        if self._background is not None:
            if not self._background.done():
                return
            self._collect()
        pending = sum(len(v) for v in self._buffers.values()) + (self._cache.pending if self._cache else 0)
        if not (pending >= max_rows or (pending and time.monotonic() - self._last_flush >= every_s)):
            return
        if self.failed is not None:
            raise self.failed
        buffers, self._buffers = self._buffers, {}
        cache_rows, journal_length = self._cache.detach() if self._cache is not None else ([], 0)
        self._detached = (buffers, journal_length)
        self.writes_started += 1
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="store-flush")
        self._background = self._executor.submit(self._write_locked, buffers, cache_rows)

    def _write_locked(
        self, buffers: dict[str, list[dict[str, Any]]], cache_rows: list[dict[str, Any]]
    ) -> None:
        with self.lock:
            self._write_batch(buffers, cache_rows)

    def _collect(self) -> None:
        """Wait for the background write; on success the journal loses what it committed, on
        failure its rows go back to the buffers and the error is raised as `flush` raises it."""
        assert self._background is not None and self._detached is not None
        future, (buffers, journal_length) = self._background, self._detached
        self._background = self._detached = None
        try:
            future.result()
        except BaseException as exc:
            for table, rows in buffers.items():
                self._buffers[table] = rows + self._buffers.get(table, [])
            if self._cache is not None:
                self._cache.reattach()
            if isinstance(exc, duckdb.Error | OSError):
                raise self._write_error(exc) from exc
            raise
        if self._cache is not None:
            self._cache.attached(journal_length)
        self.writes_committed = self.writes_started
        self._last_flush = time.monotonic()

    def _write_error(self, exc: BaseException) -> StoreError:
        if is_disk_full(exc):
            return self.disk_full(exc)
        return StoreError(
            f"cannot write to {self.path}: {_detail(exc)}; the LLM answers are kept in "
            f"{self.journal_path}, so the same command, rerun once this is fixed, pays for "
            f"nothing twice"
        )

    def flush(self) -> None:
        """Write every buffered row (and the cache's pending entries) in one transaction:
        one commit per flush instead of one per table keeps DuckDB's WAL syncs rare.

        A write DuckDB refuses (disk full, the file gone read-only) rolls the transaction back
        and raises StoreError; the buffers and the journal keep everything for a rerun."""
        if self._background is not None:
            self._collect()
        with self.lock:
            if self.failed is not None:
                raise self.failed
            try:
                self._write_batch(self._buffers, None)
            except (duckdb.Error, OSError) as exc:
                raise self._write_error(exc) from exc
            for rows in self._buffers.values():
                rows.clear()
            if self._cache is not None:
                self._cache.after_commit()
            self.writes_started += 1
            self.writes_committed = self.writes_started
        self._last_flush = time.monotonic()

    def _write_batch(
        self, buffers: dict[str, list[dict[str, Any]]], cache_rows: list[dict[str, Any]] | None
    ) -> None:
        """One transaction: the cache's entries (`cache_rows` detached for a background write, or
        None: those pending now) and the buffered rows. If DuckDB runs out of pool memory, the
        transaction is rolled back and written again with a pool POOL_GROWTH times larger (_more_room).

        Detached entries beyond CACHE_ROWS_PER_TRANSACTION go first, in transactions of their own
        (a slow commit lets them pile up, and a transaction's rows stay in the pool until its
        commit); the last of them commits with the buffered rows. An answer committed without its
        slot's rows is safe: the journal keeps every entry until the whole write is done, and a
        rerun's insert of one already stored is ignored."""
        if cache_rows is not None and len(cache_rows) > CACHE_ROWS_PER_TRANSACTION:
            step = CACHE_ROWS_PER_TRANSACTION
            last = (len(cache_rows) - 1) // step * step
            for start in range(0, last, step):
                self._write_retrying({}, cache_rows[start : start + step])
            cache_rows = cache_rows[last:]
        self._write_retrying(buffers, cache_rows)

    def _write_retrying(
        self, buffers: dict[str, list[dict[str, Any]]], cache_rows: list[dict[str, Any]] | None
    ) -> None:
        while True:
            try:
                self._write_transaction(buffers, cache_rows)
                return
            except duckdb.Error as exc:
                if not (out_of_memory(exc) and self._more_room()):
                    raise

    def _write_transaction(
        self, buffers: dict[str, list[dict[str, Any]]], cache_rows: list[dict[str, Any]] | None
    ) -> None:
        cache_n = len(cache_rows) if cache_rows is not None else (self._cache.pending if self._cache else 0)
        slot_n = sum(len(rows) for table, rows in buffers.items() if self._has_pk(table))
        self.con.execute("BEGIN TRANSACTION").fetchall()
        try:
            if self._cache is not None:
                if cache_rows is None:
                    self._cache.flush(commit=False)
                elif cache_rows:
                    self._cache.write_detached(cache_rows)
            for table, rows in buffers.items():
                if not rows:
                    continue
                cols = self.columns(table)
                arrow = pa.Table.from_pylist(
                    [{c: r.get(c) for c in cols} for r in rows], schema=self._arrow_schema(table)
                )
                verb = "INSERT OR REPLACE" if self._has_pk(table) else "INSERT"
                with registered(self.con, "_batch", arrow):
                    self.con.execute(f"{verb} INTO {table} SELECT * FROM _batch").fetchall()
            self.con.execute("COMMIT").fetchall()
            self._size_pool(cache_n, slot_n)
        except BaseException:
            try:
                self.con.execute("ROLLBACK").fetchall()
            except duckdb.Error:
                pass  # an invalidated database (e.g. a failed write) has nothing to roll back
            raise

    def _size_pool(self, cache_rows: int, slot_rows: int) -> None:
        """DuckDB's pool while the store is written: the PRIMARY KEY indexes (estimated from their
        rows) plus WORKING_ROOM, and at least FACTORY_DUCKDB_MEMORY when that is set; in steps of
        POOL_STEP, never lowered once set."""
        self._index_bytes += self._cache_index_bytes * cache_rows + SLOT_INDEX_BYTES * slot_rows
        if self._base_memory is None:
            return  # a limit we cannot read (e.g. a percentage): left as given
        want = max(self._base_memory, self._index_bytes + self._working_room)
        want = -(-want // POOL_STEP) * POOL_STEP
        if self._memory_limit is None or want > self._memory_limit:
            self._memory_limit = want
            self.con.execute(f"SET memory_limit = '{want >> 20}MiB'").fetchall()

    def _more_room(self) -> bool:
        """After DuckDB ran out of pool memory: a pool POOL_GROWTH times larger (at most MAX_POOL),
        kept for the rest of the store's writes; False when it cannot grow (at the cap, or a limit
        given as a share of RAM)."""
        limit = self._memory_limit
        if self._base_memory is None or limit is None or limit >= MAX_POOL:
            return False
        want = min(MAX_POOL, -(-limit * POOL_GROWTH // POOL_STEP) * POOL_STEP)
        self._working_room = max(self._working_room, want - self._index_bytes)
        log.warning(
            "%s: DuckDB's pool (%d MiB) was too small for a write; it is written again with %d MiB",
            self.path,
            limit >> 20,
            want >> 20,
        )
        self._memory_limit = want
        self.con.execute(f"SET memory_limit = '{want >> 20}MiB'").fetchall()
        self.pool_growths += 1
        return True

    def _shutdown_executor(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def _has_pk(self, table: str) -> bool:
        return "PRIMARY KEY" in (TABLES.get(table) or TESTSET_TABLES[table])

    def _arrow_schema(self, table: str) -> pa.Schema:
        if table not in self._schemas:
            self._schemas[table] = self.con.sql(f"SELECT * FROM {table} LIMIT 0").to_arrow_table().schema
        return self._schemas[table]

    # -- reads -------------------------------------------------------------------------------
    def query(self, sql: str, params: list[Any] | None = None) -> list[tuple]:
        with self.lock:
            return self.con.execute(sql, params or []).fetchall()

    def disk_full(self, exc: BaseException) -> StoreError:
        """The store cannot be written for lack of space: no more writes (a failed commit leaves
        what was committed before intact, and unfolded answers stay in the journal)."""
        if self.failed is None:
            quota = "quota" in str(exc).lower() or getattr(exc, "errno", None) == errno.EDQUOT
            self.failed = StoreError(
                f"the disk holding {self.path} is full ({'disk quota exceeded' if quota else 'no space left'}); "
                f"nothing more is written. Everything committed is intact: free some space (or move "
                f"{self.path.name} and its .journal and .wal files to a bigger disk and point --db there) "
                f"and rerun the command to resume."
            )
        return self.failed

    def close(self) -> None:
        """Flush, fold the journal in, checkpoint, close.

        A failed final CHECKPOINT (disk full, typically) is not an error: everything is committed
        by then and kept in the write-ahead log, which DuckDB folds in on the next open."""
        if self.read_only:
            self.con.close()
            return
        if self._background is not None:
            try:
                self._collect()
            except StoreError:
                pass  # self.failed says whether anything more may be written
            finally:
                self._shutdown_executor()
        if self.failed is not None:  # the disk is full: write nothing more, the journal keeps the rest
            if self._cache is not None:
                self._cache.close(flush=False)
            self.con.close()
            return
        self._shutdown_executor()
        self.flush()
        if self._cache is not None:
            self._cache.close()
        try:
            self.con.execute("CHECKPOINT").fetchall()
        except duckdb.Error as exc:
            log.warning(
                "%s: the final checkpoint failed (%s); no data is lost: it is committed in %s, which "
                "the next open folds in (free some disk space first)",
                self.path,
                _detail(exc),
                wal_path(self.path),
            )
        finally:
            try:
                self.con.close()
            except duckdb.Error:
                pass
