"""Persistent request cache: a call that was paid for once is never paid for again.

Entries live in the DuckDB table `llm_calls`, which is also the ledger of every paid call with its
stage, prompt hash, tokens and cost (queryable with plain SQL). To survive SIGKILL without
an fsync'd database write per call, every completion is first appended to a journal file next to
the database (one JSON line, written with a single `os.write` on an O_APPEND descriptor, so it is
in the kernel's page cache the moment the call returns). The journal is folded into DuckDB in
batches while running and on open, and then truncated. A torn last line (power loss mid-write) is
skipped on replay silently; any other line that is not a complete, well-typed entry is skipped with
a warning naming the journal and the line, and kept in `<journal>.rejected`, never fatal.

`reasoning` holds the model's own reasoning when the provider returned it (empty otherwise). It was
added after the first files were written: opening an older file adds the column (NULL, read back as
""), and journal lines written without the key replay with an empty reasoning. `cached_input_tokens`
(prompt tokens the provider read from its prompt cache, part of `input_tokens`) came later still and
is handled the same way (NULL / missing reads as 0). `slot` (the build slot the call served, NULL
outside builds) came with the Ray executor: a worker cannot open the database, so the driver sends
each slot's earlier answers with the slot (`rows_for_slot`).

Long system prompts (every stage sends the same one on each call) are stored once, in
`llm_prompts(digest, content)`; a row's `system_ref` names its system prompt and `request_json`
holds the other messages (NULL `system_ref`: `request_json` is the whole request, as in files
from before this, and in the journal, which always holds whole requests). The view
`llm_requests(key, stage, slot, request_json)` puts them back together; `full_request_json` does
the same in Python, byte for byte as the client serialised them.

Workers that cannot open the database (`DetachedCache`, the Ray executor's) journal each answer to
a per-slot file under `<journal>.ray/` (same line format) before they use it; the driver folds an
absorbed slot's answers into its own journal and removes the file, and every open replays what is
left there (a driver or worker killed mid-slot).
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow as pa

from factory.duckdb_views import registered
from factory.errors import ConfigError
from factory.llm.types import RawCompletion, Usage

log = logging.getLogger(__name__)

CACHE_DDL = """
CREATE TABLE IF NOT EXISTS llm_calls (
    key VARCHAR,
    provider VARCHAR,
    model VARCHAR,
    stage VARCHAR,
    prompt_hash VARCHAR,
    request_json VARCHAR USING COMPRESSION zstd,
    text VARCHAR USING COMPRESSION zstd,
    finish_reason VARCHAR,
    input_tokens BIGINT,
    output_tokens BIGINT,
    cost_usd DOUBLE,
    latency_s DOUBLE,
    response_model VARCHAR,
    created_at DOUBLE,
    reasoning VARCHAR,
    cached_input_tokens BIGINT,
    slot BIGINT,
    system_ref VARCHAR,
    key_id UHUGEINT PRIMARY KEY
)
"""

# The index the cache looks keys up by is on `key_id` (md5_number(key), 128 bits), not on the
# 32-character key itself: DuckDB's ART index cannot be evicted from its pool, and with random keys
# every insert touches all of it, so it is the part of a build's memory that grows with N. Measured
# (inserts of 440 random keys at a time, peak ART memory): 31.5 MiB for 440k VARCHAR keys, 20.8 MiB
# for their UHUGEINT ids. Files created before keep their index on `key` (KEY_LOOKUP_OLD).
KEY_LOOKUP = "key_id = md5_number(?)"
KEY_LOOKUP_OLD = "key = ?"


def indexed_by_key_id(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether this file's llm_calls has `key_id` (its index) or is from before it (indexed by key)."""
    return bool(
        con.execute(
            "SELECT 1 FROM duckdb_columns() WHERE table_name = 'llm_calls' AND column_name = 'key_id' "
            "AND schema_name = current_schema()"
        ).fetchall()
    )


