"""`transport: http`: OpenAI-compatible chat calls on one aiohttp session instead of the SDK.

The SDK suite's scenarios that go through `make_cfg` (structured output, sampling parameters,
429 + Retry-After, 5xx, hangs, fatal statuses, re-asks) run again here with the transport set to
http, against the same wire-protocol server; the rest checks what only this transport does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from factory.errors import ConfigError
from factory.llm.client import make_provider
from factory.llm.config import EndpointConfig
from factory.llm.errors import FatalProviderError, RetryableProviderError
from factory.llm.providers.openai_http import ChatCompletionsHTTP
from factory.llm.types import GenParams
from factory.recipes import Recipe
from factory.testing.server_process import FakeServerProcess
from tests.llm import test_providers as sdk_suite
from tests.llm.helpers import MODELS, Verdict, request

pytestmark = pytest.mark.parametrize("provider", ["openai"])


@pytest.fixture
def make_cfg(make_cfg: Callable[..., EndpointConfig]) -> Callable[..., EndpointConfig]:
    """The suite's endpoint configs, with the http transport."""

    def make(provider: str, model: str | None = None, **overrides: Any) -> EndpointConfig:
        return make_cfg(provider, model, **{"transport": "http", **overrides})

    return make


# The SDK suite's scenarios, collected here with the http transport.
test_structured_output_usage_and_cost = sdk_suite.test_structured_output_usage_and_cost
test_same_request_same_answer_and_plain_text = sdk_suite.test_same_request_same_answer_and_plain_text
test_sampling_params_reach_the_wire = sdk_suite.test_sampling_params_reach_the_wire
test_rate_limit_honours_retry_after = sdk_suite.test_rate_limit_honours_retry_after
test_server_error_then_success = sdk_suite.test_server_error_then_success
test_server_error_forever_gives_up_after_max_retries = (
    sdk_suite.test_server_error_forever_gives_up_after_max_retries
)
test_hang_times_out_quickly_without_retries = sdk_suite.test_hang_times_out_quickly_without_retries
test_hang_then_retry_succeeds = sdk_suite.test_hang_then_retry_succeeds
test_fatal_status_is_not_retried = sdk_suite.test_fatal_status_is_not_retried
test_bad_output_is_reasked_then_succeeds = sdk_suite.test_bad_output_is_reasked_then_succeeds
test_bad_output_without_reasks_raises_with_raw_text = (
    sdk_suite.test_bad_output_without_reasks_raises_with_raw_text
)
test_reasks_are_bounded = sdk_suite.test_reasks_are_bounded


def _uses_http(client: Any, cfg: EndpointConfig) -> bool:
    return client.endpoint(cfg).provider.http is not None


async def test_the_transport_is_really_http(provider, server, make_cfg, make_client):
    cfg = make_cfg(provider)
    client = make_client()
    await client.complete(cfg, request())
    http = client.endpoint(cfg).provider.http
    assert isinstance(http, ChatCompletionsHTTP) and http._session is not None
    assert server.stats()["requests"] == 1


async def test_sdk_and_http_give_the_same_answer_and_key(provider, server, make_cfg, make_client):
    sdk_cfg = make_cfg(provider, transport="sdk")
    http_cfg = make_cfg(provider)
    sdk_client, http_client = make_client(), make_client()
    a = await sdk_client.complete(sdk_cfg, request(system="be brief"))
    b = await http_client.complete(http_cfg, request(system="be brief"))
    assert not _uses_http(sdk_client, sdk_cfg) and _uses_http(http_client, http_cfg)
    assert a.key == b.key  # the transport is not part of what is asked
    assert (a.text, a.parsed, a.finish_reason) == (b.text, b.parsed, b.finish_reason)
    # the second asks the same prefix, so the server's prompt cache counts cached tokens for it
    assert (a.usage.input_tokens, a.usage.output_tokens) == (b.usage.input_tokens, b.usage.output_tokens)
    assert server.stats()["repeated_bodies"] == 1  # byte for byte the same body on the wire


async def test_aclose_closes_the_session(provider, server, make_cfg):
    from factory.llm.client import LLMClient

    client = LLMClient()
    cfg = make_cfg(provider)
    await client.complete(cfg, request())
    http = client.endpoint(cfg).provider.http
    session = http._session
    assert session is not None and not session.closed
    await client.aclose()
    assert session.closed


async def test_unreadable_body_is_retryable(provider, server, make_cfg):
    # a 200 whose body is not a chat completion: a provider error, retried, never an answer
    p = make_provider(make_cfg(provider))
    http = p.http
    assert http is not None
    http.url = server.url + "/_fake/reset"  # POST answers {"ok": true}
    try:
        with pytest.raises(RetryableProviderError, match="unreadable response body"):
            await p.send([{"role": "user", "content": "hi"}], GenParams(), None)
    finally:
        await p.aclose()


async def test_the_api_key_is_sent_as_a_bearer_token(provider, monkeypatch, make_client):
    with FakeServerProcess(require_key="sk-right") as srv:
        cfg = EndpointConfig(
            provider="openai",
            model=MODELS["openai"],
            base_url=srv.url + "/v1",
            transport="http",
            max_retries=0,
        )
        monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong")
        with pytest.raises(FatalProviderError) as info:
            await make_client().complete(cfg, request())
        assert info.value.status == 401 and "OPENAI_API_KEY" in str(info.value)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-right")
        resp = await make_client().complete(cfg, request())
        assert isinstance(resp.parsed, Verdict)


def test_scope_headers_come_from_the_sdks_variables(provider, monkeypatch):
    monkeypatch.setenv("OPENAI_ORG_ID", "org-1")
    monkeypatch.setenv("OPENAI_PROJECT_ID", "proj-2")
    cfg = EndpointConfig(provider="openai", model="m", transport="http")
    http = ChatCompletionsHTTP(cfg, None, "sk-x", "openai")
    assert http.url == "https://api.openai.com/v1/chat/completions"
    assert http.headers["Authorization"] == "Bearer sk-x"
    assert (http.headers["OpenAI-Organization"], http.headers["OpenAI-Project"]) == ("org-1", "proj-2")


# ------------------------------------------------------------------------------------------------
# configuration
# ------------------------------------------------------------------------------------------------


def test_http_is_refused_for_other_providers(provider):
    with pytest.raises(ValueError, match="transport 'http' is for OpenAI-compatible endpoints"):
        EndpointConfig(provider="anthropic", model="claude-x", transport="http")


def test_a_recipes_default_transport_applies_to_openai_endpoints_only(provider):
    recipe = Recipe.model_validate({"name": "t", "endpoint_defaults": {"transport": "http"}})
    assert recipe.endpoint("openai:m").transport == "http"
    assert recipe.endpoint("anthropic:claude-x").transport == "sdk"


def test_a_recipe_asking_http_for_anthropic_names_the_endpoint(provider):
    recipe = Recipe.model_validate({"name": "t", "endpoints": {"anthropic:claude-x": {"transport": "http"}}})
    with pytest.raises(ConfigError, match=r"endpoints\.anthropic:claude-x\.transport"):
        recipe.endpoint("anthropic:claude-x")


def test_the_transport_is_not_part_of_the_run_fingerprint(provider):
    from factory.runner.fingerprint import run_fingerprint

    def fp(transport: str) -> dict:
        recipe = Recipe.model_validate({"name": "t", "endpoint_defaults": {"transport": transport}})
        return run_fingerprint(recipe, {"label": recipe.endpoint("openai:m")}, seed=0)

    assert fp("http") == fp("sdk")
