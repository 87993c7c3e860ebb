"""OpenAI Chat Completions through the official SDK; serves any OpenAI-compatible server too.

Native reasoning: OpenAI-compatible servers that split a reasoning model's thinking from its answer
(vLLM with a ``--reasoning-parser``, DeepSeek's API, llama.cpp's server, OpenRouter) put it in a
non-standard field of the assistant message, ``reasoning_content`` (DeepSeek, llama.cpp, older vLLM)
or ``reasoning`` (newer vLLM, which deprecated ``reasoning_content``; OpenRouter). The body is parsed
here (the SDK hands back the raw HTTP response), so whichever of the two is present becomes
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

import openai
import orjson
from pydantic import BaseModel

from factory.llm.config import EndpointConfig
from factory.llm.errors import FatalProviderError, RetryableProviderError
from factory.llm.providers.base import Provider
from factory.llm.providers.openai_http import ChatCompletionsHTTP
from factory.llm.schema import json_schema, schema_name
from factory.llm.types import GenParams, RawCompletion, Usage

try:  # the SDK's own HTTP response class, so the SDK hands the response back untouched
    import httpx2 as _http
except ImportError:  # pragma: no cover - older SDKs use httpx
    import httpx as _http  # type: ignore[no-redef]

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
        # transport http: chat calls skip the SDK; the SDK client still serves batch jobs
        self.http = (
            ChatCompletionsHTTP(config, base_url, key, self.name) if config.transport == "http" else None
        )
        if DefaultAioHttpClient is not None:
            kwargs["http_client"] = DefaultAioHttpClient(timeout=config.timeout_s)
        self.client = openai.AsyncOpenAI(**kwargs)

    def request_body(
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
        # The request goes through the SDK client (auth, base URL, headers, error classes) as a
        # pre-serialised body: the SDK's typed-params transform walks every schema and message
        # recursively and cost more CPU than the whole rest of a call (measured: ~30% of a build).
        body = orjson.dumps(self.request_body(messages, params, schema))
        if self.http is not None:
            content, headers = await self.http.post(body)
            return self.parse_completion(self._json(content)), headers
        try:
            http = await self.client.post(
                "/chat/completions",
                cast_to=_http.Response,
                content=body,
                options={"headers": {"Content-Type": "application/json"}},
            )
        except (openai.APIStatusError, openai.APIConnectionError) as exc:  # timeouts are connection errors
            raise self.sdk_error(exc, openai) from exc
        return self.parse_completion(self._json(http.content)), http.headers

    def _json(self, content: bytes) -> Any:
        try:
            return orjson.loads(content)
        except orjson.JSONDecodeError as exc:
            raise RetryableProviderError(
                f"unreadable response body: {content[:200]!r}", provider=self.name, model=self.config.model
            ) from exc

    def parse_completion(self, data: Any) -> RawCompletion:
        """A `chat.completion` body as RawCompletion (online answers and batch results alike)."""
        model = self.config.model
        try:
            choice = data["choices"][0]
            text = choice["message"].get("content") or ""
            reasoning = message_reasoning(choice["message"])
            finish = choice.get("finish_reason") or "stop"
            usage = data.get("usage") or {}
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise RetryableProviderError(
                f"unreadable response body: {str(data)[:200]!r}", provider=self.name, model=model
            ) from exc
        if finish == "content_filter":
            raise FatalProviderError(
                "the provider's content filter blocked the output", provider=self.name, model=model
            )
        return RawCompletion(
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

    async def aclose(self) -> None:
        if self.http is not None:
            await self.http.aclose()
        await self.client.close()


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