# Columns added after the first release, for files created before them (CREATE TABLE IF NOT EXISTS
# leaves an existing table as it is).
CACHE_MIGRATIONS = (
    "ALTER TABLE llm_calls ADD COLUMN IF NOT EXISTS reasoning VARCHAR",
    "ALTER TABLE llm_calls ADD COLUMN IF NOT EXISTS cached_input_tokens BIGINT",
    "ALTER TABLE llm_calls ADD COLUMN IF NOT EXISTS slot BIGINT",
    "ALTER TABLE llm_calls ADD COLUMN IF NOT EXISTS system_ref VARCHAR",
    "CREATE TABLE IF NOT EXISTS llm_prompts (digest VARCHAR PRIMARY KEY, content VARCHAR)",
    # every call's messages in full, the system prompt put back in place (for people and SQL)
    """CREATE OR REPLACE VIEW llm_requests AS
    SELECT c.key, c.stage, c.slot,
        CASE WHEN c.system_ref IS NULL THEN c.request_json
             ELSE '[{"role":"system","content":' || to_json(p.content)::VARCHAR || '}'
                  || CASE WHEN c.request_json = '[]' THEN ']' ELSE ',' || c.request_json[2:] END
        END AS request_json
    FROM llm_calls c LEFT JOIN llm_prompts p ON p.digest = c.system_ref""",
)

# request_json and text are compressed with zstd: DuckDB's own choice for them was "Uncompressed"
# once the system prompts left request_json (60,000 rows of a 40k build: 139 MB with its choice,
# 23.5 MB with zstd, and less CPU to write). Files created before keep their columns as they were.
#
# A system prompt this long or longer is stored once in `llm_prompts` and referenced by digest
# from `llm_calls.system_ref` (with the other messages in `request_json`): each stage's system
# prompt is the same text on every call and was 80-90% of the bytes DuckDB had to compress (6.6 KB
# a call, 853 MB for a 10k-sample build; inserting 30,000 rows took 11.3 s of CPU with it inline,
# 1.0 s without).
SYSTEM_PROMPT_MIN_CHARS = 256
_SYSTEM_PREFIX = '[{"role":"system","content":'

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
    "reasoning",
    "cached_input_tokens",
    "slot",
    "system_ref",
]

_STR_COLUMNS = (
    "key",
    "provider",
    "model",
    "stage",
    "prompt_hash",
    "request_json",
    "text",
    "finish_reason",
    "response_model",
    "reasoning",
)
_INT_COLUMNS = ("input_tokens", "output_tokens", "cached_input_tokens")
_FLOAT_COLUMNS = ("cost_usd", "latency_s", "created_at")
_INT64 = 1 << 63
_WARN_LINES = 5  # journal lines warned about one by one; the rest are counted
# journal entries per INSERT on replay (bounded memory: 2,000 entries of 6 KB need 80-96MB)
REPLAY_CHUNK = 500


class KeyFilter:
    """A fixed-size Bloom filter over cache keys: "surely not cached" answered in memory.

    The request cache used to hold every key of `llm_calls` in a Python set, which grows with the
    dataset (about 130 bytes per call). This filter takes `2**bits` bits whatever the number of
    keys; a key it has never seen is answered "no" without touching DuckDB, and a "maybe" is
    settled by a point lookup in the table. With the default 2**26 bits (8 MiB) and 4 probes, one
    miss in 80,000 pays a needless lookup at a million calls, one in 25 at ten million.

    Keys are hex digests (`request_key`), so the probes are slices of the key itself; any other
    string is hashed first.
    """

    PROBES = 4

    def __init__(self, bits: int = 26) -> None:
        assert self.PROBES * bits <= 128
        self._width = bits
        self._mask = (1 << bits) - 1
        self._bits = bytearray(1 << (bits - 3))

    def _hash(self, key: str) -> int:
        """128 bits: the key's own (a hex digest), else a blake2b of it; probe i takes bits
        [i * width, (i + 1) * width) of it."""
        try:
            return int(key[:32], 16) if len(key) >= 32 else self._digest(key)
        except ValueError:
            return self._digest(key)

    @staticmethod
    def _digest(key: str) -> int:
        return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=16).digest(), "big")

    def add(self, key: str) -> None:
        h, bits, width, mask = self._hash(key), self._bits, self._width, self._mask
        for _ in range(self.PROBES):
            p = h & mask
            bits[p >> 3] |= 1 << (p & 7)
            h >>= width

    def __contains__(self, key: str) -> bool:
        h, bits, width, mask = self._hash(key), self._bits, self._width, self._mask
        for _ in range(self.PROBES):
            p = h & mask
            if not bits[p >> 3] & (1 << (p & 7)):
                return False
            h >>= width
        return True


