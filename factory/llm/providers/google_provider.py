"""Google Gemini through the google-genai SDK; structured output via a response JSON schema.

Native reasoning (thinking): with ``GenParams.reasoning_budget`` set the generate config carries
``thinking_config=ThinkingConfig(include_thoughts=True, thinking_budget=budget)`` and
``max_output_tokens`` becomes budget + ``params.max_tokens`` (Gemini counts thoughts against
``max_output_tokens``). Parts of the reply with ``part.thought`` true are thought summaries: their
text becomes ``RawCompletion.reasoning`` and the other parts are the answer (thought parts are never
part of the answer, asked for or not). Output tokens are ``candidates_token_count`` plus
``thoughts_token_count``: thinking is billed as output. Allowed budgets depend on the model (e.g.
128..32768 for 2.5 Pro, 0..24576 for 2.5 Flash); Gemini 3 models prefer ``thinking_level`` but still
take a budget.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from google import genai
from google.genai import errors as genai_errors
from google.genai import types
from pydantic import BaseModel

from factory.llm.config import EndpointConfig
from factory.llm.errors import RetryableProviderError
from factory.llm.providers.base import Provider, status_error
from factory.llm.schema import json_schema
from factory.llm.types import GenParams, RawCompletion, Usage

_FINISH = {"STOP": "stop", "MAX_TOKENS": "length"}


class GoogleProvider(Provider):
    name = "google"

    def __init__(self, config: EndpointConfig) -> None:
        super().__init__(config)
        key = config.api_key()
        if key is None:
            raise self.missing_key(("GEMINI_API_KEY", "GOOGLE_API_KEY"))
        http_options = types.HttpOptions(timeout=int(config.timeout_s * 1000))
        base_url = config.resolved_base_url()
        if base_url:
            http_options.base_url = base_url
        # Retries are ours: the SDK's own retry options stay off.
        self.client = genai.Client(api_key=key, http_options=http_options)

    def request_parts(
        self, messages: list[dict[str, Any]], params: GenParams, schema: type[BaseModel] | None
    ) -> tuple[list[types.Content], types.GenerateContentConfig]:
        """The contents and generate config of one request (online call and batch request alike)."""
        system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
        contents = [
            types.Content(
                role="model" if m["role"] == "assistant" else "user", parts=[types.Part(text=m["content"])]
            )
            for m in messages
            if m["role"] != "system"
        ]
        budget = params.reasoning_budget
        max_out = params.max_tokens + budget if budget is not None else params.max_tokens
        cfg: dict[str, Any] = {"temperature": params.temperature, "max_output_tokens": max_out}
        if budget is not None:
            cfg["thinking_config"] = types.ThinkingConfig(include_thoughts=True, thinking_budget=budget)
        if system:
            cfg["system_instruction"] = system
        if params.top_p is not None:
            cfg["top_p"] = params.top_p
        if params.seed is not None:
            cfg["seed"] = params.seed
        if params.stop:
            cfg["stop_sequences"] = list(params.stop)
        if schema is not None:
            cfg["response_mime_type"] = "application/json"
            cfg["response_json_schema"] = json_schema(schema)
        return contents, types.GenerateContentConfig(**cfg)

    def api_error(self, exc: Exception) -> Exception | None:
        """Our error for an exception of a google-genai call (None: not the SDK's nor the transport's)."""
        model = self.config.model
        if isinstance(exc, genai_errors.APIError):
            return status_error(
                self.name, model, int(exc.code or 500), str(exc.message or exc), _headers(exc)
            )
        if isinstance(exc, TimeoutError):
            return RetryableProviderError(
                f"timed out after {self.config.timeout_s}s", provider=self.name, model=model
            )
        if type(exc).__module__.startswith(("httpx", "aiohttp")):  # transport errors have their own classes
            return RetryableProviderError(f"connection failed: {exc!r}", provider=self.name, model=model)
        return None

    async def send(
        self, messages: list[dict[str, Any]], params: GenParams, schema: type[BaseModel] | None
    ) -> tuple[RawCompletion, Mapping[str, str]]:
        contents, config = self.request_parts(messages, params, schema)
        try:
            resp = await self.client.aio.models.generate_content(
                model=self.config.model, contents=contents, config=config
            )
        except Exception as exc:
            mapped = self.api_error(exc)
            if mapped is None:
                raise
            raise mapped from exc
        headers = dict(resp.sdk_http_response.headers or {}) if resp.sdk_http_response else {}
        return self.parse_response(resp), headers

    def parse_response(self, resp: types.GenerateContentResponse) -> RawCompletion:
        """A GenerateContentResponse as RawCompletion (online answers and batch results alike)."""
        text, reasoning, finish = "", "", "stop"
        if resp.candidates:
            cand = resp.candidates[0]
            finish_name = cand.finish_reason.name if cand.finish_reason is not None else "STOP"
            finish = _FINISH.get(finish_name, finish_name.lower())
            if cand.content and cand.content.parts:
                parts = cand.content.parts
                text = "".join(p.text or "" for p in parts if not p.thought)
                reasoning = "\n\n".join(p.text for p in parts if p.thought and p.text)
        um = resp.usage_metadata
        usage = Usage(
            input_tokens=(um.prompt_token_count or 0) if um else 0,
            output_tokens=((um.candidates_token_count or 0) + (um.thoughts_token_count or 0)) if um else 0,
            # implicit caching: prompt_token_count includes the cached prefix
            cached_input_tokens=(um.cached_content_token_count or 0) if um else 0,
        )
        return RawCompletion(
            text=text,
            finish_reason=finish,
            usage=usage,
            model=resp.model_version or self.config.model,
            response_id=resp.response_id or "",
            reasoning=reasoning,
        )

    async def aclose(self) -> None:
        # Without this the SDK's aiohttp session (and its sockets) outlive LLMClient.aclose().
        await self.client.aio.aclose()


def _headers(exc: genai_errors.APIError) -> dict[str, str]:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    try:
        return {k.lower(): v for k, v in dict(headers or {}).items()}
    except (TypeError, ValueError):
        return {}
