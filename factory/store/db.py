"""Open the DuckDB file, create the tables, and write rows in Arrow batches.

Row writes are buffered per table and flushed in batches (DuckDB is fast at bulk inserts and slow
at many tiny ones). Losing a buffer to a crash loses no money: every LLM answer is already in the
request-cache journal, so a rerun rebuilds the missing rows from the cache without a network call.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from factory.llm.cache import RequestCache
from factory.store.tables import MIGRATIONS, TABLES


class StoreError(RuntimeError):
    pass


def is_disk_full(exc: BaseException) -> bool:
    """A write failed for lack of space (an OSError, or DuckDB's error text for one)."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc)
    return "No space left on device" in text or "Disk quota exceeded" in text


class Store:
    def __init__(self, path: Path, *, read_only: bool = False) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # DuckDB's buffer pool defaults to 80% of RAM; a build needs little of it (writes are
        # appends, reads are point lookups), so cap it to keep a 40k-sample build's memory flat.
        config = {"memory_limit": os.environ.get("FACTORY_DUCKDB_MEMORY", "512MB")}
        try:
            self.con = duckdb.connect(str(self.path), read_only=read_only, config=config)
        except duckdb.IOException as exc:
            raise StoreError(
                f"cannot open {self.path}: {exc} (is another factory process using it?)"
            ) from exc
        self.lock = threading.RLock()
        self.read_only = read_only
        self._buffers: dict[str, list[dict[str, Any]]] = {}
        self._columns: dict[str, list[str]] = {}
        self._schemas: dict[str, pa.Schema] = {}
        self._last_flush = time.monotonic()
        self.failed: StoreError | None = None  # set when a write failed for lack of disk space
        if not read_only:
            for ddl in (*TABLES.values(), *MIGRATIONS):
                self.con.execute(ddl).fetchall()
        self._cache: RequestCache | None = None

    @property
    def cache(self) -> RequestCache:
        if self._cache is None:
            # The store decides when to flush (one transaction for cache and tables together).
            self._cache = RequestCache(
                self.con,
                self.path.with_suffix(self.path.suffix + ".journal"),
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

    def flush(self) -> None:
        """Write every buffered row (and the cache's pending entries) in one transaction:
        one commit per flush instead of one per table keeps DuckDB's WAL syncs rare."""
        with self.lock:
            if self.failed is not None:
                raise self.failed
            self.con.execute("BEGIN TRANSACTION").fetchall()
            try:
                if self._cache is not None:
                    self._cache.flush(commit=False)
                for table, rows in self._buffers.items():
                    if not rows:
                        continue
                    cols = self.columns(table)
                    arrow = pa.Table.from_pylist(
                        [{c: r.get(c) for c in cols} for r in rows], schema=self._arrow_schema(table)
                    )
                    self.con.register("_batch", arrow)
                    try:
                        verb = "INSERT OR REPLACE" if self._has_pk(table) else "INSERT"
                        self.con.execute(f"{verb} INTO {table} SELECT * FROM _batch").fetchall()
                    finally:
                        self.con.unregister("_batch")
                self.con.execute("COMMIT").fetchall()
            except BaseException as exc:
                try:
                    self.con.execute("ROLLBACK").fetchall()
                except duckdb.Error:
                    pass  # a COMMIT that failed has rolled back already: keep the first error
                if isinstance(exc, Exception) and is_disk_full(exc):
                    raise self.disk_full(exc) from exc
                raise
            for rows in self._buffers.values():
                rows.clear()
            if self._cache is not None:
                self._cache.after_commit()
        self._last_flush = time.monotonic()

    def _has_pk(self, table: str) -> bool:
        return "PRIMARY KEY" in TABLES[table]

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
        try:
            if not self.read_only and self.failed is None:
                try:
                    self.flush()
                    if self._cache is not None:
                        self._cache.close()
                    self.con.execute("CHECKPOINT").fetchall()
                except Exception as exc:
                    if is_disk_full(exc):  # what was committed is in the WAL, replayed on open
                        raise self.disk_full(exc) from exc
                    raise
        finally:
            if self._cache is not None:
                self._cache.close(flush=False)
            self.con.close()