def check_journal_path(path: Path) -> None:
    """Raise ConfigError (naming the path) unless `path` is absent or a regular file."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ConfigError(f"{path}: the request journal cannot be used: {exc.strerror or exc}") from exc
    if stat.S_ISDIR(mode):
        raise ConfigError(
            f"{path}: the request journal must be a file, but this is a folder; move it away "
            f"(the factory never deletes it)"
        )
    if not stat.S_ISREG(mode):
        raise ConfigError(f"{path}: the request journal must be a regular file")


def journal_row_problem(row: Any) -> str | None:
    """Why a decoded journal line is not a usable cache entry, or None when it is."""
    if not isinstance(row, dict):
        return f"expected a JSON object, got {type(row).__name__}"
    row.setdefault("reasoning", "")  # lines written before the reasoning column replay without it
    if row.get("cached_input_tokens") is None:  # likewise lines from before cached-token accounting
        row["cached_input_tokens"] = 0
    row.setdefault("slot", None)  # and lines from before the slot column
    row.setdefault("system_ref", None)  # journal lines hold the whole request
    missing = [c for c in _COLUMNS if c not in row]
    if missing:
        return "missing " + ", ".join(missing)
    for col in _STR_COLUMNS:
        if not isinstance(row[col], str):
            return f"{col} is {type(row[col]).__name__}, expected a string"
    if not row["key"]:
        return "empty key"
    for col in _INT_COLUMNS:
        value = row[col]
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < _INT64:
            return f"{col} is {value!r}, expected a non-negative integer"
    for col in _FLOAT_COLUMNS:
        value = row[col]
        if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
            return f"{col} is {value!r}, expected a number"
    if row["system_ref"] is not None and not isinstance(row["system_ref"], str):
        return f"system_ref is {type(row['system_ref']).__name__}, expected a string or null"
    slot = row["slot"]
    if slot is not None and (isinstance(slot, bool) or not isinstance(slot, int) or not 0 <= slot < _INT64):
        return f"slot is {slot!r}, expected a non-negative integer or null"
    return None


def ray_journal_dir(journal_path: Path) -> Path:
    """Where detached (Ray worker) caches journal their answers: one file per slot."""
    return journal_path.with_name(journal_path.name + ".ray")


def slot_journal_path(journal_path: Path, slot: int) -> Path:
    return ray_journal_dir(journal_path) / f"slot-{slot}.jsonl"


def journal_row(
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
    slot: int | None = None,
) -> dict[str, Any]:
    """One cache entry: a journal line and an `llm_calls` row."""
    return {
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
        "reasoning": completion.reasoning,
        "cached_input_tokens": completion.usage.cached_input_tokens,
        "slot": slot,
        "system_ref": None,  # set when the row goes into DuckDB (split_system_prompt)
    }


def prompt_digest(content: str) -> str:
    return hashlib.blake2b(content.encode(), digest_size=16).hexdigest()


def split_system_prompt(request_json: str) -> tuple[str, str | None]:
    """(the other messages, the system prompt) of a request whose first message is a long system
    prompt; (request_json, None) for any other."""
    if not request_json.startswith(_SYSTEM_PREFIX):
        return request_json, None
    try:
        messages = orjson.loads(request_json)
    except orjson.JSONDecodeError:
        return request_json, None
    first = messages[0] if isinstance(messages, list) and messages else None
    if (
        not isinstance(first, dict)
        or list(first) != ["role", "content"]
        or not isinstance(first["content"], str)
        or len(first["content"]) < SYSTEM_PROMPT_MIN_CHARS
    ):
        return request_json, None
    return orjson.dumps(messages[1:]).decode(), first["content"]


def full_request_json(request_json: str, system: str | None) -> str:
    """The request's messages as the client serialised them, from `llm_calls.request_json` and the
    `llm_prompts.content` its `system_ref` names (None: request_json is whole)."""
    if system is None:
        return request_json
    return orjson.dumps([{"role": "system", "content": system}, *orjson.loads(request_json)]).decode()


def completion_of(row: dict[str, Any]) -> RawCompletion:
    """The cached answer of a journal line or `llm_calls` row."""
    return RawCompletion(
        text=row["text"],
        finish_reason=row["finish_reason"] or "stop",
        usage=Usage(
            input_tokens=row["input_tokens"] or 0,
            output_tokens=row["output_tokens"] or 0,
            cached_input_tokens=row.get("cached_input_tokens") or 0,
        ),
        model=row["response_model"] or "",
        reasoning=row.get("reasoning") or "",
    )


def append_line(fd: int, path: Path, row: dict[str, Any]) -> None:
    """One journal line with one `os.write` on an O_APPEND descriptor (in the page cache on return)."""
    line = orjson.dumps(row) + b"\n"
    if os.write(fd, line) != len(line):  # a short write: the disk is full, the line is torn
        raise OSError(errno.ENOSPC, f"short write to {path}: no space left on device")


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
        self.rejected = 0  # journal lines skipped on replay (not counting a torn last line)
        self._prompt_digests: dict[str, str] = {}  # system prompt -> digest, for _split_prompts
        check_journal_path(journal_path)
        with self.lock:
            self.con.execute(CACHE_DDL).fetchall()
            for statement in CACHE_MIGRATIONS:
                self.con.execute(statement).fetchall()
            self.by_key_id = indexed_by_key_id(self.con)
        columns = ", ".join(_COLUMNS)
        if self.by_key_id:
            self._lookup = KEY_LOOKUP
            self._insert_sql = f"INSERT OR IGNORE INTO llm_calls ({columns}, key_id) SELECT *, md5_number(key) FROM _calls_batch"
        else:
            self._lookup = KEY_LOOKUP_OLD
            self._insert_sql = f"INSERT OR IGNORE INTO llm_calls ({columns}) SELECT * FROM _calls_batch"
        self._replay_journal()
        self._keys = KeyFilter()  # keys in llm_calls (a Bloom filter: memory does not grow with N)
        with self.lock:
            cur = self.con.execute("SELECT key FROM llm_calls")
            while rows := cur.fetchmany(65536):
                for (key,) in rows:
                    self._keys.add(key)
        self._pending: dict[str, dict[str, Any]] = {}
        self._pending_slots: set[int] = set()
        with self.lock:
            self._max_slot: int | None = self.con.execute("SELECT max(slot) FROM llm_calls").fetchall()[0][0]
        # entries handed to a write running in the background (detach): still answered from here
        self._flushing: dict[str, dict[str, Any]] = {}
        try:
            self._fd = os.open(journal_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as exc:
            raise ConfigError(
                f"{journal_path}: cannot open the request journal for writing: {exc.strerror or exc}"
            ) from exc
        self._flushed = False
        self.hits = 0
        self.misses = 0

    # -- lookups ---------------------------------------------------------------------------
    @property
    def pending(self) -> int:
        return len(self._pending)

    def __contains__(self, key: str) -> bool:
        if key in self._pending or key in self._flushing:
            return True
        if key not in self._keys:
            return False
        return self._stored(key, "1") is not None

    def _stored(self, key: str, columns: str) -> tuple | None:
        """`columns` of the stored entry for `key` (a point lookup through the table's index), or None.
        The key itself is compared too: `key_id` is a 128-bit digest of it."""
        with self.lock:
            # fetchall, never fetchone: DuckDB refuses register() while a result is unfinished
            rows = self.con.execute(
                f"SELECT key, {columns} FROM llm_calls WHERE {self._lookup}", [key]
            ).fetchall()
        return next((row[1:] for row in rows if row[0] == key), None)

    def get(self, key: str) -> RawCompletion | None:
        row = self._pending.get(key) or self._flushing.get(key)
        if row is None:
            if key not in self._keys:
                self.misses += 1
                return None
            res = self._stored(
                key,
                "text, finish_reason, input_tokens, output_tokens, response_model, reasoning, cached_input_tokens",
            )
            if res is None:
                self.misses += 1
                return None
            self.hits += 1
            return RawCompletion(
                text=res[0],
                finish_reason=res[1] or "stop",
                usage=Usage(
                    input_tokens=res[2] or 0, output_tokens=res[3] or 0, cached_input_tokens=res[6] or 0
                ),
                model=res[4] or "",
                reasoning=res[5] or "",
            )
        self.hits += 1
        return completion_of(row)

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
        slot: int | None = None,
    ) -> None:
        row = journal_row(
            key,
            provider=provider,
            model=model,
            stage=stage,
            prompt_hash=prompt_hash,
            request_json=request_json,
            completion=completion,
            cost_usd=cost_usd,
            latency_s=latency_s,
            slot=slot,
        )
        self._append(row)

    def put_row(self, row: dict[str, Any]) -> bool:
        """Journal a complete entry (e.g. one a Ray worker journaled and sent back); False, and
        nothing written, when the key is cached already."""
        if row["key"] in self:
            return False
        self._append(row)
        return True

    def _append(self, row: dict[str, Any]) -> None:
        key = row["key"]
        append_line(self._fd, self.journal_path, row)
        self._pending[key] = row
        if row.get("slot") is not None:
            self._pending_slots.add(row["slot"])
        if len(self._pending) >= self.flush_every:
            self.flush()

    def rows_for_slot(self, slot: int) -> list[dict[str, Any]]:
        """Every cached entry recorded for a build slot (stored or pending): what a worker that
        cannot open the database gets to answer that slot's requests from."""
        rows: dict[str, dict[str, Any]] = {}
        if self._max_slot is not None and slot <= self._max_slot:
            with self.lock:
                cur = self.con.execute(f"SELECT {', '.join(_COLUMNS)} FROM llm_calls WHERE slot = ?", [slot])
                for values in cur.fetchall():
                    rows[values[0]] = dict(zip(_COLUMNS, values, strict=True))
        if slot in self._pending_slots:  # not in DuckDB yet: pending, or in a background write
            for source in (self._flushing, self._pending):
                rows.update({k: r for k, r in source.items() if r.get("slot") == slot})
        return list(rows.values())

    def absorb_slot_journals(self) -> int:
        """Fold every slot's detached journal into this cache (the end of a Ray build: slots still
        running when it reached N, or cancelled, leave theirs). Returns the entries new to it."""
        folder = ray_journal_dir(self.journal_path)
        if not folder.is_dir():
            return 0
        new = 0
        for path in sorted(folder.glob("slot-*.jsonl")):
            try:
                slot = int(path.stem.removeprefix("slot-"))
            except ValueError:
                continue
            new += self.absorb_slot_journal(slot)
        return new

    def absorb_slot_journal(self, slot: int) -> int:
        """Fold a slot's detached journal (a worker's, left by a crash or a cancelled call) into
        this cache and remove it. Returns the entries new to the cache."""
        path = slot_journal_path(self.journal_path, slot)
        if not path.exists():
            return 0
        new = sum(self.put_row(row) for rows in self._read_journal(path) for row in rows.values())
        path.unlink(missing_ok=True)
        return new

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
        for key in self._pending:
            self._keys.add(key)
        for row in self._pending.values():
            if row.get("slot") is not None:
                self._max_slot = max(self._max_slot if self._max_slot is not None else -1, row["slot"])
        self._pending.clear()
        self._pending_slots.clear()
        os.ftruncate(self._fd, 0)
        self._flushed = False

    # -- writes in the background (Store.flush_in_background) ---------------------------------
    def detach(self) -> tuple[list[dict[str, Any]], int]:
        """Hand the pending entries to a write that runs elsewhere: returns them and the journal's
        length, which covers every one of them. They are still answered from memory until
        `attached(length)` (committed: the journal loses that prefix) or `reattach()` (failed)."""
        assert not self._flushing, "one background write at a time"
        self._flushing, self._pending = self._pending, {}
        return list(self._flushing.values()), os.fstat(self._fd).st_size

    def write_detached(self, rows: list[dict[str, Any]]) -> None:
        """Insert detached entries (in the caller's transaction; any thread, under the lock)."""
        self._insert(rows)

    def attached(self, journal_length: int) -> None:
        """The detached entries are committed: index their keys, cut them out of the journal."""
        for key, row in self._flushing.items():
            self._keys.add(key)
            if row.get("slot") is not None:
                self._max_slot = max(self._max_slot if self._max_slot is not None else -1, row["slot"])
        self._flushing = {}
        self._pending_slots = {r["slot"] for r in self._pending.values() if r.get("slot") is not None}
        self._cut_journal(journal_length)

    def reattach(self) -> None:
        """The background write failed: the detached entries are pending again (the journal still
        holds them)."""
        self._pending = {**self._flushing, **self._pending}
        self._flushing = {}

    def _cut_journal(self, length: int) -> None:
        """Drop the journal's first `length` bytes (entries now in DuckDB), keeping what was
        appended since: the rest is copied to a new file that replaces the journal atomically, so
        a crash at any point leaves every uncommitted entry in a journal (a committed one replayed
        again is ignored). If the copy cannot be written, the journal stays whole."""
        if os.fstat(self._fd).st_size <= length:
            os.ftruncate(self._fd, 0)
            return
        path = self.journal_path
        tmp = path.with_name(path.name + ".tmp")
        try:
            with open(path, "rb") as fh:
                fh.seek(length)
                rest = fh.read()
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                if os.write(fd, rest) != len(rest):
                    raise OSError(errno.ENOSPC, "short write")
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("%s: kept whole (%s); its committed entries are skipped on replay", path, exc)
            return
        new_fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.close(self._fd)
        self._fd = new_fd

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
        rows, prompts = self._split_prompts(rows)
        table = pa.Table.from_pylist(rows).select(_COLUMNS)
        with self.lock:
            if prompts:
                self.con.executemany(
                    "INSERT OR IGNORE INTO llm_prompts VALUES (?, ?)", [[d, c] for d, c in prompts.items()]
                )
            with registered(self.con, "_calls_batch", table):
                # columns by name: the insert does not depend on the table's column order
                self.con.execute(self._insert_sql).fetchall()

    def _split_prompts(self, rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, str]]:
        """The rows as stored (long system prompts replaced by their digest) and the prompts of
        this batch not stored yet. The rows given are not changed (they may still be served)."""
        out: list[dict[str, Any]] = []
        new: dict[str, str] = {}
        known = self._prompt_digests
        for row in rows:
            if row.get("system_ref") is not None:
                out.append(row)
                continue
            rest, system = split_system_prompt(row["request_json"])
            if system is None:
                out.append(row)
                continue
            digest = known.get(system)
            if digest is None:
                if len(known) > 4096:
                    known.clear()  # bounded: a build has a handful of distinct system prompts
                digest = known[system] = prompt_digest(system)
            # each batch stores its own prompts (INSERT OR IGNORE keeps the first), so a batch that
            # was rolled back leaves no row pointing at a prompt that is not there
            new[digest] = system
            out.append({**row, "request_json": rest, "system_ref": digest})
        return out, new

    def _replay_journal(self) -> None:
        """Fold the journal, then the detached (Ray worker) journals, into llm_calls. Lines that are
        not a complete entry are skipped with a warning naming the file and line, and appended to
        `<journal>.rejected`; every other line is replayed. A torn last line (no newline: the write
        a crash cut short) is dropped quietly. Entries go in `REPLAY_CHUNK` at a time, so a long
        journal is replayed in bounded memory (the first answer recorded for a key is kept)."""
        for rows in self._read_journal(self.journal_path):
            self._insert(list(rows.values()))
        if self.journal_path.exists():
            os.truncate(self.journal_path, 0)
        detached = ray_journal_dir(self.journal_path)
        if detached.is_dir():
            for path in sorted(detached.glob("slot-*.jsonl")):
                for rows in self._read_journal(path):
                    self._insert(list(rows.values()))
                path.unlink()

    def _read_journal(self, path: Path, chunk: int = REPLAY_CHUNK) -> Iterator[dict[str, dict[str, Any]]]:
        """The journal's well-formed entries, `chunk` keys at a time (by key, within a chunk)."""
        rows: dict[str, dict[str, Any]] = {}
        rejected: list[bytes] = []
        replayed = 0
        try:
            with open(path, "rb") as fh:
                for lineno, line in enumerate(fh, start=1):
                    if not line.strip():
                        continue
                    try:
                        row = orjson.loads(line)
                    except orjson.JSONDecodeError:
                        if not line.endswith(b"\n"):
                            continue  # torn write at the tail
                        problem: str | None = "not valid JSON"
                    else:
                        problem = journal_row_problem(row)
                    if problem is not None:
                        rejected.append(line.rstrip(b"\n"))
                        if len(rejected) <= _WARN_LINES:
                            log.warning("%s:%d: skipped a journal entry (%s)", path, lineno, problem)
                        continue
                    rows.setdefault(row["key"], {c: row[c] for c in _COLUMNS})
                    if len(rows) >= chunk:
                        replayed += len(rows)
                        yield rows
                        rows = {}
        except FileNotFoundError:
            return
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the request journal: {exc.strerror or exc}") from exc
        if rows:
            replayed += len(rows)
            yield rows
        if rejected:
            self.rejected += len(rejected)
            self._keep_rejected(path, rejected, replayed)

    def _keep_rejected(self, path: Path, rejected: list[bytes], replayed: int) -> None:
        kept = self.journal_path.with_name(self.journal_path.name + ".rejected")
        try:
            with open(kept, "ab") as fh:
                fh.write(b"\n".join(rejected) + b"\n")
            where = f"kept in {kept}"
        except OSError as exc:
            where = f"not kept ({kept}: {exc.strerror or exc})"
        unshown = len(rejected) - _WARN_LINES
        log.warning(
            "%s: %d unusable line(s) skipped%s, %s; the other %d entries were replayed",
            path,
            len(rejected),
            f" ({unshown} not shown)" if unshown > 0 else "",
            where,
            replayed,
        )


