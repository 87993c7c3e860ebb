"""The Anthropic Messages wire protocol of the fake LLM server.

``POST /v1/messages`` and the Anthropic shape of ``GET /v1/models`` (requests that carry an
``anthropic-version`` header): the ``x-api-key``/bearer key check, the error envelope (503 becomes
529 ``overloaded_error``), the ``anthropic-ratelimit-*`` headers and the ``message`` answer (a forced
tool call, ``output_format``/``output_config`` JSON schema, or text).

Extended thinking (``thinking`` of type ``enabled`` or ``adaptive``) puts a ``thinking`` block
(synthetic text and a signature; empty text with ``display: "omitted"``) before the answer block, and
enforces the API's rules for it with a 400 ``invalid_request_error``: ``budget_tokens`` at least 1024
and below ``max_tokens``; no forced tool use (``tool_choice`` ``tool``/``any``); ``temperature`` unset
or 1; ``top_p`` unset or at least 0.95; no ``top_k``. With thinking on, tools offered under
``tool_choice`` ``auto`` (or none given) are answered with a call of the first tool, as a model told
to use it would.
"""

from __future__ import annotations

import random
import time
from typing import Any

import orjson

from factory.testing.answers import (
    answer_text,
    answer_tool_input,
    ntokens,
    reasoning_signature,
    reasoning_text,
)
from factory.testing.schema_instances import seed_for


