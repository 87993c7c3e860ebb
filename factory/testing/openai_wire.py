"""The OpenAI Chat Completions wire protocol of the fake LLM server.

``POST /v1/chat/completions`` (and ``/chat/completions``) and the OpenAI shape of ``GET /v1/models``:
the bearer-key check, the error envelope, the ``x-ratelimit-*`` headers and the ``chat.completion``
answer (``response_format`` ``json_schema``/``json_object``, function tools forced through
``tool_choice``, ``n`` choices, and ``message.reasoning_content`` as an OpenAI-compatible reasoning
server sends it: always when the server runs with ``reasoning=True``, otherwise when the request has
``reasoning_effort`` (other than ``"none"``) or ``include_reasoning: true``).
"""

from __future__ import annotations

import random
import time
from typing import Any

import orjson

from factory.testing.answers import answer_text, answer_tool_input, ntokens, reasoning_text, truncate
from factory.testing.schema_instances import seed_for


class OpenAIWire:
    """The OpenAI route handler, key check, error envelope and rate-limit headers.

    Mixed into :class:`~factory.testing.fake_llm_server.FakeLLMServer`, whose ``_reply``, ``_next_id``,
    ``_account``, ``_error``, ``_ratelimit_headers``, ``_count_reasoning`` and ``reasoning`` it uses.
    """

    reasoning: bool

    @staticmethod
    def _openai_asks_reasoning(body: dict) -> bool:
        effort = body.get("reasoning_effort")
        return (effort is not None and effort != "none") or body.get("include_reasoning") is True

    @staticmethod
    def _openai_key_ok(headers: Any, key: str | None) -> bool:
        return headers.get("Authorization", "") == f"Bearer {key}"

    @staticmethod
    def _openai_error_body(status: int, message: str, rid: str, headers: dict[str, str]) -> tuple[int, Any]:
        etype, code = {
            429: ("requests", "rate_limit_exceeded"),
            400: ("invalid_request_error", None),
            401: ("invalid_request_error", "invalid_api_key"),
            503: ("server_error", "overloaded"),
        }.get(status, ("server_error", None))
        headers["x-request-id"] = f"req_{rid}"
        payload: Any = {"error": {"message": message, "type": etype, "param": None, "code": code}}
        return status, payload

    def _openai_ratelimit_headers(self, rem_req: int, rem_tok: int) -> dict[str, str]:
        return {
            "x-ratelimit-limit-requests": str(self.requests_limit),
            "x-ratelimit-remaining-requests": str(rem_req),
            "x-ratelimit-limit-tokens": str(self.tokens_limit),
            "x-ratelimit-remaining-tokens": str(rem_tok),
            "x-ratelimit-reset-requests": "1s",
            "x-ratelimit-reset-tokens": "1s",
        }

    @staticmethod
    def _openai_models() -> Any:
        now = int(time.time())
        data = [
            {"id": m, "object": "model", "created": now, "owned_by": "fake-llm-server"}
            for m in ("gpt-fake-mini", "gpt-fake")
        ]
        return {"object": "list", "data": data}

    def _openai(self, body: dict, fault: str | None) -> Any:
        model = body.get("model") or "gpt-fake"
        messages = body.get("messages") or []
        if body.get("stream"):
            return self._error("openai", 400, "fake server: stream=true is not supported")
        seed = seed_for(messages, model)
        rf = body.get("response_format") or {}
        rtype = rf.get("type") if isinstance(rf, dict) else None
        schema = None
        if rtype == "json_schema":
            schema = (rf.get("json_schema") or {}).get("schema") or {"type": "object"}
        json_mode = rtype == "json_object"
        tool = None
        tc = body.get("tool_choice")
        tools = body.get("tools") or []
        if tools and isinstance(tc, dict) and tc.get("type") == "function":
            name = (tc.get("function") or {}).get("name")
            tool = next(
                (t.get("function") for t in tools if (t.get("function") or {}).get("name") == name), None
            )
        elif tools and tc == "required":
            tool = tools[0].get("function")
        asked = self._openai_asks_reasoning(body)
        with_reasoning = asked or self.reasoning
        self._count_reasoning(asked, with_reasoning)
        n = body.get("n") or 1
        choices = []
        out_chars = 0
        for i in range(n if isinstance(n, int) and 0 < n <= 16 else 1):
            rng = random.Random(seed + i)
            if tool is not None:
                truncated = fault == "truncated"
                args, _ = answer_tool_input(tool.get("parameters"), rng, None if truncated else fault)
                arg_text = args if isinstance(args, str) else orjson.dumps(args).decode()
                if truncated:
                    arg_text = truncate(arg_text)
                out_chars += len(arg_text)
                message: dict[str, Any] = {
                    "role": "assistant",
                    "content": None,
                    "refusal": None,
                    "tool_calls": [
                        {
                            "id": f"call_{self._next_id()[:24]}",
                            "type": "function",
                            "function": {"name": tool.get("name"), "arguments": arg_text},
                        }
                    ],
                }
            else:
                text, truncated = answer_text(schema, json_mode, rng, fault)
                out_chars += len(text)
                message = {"role": "assistant", "content": text, "refusal": None, "annotations": []}
            if with_reasoning:
                message["reasoning_content"] = thought = reasoning_text(seed + i)
                out_chars += len(thought)
            choices.append(
                {
                    "index": i,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": "length" if truncated else "stop",
                }
            )
        prompt_tokens = ntokens(len(orjson.dumps(messages)))
        # implicit prompt caching: the leading system messages are the prefix
        lead = []
        for m in messages:
            if not isinstance(m, dict) or m.get("role") not in ("system", "developer"):
                break
            lead.append(
                m.get("content")
                if isinstance(m.get("content"), str)
                else orjson.dumps(m.get("content")).decode()
            )
        size, hit = self._cached_prefix("openai", "\n".join(lead))
        cached_tokens = min(size, prompt_tokens) if hit else 0
        completion_tokens = ntokens(out_chars)
        total = prompt_tokens + completion_tokens
        rem_req, rem_tok = self._account(total)
        payload = {
            "id": f"chatcmpl-{self._next_id()}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": total,
                "prompt_tokens_details": {"cached_tokens": cached_tokens, "audio_tokens": 0},
            },
            "system_fingerprint": "fp_fake",
        }
        headers = self._ratelimit_headers("openai", rem_req, rem_tok)
        headers["x-request-id"] = f"req_{self._next_id()}"
        return self._reply(200, payload, headers)