class DetachedCache:
    """The request cache of a process that cannot open the database (a Ray worker).

    It answers from the entries it was given (`preload`: the slot's earlier answers, sent by the
    driver) and journals every new answer to its slot's file under `<journal>.ray/` before the
    caller uses it, in the main journal's line format. `take(slot)` hands the slot's new entries
    over (they travel back to the driver, which journals them itself and removes the file)."""

    def __init__(self, journal_path: Path) -> None:
        self.journal_path = journal_path
        self.dir = ray_journal_dir(journal_path)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._rows: dict[str, dict[str, Any]] = {}  # key -> entry, preloaded or new
        self._new: dict[int, list[dict[str, Any]]] = {}  # slot -> entries journaled by this process
        self._fds: dict[int, int] = {}
        self.hits = 0
        self.misses = 0

    @property
    def pending(self) -> int:
        return sum(len(v) for v in self._new.values())

    def __contains__(self, key: str) -> bool:
        return key in self._rows

    def preload(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            self._rows.setdefault(row["key"], row)

    def get(self, key: str) -> RawCompletion | None:
        row = self._rows.get(key)
        if row is None:
            self.misses += 1
            return None
        self.hits += 1
        return completion_of(row)

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
        slot: int | None = None,
    ) -> None:
        if slot is None:
            raise ValueError("a detached cache journals per slot: the request has no slot")
        row = journal_row(
            key,
            provider=provider,
            model=model,
            stage=stage,
            prompt_hash=prompt_hash,
            request_json=request_json,
            completion=completion,
            cost_usd=cost_usd,
            latency_s=latency_s,
            slot=slot,
        )
        fd = self._fds.get(slot)
        path = slot_journal_path(self.journal_path, slot)
        if fd is None:
            fd = self._fds[slot] = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        append_line(fd, path, row)
        self._rows[key] = row
        self._new.setdefault(slot, []).append(row)

    def take(self, slot: int) -> list[dict[str, Any]]:
        """The slot's new entries; closes its journal file (the driver removes it once it has
        journaled them) and forgets the slot's entries."""
        fd = self._fds.pop(slot, None)
        if fd is not None:
            os.close(fd)
        rows = self._new.pop(slot, [])
        for key in [k for k, r in self._rows.items() if r.get("slot") == slot]:
            del self._rows[key]
        return rows

    def flush(self, commit: bool = True) -> None:
        """Nothing to fold: the driver owns the database."""

    def close(self, flush: bool = True) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
