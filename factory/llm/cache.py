"""Persistent request cache: a call that was paid for once is never paid for again.

Entries live in the DuckDB table `llm_calls`, which is also the ledger of every paid call with its
stage, prompt hash, tokens and cost (queryable with plain SQL). To survive SIGKILL without
an fsync'd database write per call, every completion is first appended to a journal file next to
the database (one JSON line, written with a single `os.write` on an O_APPEND descriptor, so it is
in the kernel's page cache the moment the call returns). The journal is folded into DuckDB in
batches while running and on open, and then truncated. A torn last line (power loss mid-write) is
skipped on replay.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow as pa

from factory.llm.types import RawCompletion, Usage

CACHE_DDL = """
CREATE TABLE IF NOT EXISTS llm_calls (
    key VARCHAR PRIMARY KEY,
    provider VARCHAR,
    model VARCHAR,
    stage VARCHAR,
    prompt_hash VARCHAR,
    request_json VARCHAR,
    text VARCHAR,
    finish_reason VARCHAR,
    input_tokens BIGINT,
    output_tokens BIGINT,
    cost_usd DOUBLE,
    latency_s DOUBLE,
    response_model VARCHAR,
    created_at DOUBLE
)
"""

_COLUMNS = [
    "key",
    "provider",
    "model",
    "stage",
    "prompt_hash",
    "request_json",
    "text",
    "finish_reason",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "latency_s",
    "response_model",
    "created_at",
]


class RequestCache:
    """DuckDB-backed cache with a crash-safe journal. One instance per process and database."""

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        journal_path: Path,
        flush_every: int = 512,
        lock: threading.RLock | None = None,
    ) -> None:
        self.con = con
        self.lock = lock or threading.RLock()
        self.journal_path = journal_path
        self.flush_every = flush_every
        with self.lock:
            self.con.execute(CACHE_DDL).fetchall()
        self._replay_journal()
        with self.lock:
            self._keys: set[str] = {r[0] for r in self.con.execute("SELECT key FROM llm_calls").fetchall()}
        self._pending: dict[str, dict[str, Any]] = {}
        self._fd = os.open(journal_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._flushed = False
        self.hits = 0
        self.misses = 0

    # -- lookups ---------------------------------------------------------------------------
    @property
    def pending(self) -> int:
        return len(self._pending)

    def __contains__(self, key: str) -> bool:
        return key in self._keys or key in self._pending

    def get(self, key: str) -> RawCompletion | None:
        row = self._pending.get(key)
        if row is None:
            if key not in self._keys:
                self.misses += 1
                return None
            with self.lock:
                # fetchall, never fetchone: DuckDB refuses register() while a result is unfinished
                rows = self.con.execute(
                    "SELECT text, finish_reason, input_tokens, output_tokens, response_model "
                    "FROM llm_calls WHERE key = ?",
                    [key],
                ).fetchall()
            res = rows[0] if rows else None
            if res is None:
                self.misses += 1
                return None
            self.hits += 1
            return RawCompletion(
                text=res[0],
                finish_reason=res[1] or "stop",
                usage=Usage(input_tokens=res[2] or 0, output_tokens=res[3] or 0),
                model=res[4] or "",
            )
        self.hits += 1
        return RawCompletion(
            text=row["text"],
            finish_reason=row["finish_reason"],
            usage=Usage(input_tokens=row["input_tokens"], output_tokens=row["output_tokens"]),
            model=row["response_model"],
        )

    # -- writes ----------------------------------------------------------------------------
    def put(
        self,
        key: str,
        *,
        provider: str,
        model: str,
        stage: str,
        prompt_hash: str,
        request_json: str,
        completion: RawCompletion,
        cost_usd: float,
        latency_s: float,
    ) -> None:
        row = {
            "key": key,
            "provider": provider,
            "model": model,
            "stage": stage,
            "prompt_hash": prompt_hash,
            "request_json": request_json,
            "text": completion.text,
            "finish_reason": completion.finish_reason,
            "input_tokens": completion.usage.input_tokens,
            "output_tokens": completion.usage.output_tokens,
            "cost_usd": cost_usd,
            "latency_s": latency_s,
            "response_model": completion.model,
            "created_at": time.time(),
        }
        line = orjson.dumps(row) + b"\n"
        if os.write(self._fd, line) != len(line):  # a short write: the disk is full, the line is torn
            raise OSError(errno.ENOSPC, f"short write to {self.journal_path}: no space left on device")
        self._pending[key] = row
        if len(self._pending) >= self.flush_every:
            self.flush()

    def flush(self, commit: bool = True) -> None:
        """Move pending entries into DuckDB. With commit=False the caller owns the transaction
        and must call after_commit() once it has committed (the journal is truncated only then)."""
        if not self._pending:
            return
        self._insert(list(self._pending.values()))
        self._flushed = True
        if commit:
            self.after_commit()

    def after_commit(self) -> None:
        if not self._flushed:
            return
        self._keys.update(self._pending.keys())
        self._pending.clear()
        os.ftruncate(self._fd, 0)
        self._flushed = False

    def close(self, flush: bool = True) -> None:
        """Flush pending entries and close the journal. flush=False when the database cannot be
        written (disk full): the journal keeps the pending entries for the next run."""
        if flush:
            self.flush()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    # -- internals -------------------------------------------------------------------------
    def _insert(self, rows: list[dict[str, Any]]) -> None:
        table = pa.Table.from_pylist(rows).select(_COLUMNS)
        with self.lock:
            self.con.register("_calls_batch", table)
            try:
                self.con.execute("INSERT OR IGNORE INTO llm_calls SELECT * FROM _calls_batch").fetchall()
            finally:
                self.con.unregister("_calls_batch")

    def _replay_journal(self) -> None:
        if not self.journal_path.exists():
            return
        rows: dict[str, dict[str, Any]] = {}
        with open(self.journal_path, "rb") as fh:
            for line in fh:
                try:
                    row = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue  # torn write at the tail
                if isinstance(row, dict) and set(_COLUMNS) <= row.keys():
                    rows[row["key"]] = row
        if rows:
            self._insert(list(rows.values()))
        os.truncate(self.journal_path, 0)
