"""OpenAI Chat Completions through the official SDK; serves any OpenAI-compatible server too.

Native reasoning: OpenAI-compatible servers that split a reasoning model's thinking from its answer
(vLLM with a ``--reasoning-parser``, DeepSeek's API, llama.cpp's server, OpenRouter) put it in a
non-standard field of the assistant message, ``reasoning_content`` (DeepSeek, llama.cpp, older vLLM)
or ``reasoning`` (newer vLLM, which deprecated ``reasoning_content``; OpenRouter). The body is parsed
here (the request goes out on aiohttp with the SDK client's URL and headers), so whichever of the two is present becomes
``RawCompletion.reasoning``, whether or not the request asked for it: such servers reason on every
request, and what was paid for is kept.

``GenParams.reasoning_budget`` sends no extra field: those servers take no budget parameter on the
chat endpoint (vLLM and DeepSeek reason anyway), and OpenAI's own API rejects fields it does not
know. It only raises ``max_tokens`` by the budget, because their ``max_tokens`` bounds reasoning and
answer together. OpenAI's o-series / GPT-5 models would take ``reasoning_effort`` (and
``max_completion_tokens``), but the Chat Completions API never returns their reasoning text (only a
``completion_tokens_details.reasoning_tokens`` count), so for them ``reasoning`` stays empty.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aiohttp
import openai
import orjson
from pydantic import BaseModel

from factory.llm.config import EndpointConfig
from factory.llm.errors import FatalProviderError, RetryableProviderError
from factory.llm.providers.base import Provider, refused, status_error
from factory.llm.schema import json_schema, schema_name
from factory.llm.types import GenParams, RawCompletion, Usage

try:  # aiohttp transport: markedly less client overhead than httpx's default at high concurrency
    from openai import DefaultAioHttpClient
except ImportError:  # pragma: no cover
    DefaultAioHttpClient = None  # type: ignore[assignment,misc]


class OpenAIProvider(Provider):
    name = "openai"

    def __init__(self, config: EndpointConfig) -> None:
        super().__init__(config)
        base_url = config.resolved_base_url()
        key = config.api_key()
        if key is None:
            if base_url is None:
                raise self.missing_key(("OPENAI_API_KEY",))
            key = "unused"  # self-hosted OpenAI-compatible servers usually need none
        kwargs: dict[str, Any] = {
            "api_key": key,
            "base_url": base_url,
            "max_retries": 0,  # retries are ours (tenacity, Retry-After aware)
            "timeout": config.timeout_s,
        }
        if DefaultAioHttpClient is not None:
            kwargs["http_client"] = DefaultAioHttpClient(timeout=config.timeout_s)
        self.client = openai.AsyncOpenAI(**kwargs)
        # Chat completions go out on a plain aiohttp session, with the URL and headers the SDK
        # client would send (auth, organization/project, user agent), computed once: the SDK's
        # per-request work (options model, httpx request and URL objects, header merging) was
        # about a quarter of a zero-latency build's CPU. The SDK client stays for everything else.
        self._url = str(self.client.base_url).rstrip("/") + "/chat/completions"
        headers = {**self.client.default_headers, **self.client.auth_headers}
        self._headers = {k: v for k, v in headers.items() if isinstance(v, str)}
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=1000, keepalive_timeout=5.0),
                timeout=aiohttp.ClientTimeout(total=self.config.timeout_s),
                skip_auto_headers=("User-Agent",),
            )
        return self._session

    def _body(
        self, messages: list[dict[str, Any]], params: GenParams, schema: type[BaseModel] | None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.config.model,
            "messages": messages,
            "temperature": params.temperature,
            # room for the reasoning too: these servers count it against max_tokens
            "max_tokens": params.max_tokens + (params.reasoning_budget or 0),
        }
        if params.top_p is not None:
            body["top_p"] = params.top_p
        if params.seed is not None:
            body["seed"] = params.seed
        if params.stop:
            body["stop"] = list(params.stop)
        if schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {
                    "name": schema_name(schema),
                    "schema": json_schema(schema),
                    "strict": self.config.strict_schema,
                },
            }
        return body

    async def send(
        self, messages: list[dict[str, Any]], params: GenParams, schema: type[BaseModel] | None
    ) -> tuple[RawCompletion, Mapping[str, str]]:
        model = self.config.model
        # A pre-serialised body: the SDK's typed-params transform walks every schema and message
        # recursively and cost more CPU than the whole rest of a call (measured: ~30% of a build).
        body = orjson.dumps(self._body(messages, params, schema))
        try:
            async with self._http().post(self._url, data=body, headers=self._headers) as resp:
                content = await resp.read()
                status, headers = resp.status, resp.headers
        except TimeoutError as exc:  # aiohttp's timeouts (asyncio.TimeoutError is TimeoutError)
            if refused(exc):
                raise self._refused() from exc
            raise RetryableProviderError(
                f"timed out after {self.config.timeout_s}s", provider=self.name, model=model
            ) from exc
        except (aiohttp.ClientError, OSError) as exc:
            if refused(exc):
                raise self._refused() from exc
            raise RetryableProviderError(
                f"connection failed: {exc}", provider=self.name, model=model
            ) from exc
        if status >= 400:
            raise status_error(self.name, model, status, _error_detail(content), headers)
        try:
            data = orjson.loads(content)
            choice = data["choices"][0]
            text = choice["message"].get("content") or ""
            reasoning = message_reasoning(choice["message"])
            finish = choice.get("finish_reason") or "stop"
            usage = data.get("usage") or {}
        except (orjson.JSONDecodeError, KeyError, IndexError, TypeError) as exc:
            raise RetryableProviderError(
                f"unreadable response body: {content[:200]!r}", provider=self.name, model=model
            ) from exc
        if finish == "content_filter":
            raise FatalProviderError(
                "the provider's content filter blocked the output", provider=self.name, model=model
            )
        completion = RawCompletion(
            text=text,
            finish_reason=finish,
            model=data.get("model", model),
            response_id=data.get("id", ""),
            reasoning=reasoning,
            usage=Usage(
                input_tokens=usage.get("prompt_tokens") or 0,
                output_tokens=usage.get("completion_tokens") or 0,
                cached_input_tokens=_cached_tokens(usage),
            ),
        )
        return completion, headers

    def _refused(self) -> RetryableProviderError:
        where = self.config.resolved_base_url() or "the provider's default address"
        return RetryableProviderError(
            f"connection failed: connection refused at {where}", provider=self.name, model=self.config.model
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
        await self.client.close()


def _error_detail(content: bytes) -> str:
    """The server's error message from an error body (OpenAI's `{"error": {"message": ...}}`)."""
    try:
        body = orjson.loads(content)
    except orjson.JSONDecodeError:
        return content[:300].decode("utf-8", "replace")
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict):
            return str(err.get("message") or err)
        return str(err)
    return str(body)


def _cached_tokens(usage: Any) -> int:
    """Prompt tokens read from OpenAI's implicit prompt cache (`prompt_tokens_details.cached_tokens`)."""
    details = usage.get("prompt_tokens_details") if isinstance(usage, dict) else None
    value = details.get("cached_tokens") if isinstance(details, dict) else None
    return value if isinstance(value, int) and value > 0 else 0


REASONING_FIELDS = ("reasoning_content", "reasoning")


def message_reasoning(message: Any) -> str:
    """The reasoning text of an assistant message of an OpenAI-compatible server ("" if none)."""
    if not isinstance(message, dict):
        return ""
    for field in REASONING_FIELDS:
        value = message.get(field)
        if isinstance(value, str) and value:
            return value
    return ""
