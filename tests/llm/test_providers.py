"""LLMClient + the real openai / anthropic / google-genai SDKs against the fake server.

Every scenario runs for each provider the fault applies to: structured output, usage and cost,
retries (429 + Retry-After, 5xx, hangs), fatal errors, missing keys and schema re-asks.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest

from factory.llm.client import REASK_TEMPLATE, LLMClient
from factory.llm.config import EndpointConfig
from factory.llm.errors import FatalProviderError, RetryableProviderError, StructuredOutputError
from factory.llm.pricing import Price, PriceTable
from factory.llm.types import GenParams
from factory.testing.answers import MALFORMED_TEXT
from tests.llm.helpers import KEY_ENV, MODELS, PROVIDERS, Verdict, expected_tokens, request

pytestmark = pytest.mark.parametrize("provider", PROVIDERS)

CONTENT_FAULTS = ("malformed", "wrong_schema", "empty", "truncated")
REASK_MARKER = REASK_TEMPLATE.split("{error}")[0]  # "Your previous reply could not be used: "

# USD per 1M tokens for the fake models: large so the costs are far from rounding noise.
FAKE_PRICES = PriceTable({m: Price(input=1000.0, output=3000.0) for m in MODELS.values()})


def _counter(client: LLMClient, provider: str, stage: str = "t"):
    return client.accounting.counter(stage, f"{provider}:{MODELS[provider]}")


def _prompt_chars(provider: str, content: str) -> int:
    """The length of what the fake server counts as the prompt (it re-serialises the body with orjson)."""
    if provider == "openai":
        return len(orjson.dumps([{"role": "user", "content": content}]))
    if provider == "anthropic":
        return len(orjson.dumps([None, [{"role": "user", "content": content}]]))
    return len(orjson.dumps([None, [{"parts": [{"text": content}], "role": "user"}]]))


# ------------------------------------------------------------------------------------------------
# success path
# ------------------------------------------------------------------------------------------------


async def test_structured_output_usage_and_cost(provider, server, make_cfg, make_client):
    client = make_client(prices=FAKE_PRICES)
    content = "classify this message please"
    resp = await client.complete(make_cfg(provider), request(content))

    assert isinstance(resp.parsed, Verdict)
    assert resp.data() == Verdict.model_validate_json(resp.text).model_dump(mode="json")
    assert (resp.provider, resp.model, resp.cached, resp.attempts) == (provider, MODELS[provider], False, 1)
    assert resp.finish_reason == "stop"
    assert len(resp.key) == 32

    # usage is what the server reported, which the fake derives from the character counts
    assert resp.usage.input_tokens == expected_tokens(_prompt_chars(provider, content))
    assert resp.usage.output_tokens == expected_tokens(len(resp.text))
    expected_cost = (resp.usage.input_tokens * 1000.0 + resp.usage.output_tokens * 3000.0) / 1e6
    assert resp.cost_usd == pytest.approx(expected_cost)
    assert resp.cost_usd > 0

    c = _counter(client, provider)
    assert (c.calls, c.network_calls, c.cache_hits, c.retries, c.reasks, c.failures) == (1, 1, 0, 0, 0, 0)
    assert (c.input_tokens, c.output_tokens) == (resp.usage.input_tokens, resp.usage.output_tokens)
    assert c.cost_usd == pytest.approx(expected_cost)
    assert not c.unpriced
    assert server.stats()["requests"] == 1


async def test_same_request_same_answer_and_plain_text(provider, server, make_cfg, make_client):
    client = make_client()
    cfg = make_cfg(provider)
    a = await client.complete(cfg, request("a question", schema=None, system="You are terse."))
    b = await client.complete(cfg, request("a question", schema=None, system="You are terse."))
    assert a.parsed is None and a.text.strip()
    assert a.text == b.text  # the fake answers deterministically; without a cache both are paid for
    assert not a.cached and not b.cached
    with pytest.raises(ValueError):
        a.data()
    assert server.stats()["requests"] == 2
    assert _counter(client, provider).network_calls == 2


async def test_sampling_params_reach_the_wire(provider, server, make_cfg, make_client):
    # a marker fault that only fires if the raw request body carries the temperature we set
    server.script([{"kind": "hang", "seconds": 0, "match": "0.123"}])
    client = make_client()
    resp = await client.complete(
        make_cfg(provider), request(params=GenParams(temperature=0.123, max_tokens=77))
    )
    assert isinstance(resp.parsed, Verdict)
    stats = server.stats()
    assert stats["faults_applied"] == 1 and stats["faults_pending"] == 0


# ------------------------------------------------------------------------------------------------
# retryable failures
# ------------------------------------------------------------------------------------------------


async def test_rate_limit_honours_retry_after(provider, server, make_cfg, make_client):
    retry_after = 1.0
    server.script([{"kind": "rate_limit", "retry_after": retry_after}])
    client = make_client()
    t0 = time.perf_counter()
    resp = await client.complete(make_cfg(provider, max_retries=3), request())
    elapsed = time.perf_counter() - t0
    assert isinstance(resp.parsed, Verdict)
    assert elapsed >= retry_after * 0.9
    assert elapsed < retry_after + 2.0
    stats = server.stats()
    assert stats["requests"] == 2 and stats["faults_by_kind"] == {"rate_limit": 1}
    c = _counter(client, provider)
    assert (c.retries, c.network_calls, c.calls, c.failures) == (1, 1, 1, 0)


@pytest.mark.parametrize("kind", ["server_error", "overloaded"])
async def test_server_error_then_success(provider, kind, server, make_cfg, make_client):
    server.script([{"kind": kind}])
    client = make_client()
    resp = await client.complete(make_cfg(provider, max_retries=3), request())
    assert isinstance(resp.parsed, Verdict)
    assert server.stats()["requests"] == 2
    assert _counter(client, provider).retries == 1


async def test_server_error_forever_gives_up_after_max_retries(provider, server, make_cfg, make_client):
    server.script([{"kind": "server_error", "times": 10}])
    failures: list[dict[str, Any]] = []
    client = make_client(failure_sink=failures.append)
    with pytest.raises(RetryableProviderError) as info:
        await client.complete(make_cfg(provider, max_retries=2), request())
    assert info.value.status == 500
    assert (info.value.provider, info.value.model) == (provider, MODELS[provider])
    assert server.stats()["requests"] == 3  # the first try + 2 retries
    c = _counter(client, provider)
    assert (c.retries, c.calls, c.network_calls) == (2, 0, 0)
    assert len(failures) == 1 and failures[0]["provider"] == provider and failures[0]["attempts"] == 3


async def test_hang_times_out_quickly_without_retries(provider, server, make_cfg, make_client):
    server.script([{"kind": "hang", "seconds": 10}])
    client = make_client()
    t0 = time.perf_counter()
    with pytest.raises(RetryableProviderError) as info:
        await client.complete(make_cfg(provider, timeout_s=1, max_retries=0), request())
    elapsed = time.perf_counter() - t0
    assert 0.9 <= elapsed < 3.0
    assert "timed out" in str(info.value) and f"[{provider}:{MODELS[provider]}]" in str(info.value)
    assert server.stats()["requests"] == 1
    assert _counter(client, provider).retries == 0


async def test_hang_then_retry_succeeds(provider, server, make_cfg, make_client):
    server.script([{"kind": "hang", "seconds": 10}])
    client = make_client()
    t0 = time.perf_counter()
    resp = await client.complete(make_cfg(provider, timeout_s=1, max_retries=1), request())
    assert time.perf_counter() - t0 < 4.0
    assert isinstance(resp.parsed, Verdict)
    assert server.stats()["requests"] == 2
    assert _counter(client, provider).retries == 1


# ------------------------------------------------------------------------------------------------
# fatal failures
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "status"), [("bad_request", 400), ("unauthorized", 401)])
async def test_fatal_status_is_not_retried(provider, kind, status, server, make_cfg, make_client):
    server.script([{"kind": kind, "times": 5}])
    failures: list[dict[str, Any]] = []
    client = make_client(failure_sink=failures.append)
    with pytest.raises(FatalProviderError) as info:
        await client.complete(make_cfg(provider, max_retries=5), request())
    err = info.value
    assert err.status == status
    assert (err.provider, err.model) == (provider, MODELS[provider])
    assert f"[{provider}:{MODELS[provider]}]" in str(err) and f"HTTP {status}" in str(err)
    assert server.stats()["requests"] == 1
    assert _counter(client, provider).retries == 0


async def test_missing_api_key_is_fatal_and_sends_nothing(provider, server, make_client):
    client = make_client()
    if provider == "openai":  # no key and no base URL: nowhere to go
        cfg = EndpointConfig(provider="openai", model=MODELS[provider])
    else:  # a base URL alone is not enough for the hosted APIs
        cfg = EndpointConfig(provider=provider, model=MODELS[provider], base_url=server.url)
    with pytest.raises(FatalProviderError) as info:
        await client.complete(cfg, request())
    msg = str(info.value)
    assert KEY_ENV[provider] in msg
    assert f"[{provider}:{MODELS[provider]}]" in msg
    assert server.stats()["requests"] == 0


async def test_base_url_and_key_from_environment(provider, server, monkeypatch, make_client):
    url = {"openai": server.url + "/v1", "anthropic": server.url, "google": server.url}[provider]
    base_env = {"openai": "OPENAI_BASE_URL", "anthropic": "ANTHROPIC_BASE_URL", "google": "GEMINI_BASE_URL"}
    monkeypatch.setenv(base_env[provider], url)
    if provider == "google":
        monkeypatch.setenv("GOOGLE_API_KEY", "test-key")  # the second of the two accepted variables
    elif provider == "anthropic":
        monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
    # openai: a base URL without a key is a self-hosted server, which needs none
    cfg = EndpointConfig.parse(f"{provider}:{MODELS[provider]}", max_retries=0)
    resp = await make_client().complete(cfg, request())
    assert isinstance(resp.parsed, Verdict)
    assert server.stats()["requests"] == 1


# ------------------------------------------------------------------------------------------------
# bad structured output: re-ask, then give up with the raw text
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", CONTENT_FAULTS)
async def test_bad_output_is_reasked_then_succeeds(provider, kind, server, make_cfg, make_client):
    # the second fault is a no-op marker that only fires on a body containing the re-ask message
    server.script([{"kind": kind}, {"kind": "hang", "seconds": 0, "match": REASK_MARKER}])
    client = make_client()
    resp = await client.complete(make_cfg(provider, max_reasks=2), request())
    assert isinstance(resp.parsed, Verdict)
    assert resp.attempts == 2
    stats = server.stats()
    assert stats["requests"] == 2
    assert stats["faults_by_kind"] == {kind: 1, "hang": 1}, "the second request did not carry the re-ask"
    assert stats["faults_pending"] == 0
    c = _counter(client, provider)
    assert (c.reasks, c.network_calls, c.calls, c.failures) == (1, 2, 1, 0)
    assert resp.usage.input_tokens == c.input_tokens and resp.usage.output_tokens == c.output_tokens


@pytest.mark.parametrize("kind", CONTENT_FAULTS)
async def test_bad_output_without_reasks_raises_with_raw_text(provider, kind, server, make_cfg, make_client):
    server.script([{"kind": kind}])
    failures: list[dict[str, Any]] = []
    client = make_client(failure_sink=failures.append)
    with pytest.raises(StructuredOutputError) as info:
        await client.complete(make_cfg(provider, max_reasks=0), request())
    err = info.value
    assert err.attempts == 1
    assert (err.provider, err.model) == (provider, MODELS[provider])
    assert "Verdict" in str(err)
    raw = err.raw_text
    if kind == "malformed":
        assert raw == MALFORMED_TEXT
    elif kind == "empty":
        # a forced Anthropic tool call cannot be empty text: the fake sends an empty tool input
        assert raw == ("{}" if provider == "anthropic" else "")
    elif kind == "wrong_schema":
        assert isinstance(orjson.loads(raw), dict)  # valid JSON, wrong shape
        assert "schema" in str(err)
    else:
        assert raw and "token limit" in str(err)
    assert server.stats()["requests"] == 1
    assert len(failures) == 1 and failures[0]["raw_text"] == raw
    assert _counter(client, provider).failures == 1


async def test_reasks_are_bounded(provider, server, make_cfg, make_client):
    server.script([{"kind": "malformed", "times": 5}])
    client = make_client()
    with pytest.raises(StructuredOutputError) as info:
        await client.complete(make_cfg(provider, max_reasks=2), request())
    assert info.value.attempts == 3 and info.value.raw_text == MALFORMED_TEXT
    assert server.stats()["requests"] == 3
    assert _counter(client, provider).reasks == 2


# ------------------------------------------------------------------------------------------------
# cleanup
# ------------------------------------------------------------------------------------------------


def _open_transports(sdk_client: Any) -> list[bool]:
    """closed-flags of whatever HTTP sessions the SDK client holds (SDK internals, read defensively)."""
    if hasattr(sdk_client, "is_closed"):  # openai / anthropic
        return [sdk_client.is_closed()]
    api = sdk_client._api_client  # google-genai
    flags = [s.closed for s in getattr(api, "_aiohttp_sessions", {}).values()]
    httpx_client = getattr(api, "_async_httpx_client", None)
    if httpx_client is not None and hasattr(httpx_client, "is_closed"):
        flags.append(httpx_client.is_closed)
    return flags


async def test_aclose_releases_the_sdk_transport(provider, server, make_cfg):
    client = LLMClient()
    cfg = make_cfg(provider)
    await client.complete(cfg, request())
    flags = _open_transports(client.endpoint(cfg).provider.client)
    assert flags and not all(flags)  # something is open after a request
    await client.aclose()
    assert all(_open_transports(client.endpoint(cfg).provider.client))
