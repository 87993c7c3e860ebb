"""Chat Completions over one aiohttp session, for OpenAI-compatible servers whose speed is the limit.

`transport: http` in a recipe's endpoint limits sends the same request body as the SDK path to
`{base_url}/chat/completions` with the same headers the SDK would set for auth, and maps statuses,
timeouts and dropped connections to the same errors. What it leaves out is the SDK's request
machinery (options objects, URL copying, header merging, httpx), which is most of a call's client
CPU: against a local zero-latency server the SDK path tops out near 950 calls/s on one core
(bench/README.md). The SDK stays the default; this is for self-hosted servers (vLLM, SGLang,
llama.cpp) and proxies that speak the OpenAI wire protocol. Answers are parsed by the provider's
own `parse_completion`, so both transports give byte-identical results and cache keys.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping

import aiohttp
import orjson

from factory.llm.config import EndpointConfig
from factory.llm.errors import RetryableProviderError
from factory.llm.providers.base import body_message, connection_refused, refused, status_error

OPENAI_DEFAULT_BASE_URL = "https://api.openai.com/v1"
# The SDK reads these too and sends them as headers (organisation and project scoping).
SCOPE_HEADERS = {"OPENAI_ORG_ID": "OpenAI-Organization", "OPENAI_PROJECT_ID": "OpenAI-Project"}


class ChatCompletionsHTTP:
    """POSTs pre-serialised chat bodies; one session per event loop, created on first use."""

    def __init__(self, config: EndpointConfig, base_url: str | None, api_key: str, provider: str) -> None:
        self.config = config
        self.provider = provider
        self.url = (base_url or OPENAI_DEFAULT_BASE_URL).rstrip("/") + "/chat/completions"
        self.headers = {
            "Authorization": f"Bearer {api_key}",
            "Content-Type": "application/json",
            "Accept": "application/json",
        }
        for var, header in SCOPE_HEADERS.items():
            if os.environ.get(var):
                self.headers[header] = os.environ[var]
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self.config.concurrency, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(
                connector=connector,
                headers=self.headers,
                timeout=aiohttp.ClientTimeout(total=self.config.timeout_s),
            )
        return self._session

    async def post(self, body: bytes) -> tuple[bytes, Mapping[str, str]]:
        """The response body and headers of a 2xx answer; our error classes for anything else."""
        model = self.config.model
        try:
            async with self._open().post(self.url, data=body) as resp:
                content = await resp.read()
                if resp.status >= 400:
                    raise status_error(self.provider, model, resp.status, _detail(content), resp.headers)
                return content, resp.headers
        except TimeoutError as exc:  # aiohttp's timeouts are TimeoutError subclasses
            raise RetryableProviderError(
                f"timed out after {self.config.timeout_s}s", provider=self.provider, model=model
            ) from exc
        except aiohttp.ClientError as exc:
            if refused(exc):
                where = self.url.removesuffix("/chat/completions")
                raise connection_refused(self.provider, model, where) from exc
            raise RetryableProviderError(
                f"connection failed: {type(exc).__name__}: {exc}", provider=self.provider, model=model
            ) from exc

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
            await asyncio.sleep(0)  # let the connector's transports close before the loop ends
        self._session = None


def _detail(content: bytes) -> str:
    try:
        return body_message(orjson.loads(content)) or content[:300].decode("utf-8", "replace")
    except orjson.JSONDecodeError:
        return content[:300].decode("utf-8", "replace")
