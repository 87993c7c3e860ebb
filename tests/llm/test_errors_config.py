"""Unit tests without a server: HTTP status -> error class, Retry-After parsing, endpoint config."""

from __future__ import annotations

import time

import pytest
from pydantic import ValidationError

from factory.llm.config import EndpointConfig, configured_remote
from factory.llm.errors import ConfigError, FatalProviderError, LLMError, RetryableProviderError
from factory.llm.providers.base import parse_retry_after, status_error


@pytest.mark.parametrize("status", [408, 409, 425, 429, 500, 502, 503, 504, 529, 599])
def test_retryable_statuses(status):
    err = status_error("openai", "m", status, "boom\nmore", {"retry-after": "2"})
    assert isinstance(err, RetryableProviderError)
    assert (err.status, err.retry_after, err.provider, err.model) == (status, 2.0, "openai", "m")
    assert str(err) == f"[openai:m] HTTP {status}: boom more"


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422, 418])
def test_fatal_statuses(status):
    err = status_error("anthropic", "claude-x", status, "no")
    assert isinstance(err, FatalProviderError) and isinstance(err, LLMError)
    assert err.status == status
    assert str(err).startswith(f"[anthropic:claude-x] HTTP {status}: ") and str(err).endswith("(no)")


def test_parse_retry_after():
    assert parse_retry_after(None) is None
    assert parse_retry_after({}) is None
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({"retry-after": "0.5"}) == 0.5
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert parse_retry_after({"retry-after-ms": "x", "retry-after": "9"}) == 9.0
    assert parse_retry_after({"retry-after": "-5"}) == 0.0
    assert parse_retry_after({"retry-after": "soon"}) is None
    in_10s = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 10))
    assert 8.0 <= parse_retry_after({"retry-after": in_10s}) <= 10.5


def test_endpoint_config_parse_and_validation():
    cfg = EndpointConfig.parse("openai:gpt-4o-mini", concurrency=8)
    assert (cfg.provider, cfg.model, cfg.concurrency, cfg.spec) == (
        "openai",
        "gpt-4o-mini",
        8,
        "openai:gpt-4o-mini",
    )
    # the model part may itself contain colons (e.g. tags of self-hosted models)
    assert EndpointConfig.parse("openai:org/model:q4").model == "org/model:q4"
    assert EndpointConfig(provider="google", model="  gemini-x ").model == "gemini-x"
    with pytest.raises(ConfigError, match="provider:model"):
        EndpointConfig.parse("gpt-4o-mini")
    with pytest.raises(ConfigError, match="unknown provider"):
        EndpointConfig.parse("cohere:command")
    for bad in ({"concurrency": 0}, {"timeout_s": 0}, {"max_retries": -1}, {"rpm": 0}, {"nope": 1}):
        with pytest.raises(ValidationError):
            EndpointConfig(provider="openai", model="m", **bad)


def test_keys_and_base_urls_come_from_the_environment(monkeypatch):
    cfg = EndpointConfig(provider="google", model="gemini-x")
    assert cfg.api_key() is None and cfg.resolved_base_url() is None
    monkeypatch.setenv("GOOGLE_API_KEY", "g2")
    assert cfg.api_key() == "g2"
    monkeypatch.setenv("GEMINI_API_KEY", "g1")
    assert cfg.api_key() == "g1"  # GEMINI_API_KEY wins
    monkeypatch.setenv("GEMINI_BASE_URL", "http://127.0.0.1:1")
    assert cfg.resolved_base_url() == "http://127.0.0.1:1"
    explicit = EndpointConfig(provider="google", model="gemini-x", base_url="http://127.0.0.1:2")
    assert explicit.resolved_base_url() == "http://127.0.0.1:2"


def test_configured_remote(monkeypatch):
    assert configured_remote() is None
    monkeypatch.setenv("GEMINI_API_KEY", "k")
    assert configured_remote().provider == "google"
    monkeypatch.setenv("ANTHROPIC_API_KEY", "k")
    assert configured_remote().provider == "anthropic"
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:1/v1")
    monkeypatch.setenv("FACTORY_MODEL", "my-model")
    assert configured_remote().spec == "openai:my-model"
