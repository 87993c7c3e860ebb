"""The batch ledger: every submitted batch job and the requests it holds, in the build's DuckDB file.

A job is recorded the moment the provider returns its id, before it is polled, in its own committed
statement (not the store's buffered writes), so a build killed at any point after a submission
finds the job again on rerun and collects its results instead of paying for them twice.

Tables (created here, like `llm_calls` by the request cache):
  batch_jobs      one row per job: job_id, endpoint (provider:model), base_url, submitted_at,
                  requests, state (submitted | running | ended | expired | failed | cancelled |
                  collected), finished_at, detail
  batch_requests  one row per (job, request): job_id, key (the request-cache key, sent as the
                  job's custom id), stage, prompt_hash, slot

`collected` means every request of the job has its answer in `llm_calls` (or was resent): the job
is never looked at again.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import duckdb
import pyarrow as pa

from factory.duckdb_views import registered

BATCH_DDL = """
CREATE TABLE IF NOT EXISTS batch_jobs (
    job_id VARCHAR PRIMARY KEY,
    endpoint VARCHAR,
    base_url VARCHAR,
    submitted_at DOUBLE,
    requests BIGINT,
    state VARCHAR,
    finished_at DOUBLE,
    detail VARCHAR
);
CREATE TABLE IF NOT EXISTS batch_requests (
    job_id VARCHAR,
    key VARCHAR,
    stage VARCHAR,
    prompt_hash VARCHAR,
    slot BIGINT
);
"""

BATCH_TABLES = ("batch_jobs", "batch_requests")


@dataclass(frozen=True)
class JobRecord:
    job_id: str
    state: str
    keys: tuple[str, ...]


@dataclass(frozen=True)
class RequestMeta:
    key: str
    stage: str
    prompt_hash: str
    slot: int | None


class BatchLedger:
    """Reads and writes the batch tables on the build's connection (under the store's lock)."""

    def __init__(self, con: duckdb.DuckDBPyConnection, lock: threading.RLock) -> None:
        self.con = con
        self.lock = lock
        with self.lock:
            self.con.execute(BATCH_DDL).fetchall()

    def record_job(self, job_id: str, endpoint: str, base_url: str, requests: list[RequestMeta]) -> None:
        """The job and its requests, committed before anything else happens to the job."""
        rows = pa.table(
            {
                "job_id": [job_id] * len(requests),
                "key": [r.key for r in requests],
                "stage": [r.stage for r in requests],
                "prompt_hash": [r.prompt_hash for r in requests],
                "slot": pa.array([r.slot for r in requests], type=pa.int64()),
            }
        )
        with self.lock:
            self.con.execute("BEGIN TRANSACTION").fetchall()
            try:
                self.con.execute(
                    "INSERT OR REPLACE INTO batch_jobs VALUES (?, ?, ?, ?, ?, 'submitted', NULL, '')",
                    [job_id, endpoint, base_url, time.time(), len(requests)],
                ).fetchall()
                with registered(self.con, "_batch_requests", rows):
                    self.con.execute("INSERT INTO batch_requests SELECT * FROM _batch_requests").fetchall()
                self.con.execute("COMMIT").fetchall()
            except BaseException:
                try:
                    self.con.execute("ROLLBACK").fetchall()
                except duckdb.Error:
                    pass
                raise

    def set_state(self, job_id: str, state: str, detail: str = "") -> None:
        finished = state not in ("submitted", "running")
        with self.lock:
            self.con.execute(
                "UPDATE batch_jobs SET state = ?, detail = ?, finished_at = CASE WHEN ? THEN "
                "coalesce(finished_at, ?) ELSE finished_at END WHERE job_id = ?",
                [state, detail[:500], finished, time.time(), job_id],
            ).fetchall()

    def open_jobs(self, endpoint: str, base_url: str) -> list[JobRecord]:
        """Jobs of this endpoint whose answers may not all be in the cache yet, oldest first."""
        with self.lock:
            jobs = self.con.execute(
                "SELECT job_id, state FROM batch_jobs WHERE endpoint = ? AND base_url = ? "
                "AND state <> 'collected' ORDER BY submitted_at",
                [endpoint, base_url],
            ).fetchall()
            out = []
            for job_id, state in jobs:
                keys = self.con.execute(
                    "SELECT key FROM batch_requests WHERE job_id = ?", [job_id]
                ).fetchall()
                out.append(JobRecord(job_id=job_id, state=state, keys=tuple(k for (k,) in keys)))
        return out
