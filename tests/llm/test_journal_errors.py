"""A journal line that is valid JSON but not a usable entry is skipped with a warning naming the
journal and the line (and kept in `<journal>.rejected`); every other line still replays. A journal
path that is a folder is a one-line ConfigError naming it, raised before the database is touched."""

from __future__ import annotations

import logging
from pathlib import Path

import duckdb
import orjson
import pytest

from factory.errors import ConfigError
from factory.llm.cache import RequestCache, check_journal_path, journal_row_problem
from factory.store.db import Store


def _entry(name: str, **changes: object) -> dict:
    row = {
        "key": name,
        "provider": "openai",
        "model": "m",
        "stage": "s",
        "prompt_hash": "ph",
        "request_json": "[]",
        "text": f"answer {name}",
        "finish_reason": "stop",
        "input_tokens": 3,
        "output_tokens": 4,
        "cost_usd": 0.5,
        "latency_s": 0.1,
        "response_model": "m-2025",
        "created_at": 1.0,
    }
    row.update(changes)
    return row


def _line(obj: object) -> bytes:
    return orjson.dumps(obj) + b"\n"


def _cache(tmp_path: Path, journal: bytes) -> tuple[RequestCache, duckdb.DuckDBPyConnection, Path]:
    path = tmp_path / "f.duckdb.journal"
    path.write_bytes(journal)
    con = duckdb.connect(str(tmp_path / "f.duckdb"))
    return RequestCache(con, path), con, path


BAD_ROWS = [
    (_entry("x", input_tokens="abc"), "input_tokens is 'abc'"),
    (_entry("x", output_tokens=-1), "output_tokens is -1"),
    (_entry("x", input_tokens=True), "input_tokens is True"),
    (_entry("x", input_tokens=1 << 63), "input_tokens is"),
    (_entry("x", cost_usd="free"), "cost_usd is 'free'"),
    (_entry("x", text=None), "text is NoneType"),
    (_entry("x", key=7), "key is int"),
    (_entry("", text="t"), "empty key"),
    ({k: v for k, v in _entry("x").items() if k != "text"}, "missing text"),
    ([_entry("x")], "expected a JSON object, got list"),
    ("just a string", "expected a JSON object, got str"),
    (42, "expected a JSON object, got int"),
]


@pytest.mark.parametrize(("bad", "why"), BAD_ROWS, ids=[w for _, w in BAD_ROWS])
def test_wrong_typed_line_is_skipped_with_file_and_line(tmp_path, caplog, bad, why) -> None:
    journal = _line(_entry("a")) + _line(bad) + _line(_entry("b"))
    with caplog.at_level(logging.WARNING, logger="factory"):
        cache, con, path = _cache(tmp_path, journal)
    try:
        assert {r[0] for r in con.execute("SELECT key FROM llm_calls").fetchall()} == {"a", "b"}
        assert cache.get("a").text == "answer a" and cache.get("b").usage.output_tokens == 4
        assert cache.rejected == 1
        messages = [r.getMessage() for r in caplog.records]
        assert any(m.startswith(f"{path}:2: skipped a journal entry (") and why in m for m in messages), (
            messages
        )
        assert any("1 unusable line(s) skipped" in m and "the other 2 entries" in m for m in messages)
        assert all("\n" not in m for m in messages)
        # the skipped line is kept, the journal itself is folded in and truncated
        kept = path.with_name(path.name + ".rejected")
        assert kept.read_bytes() == _line(bad)
        assert path.stat().st_size == 0
    finally:
        cache.close()
        con.close()


def test_problem_helper_accepts_a_good_row() -> None:
    assert journal_row_problem(_entry("k")) is None
    assert journal_row_problem(_entry("k", cost_usd=0, extra_field=[1, 2])) is None


def test_many_bad_lines_are_counted_not_flooded(tmp_path, caplog) -> None:
    journal = b"".join(_line(_entry(f"bad{i}", input_tokens="x")) for i in range(20))
    journal += b"this is not json\n" + _line(_entry("good")) + b'{"key": "torn'
    with caplog.at_level(logging.WARNING, logger="factory"):
        cache, con, path = _cache(tmp_path, journal)
    try:
        assert con.execute("SELECT key FROM llm_calls").fetchall() == [("good",)]
        assert cache.rejected == 21  # the torn tail is not a rejection
        messages = [r.getMessage() for r in caplog.records]
        assert len(messages) == 6
        assert "21 unusable line(s) skipped (16 not shown)" in messages[-1]
        assert len(path.with_name(path.name + ".rejected").read_bytes().splitlines()) == 21
    finally:
        cache.close()
        con.close()


def test_mixed_extra_fields_do_not_break_the_batch(tmp_path, caplog) -> None:
    """Extra keys (a newer writer) are dropped, even when their types differ from line to line."""
    journal = _line(_entry("a", note=1)) + _line(_entry("b", note="two")) + _line(_entry("c", created_at=5))
    cache, con, _ = _cache(tmp_path, journal)
    try:
        assert con.execute("SELECT count(*) FROM llm_calls").fetchall() == [(3,)]
        assert not caplog.records
    finally:
        cache.close()
        con.close()


def test_store_reopen_with_bad_journal_line_keeps_everything_else(tmp_path, caplog) -> None:
    db = tmp_path / "f.duckdb"
    Store(db).close()
    journal = db.with_name(db.name + ".journal")
    journal.write_bytes(_line(_entry("a")) + _line(_entry("x", input_tokens="abc")) + _line(_entry("b")))
    store = Store(db)
    with caplog.at_level(logging.WARNING, logger="factory"):
        assert "a" in store.cache and "b" in store.cache and "x" not in store.cache
    store.close()
    assert any(f"{journal}:2:" in r.getMessage() for r in caplog.records)


def test_journal_path_is_a_folder(tmp_path) -> None:
    db = tmp_path / "f.duckdb"
    journal = db.with_name(db.name + ".journal")
    journal.mkdir()
    with pytest.raises(ConfigError) as err:
        check_journal_path(journal)
    assert str(err.value).startswith(f"{journal}: ") and "folder" in str(err.value)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="folder"):
        Store(db)
    assert not db.exists()  # refused before the database was created
    con = duckdb.connect(str(tmp_path / "other.duckdb"))
    try:
        with pytest.raises(ConfigError, match="folder"):
            RequestCache(con, journal)
    finally:
        con.close()
    assert journal.is_dir()  # left as it was
