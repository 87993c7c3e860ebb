"""Shared fixtures of the LLM-layer tests: an isolated environment, one fake server per module,
endpoint configs for the three providers and LLM clients that are always closed."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from factory.llm.client import LLMClient
from factory.llm.config import EndpointConfig
from factory.testing.server_process import FakeServerProcess
from tests.llm.helpers import KEY_ENV, MODELS

# Everything in the developer's environment that could steer an SDK somewhere else.
_ENV_VARS = (
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "OPENAI_ORG_ID",
    "OPENAI_PROJECT_ID",
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_BASE_URL",
    "ANTHROPIC_AUTH_TOKEN",
    "GEMINI_API_KEY",
    "GOOGLE_API_KEY",
    "GOOGLE_GEMINI_BASE_URL",
    "GEMINI_BASE_URL",
    "GOOGLE_GENAI_USE_VERTEXAI",
    "GOOGLE_CLOUD_PROJECT",
    "GOOGLE_CLOUD_LOCATION",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "FACTORY_MODEL",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
)


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in _ENV_VARS:
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="module")
def fake_server_proc() -> Iterator[FakeServerProcess]:
    """One fake server subprocess per test module (a module may override this fixture)."""
    with FakeServerProcess() as srv:
        yield srv


@pytest.fixture
def server(fake_server_proc: FakeServerProcess) -> FakeServerProcess:
    """The module's fake server with counters and fault queue cleared."""
    fake_server_proc.reset()
    return fake_server_proc


@pytest.fixture
def make_cfg(monkeypatch: pytest.MonkeyPatch, server: FakeServerProcess) -> Callable[..., EndpointConfig]:
    """EndpointConfig for a provider pointed at the fake server (sets a dummy key where needed)."""

    def make(provider: str, model: str | None = None, **overrides: Any) -> EndpointConfig:
        kw: dict[str, Any] = {"max_retries": 3, "timeout_s": 5.0, **overrides}
        model = model or MODELS[provider]
        if provider == "openai":
            return EndpointConfig(provider="openai", model=model, base_url=server.url + "/v1", **kw)
        monkeypatch.setenv(KEY_ENV[provider], "test-key")
        return EndpointConfig(provider=provider, model=model, base_url=server.url, **kw)  # type: ignore[arg-type]

    return make


@pytest.fixture
async def make_client() -> AsyncIterator[Callable[..., LLMClient]]:
    """LLMClient factory; every client made is closed at teardown."""
    clients: list[LLMClient] = []

    def make(**kwargs: Any) -> LLMClient:
        client = LLMClient(**kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()
