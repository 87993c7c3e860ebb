"""The Anthropic Messages wire protocol of the fake LLM server.

``POST /v1/messages`` and the Anthropic shape of ``GET /v1/models`` (requests that carry an
``anthropic-version`` header): the ``x-api-key``/bearer key check, the error envelope (503 becomes
529 ``overloaded_error``), the ``anthropic-ratelimit-*`` headers and the ``message`` answer (a forced
tool call, ``output_format``/``output_config`` JSON schema, or text).
"""

from __future__ import annotations

import random
import time
from typing import Any

import orjson

from factory.testing.answers import answer_text, answer_tool_input, ntokens
from factory.testing.schema_instances import seed_for


def _rfc3339(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


class AnthropicWire:
    """The Anthropic route handler, key check, error envelope and rate-limit headers.

    Mixed into :class:`~factory.testing.fake_llm_server.FakeLLMServer`, whose ``_reply``, ``_next_id``,
    ``_account``, ``_error`` and ``_ratelimit_headers`` it uses.
    """

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
        tools = body.get("tools") or []
        tc = body.get("tool_choice") or {}
        tool = None
        if tools and isinstance(tc, dict):
            if tc.get("type") == "tool":
                tool = next((t for t in tools if t.get("name") == tc.get("name")), None)
            elif tc.get("type") == "any":
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
        in_tokens = ntokens(len(orjson.dumps([system, messages])))
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
            "usage": {"input_tokens": in_tokens, "output_tokens": out_tokens},
        }
        headers = self._ratelimit_headers("anthropic", rem_req, rem_tok)
        headers["request-id"] = f"req_{rid}"
        return self._reply(200, payload, headers)
