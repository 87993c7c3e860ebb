"""Prices: exact names, dated snapshots falling back to their family, unknown models flagged."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from factory.llm.accounting import Accounting
from factory.llm.pricing import DEFAULT_PRICES, Price, PriceTable
from factory.llm.types import Usage
from tests.llm.helpers import MODELS, PROVIDERS, request

MILLION = Usage(input_tokens=1_000_000, output_tokens=1_000_000)


def test_exact_model_price():
    table = PriceTable()
    assert table.lookup("gpt-4o-mini") == DEFAULT_PRICES["gpt-4o-mini"]
    assert table.cost("gpt-4o-mini", MILLION) == pytest.approx(0.15 + 0.60)
    assert table.cost("gpt-4o-mini", Usage(input_tokens=2000, output_tokens=500)) == pytest.approx(
        (2000 * 0.15 + 500 * 0.60) / 1e6
    )
    assert table.cost("gpt-4o-mini", Usage()) == 0.0


@pytest.mark.parametrize(
    ("dated", "family"),
    [
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),  # the longest matching family, not "gpt-4o"
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("gpt-4.1-nano-2025-04-14", "gpt-4.1-nano"),
        ("claude-haiku-4-5-20251001", "claude-haiku-4-5"),
        ("gemini-2.5-flash-preview-05-20", "gemini-2.5-flash"),
    ],
)
def test_dated_names_fall_back_to_the_family_price(dated, family):
    table = PriceTable()
    assert table.is_priced(dated)
    assert table.lookup(dated) == DEFAULT_PRICES[family]
    assert table.cost(dated, MILLION) == table.cost(family, MILLION)


@pytest.mark.parametrize("model", ["llama-3-70b", "my-finetune", "gpt-fake", "4o-mini"])
def test_unknown_model_costs_nothing_and_is_unpriced(model):
    table = PriceTable()
    assert table.lookup(model) is None
    assert not table.is_priced(model)
    assert table.cost(model, MILLION) == 0.0


def test_overrides_and_mapping():
    table = PriceTable({"gpt-4o": Price(input=1.0, output=2.0), "house-model": Price(input=0.5, output=0.5)})
    assert table.cost("gpt-4o", MILLION) == pytest.approx(3.0)
    assert table.cost("gpt-4o-2024-08-06", MILLION) == pytest.approx(3.0)
    assert table.cost("gpt-4o-mini", MILLION) == pytest.approx(0.75)  # untouched default
    assert table.cost("house-model-v2", MILLION) == pytest.approx(1.0)
    mapped = PriceTable.from_mapping({"house-model": {"input": 0.5, "output": 0.5}})
    assert mapped.lookup("house-model") == Price(input=0.5, output=0.5)
    assert PriceTable.from_mapping(None).lookup("gpt-4o") == DEFAULT_PRICES["gpt-4o"]
    with pytest.raises(ValidationError):
        PriceTable.from_mapping({"x": {"input": -1, "output": 1}})
    with pytest.raises(ValidationError):
        PriceTable.from_mapping({"x": {"input": 1}})
    assert PriceTable().lookup("house-model") is None  # overrides do not leak into the defaults


def test_accounting_rollups_keep_the_unpriced_flag():
    acc = Accounting()
    a = acc.counter("stage-a", "openai:gpt-4o")
    a.calls, a.cost_usd, a.input_tokens = 2, 0.5, 100
    b = acc.counter("stage-b", "openai:mystery")
    b.calls, b.unpriced = 1, True
    c = acc.counter("stage-a", "openai:mystery")
    c.calls, c.unpriced = 3, True
    stages = acc.by_stage()
    assert stages["stage-a"].calls == 5 and stages["stage-a"].unpriced
    assert stages["stage-b"].unpriced
    total = acc.total()
    assert (total.calls, total.cost_usd, total.input_tokens) == (6, 0.5, 100)
    assert total.unpriced


# ------------------------------------------------------------------------------------------------
# through the client
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_dated_model_is_priced_through_the_client(provider, server, make_cfg, make_client):
    family = MODELS[provider]
    client = make_client(prices=PriceTable({family: Price(input=100.0, output=200.0)}))
    dated = f"{family}-2025-01-01"
    resp = await client.complete(make_cfg(provider, model=dated), request())
    assert resp.model == dated
    expected = (resp.usage.input_tokens * 100.0 + resp.usage.output_tokens * 200.0) / 1e6
    assert resp.cost_usd == pytest.approx(expected) and expected > 0
    counter = client.accounting.counter("t", f"{provider}:{dated}")
    assert counter.cost_usd == pytest.approx(expected)
    assert not counter.unpriced and not client.accounting.total().unpriced


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_unknown_model_is_free_and_flagged(provider, server, make_cfg, make_client):
    client = make_client()  # default table: the fake model names are unknown
    resp = await client.complete(make_cfg(provider), request())
    assert resp.cost_usd == 0.0
    assert resp.usage.input_tokens > 0 and resp.usage.output_tokens > 0  # tokens are still counted
    counter = client.accounting.counter("t", f"{provider}:{MODELS[provider]}")
    assert counter.unpriced and counter.cost_usd == 0.0
    assert counter.input_tokens == resp.usage.input_tokens
    assert client.accounting.by_stage()["t"].unpriced
    assert client.accounting.total().unpriced


async def test_priced_and_unpriced_stages_roll_up(server, make_cfg, make_client):
    client = make_client(prices=PriceTable({"gpt-fake": Price(input=100.0, output=100.0)}))
    paid = await client.complete(make_cfg("openai"), request(stage="paid"))
    await client.complete(make_cfg("openai", model="mystery-model"), request(stage="free"))
    stages = client.accounting.by_stage()
    assert not stages["paid"].unpriced and stages["free"].unpriced
    total = client.accounting.total()
    assert total.unpriced
    assert total.cost_usd == pytest.approx(paid.cost_usd) and total.network_calls == 2
