"""The Google Gemini (google-genai) wire protocol of the fake LLM server.

``POST /{v1beta|v1|v1alpha}/models/{model}:generateContent``: the ``x-goog-api-key``/``?key=`` check,
the ``google.rpc`` error envelope (with ``RetryInfo`` on rate limits) and the
``GenerateContentResponse`` answer (``responseJsonSchema``/``responseSchema``, JSON mime type,
``candidateCount`` candidates). Gemini sends no rate-limit headers. A request whose
``thinkingConfig`` has ``includeThoughts`` true (and a ``thinkingBudget`` other than 0) gets a
thought-summary part ``{"text": ..., "thought": true}`` before each answer part, and
``thoughtsTokenCount`` in its usage.
"""

from __future__ import annotations

import random
import urllib.parse
from typing import Any

import orjson

from factory.testing.answers import answer_text, ntokens, reasoning_text
from factory.testing.schema_instances import seed_for


class GoogleWire:
    """The Gemini route handler, key check and error envelope.

    Mixed into :class:`~factory.testing.fake_llm_server.FakeLLMServer`, whose ``_reply``, ``_next_id``,
    ``_account`` and ``_count_reasoning`` it uses.
    """

    @staticmethod
    def _gemini_asks_thoughts(gc: dict) -> bool:
        tc = gc.get("thinkingConfig") or gc.get("thinking_config")
        if not isinstance(tc, dict):
            return False
        include = tc.get("includeThoughts", tc.get("include_thoughts"))
        budget = tc.get("thinkingBudget", tc.get("thinking_budget"))
        return include is True and budget != 0  # a budget of 0 turns thinking off

    @staticmethod
    def _gemini_key_ok(headers: Any, key: str | None, query: str) -> bool:
        if headers.get("x-goog-api-key") == key:
            return True
        if query:
            return key in urllib.parse.parse_qs(query).get("key", ())
        return False

    @staticmethod
    def _gemini_error_body(status: int, message: str, retry_after: float | None) -> tuple[int, Any]:
        gstatus = {
            429: "RESOURCE_EXHAUSTED",
            400: "INVALID_ARGUMENT",
            401: "UNAUTHENTICATED",
            503: "UNAVAILABLE",
        }.get(status, "INTERNAL")
        err: dict[str, Any] = {"code": status, "message": message, "status": gstatus}
        if retry_after is not None:
            err["details"] = [
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{retry_after:g}s"}
            ]
        return status, {"error": err}

    def _gemini(self, body: dict, model: str, fault: str | None) -> Any:
        contents = body.get("contents") or []
        system = body.get("systemInstruction") or body.get("system_instruction")
        seed = seed_for([system, contents] if system else contents, model)
        gc = body.get("generationConfig") or body.get("generation_config") or {}
        schema = None
        for key in ("responseJsonSchema", "response_json_schema", "responseSchema", "response_schema"):
            if gc.get(key) is not None:
                schema = gc[key]
                break
        mime = gc.get("responseMimeType") or gc.get("response_mime_type")
        json_mode = schema is None and mime == "application/json"
        thoughts = self._gemini_asks_thoughts(gc)
        self._count_reasoning(thoughts, thoughts)
        n = gc.get("candidateCount") or gc.get("candidate_count") or 1
        candidates = []
        out_chars = 0
        thought_chars = 0
        for i in range(n if isinstance(n, int) and 0 < n <= 8 else 1):
            text, truncated = answer_text(schema, json_mode, random.Random(seed + i), fault)
            out_chars += len(text)
            parts: list[dict[str, Any]] = [{"text": text}] if fault != "empty" else []
            if thoughts:
                thought = reasoning_text(seed + i)
                thought_chars += len(thought)
                parts.insert(0, {"text": thought, "thought": True})
            cand: dict[str, Any] = {
                "content": {"role": "model", "parts": parts},
                "finishReason": "MAX_TOKENS" if truncated else "STOP",
                "index": i,
            }
            candidates.append(cand)
        prompt_tokens = ntokens(len(orjson.dumps([system, contents])))
        # implicit caching: the system instruction is the prefix
        parts = (system or {}).get("parts") if isinstance(system, dict) else None
        text = "".join(p.get("text", "") for p in parts or [] if isinstance(p, dict))
        size, hit = self._cached_prefix("google", text)
        out_tokens = ntokens(out_chars)
        thought_tokens = ntokens(thought_chars) if thoughts else 0
        self._account(prompt_tokens + out_tokens + thought_tokens)
        usage: dict[str, Any] = {
            "promptTokenCount": prompt_tokens,
            "candidatesTokenCount": out_tokens,
            "totalTokenCount": prompt_tokens + out_tokens + thought_tokens,
        }
        if thoughts:
            usage["thoughtsTokenCount"] = thought_tokens
        if hit:
            usage["cachedContentTokenCount"] = min(size, prompt_tokens)
        payload = {
            "candidates": candidates,
            "usageMetadata": usage,
            "modelVersion": model,
            "responseId": self._next_id()[:22],
        }
        return self._reply(200, payload)
