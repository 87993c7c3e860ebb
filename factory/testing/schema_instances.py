"""Schema-instance generator of the fake LLM server: valid (and deliberately invalid) JSON instances
of a requested schema, generated deterministically from a seed.

``instance_for_schema(schema, seed)`` is the entry point; ``compile_schema`` caches the compiled
generator per canonical schema; ``violating_instance`` is what the ``wrong_schema`` fault answers;
``seed_for`` derives the seed of a request from its conversation and model name.

Both entry points take an optional field ``profile`` (:mod:`factory.testing.profiles`: a preset
name, a mapping or a parsed :class:`~factory.testing.profiles.Profile`); without one they use the
profile active in the current context (:func:`~factory.testing.profiles.use_profile`, which the fake
server sets per request), and with none active the output is exactly that of the plain generator.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

import orjson

from factory.testing.profiles import PRESETS, Profile, ProfileLike, active_profile, parse_profile, use_profile
from factory.testing.schema_compiler import Gen, SchemaCompiler, SchemaError
from factory.testing.vocabulary import sentence

__all__ = [
    "PRESETS",
    "Gen",
    "Profile",
    "SchemaError",
    "compile_schema",
    "instance_for_schema",
    "parse_profile",
    "seed_for",
    "sentence",
    "use_profile",
    "violating_instance",
]

_GEN_CACHE: dict[bytes, Gen] = {}
_GEN_CACHE_MAX = 4096


def compile_schema(schema: Any, profile: ProfileLike | None = None) -> Gen:
    """Compile (and cache, keyed by canonical JSON) a generator ``gen(rng, depth=0)`` for a schema.

    ``profile`` (None = the active one, see :func:`use_profile`) skews the named properties.
    """
    prof = parse_profile(profile) if profile is not None else active_profile()
    key = orjson.dumps(schema, option=orjson.OPT_SORT_KEYS)
    if prof is not None:
        key = b"%s\x00%s" % (key, prof.key)
    g = _GEN_CACHE.get(key)
    if g is None:
        g = SchemaCompiler(schema, prof.fields if prof is not None else None).compile(schema)
        if len(_GEN_CACHE) >= _GEN_CACHE_MAX:
            _GEN_CACHE.clear()
        _GEN_CACHE[key] = g
    return g


def instance_for_schema(
    schema: Any, seed: int | random.Random = 0, profile: ProfileLike | None = None
) -> Any:
    """A deterministic instance of ``schema`` (JSON Schema, OpenAPI or Gemini dialect).

    ``profile``: a field profile (preset name, mapping or :class:`Profile`); None = the active one.
    """
    rng = seed if isinstance(seed, random.Random) else random.Random(seed)
    return compile_schema(schema, profile)(rng, 0)


def _bad_value_for(prop: Any) -> Any:
    t = prop.get("type") if isinstance(prop, dict) else None
    t = t.lower() if isinstance(t, str) else None
    if t == "string" or (isinstance(prop, dict) and "enum" in prop):
        return 12345
    if t in ("integer", "number", "boolean", "array", "object"):
        return "definitely not a " + t
    return {"unexpected": ["value"]}


def violating_instance(schema: Any, instance: Any, *, need_object: bool = False) -> Any:
    """Valid JSON that does not validate against ``schema`` (used by the ``wrong_schema`` fault)."""
    comp = SchemaCompiler(schema)
    try:
        root = comp.deref(schema)
    except SchemaError:
        root = schema
    if isinstance(root, dict) and isinstance(instance, dict):
        bad = dict(instance)
        props = root.get("properties") or {}
        required = [r for r in (root.get("required") or ()) if r in bad]
        if required:
            del bad[required[0]]
        for name in bad:
            if name in props:
                try:
                    bad[name] = _bad_value_for(comp.deref(props[name]))
                except SchemaError:
                    bad[name] = {"unexpected": ["value"]}
                break
        bad["unexpected_field"] = "wrong schema"
        if required or any(n in props for n in instance):
            return bad
        return bad if need_object else [bad]
    if need_object:
        return {"unexpected_field": instance}
    if isinstance(instance, list):
        return {"unexpected_field": instance}
    if isinstance(instance, str):
        return 12345
    return ["wrong", "schema"]


def seed_for(conversation: Any, model: str) -> int:
    """The generator seed of a request: a hash of its conversation and its model name."""
    digest = hashlib.blake2b(
        orjson.dumps([conversation, model], option=orjson.OPT_SORT_KEYS), digest_size=8
    ).digest()
    return int.from_bytes(digest, "big")
