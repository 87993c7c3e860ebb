"""Anthropic Messages through the official SDK; structured output via a forced tool call."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import anthropic
import orjson
from pydantic import BaseModel

from factory.llm.config import EndpointConfig
from factory.llm.errors import RetryableProviderError
from factory.llm.providers.base import Provider
from factory.llm.schema import json_schema, schema_name
from factory.llm.types import GenParams, RawCompletion, Usage


class AnthropicProvider(Provider):
    name = "anthropic"

    def __init__(self, config: EndpointConfig) -> None:
        super().__init__(config)
        key = config.api_key()
        if key is None:
            raise self.missing_key(("ANTHROPIC_API_KEY",))
        self.client = anthropic.AsyncAnthropic(
            api_key=key, base_url=config.resolved_base_url(), max_retries=0, timeout=config.timeout_s
        )

    async def send(
        self, messages: list[dict[str, Any]], params: GenParams, schema: type[BaseModel] | None
    ) -> tuple[RawCompletion, Mapping[str, str]]:
        model = self.config.model
        system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
        convo = [{"role": m["role"], "content": m["content"]} for m in messages if m["role"] != "system"]
        # anthropic>=1.0 dropped the sampling keyword arguments (temperature, top_p) from
        # messages.create(); its migration guide sends them through extra_body, which leaves the
        # wire payload unchanged and works with 0.x too.
        sampling: dict[str, Any] = {"temperature": params.temperature}
        if params.top_p is not None:
            sampling["top_p"] = params.top_p
        kwargs: dict[str, Any] = {
            "model": model,
            "max_tokens": params.max_tokens,
            "messages": convo,
            "extra_body": sampling,
        }
        if system:
            kwargs["system"] = system
        if params.stop:
            kwargs["stop_sequences"] = list(params.stop)
        if schema is not None:
            name = schema_name(schema)
            kwargs["tools"] = [
                {
                    "name": name,
                    "description": f"Record the answer as {name}.",
                    "input_schema": json_schema(schema),
                }
            ]
            kwargs["tool_choice"] = {"type": "tool", "name": name}
        try:
            raw = await self.client.messages.with_raw_response.create(**kwargs)
        except (
            anthropic.APIStatusError,
            anthropic.APIConnectionError,
        ) as exc:  # timeouts are connection errors
            raise self.sdk_error(exc, anthropic) from exc
        try:
            data = orjson.loads(raw.http_response.content)
            blocks = data.get("content") or []
            usage = data.get("usage") or {}
        except (orjson.JSONDecodeError, AttributeError) as exc:
            raise RetryableProviderError("unreadable response body", provider=self.name, model=model) from exc
        text = ""
        for block in blocks:
            if schema is not None and block.get("type") == "tool_use":
                tool_input = block.get("input")
                # Tool input arrives parsed; keep it as JSON text so validation is uniform.
                text = tool_input if isinstance(tool_input, str) else orjson.dumps(tool_input).decode()
                break
            if block.get("type") == "text":
                text += block.get("text", "")
        stop = data.get("stop_reason") or "end_turn"
        finish = "length" if stop == "max_tokens" else "stop"
        completion = RawCompletion(
            text=text,
            finish_reason=finish,
            model=data.get("model", model),
            response_id=data.get("id", ""),
            usage=Usage(
                input_tokens=usage.get("input_tokens") or 0, output_tokens=usage.get("output_tokens") or 0
            ),
        )
        return completion, raw.http_response.headers

    async def aclose(self) -> None:
        await self.client.close()
