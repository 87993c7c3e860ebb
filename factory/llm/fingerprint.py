"""Cache keys: a stable hash of everything that determines what a provider would answer."""

from __future__ import annotations

import hashlib

import orjson

from factory.llm.schema import schema_bytes
from factory.llm.types import LLMRequest


def request_key(provider: str, model: str, request: LLMRequest, messages: list[dict] | None = None) -> str:
    """sha256 over provider, model, messages, generation parameters, schema and variant.

    `messages` overrides request.messages (re-asks extend the conversation).
    """
    msgs = messages if messages is not None else [m.model_dump() for m in request.messages]
    h = hashlib.sha256()
    h.update(provider.encode())
    h.update(b"\x00")
    h.update(model.encode())
    h.update(b"\x00")
    h.update(orjson.dumps(msgs, option=orjson.OPT_SORT_KEYS))
    h.update(b"\x00")
    params = request.params.model_dump()
    if params.get("reasoning_budget") is None:  # added later: keys of requests without it stay as they were
        params.pop("reasoning_budget", None)
    h.update(orjson.dumps(params, option=orjson.OPT_SORT_KEYS))
    h.update(b"\x00")
    if request.output_schema is not None:
        h.update(schema_bytes(request.output_schema))
    h.update(b"\x00")
    h.update(request.variant.encode())
    return h.hexdigest()[:32]
