"""DuckDB's buffer pool grows with the PRIMARY KEY indexes, which it cannot evict."""

from __future__ import annotations

import pytest

from factory.store import db as store_db
from factory.store.db import Store, StoreError, _parse_bytes


def _limit_mib(store: Store) -> float:
    shown = store.query("SELECT current_setting('memory_limit')")[0][0]  # e.g. '244.1 MiB'
    value, unit = shown.split()
    return float(value) * {"KiB": 1 / 1024, "MiB": 1, "GiB": 1024}[unit]


def test_the_pool_grows_with_indexed_rows_and_starts_from_them_on_reopen(tmp_path, monkeypatch):
    monkeypatch.delenv("FACTORY_DUCKDB_MEMORY", raising=False)
    monkeypatch.setattr(store_db, "SLOT_INDEX_BYTES", 1 << 20)  # 1 MiB a row: visible with few rows
    db = tmp_path / "m.duckdb"
    store = Store(db)
    start = _limit_mib(store)
    assert 48 < start <= 80 and start % 16 == 0  # the tables' own index memory + the working room
    for slot in range(100):
        store.add("slot_status", {"slot": slot, "status": "accepted", "reason": ""})
    store.add("filter_log", {"slot": 0, "stage": "x", "reason": "y", "detail": ""})  # no key: not counted
    store.flush()
    grown = _limit_mib(store)
    assert grown >= 48 + 100 and grown % 16 == 0  # 100 rows + the working room, in 16 MiB steps
    assert grown > start
    store.close()
    reopened = Store(db)  # the rows already indexed count from the start
    assert _limit_mib(reopened) >= 48 + 100
    reopened.close()
    read_only = Store(db, read_only=True)  # reads get READ_POOL
    assert 115 <= _limit_mib(read_only) <= 128
    read_only.close()
    monkeypatch.setenv("FACTORY_DUCKDB_MEMORY", "1GiB")  # set: the pool is at least that
    explicit = Store(db)
    assert _limit_mib(explicit) == 1024
    explicit.close()


def test_parse_bytes():
    assert _parse_bytes("128MB") == 128_000_000
    assert _parse_bytes("1GiB") == 1 << 30
    assert _parse_bytes("512 MiB") == 512 << 20
    assert _parse_bytes("80%") is None


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        (
            "FACTORY_DUCKDB_MEMORY",
            "lots",
            "FACTORY_DUCKDB_MEMORY='lots': expected a size such as 128MB or 1GiB",
        ),
        (
            "FACTORY_DUCKDB_THREADS",
            "abc",
            "FACTORY_DUCKDB_THREADS='abc': expected a whole number of threads, 1 or more",
        ),
        (
            "FACTORY_DUCKDB_THREADS",
            "0",
            "FACTORY_DUCKDB_THREADS='0': expected a whole number of threads, 1 or more",
        ),
    ],
)
def test_a_bad_duckdb_setting_is_one_line_naming_the_variable(tmp_path, monkeypatch, name, value, message):
    monkeypatch.setenv(name, value)
    with pytest.raises(StoreError) as err:
        Store(tmp_path / "s.duckdb")
    assert str(err.value) == message
    assert not (tmp_path / "s.duckdb").exists()  # refused before the file was created


@pytest.mark.parametrize(("old_file", "mib_per_row"), [(False, 1), (True, 2)])
def test_the_pool_counts_the_cache_index_by_its_key_type(tmp_path, monkeypatch, old_file, mib_per_row):
    """A file whose cache index is key_id counts CACHE_INDEX_BYTES a row, one indexed by the
    32-character key (from before key_id) CACHE_INDEX_BYTES_OLD."""
    import duckdb

    from factory.llm.types import RawCompletion, Usage
    from tests.llm.helpers import old_cache_ddl

    monkeypatch.delenv("FACTORY_DUCKDB_MEMORY", raising=False)
    monkeypatch.setattr(store_db, "CACHE_INDEX_BYTES", 1 << 20)
    monkeypatch.setattr(store_db, "CACHE_INDEX_BYTES_OLD", 2 << 20)
    db = tmp_path / "c.duckdb"
    if old_file:
        con = duckdb.connect(str(db))
        con.execute(old_cache_ddl())
        con.close()
    store = Store(db)
    try:
        for i in range(100):
            store.cache.put(
                f"{i:032x}",
                provider="openai",
                model="m",
                stage="s",
                prompt_hash="ph",
                request_json="[]",
                completion=RawCompletion(text="t", finish_reason="stop", model="m", usage=Usage()),
                cost_usd=0.0,
                latency_s=0.0,
            )
        store.flush()
        grown = _limit_mib(store)
        assert 48 + 100 * mib_per_row <= grown < 48 + 100 * mib_per_row + 32
    finally:
        store.close()


def _pool_too_small_for_the_index(monkeypatch) -> None:
    """A 16 MiB pool and an estimate that counts no index: inserting many random keys runs out."""
    monkeypatch.delenv("FACTORY_DUCKDB_MEMORY", raising=False)
    for name, value in (("WORKING_ROOM", 1 << 20), ("SLOT_INDEX_BYTES", 0), ("TABLE_INDEX_BYTES", 0)):
        monkeypatch.setattr(store_db, name, value)


def _add_random_slots(store: Store, n: int) -> None:
    import random

    rng = random.Random(7)
    for slot in rng.sample(range(1 << 62), n):  # random keys: the index cannot be evicted
        store.add("slot_status", {"slot": slot, "status": "accepted", "reason": ""})


ROWS_PAST_16MIB = 400_000


def test_a_write_that_runs_out_of_pool_memory_is_retried_with_more_room(tmp_path, monkeypatch, caplog):
    _pool_too_small_for_the_index(monkeypatch)
    db = tmp_path / "m.duckdb"
    store = Store(db)
    assert _limit_mib(store) == 16
    _add_random_slots(store, ROWS_PAST_16MIB)
    with caplog.at_level("WARNING", logger="factory.store.db"):
        store.flush()
    grown = 16 * store_db.POOL_GROWTH
    assert store.pool_growths == 1 and _limit_mib(store) == grown
    assert [r.getMessage() for r in caplog.records] == [
        f"{db}: DuckDB's pool (16 MiB) was too small for a write; it is written again with {grown} MiB"
    ]
    assert store.query("SELECT count(*) FROM slot_status")[0][0] == ROWS_PAST_16MIB
    store.close()


def test_at_the_cap_running_out_of_pool_memory_is_one_line_and_stores_nothing(tmp_path, monkeypatch):
    _pool_too_small_for_the_index(monkeypatch)
    monkeypatch.setattr(store_db, "MAX_POOL", 16 << 20)  # no room to grow
    db = tmp_path / "m.duckdb"
    store = Store(db)
    _add_random_slots(store, ROWS_PAST_16MIB)
    with pytest.raises(StoreError) as info:
        store.flush()
    message = str(info.value)
    assert "\n" not in message.strip() and message.startswith(f"cannot write to {db}: Out of Memory Error")
    assert store.pool_growths == 0
    assert store.query("SELECT count(*) FROM slot_status")[0][0] == 0
    with pytest.raises(StoreError):  # the rows are still buffered: closing tries them once more
        store.close()
    store.con.close()
