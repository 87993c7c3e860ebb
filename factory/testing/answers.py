"""Answers of the fake LLM server, shared by the three wire protocols: the text or forced-tool input
of a reply, with the content faults (``malformed``, ``truncated``, ``wrong_schema``, ``empty``)
applied, the synthetic "reasoning" of requests that ask for a model's own reasoning, and the rough
token count used for usage fields and rate-limit headers.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

import orjson

from factory.testing.schema_instances import compile_schema, sentence, violating_instance
from factory.testing.vocabulary import NWORDS, WORDS

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


_REASONING_LEADS = ("First,", "Then", "Next,", "So", "Finally,")
# The reasoning draws from its own random stream, so the answer drawn from the seed is unchanged.
_REASONING_STREAM = 0x5EA5_0F1D


def reasoning_text(seed: int) -> str:
    """Deterministic filler standing in for a model's reasoning (a few sentences of vocabulary
    words; nothing reasons here): the same request seed gives the same text."""
    rng = random.Random(seed ^ _REASONING_STREAM)
    sentences = []
    for lead in _REASONING_LEADS[: rng.randint(3, len(_REASONING_LEADS))]:
        ws = [WORDS[int(rng.random() * NWORDS)] for _ in range(rng.randint(6, 12))]
        sentences.append(f"{lead} {' '.join(ws)}.")
    return "This is fake reasoning. " + " ".join(sentences)


def reasoning_signature(seed: int) -> str:
    """An opaque stand-in for the signature Anthropic puts on a thinking block."""
    return hashlib.blake2b(f"thinking:{seed}".encode(), digest_size=24).hexdigest()
