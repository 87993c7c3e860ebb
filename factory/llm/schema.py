"""JSON-schema helpers: one schema per pydantic model, in the dialects the providers accept."""

from __future__ import annotations

import copy
import functools
from typing import Any

import orjson
from pydantic import BaseModel


@functools.lru_cache(maxsize=256)
def json_schema(model: type[BaseModel]) -> dict[str, Any]:
    """Self-contained JSON schema: $refs inlined, every property required, no extra keys.

    Strict structured-output modes (OpenAI strict, vLLM/xgrammar, llama.cpp grammars) all accept
    this shape. Callers must not mutate the result (it is cached); copy it first.
    """
    raw = model.model_json_schema()
    defs = raw.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                name = node["$ref"].rsplit("/", 1)[-1]
                return resolve(copy.deepcopy(defs[name]))
            out = {k: resolve(v) for k, v in node.items() if k not in ("title", "default")}
            if out.get("type") == "object" and "properties" in out:
                out["required"] = list(out["properties"].keys())
                out["additionalProperties"] = False
            return out
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    schema = resolve(raw)
    return schema


@functools.lru_cache(maxsize=256)
def schema_bytes(model: type[BaseModel]) -> bytes:
    return orjson.dumps(json_schema(model), option=orjson.OPT_SORT_KEYS)


def schema_name(model: type[BaseModel]) -> str:
    return model.__name__[:64]
