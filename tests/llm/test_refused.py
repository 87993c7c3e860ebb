"""Nothing listens at the base URL: every provider reports a connection failure, not a timeout.

The circuit breaker gives an endpoint that never answered and refuses connections a short
patience (startup_patience_s); that depends on this classification. The openai SDK's aiohttp
transport wraps an instant "connection refused" in APITimeoutError, which once read as a timeout.
"""

from __future__ import annotations

import socket
import time

import pytest

from factory.llm.client import make_provider
from factory.llm.config import EndpointConfig
from factory.llm.errors import RetryableProviderError
from factory.llm.types import GenParams
from tests.llm.helpers import KEY_ENV, MODELS, PROVIDERS


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(("provider", "transport"), [(p, "sdk") for p in PROVIDERS] + [("openai", "http")])
async def test_refused_connection_is_a_connection_error(
    provider: str, transport: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV[provider], "test-key")
    url = f"http://127.0.0.1:{_closed_port()}" + ("/v1" if provider == "openai" else "")
    cfg = EndpointConfig(
        provider=provider,  # type: ignore[arg-type]
        model=MODELS[provider],
        base_url=url,
        timeout_s=5.0,
        transport=transport,  # type: ignore[arg-type]
    )
    p = make_provider(cfg)
    t0 = time.perf_counter()
    try:
        with pytest.raises(RetryableProviderError) as info:
            await p.send([{"role": "user", "content": "hi"}], GenParams(), None)
    finally:
        await p.aclose()
    if provider != "google":  # google-genai's aiohttp session only gives up at its timeout
        assert time.perf_counter() - t0 < 4.0  # refused at once, not after the timeout
    assert info.value.kind == "connection", str(info.value)
    assert info.value.kind_text() == "connection refused or dropped"
    if transport == "http":
        assert f"connection refused at {url}" in str(info.value)
