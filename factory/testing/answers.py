"""Answers of the fake LLM server, shared by the three wire protocols: the text or forced-tool input
of a reply, with the content faults (``malformed``, ``truncated``, ``wrong_schema``, ``empty``)
applied, and the rough token count used for usage fields and rate-limit headers.
"""

from __future__ import annotations

import random
from typing import Any

import orjson

from factory.testing.schema_instances import compile_schema, sentence, violating_instance

MALFORMED_TEXT = '{"turns": [oops'


def truncate(text: str) -> str:
    if len(text) <= 1:
        return text[:1] if text else '{"'
    return text[: max(1, len(text) // 2)]


def answer_text(schema: Any, json_mode: bool, rng: random.Random, fault: str | None) -> tuple[str, bool]:
    """(text, truncated) for a text-shaped answer."""
    if fault == "empty":
        return "", False
    if fault == "malformed":
        return MALFORMED_TEXT, False
    if schema is not None:
        inst = compile_schema(schema)(rng, 0)
        if fault == "wrong_schema":
            inst = violating_instance(schema, inst)
        text = orjson.dumps(inst).decode()
    elif json_mode:
        doc: Any = {"answer": sentence(rng), "confidence": round(rng.random(), 2)}
        if fault == "wrong_schema":
            doc = ["wrong", "schema"]
        text = orjson.dumps(doc).decode()
    else:
        text = sentence(rng)
    if fault == "truncated":
        return truncate(text), True
    return text, False


def answer_tool_input(schema: Any, rng: random.Random, fault: str | None) -> tuple[Any, bool]:
    """(tool input, truncated) for a forced tool call (the wire format needs an object)."""
    schema = schema if schema is not None else {"type": "object"}
    if fault == "empty":
        return {}, False
    if fault == "malformed":
        return MALFORMED_TEXT, False
    inst = compile_schema(schema)(rng, 0)
    if not isinstance(inst, dict):
        inst = {"value": inst}
    if fault == "wrong_schema":
        return violating_instance(schema, inst, need_object=True), False
    if fault == "truncated":
        keys = list(inst)
        return {k: inst[k] for k in keys[: len(keys) // 2]}, True
    return inst, False


def ntokens(n_chars: int) -> int:
    return n_chars // 4 + 1