def _rfc3339(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


class AnthropicWire:
    """The Anthropic route handler, key check, error envelope and rate-limit headers.

    Mixed into :class:`~factory.testing.fake_llm_server.FakeLLMServer`, whose ``_reply``, ``_next_id``,
    ``_account``, ``_error``, ``_ratelimit_headers`` and ``_count_reasoning`` it uses.
    """

    @staticmethod
    def _anthropic_thinking(body: dict) -> dict | None:
        """The request's thinking config when it turns thinking on, else None."""
        thinking = body.get("thinking")
        if isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive"):
            return thinking
        return None

    @staticmethod
    def _anthropic_thinking_error(body: dict, thinking: dict) -> str | None:
        """Why the API would refuse this request with thinking on (None: it would not)."""
        if thinking.get("type") == "enabled":
            budget = thinking.get("budget_tokens")
            if not isinstance(budget, int) or budget < 1024:
                return "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024"
            max_tokens = body.get("max_tokens")
            if isinstance(max_tokens, int) and budget >= max_tokens:
                return "`max_tokens` must be greater than `thinking.budget_tokens`"
        tc = body.get("tool_choice")
        if isinstance(tc, dict) and tc.get("type") in ("tool", "any"):
            return "Thinking may not be enabled when tool_choice forces tool use."
        temperature = body.get("temperature")
        if temperature is not None and temperature != 1:
            return "`temperature` may only be set to 1 when thinking is enabled"
        top_p = body.get("top_p")
        if top_p is not None and top_p < 0.95:
            return "`top_p` must be greater than or equal to 0.95 or unset when thinking is enabled"
        if body.get("top_k") is not None:
            return "`top_k` may not be set when thinking is enabled"
        return None

    @staticmethod
    def _anthropic_key_ok(headers: Any, key: str | None) -> bool:
        return headers.get("x-api-key") == key or headers.get("Authorization", "") == f"Bearer {key}"

    @staticmethod
    def _anthropic_error_body(
        status: int, message: str, rid: str, headers: dict[str, str]
    ) -> tuple[int, Any]:
        if status == 503:
            status = 529
        etype = {
            429: "rate_limit_error",
            400: "invalid_request_error",
            401: "authentication_error",
            529: "overloaded_error",
        }.get(status, "api_error")
        headers["request-id"] = f"req_{rid}"
        payload = {
            "type": "error",
            "error": {"type": etype, "message": message},
            "request_id": f"req_{rid}",
        }
        return status, payload

    def _anthropic_ratelimit_headers(self, rem_req: int, rem_tok: int) -> dict[str, str]:
        reset = _rfc3339((self._win + 1) * 60)
        return {
            "anthropic-ratelimit-requests-limit": str(self.requests_limit),
            "anthropic-ratelimit-requests-remaining": str(rem_req),
            "anthropic-ratelimit-requests-reset": reset,
            "anthropic-ratelimit-tokens-limit": str(self.tokens_limit),
            "anthropic-ratelimit-tokens-remaining": str(rem_tok),
            "anthropic-ratelimit-tokens-reset": reset,
        }

    @staticmethod
    def _anthropic_models() -> Any:
        data = [
            {"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"}
            for m in ("claude-fake-1", "claude-fake-2")
        ]
        return {"data": data, "has_more": False, "first_id": data[0]["id"], "last_id": data[-1]["id"]}

    def _anthropic(self, body: dict, fault: str | None) -> Any:
        model = body.get("model") or "claude-fake"
        messages = body.get("messages") or []
        system = body.get("system")
        seed = seed_for([system, messages] if system else messages, model)
        rng = random.Random(seed)
        thinking = self._anthropic_thinking(body)
        if thinking is not None:
            refusal = self._anthropic_thinking_error(body, thinking)
            if refusal is not None:
                return self._error("anthropic", 400, f"fake server: {refusal}")
        self._count_reasoning(thinking is not None, thinking is not None)
        tools = body.get("tools") or []
        tc = body.get("tool_choice") or {}
        tool = None
        if tools and isinstance(tc, dict):
            if tc.get("type") == "tool":
                tool = next((t for t in tools if t.get("name") == tc.get("name")), None)
            elif tc.get("type") == "any":
                tool = tools[0]
            elif thinking is not None and tc.get("type", "auto") == "auto":
                tool = tools[0]
        schema = None
        of = body.get("output_format") or (body.get("output_config") or {}).get("format")
        if isinstance(of, dict) and of.get("type") == "json_schema":
            schema = of.get("schema") or {"type": "object"}
        if tool is not None:
            inp, truncated = answer_tool_input(tool.get("input_schema"), rng, fault)
            content: list[dict[str, Any]] = [
                {
                    "type": "tool_use",
                    "id": f"toolu_{self._next_id()[:24]}",
                    "name": tool.get("name"),
                    "input": inp,
                }
            ]
            out_chars = len(orjson.dumps(inp))
            stop = "max_tokens" if truncated else "tool_use"
        else:
            text, truncated = answer_text(schema, False, rng, fault)
            content = [{"type": "text", "text": text}] if fault != "empty" else []
            out_chars = len(text)
            stop = "max_tokens" if truncated else "end_turn"
        if thinking is not None:
            thought = "" if thinking.get("display") == "omitted" else reasoning_text(seed)
            block = {"type": "thinking", "thinking": thought, "signature": reasoning_signature(seed)}
            content.insert(0, block)
            out_chars += len(reasoning_text(seed))  # omitted thinking is billed all the same
        in_tokens = ntokens(len(orjson.dumps([system, messages])))
        # explicit prompt caching: a system block list whose block carries cache_control
        cache_read = cache_write = 0
        if isinstance(system, list) and any(isinstance(b, dict) and b.get("cache_control") for b in system):
            text = "".join(b.get("text", "") for b in system if isinstance(b, dict))
            size, hit = self._cached_prefix("anthropic", text)
            size = min(size, in_tokens)
            cache_read, cache_write = (size, 0) if hit else (0, size)
            in_tokens -= size  # Anthropic's input_tokens excludes cache reads and writes
        out_tokens = ntokens(out_chars)
        rem_req, rem_tok = self._account(in_tokens + out_tokens)
        rid = self._next_id()
        payload = {
            "id": f"msg_{rid[:24]}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {
                "input_tokens": in_tokens,
                "output_tokens": out_tokens,
                "cache_read_input_tokens": cache_read,
                "cache_creation_input_tokens": cache_write,
            },
        }
        headers = self._ratelimit_headers("anthropic", rem_req, rem_tok)
        headers["request-id"] = f"req_{rid}"
        return self._reply(200, payload, headers)
