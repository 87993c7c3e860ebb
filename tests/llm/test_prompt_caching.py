"""Prompt-cache accounting through the real SDKs against the fake server: the second request with
the same system prompt reports that prefix as cached (OpenAI `prompt_tokens_details.cached_tokens`,
Anthropic `cache_read_input_tokens` after a `cache_creation_input_tokens` write, Gemini
`cached_content_token_count`); the count lands in `Usage.cached_input_tokens`, in `llm_calls`, and is
priced at the cached rate."""

from __future__ import annotations

import orjson
import pytest

from factory.llm.cache import journal_row_problem
from factory.llm.pricing import Price, PriceTable
from factory.llm.types import Usage
from factory.store.db import Store
from tests.llm.helpers import MODELS, PROVIDERS, expected_tokens, request

SYSTEM = "You are a careful compliance reviewer. " * 60  # a long static prefix
PRICES = PriceTable({m: Price(input=2.0, output=8.0, cached_input=0.5) for m in MODELS.values()})


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_repeated_system_prefix_is_reported_cached_and_priced_at_the_cached_rate(
    provider, make_cfg, make_client, server, tmp_path
):
    store = Store(tmp_path / "c.duckdb")
    try:
        client = make_client(cache=store.cache, prices=PRICES)
        cfg = make_cfg(provider)
        first = await client.complete(cfg, request("first message", system=SYSTEM))
        second = await client.complete(cfg, request("second message", system=SYSTEM))
        assert first.usage.cached_input_tokens == 0
        prefix = expected_tokens(len(SYSTEM))
        assert second.usage.cached_input_tokens == prefix
        assert second.usage.input_tokens > prefix  # input counts the cached tokens too
        u = second.usage
        expected = ((u.input_tokens - prefix) * 2.0 + prefix * 0.5 + u.output_tokens * 8.0) / 1e6
        assert second.cost_usd == pytest.approx(expected)
        assert first.cost_usd == pytest.approx(
            (first.usage.input_tokens * 2.0 + first.usage.output_tokens * 8.0) / 1e6
        )
        counter = client.accounting.by_stage()["t"]
        assert counter.cached_input_tokens == prefix
        assert server.stats()["cached_tokens"] == prefix
        # the ledger keeps it, and a cache hit reads it back
        store.flush()
        rows = store.query("SELECT cached_input_tokens FROM llm_calls ORDER BY created_at")
        assert [r[0] for r in rows] == [0, prefix]
        hit = await client.complete(cfg, request("second message", system=SYSTEM))
        assert hit.cached and hit.usage.cached_input_tokens == prefix
    finally:
        store.close()


async def test_anthropic_marks_the_system_block_for_caching(make_cfg, make_client, server):
    """The Anthropic request carries the system prompt as a cache_control block (the fake reports
    a cache write, then reads, only for such requests)."""
    client = make_client()
    cfg = make_cfg("anthropic")
    await client.complete(cfg, request("a", system=SYSTEM))
    assert server.stats()["cached_tokens"] == 0
    await client.complete(cfg, request("b", system=SYSTEM))
    assert server.stats()["cached_tokens"] == expected_tokens(len(SYSTEM))


def test_journal_lines_without_cached_tokens_replay_with_zero():
    row = {
        "key": "k",
        "provider": "openai",
        "model": "m",
        "stage": "s",
        "prompt_hash": "",
        "request_json": "[]",
        "text": "{}",
        "finish_reason": "stop",
        "input_tokens": 1,
        "output_tokens": 1,
        "cost_usd": 0.0,
        "latency_s": 0.0,
        "response_model": "m",
        "created_at": 0.0,
    }
    assert journal_row_problem(row) is None
    assert row["cached_input_tokens"] == 0 and row["reasoning"] == ""
    bad = dict(row, cached_input_tokens=-1)
    assert "cached_input_tokens" in (journal_row_problem(bad) or "")
    assert orjson.dumps(row)


def test_price_without_a_cached_rate_bills_cached_tokens_as_input():
    table = PriceTable({"x": Price(input=1.0, output=1.0)})
    usage = Usage(input_tokens=1000, output_tokens=0, cached_input_tokens=800)
    assert table.cost("x", usage) == pytest.approx(1000 / 1e6)
    assert PriceTable().cost("gpt-4o", usage) == pytest.approx((200 * 2.5 + 800 * 1.25) / 1e6)


def test_a_file_from_before_the_cached_tokens_column_is_migrated(tmp_path):
    import duckdb

    from tests.llm.helpers import old_cache_ddl

    db = tmp_path / "old.duckdb"
    con = duckdb.connect(str(db))
    old_ddl = (
        old_cache_ddl()
        .replace(",\n    cached_input_tokens BIGINT", "")
        .replace(",\n    system_ref VARCHAR", "")
    )
    con.execute(old_ddl.replace(",\n    slot BIGINT", ""))
    con.execute(
        "INSERT INTO llm_calls VALUES ('k0', 'openai', 'm', 's', 'ph', '[]', 'old', 'stop', 5, 2, 0.0, 0.0, "
        "'m', 0.0, '')"
    )
    con.close()
    store = Store(db)
    try:
        raw = store.cache.get("k0")
        assert raw is not None and raw.usage == Usage(input_tokens=5, output_tokens=2, cached_input_tokens=0)
        assert store.query("SELECT cached_input_tokens FROM llm_calls") == [(None,)]
    finally:
        store.close()
