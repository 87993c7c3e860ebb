"""Anthropic Messages through the official SDK; structured output via a forced tool call.

Native reasoning (extended thinking): with ``GenParams.reasoning_budget`` set the request carries
``thinking={"type": "enabled", "budget_tokens": max(1024, budget)}`` (1024 is the API's minimum) and
``max_tokens`` becomes budget + ``params.max_tokens``, since the budget must be below ``max_tokens``
and thinking counts against it. The text of the reply's ``thinking`` content blocks becomes
``RawCompletion.reasoning`` (``redacted_thinking`` blocks are encrypted and skipped).

Extended thinking constrains the rest of the request (API docs, "extended thinking: feature
compatibility"):

* no forced tool use: ``tool_choice`` ``tool`` and ``any`` are refused ("Thinking may not be enabled
  when tool_choice forces tool use"), only ``auto``/``none``. Structured output then offers the one
  tool with ``tool_choice={"type": "auto"}``, tells the model in the system prompt to answer by
  calling it, and takes the ``tool_use`` block from the reply (the text blocks, if it wrote JSON
  there instead, otherwise; the client's validation and re-ask handle the rest);
* no temperature other than 1 (nor top_k): ``temperature`` is left out (the API's default is 1);
* ``top_p`` only within [0.95, 1]: a value below 0.95 is left out.

Prompt caching: the system prompt goes as one text block with ``cache_control`` (ephemeral), so the
long static instructions of a stage are read from the cache on later calls; usage then reports
``cache_read_input_tokens`` / ``cache_creation_input_tokens`` apart from ``input_tokens``, and
``Usage.input_tokens`` is their sum, ``Usage.cached_input_tokens`` the reads.

Models from Claude Opus 4.7 on refuse ``thinking.type="enabled"`` (they take only ``adaptive``
thinking with an ``effort``), so a budget there is a 400 error; Claude 3.7 Sonnet and the Claude 4
models up to 4.6 accept it.
"""

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

MIN_THINKING_BUDGET = 1024  # the API refuses smaller budget_tokens
TOOL_INSTRUCTION = "Answer by calling the tool {name} exactly once, with the complete answer as its input."


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

    def request_kwargs(
        self, messages: list[dict[str, Any]], params: GenParams, schema: type[BaseModel] | None
    ) -> dict[str, Any]:
        """The keyword arguments of `messages.create` for one request (sampling in `extra_body`)."""
        system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
        convo = [{"role": m["role"], "content": m["content"]} for m in messages if m["role"] != "system"]
        thinking = params.reasoning_budget is not None
        budget = max(MIN_THINKING_BUDGET, params.reasoning_budget or 0)
        # anthropic>=1.0 dropped the sampling keyword arguments (temperature, top_p) from
        # messages.create(); its migration guide sends them through extra_body, which leaves the
        # wire payload unchanged and works with 0.x too.
        sampling: dict[str, Any] = {}
        if not thinking:
            sampling["temperature"] = params.temperature
        if params.top_p is not None and (not thinking or params.top_p >= 0.95):
            sampling["top_p"] = params.top_p
        kwargs: dict[str, Any] = {
            "model": self.config.model,
            "max_tokens": params.max_tokens + budget if thinking else params.max_tokens,
            "messages": convo,
        }
        if sampling:
            kwargs["extra_body"] = sampling
        if thinking:
            kwargs["thinking"] = {"type": "enabled", "budget_tokens": budget}
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
            if thinking:  # forced tool use is refused with thinking: offer the tool and ask for it
                kwargs["tool_choice"] = {"type": "auto"}
                instruction = TOOL_INSTRUCTION.format(name=name)
                system = f"{system}\n\n{instruction}" if system else instruction
            else:
                kwargs["tool_choice"] = {"type": "tool", "name": name}
        if system:
            # prompt caching: the system prompt (instructions, worked examples) is the static
            # prefix every call of a stage shares; cache reads cost a tenth of the input price
            kwargs["system"] = [{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}]
        return kwargs

    def request_body(
        self, messages: list[dict[str, Any]], params: GenParams, schema: type[BaseModel] | None
    ) -> dict[str, Any]:
        """The JSON body `messages.create` sends for one request (what a batch request's `params` is)."""
        kwargs = self.request_kwargs(messages, params, schema)
        extra = kwargs.pop("extra_body", None) or {}
        return {**kwargs, **extra}

    async def send(
        self, messages: list[dict[str, Any]], params: GenParams, schema: type[BaseModel] | None
    ) -> tuple[RawCompletion, Mapping[str, str]]:
        kwargs = self.request_kwargs(messages, params, schema)
        try:
            raw = await self.client.messages.with_raw_response.create(**kwargs)
        except (
            anthropic.APIStatusError,
            anthropic.APIConnectionError,
        ) as exc:  # timeouts are connection errors
            raise self.sdk_error(exc, anthropic) from exc
        try:
            data = orjson.loads(raw.http_response.content)
        except orjson.JSONDecodeError as exc:
            raise RetryableProviderError(
                "unreadable response body", provider=self.name, model=self.config.model
            ) from exc
        return self.parse_message(data, schema is not None), raw.http_response.headers

    def parse_message(self, data: Any, structured: bool) -> RawCompletion:
        """A `message` body as RawCompletion (online answers and batch results alike)."""
        model = self.config.model
        try:
            blocks = data.get("content") or []
            usage = data.get("usage") or {}
        except AttributeError as exc:
            raise RetryableProviderError("unreadable response body", provider=self.name, model=model) from exc
        text, reasoning = _read_blocks(blocks, structured)
        stop = data.get("stop_reason") or "end_turn"
        finish = "length" if stop == "max_tokens" else "stop"
        return RawCompletion(
            text=text,
            finish_reason=finish,
            model=data.get("model", model),
            response_id=data.get("id", ""),
            reasoning=reasoning,
            usage=_usage(usage),
        )

    async def aclose(self) -> None:
        await self.client.close()


def _usage(usage: dict[str, Any]) -> Usage:
    """Anthropic's `input_tokens` leaves out the prompt-cache reads and writes: they are added, and
    the reads are the cached input tokens (writes are billed as plain input here)."""

    def count(key: str) -> int:
        value = usage.get(key)
        return value if isinstance(value, int) and value > 0 else 0

    read = count("cache_read_input_tokens")
    return Usage(
        input_tokens=count("input_tokens") + read + count("cache_creation_input_tokens"),
        output_tokens=count("output_tokens"),
        cached_input_tokens=read,
    )


def _read_blocks(blocks: list[Any], structured: bool) -> tuple[str, str]:
    """(answer text, reasoning) of a reply's content blocks. A structured answer is the first
    tool_use block's input (as JSON text), else the text blocks; reasoning is the thinking blocks."""
    texts: list[str] = []
    thoughts: list[str] = []
    tool_text: str | None = None
    for block in blocks:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "thinking":
            thought = block.get("thinking")
            if isinstance(thought, str) and thought:
                thoughts.append(thought)
        elif kind == "tool_use" and structured and tool_text is None:
            tool_input = block.get("input")
            # Tool input arrives parsed; keep it as JSON text so validation is uniform.
            tool_text = tool_input if isinstance(tool_input, str) else orjson.dumps(tool_input).decode()
        elif kind == "text" and tool_text is None:
            texts.append(block.get("text", ""))
    text = tool_text if tool_text is not None else "".join(texts)
    return text, "\n\n".join(thoughts)
