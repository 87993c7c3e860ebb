"""The pieces the Ray executor is built from, without Ray: llm_calls.slot and rows_for_slot, the
detached (worker) cache and its per-slot journals, their replay on open, and the leased limiter."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from factory.llm.cache import DetachedCache, RequestCache, ray_journal_dir, slot_journal_path
from factory.llm.ratelimit import LeasedLimiter, TokenBucket
from factory.llm.types import RawCompletion, Usage
from factory.store.db import Store


def _raw(text: str) -> RawCompletion:
    return RawCompletion(text=text, model="m-1", usage=Usage(input_tokens=3, output_tokens=4))


def _put(cache: RequestCache | DetachedCache, key: str, text: str, slot: int | None) -> None:
    cache.put(
        key,
        provider="openai",
        model="m",
        stage="s",
        prompt_hash="ph",
        request_json="[]",
        completion=_raw(text),
        cost_usd=0.25,
        latency_s=0.1,
        slot=slot,
    )


@pytest.fixture
def store(tmp_path: Path):
    s = Store(tmp_path / "b.duckdb")
    yield s
    try:
        s.close()
    except Exception:
        pass


def test_rows_for_slot_come_from_the_table_and_the_pending_buffer(store: Store) -> None:
    cache = store.cache
    _put(cache, "a", "alpha", 3)
    _put(cache, "b", "beta", 4)
    _put(cache, "c", "no slot", None)
    assert [r["key"] for r in cache.rows_for_slot(3)] == ["a"]  # pending
    store.flush()
    assert store.query("SELECT key, slot FROM llm_calls ORDER BY key") == [("a", 3), ("b", 4), ("c", None)]
    _put(cache, "d", "delta", 3)
    rows = {r["key"]: r for r in cache.rows_for_slot(3)}
    assert set(rows) == {"a", "d"}  # stored and pending
    assert rows["a"]["text"] == "alpha" and rows["a"]["cost_usd"] == 0.25
    assert cache.rows_for_slot(99) == []


def test_put_row_journals_once(store: Store, tmp_path: Path) -> None:
    cache = store.cache
    _put(cache, "a", "alpha", 1)
    row = dict(cache.rows_for_slot(1)[0], key="b")
    assert cache.put_row(row) is True
    assert cache.put_row(row) is False  # already cached: not journaled twice
    assert cache.put_row(dict(row, key="a")) is False
    assert len(store.journal_path.read_bytes().splitlines()) == 2


def test_a_worker_journals_before_use_and_the_driver_folds_it_in(store: Store) -> None:
    driver = store.cache
    _put(driver, "old", "earlier answer", 7)
    worker = DetachedCache(store.journal_path)
    worker.preload(driver.rows_for_slot(7))
    assert worker.get("old").text == "earlier answer"
    assert worker.get("new") is None
    _put(worker, "new", "fresh", 7)
    path = slot_journal_path(store.journal_path, 7)
    assert path.read_bytes().count(b"\n") == 1  # on disk the moment put returns
    assert worker.get("new").text == "fresh"
    with pytest.raises(ValueError):
        _put(worker, "x", "no slot", None)
    # the worker died before handing the slot over: the driver folds its journal in on the next dispatch
    assert driver.absorb_slot_journal(7) == 1
    assert not path.exists()
    assert driver.get("new").text == "fresh"
    assert driver.absorb_slot_journal(7) == 0
    # a slot handed over normally: its entries travel back and the file is closed
    _put(worker, "n2", "second", 8)
    rows = worker.take(8)
    assert [r["key"] for r in rows] == ["n2"] and "n2" not in worker
    assert all(driver.put_row(r) for r in rows)


def test_worker_journals_left_by_a_crash_are_replayed_on_open(tmp_path: Path) -> None:
    db = tmp_path / "c.duckdb"
    s = Store(db)
    worker = DetachedCache(s.journal_path)
    _put(worker, "k1", "one", 1)
    _put(worker, "k2", "two", 2)
    (ray_journal_dir(s.journal_path) / "slot-3.jsonl").write_bytes(b'{"key": "torn')  # cut mid-write
    s.close()
    again = Store(db)
    try:
        cache = again.cache
        assert cache.get("k1").text == "one" and cache.get("k2").text == "two"
        assert again.query("SELECT key, slot FROM llm_calls ORDER BY key") == [("k1", 1), ("k2", 2)]
        assert not list(ray_journal_dir(again.journal_path).glob("slot-*"))
        assert cache.rejected == 0  # a torn last line is dropped quietly
    finally:
        again.close()


def test_leased_limiter_never_exceeds_the_shared_rate() -> None:
    """Two 'workers' leasing from one bucket of 40 requests/s together stay at 40/s."""

    async def main() -> float:
        shared = TokenBucket(40.0, capacity=2.0)
        leases: list[float] = []

        async def lease(kind: str, amount: float) -> None:
            leases.append(amount)
            await shared.acquire(amount)

        workers = [LeasedLimiter(lease, lambda k, s: None, rpm=40 * 60) for _ in range(2)]
        sent = 0

        async def caller(limiter: LeasedLimiter) -> None:
            nonlocal sent
            while True:
                await limiter.acquire(10)
                sent += 1

        tasks = [asyncio.create_task(caller(w)) for w in workers for _ in range(8)]
        t0 = time.monotonic()
        await asyncio.sleep(1.5)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert leases and max(leases) == 2.0  # 50 ms of the rate per lease
        return sent / (time.monotonic() - t0)

    rate = asyncio.run(main())
    assert 30 <= rate <= 40 * 1.1 + 2 / 1.5, rate


def test_the_end_of_a_ray_build_folds_every_slot_journal_into_the_cache(store: Store) -> None:
    driver = store.cache  # open before the workers write (an open replays what it finds)
    worker = DetachedCache(store.journal_path)
    _put(worker, "k5", "five", 5)  # slots a build left running when it reached N
    _put(worker, "k9", "nine", 9)
    worker.close()
    assert sorted(p.name for p in ray_journal_dir(store.journal_path).glob("*")) == [
        "slot-5.jsonl",
        "slot-9.jsonl",
    ]
    assert driver.absorb_slot_journals() == 2
    assert not list(ray_journal_dir(store.journal_path).glob("*"))
    assert driver.get("k9").text == "nine"  # type: ignore[union-attr]
    store.flush()
    assert store.query("SELECT key, slot FROM llm_calls ORDER BY key") == [("k5", 5), ("k9", 9)]
