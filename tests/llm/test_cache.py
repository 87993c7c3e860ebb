"""The persistent request cache (DuckDB + journal) through LLMClient and on its own."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import duckdb
import orjson
import pytest

from factory.llm.cache import RequestCache, full_request_json, journal_row, split_system_prompt
from factory.llm.errors import FatalProviderError
from factory.llm.fingerprint import request_key
from factory.llm.pricing import Price, PriceTable
from factory.llm.types import GenParams, RawCompletion, Usage
from factory.store import db as store_db
from factory.store.db import Store, StoreError
from tests.llm.helpers import MODELS, PROVIDERS, Verdict, old_cache_ddl, request

PRICES = PriceTable({m: Price(input=1000.0, output=3000.0) for m in MODELS.values()})


@pytest.fixture
def stores(tmp_path):
    """Open Stores, closed at teardown (a test may close some itself)."""
    opened: list[Store] = []

    def open_store(path: Path) -> Store:
        store = Store(path)
        opened.append(store)
        return store

    yield open_store
    for store in opened:
        try:
            store.close()
        except Exception:  # already closed by the test
            pass


def _journal(db: Path) -> Path:
    return db.with_suffix(db.suffix + ".journal")


def _put(
    cache: RequestCache, key: str, text: str, tokens: tuple[int, int] = (3, 4), request_json: str = "[]"
) -> None:
    cache.put(
        key,
        provider="openai",
        model="m",
        stage="s",
        prompt_hash="ph",
        request_json=request_json,
        completion=RawCompletion(
            text=text,
            finish_reason="stop",
            model="m-2025",
            usage=Usage(input_tokens=tokens[0], output_tokens=tokens[1]),
        ),
        cost_usd=0.5,
        latency_s=0.1,
    )


def _copy_crashed(src: Path, dst_dir: Path) -> Path:
    """Copy a live database as a crash would leave it: the DB file, its WAL and the journal."""
    dst_dir.mkdir()
    dst = dst_dir / src.name
    for suffix in ("", ".wal", ".journal"):
        p = Path(str(src) + suffix)
        if p.exists():
            shutil.copyfile(p, Path(str(dst) + suffix))
    return dst


# ------------------------------------------------------------------------------------------------
# through the client
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_second_identical_request_is_a_cache_hit(
    provider, server, make_cfg, make_client, stores, tmp_path
):
    store = stores(tmp_path / "f.duckdb")
    client = make_client(cache=store.cache, prices=PRICES)
    cfg = make_cfg(provider)
    first = await client.complete(cfg, request())
    assert not first.cached and server.stats()["requests"] == 1
    second = await client.complete(cfg, request())
    assert second.cached
    assert server.stats()["requests"] == 1  # no new request
    assert (second.text, second.parsed, second.key) == (first.text, first.parsed, first.key)
    assert isinstance(second.parsed, Verdict)
    assert second.usage == first.usage
    c = client.accounting.counter("t", f"{provider}:{MODELS[provider]}")
    assert (c.network_calls, c.cache_hits, c.calls) == (1, 1, 2)
    assert c.cost_usd == pytest.approx(first.cost_usd)
    assert c.cost_cached_usd == pytest.approx(first.cost_usd) and c.cost_cached_usd > 0
    # a distinct sample of the same request is a different key, so it is paid for
    third = await client.complete(cfg, request(variant="sample-2"))
    assert not third.cached and third.key != first.key
    assert server.stats()["requests"] == 2


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_cache_hits_after_reopening_the_store(
    provider, server, make_cfg, make_client, stores, tmp_path
):
    db = tmp_path / "f.duckdb"
    store = stores(db)
    client = make_client(cache=store.cache)
    first = await client.complete(make_cfg(provider), request())
    await client.aclose()
    store.close()
    assert _journal(db).stat().st_size == 0  # folded into DuckDB on close

    reopened = stores(db)
    client2 = make_client(cache=reopened.cache)
    again = await client2.complete(make_cfg(provider), request())
    assert again.cached and again.text == first.text and again.parsed == first.parsed
    assert server.stats()["requests"] == 1
    row = reopened.query("SELECT provider, model, stage, text FROM llm_calls WHERE key = ?", [first.key])
    assert row == [(provider, MODELS[provider], "t", first.text)]


async def test_reask_conversation_is_replayed_from_cache(server, make_cfg, make_client, stores, tmp_path):
    server.script([{"kind": "malformed"}])
    store = stores(tmp_path / "f.duckdb")
    client = make_client(cache=store.cache)
    first = await client.complete(make_cfg("openai"), request())
    assert first.attempts == 2 and server.stats()["requests"] == 2
    second = await make_client(cache=store.cache).complete(make_cfg("openai"), request())
    assert second.cached and second.attempts == 2 and second.parsed == first.parsed
    assert server.stats()["requests"] == 2


async def test_no_cache_means_every_call_is_paid(server, make_cfg, make_client):
    client = make_client(cache=None)
    a = await client.complete(make_cfg("openai"), request())
    b = await client.complete(make_cfg("openai"), request())
    assert not a.cached and not b.cached and a.key == b.key
    assert server.stats()["requests"] == 2


async def test_client_request_survives_a_crash(server, make_cfg, make_client, stores, tmp_path):
    """A paid answer is in the journal the moment complete() returns: a copy taken then replays it."""
    db = tmp_path / "live" / "f.duckdb"
    store = stores(db)
    first = await make_client(cache=store.cache).complete(make_cfg("openai"), request())
    assert _journal(db).stat().st_size > 0  # not flushed yet
    crashed = _copy_crashed(db, tmp_path / "crashed")
    recovered = stores(crashed)
    again = await make_client(cache=recovered.cache).complete(make_cfg("openai"), request())
    assert again.cached and again.text == first.text
    assert server.stats()["requests"] == 1


async def test_client_reports_the_fingerprint_as_the_response_key(server, make_cfg, make_client):
    req = request(params=GenParams(temperature=0.2, seed=7))
    resp = await make_client().complete(make_cfg("openai"), req)
    assert resp.key == request_key("openai", "gpt-fake", req)


# ------------------------------------------------------------------------------------------------
# the cache on its own
# ------------------------------------------------------------------------------------------------


def test_unflushed_entries_are_replayed_from_the_journal(stores, tmp_path):
    db = tmp_path / "live" / "f.duckdb"
    store = stores(db)
    cache = store.cache
    for i in range(3):
        _put(cache, f"k{i}", f"text {i}", tokens=(i, 10 + i))
    assert "k1" in cache and cache.get("k1").text == "text 1"  # served from the pending buffer
    assert store.query("SELECT count(*) FROM llm_calls") == [(0,)]  # nothing in DuckDB yet
    assert len(_journal(db).read_bytes().splitlines()) == 3

    # simulate a kill: copy the files while the store is still open (no flush, no close)
    crashed = _copy_crashed(db, tmp_path / "crashed")
    with open(_journal(crashed), "ab") as fh:  # plus a torn write at the tail
        fh.write(b'{"key": "k9", "provider": "ope')

    recovered = stores(crashed)
    rcache = recovered.cache
    assert recovered.query("SELECT count(*) FROM llm_calls") == [(3,)]
    assert _journal(crashed).stat().st_size == 0  # folded in and truncated
    for i in range(3):
        raw = rcache.get(f"k{i}")
        assert raw is not None
        assert (raw.text, raw.finish_reason, raw.model) == (f"text {i}", "stop", "m-2025")
        assert (raw.usage.input_tokens, raw.usage.output_tokens) == (i, 10 + i)
    assert "k9" not in rcache and rcache.get("k9") is None
    row = recovered.query(
        "SELECT provider, model, stage, prompt_hash, cost_usd FROM llm_calls WHERE key='k0'"
    )
    assert row == [("openai", "m", "s", "ph", 0.5)]


def test_flush_moves_the_journal_into_duckdb(stores, tmp_path):
    db = tmp_path / "f.duckdb"
    store = stores(db)
    cache = store.cache
    _put(cache, "a", "alpha")
    _put(cache, "a", "alpha again")  # same key: the later entry wins in the buffer
    cache.flush()
    assert _journal(db).stat().st_size == 0
    assert store.query("SELECT text FROM llm_calls WHERE key='a'") == [("alpha again",)]
    assert cache.get("a").text == "alpha again"
    assert cache.get("missing") is None
    assert (cache.hits, cache.misses) == (1, 1)


def test_flush_every_bounds_the_pending_buffer(stores, tmp_path):
    db = tmp_path / "f.duckdb"
    store = stores(db)
    cache = RequestCache(store.con, _journal(db), flush_every=2, lock=store.lock)
    _put(cache, "x", "1")
    assert store.query("SELECT count(*) FROM llm_calls") == [(0,)]
    _put(cache, "y", "2")
    assert store.query("SELECT count(*) FROM llm_calls") == [(2,)]
    assert _journal(db).stat().st_size == 0
    cache.close()


def test_journal_lines_are_complete_json_rows(stores, tmp_path):
    db = tmp_path / "f.duckdb"
    store = stores(db)
    _put(store.cache, "k", 'quote " and newline \n inside')
    lines = _journal(db).read_bytes().splitlines()
    assert len(lines) == 1
    row = orjson.loads(lines[0])
    assert row["key"] == "k" and row["text"] == 'quote " and newline \n inside'


def test_params_are_part_of_the_cached_identity(stores, tmp_path):
    # different generation parameters must never be answered from each other's cache entry
    a = request_key("openai", "m", request(params=GenParams(temperature=0.0)))
    b = request_key("openai", "m", request(params=GenParams(temperature=1.0)))
    cache = stores(tmp_path / "f.duckdb").cache
    _put(cache, a, "cold")
    assert cache.get(b) is None and cache.get(a).text == "cold"


async def test_identical_requests_in_flight_share_one_call(server, make_cfg, make_client, stores, tmp_path):
    server.script([{"kind": "hang", "seconds": 0.5}])  # keep the first call on the wire a while
    client = make_client(cache=stores(tmp_path / "c.duckdb").cache)
    cfg = make_cfg("openai")
    first, second = await asyncio.gather(
        client.complete(cfg, request("same question")), client.complete(cfg, request("same question"))
    )
    assert server.stats()["requests"] == 1
    assert first.text == second.text
    assert first.cached != second.cached  # one paid, one joined it
    c = client.accounting.total()
    assert (c.network_calls, c.cache_hits) == (1, 1)


async def test_a_failed_shared_call_fails_every_waiter(server, make_cfg, make_client):
    server.script([{"kind": "bad_request"}])
    client = make_client()
    cfg = make_cfg("openai")
    results = await asyncio.gather(
        client.complete(cfg, request("doomed")),
        client.complete(cfg, request("doomed")),
        return_exceptions=True,
    )
    assert all(isinstance(r, FatalProviderError) for r in results)
    assert server.stats()["requests"] == 1


def test_a_hit_read_from_duckdb_does_not_block_the_next_flush(stores, tmp_path):
    """DuckDB refuses register() while a query result is unfinished; a cache hit must not leave one."""
    store = stores(tmp_path / "hit.duckdb")
    _put(store.cache, "k1", '{"a": 1}')
    store.flush()
    assert store.cache.get("k1") is not None  # read back from DuckDB, not from the pending buffer
    _put(store.cache, "k2", '{"a": 2}')
    store.cache.flush()  # as LLMClient.aclose() does, with no transaction statement in between
    store.add("filter_log", {"slot": 1, "stage": "s", "reason": "r", "detail": "", "dropped": True})
    store.flush()
    assert store.query("SELECT count(*) FROM llm_calls")[0][0] == 2


def test_key_filter_has_no_false_negatives_and_few_false_positives():
    from factory.llm.cache import KeyFilter

    keys = [request_key("openai", "m", request(f"q{i}")) for i in range(2000)]
    f = KeyFilter(bits=16)  # small on purpose: false positives show up
    for k in keys[:1000]:
        f.add(k)
    f.add("not a hex digest")  # any string works
    assert all(k in f for k in keys[:1000]) and "not a hex digest" in f
    assert sum(k in f for k in keys[1000:]) < 50


def test_membership_survives_reopening_and_asks_duckdb_on_a_filter_hit(stores, tmp_path):
    db = tmp_path / "m.duckdb"
    store = Store(db)
    raw = RawCompletion(
        text="{}", finish_reason="stop", usage=Usage(input_tokens=1, output_tokens=1), model="m"
    )
    store.cache.put(
        "k" * 32,
        provider="p",
        model="m",
        stage="s",
        prompt_hash="h",
        request_json="[]",
        completion=raw,
        cost_usd=0.0,
        latency_s=0.0,
    )
    assert "k" * 32 in store.cache  # pending
    store.close()
    store = Store(db)
    cache = store.cache
    assert "k" * 32 in cache and cache.get("k" * 32) is not None
    cache._keys.add("a" * 32)  # a false positive of the filter: DuckDB settles it
    assert "a" * 32 not in cache and cache.get("a" * 32) is None
    store.close()


def _put_entry(cache, key: str) -> None:
    raw = RawCompletion(
        text=key, finish_reason="stop", usage=Usage(input_tokens=1, output_tokens=1), model="m"
    )
    cache.put(
        key,
        provider="p",
        model="m",
        stage="s",
        prompt_hash="h",
        request_json="[]",
        completion=raw,
        cost_usd=0.0,
        latency_s=0.0,
    )


def test_background_write_keeps_answers_and_the_journal_tail(tmp_path):
    """While a batch is written in the worker thread its entries are still answered from memory;
    once it is committed the journal keeps only what arrived after it was handed over."""
    db = tmp_path / "bg.duckdb"
    store = Store(db)
    cache = store.cache
    _put_entry(cache, "a" * 32)
    store.add("filter_log", {"slot": 0, "stage": "s", "reason": "r", "detail": "", "dropped": False})
    store.flush_in_background(every_s=0.0)
    _put_entry(cache, "b" * 32)  # arrives while the batch is being written
    assert cache.get("a" * 32).text == "a" * 32 and "a" * 32 in cache
    store._background.result()
    store.flush_in_background(every_s=3600.0)  # collects the finished write, starts none
    assert store._background is None and store.writes_committed == store.writes_started
    lines = [orjson.loads(line) for line in store.journal_path.read_bytes().splitlines()]
    assert [row["key"] for row in lines] == ["b" * 32]
    assert store.query("SELECT key FROM llm_calls") == [("a" * 32,)]
    assert store.query("SELECT count(*) FROM filter_log") == [(1,)]
    store.close()
    store = Store(db)
    assert store.cache.get("b" * 32).text == "b" * 32  # replayed from the journal tail, or flushed
    store.close()


def _chunked_writes(store: Store, monkeypatch, fail_at: int | None = None) -> list[tuple[int, int]]:
    """Record (cache rows, buffered rows) of each transaction a write makes; `fail_at` (counted
    from 1) makes that transaction fail."""
    calls: list[tuple[int, int]] = []
    write = store._write_transaction

    def spy(buffers, cache_rows):
        calls.append((len(cache_rows or []), sum(len(rows) for rows in buffers.values())))
        if len(calls) == fail_at:
            raise duckdb.IOException("simulated write failure")
        write(buffers, cache_rows)

    monkeypatch.setattr(store, "_write_transaction", spy)
    return calls


def test_a_large_background_write_commits_its_answers_in_bounded_transactions(tmp_path, monkeypatch):
    """Answers that piled up behind a slow commit go in transactions of at most
    CACHE_ROWS_PER_TRANSACTION; the slot rows commit with the last of them."""
    monkeypatch.setattr(store_db, "CACHE_ROWS_PER_TRANSACTION", 3)
    store = Store(tmp_path / "chunks.duckdb")
    calls = _chunked_writes(store, monkeypatch)
    keys = [f"{i:032x}" for i in range(8)]
    for key in keys:
        _put_entry(store.cache, key)
    store.add("filter_log", {"slot": 0, "stage": "s", "reason": "r", "detail": "", "dropped": False})
    store.flush_in_background(every_s=0.0)
    store._background.result()
    store.flush_in_background(every_s=3600.0)  # collects it
    assert calls == [(3, 0), (3, 0), (2, 1)]
    assert sorted(k for (k,) in store.query("SELECT key FROM llm_calls")) == keys
    assert store.journal_path.read_bytes() == b""
    store.close()


def test_a_chunked_write_that_fails_half_way_loses_nothing_and_stores_nothing_twice(tmp_path, monkeypatch):
    monkeypatch.setattr(store_db, "CACHE_ROWS_PER_TRANSACTION", 3)
    db = tmp_path / "chunks.duckdb"
    store = Store(db)
    calls = _chunked_writes(store, monkeypatch, fail_at=2)
    keys = [f"{i:032x}" for i in range(8)]
    for key in keys:
        _put_entry(store.cache, key)
    store.add("filter_log", {"slot": 0, "stage": "s", "reason": "r", "detail": "", "dropped": False})
    store.flush_in_background(every_s=0.0)
    assert isinstance(store._background.exception(), duckdb.IOException)
    with pytest.raises(StoreError) as info:
        store.flush_in_background(every_s=0.0)  # collects the failed write
    assert "\n" not in str(info.value) and str(info.value).startswith(f"cannot write to {db}")
    assert calls == [(3, 0), (3, 0)]
    assert store.query("SELECT count(*) FROM llm_calls") == [(3,)]  # the first chunk committed
    journal = [orjson.loads(line)["key"] for line in store.journal_path.read_bytes().splitlines()]
    assert journal == keys  # ... and the journal still holds every answer
    assert all(store.cache.get(key) is not None for key in keys)
    store.con.close()
    store = Store(db)  # a rerun: the journal is folded in, the stored three are not stored again
    assert all(store.cache.get(key) is not None for key in keys)
    store.close()
    store = Store(db, read_only=True)
    assert sorted(k for (k,) in store.query("SELECT key FROM llm_calls")) == keys
    store.close()


# ------------------------------------------------------------------------------------------------
# long system prompts are stored once
# ------------------------------------------------------------------------------------------------


def _put_request(cache: RequestCache, key: str, messages: list[dict]) -> str:
    request_json = orjson.dumps(messages).decode()
    _put(cache, key, "{}", request_json=request_json)
    return request_json


def test_long_system_prompt_is_stored_once_and_the_request_is_whole_again(stores, tmp_path):
    db = tmp_path / "c.duckdb"
    store = stores(db)
    system = 'Follow these instructions with care. "Quotes", newlines\n and ünïcode. ' * 20
    sent = {}
    for i in range(5):
        messages = [{"role": "system", "content": system}, {"role": "user", "content": f"case {i}\tend"}]
        sent[f"k{i}"] = _put_request(store.cache, f"k{i}", messages)
    sent["short"] = _put_request(store.cache, "short", [{"role": "system", "content": "be brief"}])
    sent["nosys"] = _put_request(store.cache, "nosys", [{"role": "user", "content": "hi"}])
    sent["only"] = _put_request(store.cache, "only", [{"role": "system", "content": system}])
    store.flush()
    # the journal keeps whole requests until they are committed
    assert store.query("SELECT count(*), min(length(content)) FROM llm_prompts") == [(1, len(system))]
    rows = dict(
        (k, (rj, sys_text))
        for k, rj, sys_text in store.query(
            "SELECT c.key, c.request_json, p.content FROM llm_calls c "
            "LEFT JOIN llm_prompts p ON p.digest = c.system_ref"
        )
    )
    assert rows["k0"][0] == orjson.dumps([{"role": "user", "content": "case 0\tend"}]).decode()
    assert rows["short"][1] is None and rows["nosys"][1] is None  # short or absent: kept inline
    assert rows["only"][0] == "[]"
    for key, request_json in sent.items():
        assert full_request_json(*rows[key]) == request_json  # byte for byte
    # the view for SQL users: the same messages
    view = dict(store.query("SELECT key, request_json FROM llm_requests"))
    assert {k: orjson.loads(v) for k, v in view.items()} == {k: orjson.loads(v) for k, v in sent.items()}
    store.close()
    # reopened, a new batch with the same prompt adds no second copy and the answers still serve
    store = stores(db)
    _put_request(store.cache, "k9", [{"role": "system", "content": system}, {"role": "user", "content": "x"}])
    store.flush()
    assert store.query("SELECT count(*) FROM llm_prompts") == [(1,)]
    assert store.cache.get("k3") is not None


def test_split_system_prompt_leaves_other_shapes_alone():
    long = "x" * 300
    for messages in (
        [{"role": "system", "content": long, "name": "extra key"}],
        [{"role": "user", "content": long}],
        [{"content": long, "role": "system"}],
    ):
        request_json = orjson.dumps(messages).decode()
        assert split_system_prompt(request_json) == (request_json, None)
    assert split_system_prompt('[{"role":"system","content": broken') == (
        '[{"role":"system","content": broken',
        None,
    )


def test_a_journal_larger_than_the_buffer_pool_replays(tmp_path, monkeypatch):
    """130 MB of answers in the journal against DuckDB's default 128MB pool: replayed a chunk at a
    time (one INSERT of the whole journal runs out of memory here)."""
    import random
    import string

    monkeypatch.delenv("FACTORY_DUCKDB_MEMORY", raising=False)
    db = tmp_path / "big.duckdb"
    Store(db).close()
    rnd = random.Random(0)
    n = 20_000
    with open(_journal(db), "wb") as fh:
        for i in range(n):
            text = "".join(rnd.choices(string.ascii_letters, k=6000))  # incompressible
            row = journal_row(
                f"{i:032x}",
                provider="openai",
                model="m",
                stage="s",
                prompt_hash="p",
                request_json=orjson.dumps([{"role": "user", "content": text}]).decode(),
                completion=RawCompletion(
                    text=text[:500],
                    finish_reason="stop",
                    model="m",
                    usage=Usage(input_tokens=1, output_tokens=1),
                ),
                cost_usd=0.0,
                latency_s=0.0,
            )
            fh.write(orjson.dumps(row) + b"\n")
    store = Store(db)
    try:
        assert store.cache.get(f"{n - 1:032x}") is not None
        assert store.query("SELECT count(*) FROM llm_calls") == [(n,)]
        assert _journal(db).stat().st_size == 0
    finally:
        store.close()


def test_a_new_file_indexes_the_key_digest_and_answers_by_the_key_itself(stores, tmp_path):
    db = tmp_path / "c.duckdb"
    store = stores(db)
    cache = store.cache
    assert cache.by_key_id
    keys = [f"{i:032x}" for i in range(300)]
    for i, key in enumerate(keys):
        _put(cache, key, f"answer {i}")
    store.flush()
    store.close()
    store = stores(db)
    cache = store.cache
    # the primary key is the digest, the key column is not indexed
    (pk,) = store.query(
        "SELECT constraint_column_names FROM duckdb_constraints() "
        "WHERE table_name = 'llm_calls' AND constraint_type = 'PRIMARY KEY'"
    )[0]
    assert pk == ["key_id"]
    assert store.query("SELECT count(*) FROM llm_calls WHERE key_id = md5_number(key)") == [(300,)]
    assert [cache.get(k).text for k in keys[::37]] == [f"answer {i}" for i in range(0, 300, 37)]
    # a row whose digest matches but whose key does not is not an answer for that key
    store.query("UPDATE llm_calls SET key = 'someone else' WHERE key = ?", [keys[5]])
    assert keys[5] not in cache and cache.get(keys[5]) is None
    # the same key journaled twice (a replay after a crash) is stored once
    _put(cache, keys[6], "again")
    store.flush()
    assert store.query("SELECT count(*), min(text) FROM llm_calls WHERE key = ?", [keys[6]]) == [
        (1, "answer 6")
    ]


def test_a_file_indexed_by_the_key_itself_keeps_working(stores, tmp_path):
    import duckdb

    db = tmp_path / "old.duckdb"
    con = duckdb.connect(str(db))
    con.execute(old_cache_ddl())
    con.close()
    store = stores(db)
    cache = store.cache
    assert not cache.by_key_id
    _put(cache, "a" * 32, "first")
    store.flush()
    _put(cache, "a" * 32, "second")  # replayed twice: the first answer stays
    _put(cache, "b" * 32, "other")
    store.close()
    store = stores(db)
    assert store.cache.get("a" * 32).text == "first" and "b" * 32 in store.cache
    assert store.query("SELECT count(*) FROM llm_calls") == [(2,)]
    assert "key_id" not in [c for c in store.columns("llm_calls")]
