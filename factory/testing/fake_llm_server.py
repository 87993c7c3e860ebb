"""A fake LLM provider server: a TEST DOUBLE, not a model.

Nothing here calls or imitates a real language model. The server speaks just enough of the wire
protocols of three hosted LLM APIs for the real ``openai``, ``anthropic`` and ``google-genai`` SDK
clients to talk to it, so that client code, data-generation pipelines and throughput benchmarks can
be tested offline, deterministically and fast:

* OpenAI Chat Completions: ``POST /v1/chat/completions`` (and ``/chat/completions``), ``GET /v1/models``.
* Anthropic Messages: ``POST /v1/messages`` (``GET /v1/models`` answers in Anthropic's shape when
  the request carries an ``anthropic-version`` header).
* Google Gemini: ``POST /{v1beta|v1|v1alpha}/models/{model}:generateContent``.

Answers are synthetic. When the request asks for structured output (OpenAI ``response_format``
``json_schema``, a forced Anthropic tool or ``output_format``/``output_config``, Gemini
``responseSchema``/``responseJsonSchema``) the answer is a JSON document that is a valid instance of
the requested schema, generated deterministically from a seed derived from the conversation and the
model name (same request => same answer). Otherwise the answer is a short deterministic sentence.

Failures are injected through a control API that is not part of any provider protocol:

* ``POST /_fake/script`` with ``{"faults": [...]}`` appends faults to a FIFO queue; every new
  provider request pops the first queued fault that applies to it. Fault kinds: ``rate_limit``
  (429 + ``Retry-After``), ``server_error`` (500), ``overloaded`` (529 Anthropic / 503 others),
  ``hang`` (send nothing for ``seconds``, then answer normally), ``malformed`` (200, non-JSON
  content), ``truncated`` (200, JSON cut in the middle, length/max_tokens finish reason),
  ``wrong_schema`` (200, valid JSON that violates the schema), ``empty`` (200, empty content),
  ``bad_request`` (400), ``unauthorized`` (401). Optional fault keys: ``match`` (substring the raw
  request body must contain), ``provider`` (``openai``/``anthropic``/``gemini``), ``times``
  (enqueue that many copies), ``retry_after`` (rate_limit), ``seconds`` (hang), ``message``.
* ``GET /_fake/stats`` returns counters; ``POST /_fake/reset`` clears counters and the queue.
  ``requests`` counts generation requests only (not ``GET /v1/models`` nor ``/_fake/``);
  ``repeated_bodies`` counts requests whose canonical JSON body (endpoint, model, messages, params)
  had been seen before.

Per request the server decides, in this order: a missing/wrong key (``require_key``) => 401; the
server-side limiter (``rate_limit``) => 429; the next applicable scripted fault (popped only by
requests that got past the first two); the ``fail_rate`` coin => 500. It then sleeps ``latency``
and answers. OpenAI function tools forced through ``tool_choice`` (a named function or
``"required"``) get a ``tool_calls`` answer whose arguments fit the function's ``parameters``.

Server-wide options (constructor arguments of :class:`FakeLLMServer` and CLI flags): ``latency``,
``rate_limit`` (requests/s, 0 = off), ``fail_rate`` + ``fail_seed`` (random 500s), ``require_key``.

Run it as ``python -m factory.testing.fake_llm_server --port 0`` (prints ``READY http://127.0.0.1:PORT``)
or from tests through :class:`FakeServerProcess`, a context manager that owns the subprocess.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import hashlib
import json
import os
import queue
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

__all__ = [
    "FAULT_KINDS",
    "MALFORMED_TEXT",
    "FakeLLMServer",
    "FakeServerProcess",
    "SchemaError",
    "compile_schema",
    "instance_for_schema",
    "main",
    "seed_for",
    "violating_instance",
]

# --------------------------------------------------------------------------------------------------
# Schema-instance generator
# --------------------------------------------------------------------------------------------------

_WORDS = (
    "able about account across action active actual add advice after again agent agree ahead "
    "allow almost alone along already also always amount analysis answer anyone apply approach "
    "area argue around article ask assume attention audience author available avoid balance base "
    "basic become before begin behind believe benefit better between beyond billing bring budget "
    "build business call camera capital card care carry case cause center certain chance change "
    "charge check choice claim class clear client close code collect color common company compare "
    "concern condition consider contact contain context control cost country course cover create "
    "credit current customer data deal decide deliver demand describe design detail develop "
    "device direct discuss doctor early easy effect effort either energy enough ensure entire "
    "event evidence exact example expect expert explain fact factor family feature field figure "
    "final finance find focus follow force forward friend full future garden general goal good "
    "group growth guard guide happy health help history hold home hope hotel idea image impact "
    "improve include increase indeed issue item join judge keep kind know language large later "
    "learn leave level light likely limit list little local manage market matter measure medical "
    "meeting member memory method middle minute model moment money month morning move music "
    "nature near need network never next note number offer office often open option order other "
    "owner page paper party pass patient pay people period person phone picture place plan "
    "player point policy positive power prepare present price private problem process produce "
    "product program project provide public purpose quality question quick quite range rather "
    "reach ready reason receive record reduce refund region remain report request require "
    "research resource respond result return review right risk room rule safe save scene school "
    "science season second secure sense series service session share short should simple single "
    "skill small social source space speak special staff stage standard start state step still "
    "store story strong student study style subject success summer support sure system table "
    "task teacher team term test thank theory thing third threat ticket today together topic "
    "total toward travel treat trial true trust turn type under unit until update user usual "
    "value various verify view visit voice wait water weather week welcome while window within "
    "without word work world write year young"
).split()
_NWORDS = len(_WORDS)

#: Depth beyond which optional parts (optional properties, extra array items, non-null union
#: branches) are left out so that recursive schemas terminate.
_SOFT_DEPTH = 6
_HARD_DEPTH = 24

Gen = Callable[[random.Random, int], Any]
_DEFS_ALIASES = {
    "$defs": ("defs", "definitions"),
    "defs": ("$defs", "definitions"),
    "definitions": ("$defs", "defs"),
}


class SchemaError(ValueError):
    """The schema cannot be compiled (unresolvable ``$ref`` and the like)."""


def _words(rng: random.Random, lo: int, hi: int | None) -> str:
    """A run of vocabulary words whose length lies within [lo, hi] characters."""
    if hi is not None and hi <= 0:
        return ""
    top = hi if hi is not None else max(lo, 48)
    bottom = max(lo, min(12, top))
    target = rng.randint(bottom, max(bottom, min(top, 48)))
    parts: list[str] = []
    n = -1
    while n < target:
        w = _WORDS[int(rng.random() * _NWORDS)]
        parts.append(w)
        n += len(w) + 1
    s = " ".join(parts)
    if hi is not None and len(s) > hi:
        shorter = " ".join(parts[:-1])
        if len(parts) > 1 and len(shorter) >= lo:
            s = shorter
        else:
            s = s[:hi].rstrip() or s[:hi]
    while len(s) < lo:
        w = _WORDS[int(rng.random() * _NWORDS)]
        s = s + " " + w if s else w
    if hi is not None and len(s) > hi:
        s = s[:hi]
    if len(s) < lo or (s and s[-1] == " "):
        s = (s.rstrip() + "x" * lo)[: max(lo, len(s.rstrip()))]
    return s


def sentence(rng: random.Random) -> str:
    """A short deterministic English-looking sentence."""
    n = rng.randint(6, 12)
    ws = [_WORDS[int(rng.random() * _NWORDS)] for _ in range(n)]
    return "This is a fake reply: " + " ".join(ws) + "."


def _as_int(v: Any, default: int | None = None) -> int | None:
    if v is None:
        return default
    try:
        return int(v)  # Gemini's Schema serialises int64 bounds as strings
    except (TypeError, ValueError):
        return default


def _as_float(v: Any) -> float | None:
    if v is None or isinstance(v, bool):
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


_FORMATS: dict[str, Callable[[random.Random], str]] = {
    "date-time": lambda r: (
        f"2024-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}T"
        f"{r.randint(0, 23):02d}:{r.randint(0, 59):02d}:{r.randint(0, 59):02d}Z"
    ),
    "date": lambda r: f"2024-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}",
    "time": lambda r: f"{r.randint(0, 23):02d}:{r.randint(0, 59):02d}:{r.randint(0, 59):02d}",
    "email": lambda r: f"{_WORDS[r.randrange(_NWORDS)]}.{_WORDS[r.randrange(_NWORDS)]}@example.com",
    "uri": lambda r: f"https://example.com/{_WORDS[r.randrange(_NWORDS)]}",
    "url": lambda r: f"https://example.com/{_WORDS[r.randrange(_NWORDS)]}",
    "hostname": lambda r: f"{_WORDS[r.randrange(_NWORDS)]}.example.com",
    "ipv4": lambda r: f"10.{r.randint(0, 255)}.{r.randint(0, 255)}.{r.randint(1, 254)}",
    "uuid": lambda r: (
        f"{r.getrandbits(32):08x}-{r.getrandbits(16):04x}-4{r.getrandbits(12):03x}-"
        f"{0x8000 | r.getrandbits(14):04x}-{r.getrandbits(48):012x}"
    ),
    "duration": lambda r: f"PT{r.randint(1, 59)}M",
}


_HINT_KEYS = frozenset(
    {
        "minItems",
        "maxItems",
        "minLength",
        "maxLength",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "minProperties",
        "maxProperties",
    }
)
_HINT_RE = re.compile(r"\{([A-Za-z]+: [^{}]*)\}\s*$")


def _with_description_hints(s: dict) -> dict:
    """Apply constraints that an SDK moved into the description.

    The anthropic SDK's ``transform_schema`` strips keywords the API does not accept
    (``maxLength``, ``minItems`` > 1, ``minimum`` ...) and appends them to the description as
    ``{maxItems: 4, minItems: 2}``, hoping the model follows them; a real model mostly does, and the
    SDK then validates the answer against the full pydantic model, so the fake honours them too.
    """
    desc = s.get("description")
    if not isinstance(desc, str) or "{" not in desc:
        return s
    m = _HINT_RE.search(desc)
    if m is None:
        return s
    extra: dict[str, Any] = {}
    for item in m.group(1).split(", "):
        key, _, value = item.partition(": ")
        if key in _HINT_KEYS and key not in s:
            try:
                num = float(value)
            except ValueError:
                continue
            extra[key] = int(num) if num.is_integer() else num
    return {**s, **extra} if extra else s


# google-genai serialises its ``Schema`` model with snake_case keys inside ``responseSchema``.
_SNAKE_KEYS = {
    "max_length": "maxLength",
    "min_length": "minLength",
    "max_items": "maxItems",
    "min_items": "minItems",
    "max_properties": "maxProperties",
    "min_properties": "minProperties",
    "property_ordering": "propertyOrdering",
    "any_of": "anyOf",
    "one_of": "oneOf",
    "all_of": "allOf",
    "additional_properties": "additionalProperties",
    "exclusive_minimum": "exclusiveMinimum",
    "exclusive_maximum": "exclusiveMaximum",
    "multiple_of": "multipleOf",
    "unique_items": "uniqueItems",
    "prefix_items": "prefixItems",
    "ref": "$ref",
    "defs": "$defs",
}


def _normalize_keys(s: dict) -> dict:
    if not any(k in _SNAKE_KEYS for k in s):
        return s
    out: dict[str, Any] = {}
    for k, v in s.items():
        nk = _SNAKE_KEYS.get(k, k)
        if (nk == "$ref" and not isinstance(v, str)) or (nk == "$defs" and not isinstance(v, dict)):
            nk = k
        if nk not in s or nk == k:
            out[nk] = v
    return out


class _Compiler:
    """Turns one (root) schema into a generator closure ``gen(rng, depth) -> instance``."""

    def __init__(self, root: Any) -> None:
        self.root = root
        self.refs: dict[str, Gen] = {}

    # -- helpers -----------------------------------------------------------------------------
    def resolve(self, ref: str) -> Any:
        if not ref.startswith("#"):
            raise SchemaError(f"only local $ref is supported, got {ref!r}")
        node: Any = self.root
        for part in ref[1:].split("/"):
            if not part:
                continue
            part = urllib.parse.unquote(part).replace("~1", "/").replace("~0", "~")
            if isinstance(node, list):
                node = node[int(part)]
            elif isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, dict) and part in _DEFS_ALIASES:
                node = next((node[a] for a in _DEFS_ALIASES[part] if a in node), None)
                if node is None:
                    raise SchemaError(f"unresolvable $ref {ref!r}")
            else:
                raise SchemaError(f"unresolvable $ref {ref!r}")
        return node

    def deref(self, s: Any) -> Any:
        seen = 0
        while isinstance(s, dict) and "$ref" in s and seen < 32:
            s = self.resolve(s["$ref"])
            seen += 1
        return s

    @staticmethod
    def types_of(s: dict) -> tuple[list[str], bool]:
        t = s.get("type")
        if t is None:
            names: list[str] = []
        elif isinstance(t, str):
            names = [t.lower()]
        else:
            names = [str(x).lower() for x in t]
        nullable = bool(s.get("nullable")) or "null" in names
        names = [n for n in names if n != "null" and n != "type_unspecified"]
        if not names and not (nullable and t is not None):
            if "properties" in s or "additionalProperties" in s or "required" in s:
                names = ["object"]
            elif "items" in s or "prefixItems" in s or "minItems" in s or "maxItems" in s:
                names = ["array"]
            elif "minimum" in s or "maximum" in s or "exclusiveMinimum" in s or "exclusiveMaximum" in s:
                names = ["number"]
            elif t is None:
                names = ["string"]
        return names, nullable

    # -- compile -----------------------------------------------------------------------------
    def compile(self, s: Any) -> Gen:
        if s is True or s is None or s == {}:
            return lambda rng, d: _words(rng, 1, 24)
        if s is False:
            return lambda rng, d: None
        if not isinstance(s, dict):
            raise SchemaError(f"schema must be an object or a boolean, got {type(s).__name__}")
        s = _with_description_hints(_normalize_keys(s))

        if "$ref" in s:
            ref = s["$ref"]
            g = self.refs.get(ref)
            if g is None:
                cell: list[Gen] = []

                def g(rng: random.Random, d: int, _cell: list[Gen] = cell) -> Any:
                    return _cell[0](rng, d)

                self.refs[ref] = g
                cell.append(self.compile(self.resolve(ref)))
            return g

        if "const" in s:
            c = s["const"]
            return lambda rng, d: c
        if "enum" in s and isinstance(s["enum"], list) and s["enum"]:
            values = list(s["enum"])
            if s.get("nullable") and None not in values:
                values_nn = values

                def gen_enum_nullable(rng: random.Random, d: int) -> Any:
                    return None if rng.random() < 0.1 else values_nn[int(rng.random() * len(values_nn))]

                return gen_enum_nullable
            return lambda rng, d: values[int(rng.random() * len(values))]

        if "allOf" in s and isinstance(s["allOf"], list):
            merged: dict[str, Any] = {k: v for k, v in s.items() if k != "allOf"}
            for sub in s["allOf"]:
                sub = self.deref(sub)
                if not isinstance(sub, dict):
                    continue
                for k, v in sub.items():
                    if k == "properties":
                        merged["properties"] = {**merged.get("properties", {}), **v}
                    elif k == "required":
                        merged["required"] = list(dict.fromkeys([*merged.get("required", []), *v]))
                    elif k not in merged:
                        merged[k] = v
            return self.compile(merged)

        union = s.get("anyOf") or s.get("oneOf")
        if isinstance(union, list) and union:
            return self.compile_union(s, union)

        names, nullable = self.types_of(s)
        if not names:
            return lambda rng, d: None
        gens = [self.compile_type(name, s) for name in names]
        if len(gens) == 1:
            base = gens[0]
        else:

            def base(rng: random.Random, d: int) -> Any:
                return gens[int(rng.random() * len(gens))](rng, d)

        if not nullable:
            return base

        def gen_nullable(rng: random.Random, d: int) -> Any:
            if d > _SOFT_DEPTH or rng.random() < 0.1:
                return None
            return base(rng, d)

        return gen_nullable

    def compile_union(self, s: dict, union: list) -> Gen:
        branches = []
        null_ok = bool(s.get("nullable"))
        for b in union:
            target = self.deref(b)
            if isinstance(target, dict) and (target.get("type") in ("null", "NULL")) and len(target) <= 2:
                null_ok = True
                continue
            branches.append((self.compile(b), isinstance(b, dict) and "$ref" in b))
        if not branches:
            return lambda rng, d: None
        simple = [g for g, is_ref in branches if not is_ref] or [branches[0][0]]
        alls = [g for g, _ in branches]

        def gen_union(rng: random.Random, d: int) -> Any:
            if null_ok and (d > _SOFT_DEPTH or rng.random() < 0.1):
                return None
            pool = simple if d > _SOFT_DEPTH else alls
            return pool[int(rng.random() * len(pool))](rng, d)

        return gen_union

    def compile_type(self, name: str, s: dict) -> Gen:
        if name == "object":
            return self.compile_object(s)
        if name == "array":
            return self.compile_array(s)
        if name == "string":
            return self.compile_string(s)
        if name in ("integer", "number"):
            return self.compile_number(s, name == "integer")
        if name == "boolean":
            return lambda rng, d: rng.random() < 0.5
        return lambda rng, d: None

    def compile_object(self, s: dict) -> Gen:
        props = s.get("properties") or {}
        required = set(s.get("required") or ())
        order = [p for p in (s.get("propertyOrdering") or ()) if p in props]
        order += [p for p in props if p not in order]
        fields = [(name, self.compile(props[name]), name in required) for name in order]
        addl = s.get("additionalProperties", None)
        extra_gen = self.compile(addl) if isinstance(addl, dict) else None
        min_props = _as_int(s.get("minProperties"), 0) or 0
        max_props = _as_int(s.get("maxProperties"))
        want_extra = extra_gen is not None and not fields

        def gen_object(rng: random.Random, d: int) -> dict:
            out: dict[str, Any] = {}
            if d > _HARD_DEPTH:
                return out
            dd = d + 1
            for name, g, req in fields:
                if req or (d <= _SOFT_DEPTH and rng.random() < 0.75):
                    if max_props is not None and len(out) >= max_props and not req:
                        continue
                    out[name] = g(rng, dd)
            if extra_gen is not None or (addl is not False and addl is not None and len(out) < min_props):
                n_extra = max(min_props - len(out), 0)
                if want_extra and d <= _SOFT_DEPTH:
                    n_extra = max(n_extra, rng.randint(1, 3))
                if max_props is not None:
                    n_extra = min(n_extra, max_props - len(out))
                tries = 0
                while n_extra > 0 and tries < 50:
                    tries += 1
                    key = _WORDS[int(rng.random() * _NWORDS)]
                    if key in out:
                        continue
                    out[key] = extra_gen(rng, dd) if extra_gen is not None else _words(rng, 1, 24)
                    n_extra -= 1
            return out

        return gen_object

    def compile_array(self, s: dict) -> Gen:
        items = s.get("items", True)
        prefix = s.get("prefixItems")
        if isinstance(items, list):  # draft-4 tuple form
            prefix, items = items, s.get("additionalItems", True)
        prefix_gens = [self.compile(p) for p in prefix] if isinstance(prefix, list) else []
        item_gen = None if items is False else self.compile(items)
        lo = _as_int(s.get("minItems"), 0) or 0
        hi = _as_int(s.get("maxItems"))
        if item_gen is None:
            hi = len(prefix_gens) if hi is None else min(hi, len(prefix_gens))
        d_lo = max(lo, 1)
        d_hi = max(d_lo, 3)
        if hi is not None:
            d_hi = min(d_hi, hi)
            d_lo = min(d_lo, hi)
        unique = bool(s.get("uniqueItems"))
        npref = len(prefix_gens)

        def gen_array(rng: random.Random, d: int) -> list:
            if d > _HARD_DEPTH:
                return []
            n = lo if d > _SOFT_DEPTH else (d_lo if d_lo == d_hi else rng.randint(d_lo, d_hi))
            dd = d + 1
            out: list[Any] = []
            seen: set[bytes] = set()
            tries = 0
            while len(out) < n and tries < n * 10 + 10:
                tries += 1
                i = len(out)
                g = prefix_gens[i] if i < npref else item_gen
                if g is None:
                    break
                v = g(rng, dd)
                if unique:
                    k = orjson.dumps(v, option=orjson.OPT_SORT_KEYS)
                    if k in seen:
                        continue
                    seen.add(k)
                out.append(v)
            return out

        return gen_array

    def compile_string(self, s: dict) -> Gen:
        lo = _as_int(s.get("minLength"), 0) or 0
        hi = _as_int(s.get("maxLength"))
        fmt = s.get("format")
        fgen = _FORMATS.get(fmt) if isinstance(fmt, str) else None
        if fgen is not None:

            def gen_fmt(rng: random.Random, d: int) -> str:
                v = fgen(rng)
                if len(v) < lo or (hi is not None and len(v) > hi):
                    return _words(rng, lo, hi)
                return v

            return gen_fmt
        return lambda rng, d: _words(rng, lo, hi)

    def compile_number(self, s: dict, integer: bool) -> Gen:
        lo = _as_float(s.get("minimum"))
        hi = _as_float(s.get("maximum"))
        xlo = s.get("exclusiveMinimum")
        xhi = s.get("exclusiveMaximum")
        lo_open = hi_open = False
        if xlo is True:
            lo_open = True
        elif _as_float(xlo) is not None and (lo is None or _as_float(xlo) >= lo):
            lo, lo_open = _as_float(xlo), True
        if xhi is True:
            hi_open = True
        elif _as_float(xhi) is not None and (hi is None or _as_float(xhi) <= hi):
            hi, hi_open = _as_float(xhi), True
        if lo is None and hi is None:
            lo, hi = 0.0, 100.0
        elif lo is None:
            lo = 0.0 if hi >= 0 else hi - 100.0
            if hi == 0 and hi_open:
                lo = -100.0
        elif hi is None:
            hi = lo + 100.0
        mult = _as_float(s.get("multipleOf"))
        if integer:
            ilo = int(lo) + 1 if lo_open and float(lo).is_integer() else -int(-lo // 1)
            ihi = int(hi) - 1 if hi_open and float(hi).is_integer() else int(hi // 1)
            if ihi < ilo:
                ihi = ilo
            if mult and mult >= 1 and float(mult).is_integer():
                m = int(mult)
                first = -(-ilo // m) * m
                count = (ihi - first) // m
                if count >= 0:
                    return lambda rng, d: first + m * rng.randint(0, count)
            return lambda rng, d: rng.randint(ilo, ihi)
        span = hi - lo
        eps = span * 1e-3 if span > 0 else 0.0
        a = lo + (eps if lo_open else 0.0)
        b = hi - (eps if hi_open else 0.0)

        def gen_number(rng: random.Random, d: int) -> float:
            if mult:
                k0 = -(-a // mult)
                k1 = b // mult
                if k1 >= k0:
                    return float(mult * rng.randint(int(k0), int(k1)))
            v = round(a + (b - a) * rng.random(), 2)
            if v < a or (lo_open and v <= lo):
                v = a
            if v > b or (hi_open and v >= hi):
                v = b
            return v

        return gen_number


_GEN_CACHE: dict[bytes, Gen] = {}
_GEN_CACHE_MAX = 4096


def compile_schema(schema: Any) -> Gen:
    """Compile (and cache, keyed by canonical JSON) a generator ``gen(rng, depth=0)`` for a schema."""
    key = orjson.dumps(schema, option=orjson.OPT_SORT_KEYS)
    g = _GEN_CACHE.get(key)
    if g is None:
        g = _Compiler(schema).compile(schema)
        if len(_GEN_CACHE) >= _GEN_CACHE_MAX:
            _GEN_CACHE.clear()
        _GEN_CACHE[key] = g
    return g


def instance_for_schema(schema: Any, seed: int | random.Random = 0) -> Any:
    """A deterministic instance of ``schema`` (JSON Schema, OpenAPI or Gemini dialect)."""
    rng = seed if isinstance(seed, random.Random) else random.Random(seed)
    return compile_schema(schema)(rng, 0)


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
    comp = _Compiler(schema)
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


# --------------------------------------------------------------------------------------------------
# Answers (shared by the three providers)
# --------------------------------------------------------------------------------------------------

MALFORMED_TEXT = '{"turns": [oops'
FAULT_KINDS = frozenset(
    {
        "rate_limit",
        "server_error",
        "overloaded",
        "hang",
        "malformed",
        "truncated",
        "wrong_schema",
        "empty",
        "bad_request",
        "unauthorized",
    }
)
_CONTENT_FAULTS = frozenset({"malformed", "truncated", "wrong_schema", "empty"})
_ERROR_STATUS = {
    "rate_limit": 429,
    "server_error": 500,
    "overloaded": 503,
    "bad_request": 400,
    "unauthorized": 401,
}
_PROVIDERS = ("openai", "anthropic", "gemini")


def _truncate(text: str) -> str:
    if len(text) <= 1:
        return text[:1] if text else '{"'
    return text[: max(1, len(text) // 2)]


def _answer_text(schema: Any, json_mode: bool, rng: random.Random, fault: str | None) -> tuple[str, bool]:
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
        return _truncate(text), True
    return text, False


def _answer_tool_input(schema: Any, rng: random.Random, fault: str | None) -> tuple[Any, bool]:
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


def _ntokens(n_chars: int) -> int:
    return n_chars // 4 + 1


# --------------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------------


class _TokenBucket:
    def __init__(self, rate: float) -> None:
        self.rate = float(rate)
        self.capacity = max(1.0, float(rate))
        self.tokens = self.capacity
        self.stamp = time.monotonic()

    def take(self) -> float:
        """0.0 when a request may pass, else the seconds until one may."""
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class _Fault:
    __slots__ = ("kind", "spec", "match", "match_alt", "provider")

    def __init__(self, spec: Mapping[str, Any]) -> None:
        kind = spec.get("kind")
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {sorted(FAULT_KINDS)}")
        provider = spec.get("provider")
        if provider is not None and provider not in _PROVIDERS:
            raise ValueError(f"unknown provider {provider!r}; expected one of {_PROVIDERS}")
        match = spec.get("match")
        if match is not None and not isinstance(match, str):
            raise ValueError("fault 'match' must be a string")
        self.kind: str = kind
        self.spec = dict(spec)
        self.provider = provider
        self.match = match.encode() if match is not None else None
        # the same substring as it looks inside a JSON string with ASCII escapes
        self.match_alt = json.dumps(match)[1:-1].encode() if match is not None else None

    def applies(self, provider: str, raw: bytes) -> bool:
        if self.provider is not None and self.provider != provider:
            return False
        if self.match is None:
            return True
        return self.match in raw or self.match_alt in raw


_JSON = "application/json"
_MAX_BODY = 64 * 1024 * 1024


def _rfc3339(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


class FakeLLMServer:
    """In-process fake LLM server (a test double). Use :class:`FakeServerProcess` from sync tests.

    ``await server.start()`` binds ``host:port`` (port 0 = any free port) and returns the base URL;
    ``await server.stop()`` closes it. The control methods ``script``/``stats``/``reset`` mirror the
    ``/_fake/`` HTTP API.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        latency: float = 0.0,
        rate_limit: float = 0.0,
        fail_rate: float = 0.0,
        fail_seed: int = 0,
        require_key: str | None = None,
        requests_limit: int = 10_000,
        tokens_limit: int = 2_000_000,
    ) -> None:
        if not 0.0 <= fail_rate <= 1.0:
            raise ValueError("fail_rate must be within [0, 1]")
        self.host = host
        self.port = port
        self.latency = float(latency)
        self.rate_limit = float(rate_limit)
        self.fail_rate = float(fail_rate)
        self.fail_seed = int(fail_seed)
        self.require_key = require_key or None
        self.requests_limit = int(rate_limit * 60) if rate_limit else int(requests_limit)
        self.tokens_limit = int(tokens_limit)
        self._limiter = _TokenBucket(rate_limit) if rate_limit > 0 else None
        self._fail_rng = random.Random(self.fail_seed)
        self._runner: Any = None
        self._closing: asyncio.Event | None = None
        self._counter = 0
        self.reset()

    # -- control -------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget all counters, seen bodies and queued faults."""
        self._faults: collections.deque[_Fault] = collections.deque()
        self._requests = 0
        self._by_endpoint: dict[str, int] = {}
        self._seen: set[int] = set()
        self._repeated = 0
        self._faults_applied = 0
        self._by_fault: dict[str, int] = {}
        self._rate_limited = 0
        self._random_failures = 0
        self._auth_failures = 0
        self._win = int(time.time() // 60)
        self._win_reqs = 0
        self._win_tokens = 0
        self._fail_rng = random.Random(self.fail_seed)

    def script(self, faults: Iterable[Mapping[str, Any]]) -> int:
        """Append faults to the FIFO queue; returns the queue length. Raises ValueError on a bad fault."""
        parsed: list[_Fault] = []
        for spec in faults:
            if not isinstance(spec, Mapping):
                raise ValueError("each fault must be an object")
            f = _Fault(spec)
            times = spec.get("times", 1)
            if not isinstance(times, int) or times < 0:
                raise ValueError("fault 'times' must be a non-negative integer")
            parsed.extend([f] * times)
        self._faults.extend(parsed)
        return len(self._faults)

    def stats(self) -> dict[str, Any]:
        return {
            "requests": self._requests,
            "by_endpoint": dict(self._by_endpoint),
            "unique_bodies": len(self._seen),
            "repeated_bodies": self._repeated,
            "faults_applied": self._faults_applied,
            "faults_by_kind": dict(self._by_fault),
            "faults_pending": len(self._faults),
            "rate_limited": self._rate_limited,
            "random_failures": self._random_failures,
            "auth_failures": self._auth_failures,
        }

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> str:
        self._closing = asyncio.Event()
        loop = asyncio.get_running_loop()

        def make_request(message: Any, payload: Any, protocol: Any, writer: Any, task: Any) -> Any:
            return web.BaseRequest(message, payload, protocol, writer, task, loop, client_max_size=_MAX_BODY)

        server = web.Server(
            self._handle, request_factory=make_request, handler_cancellation=True, access_log=None
        )
        self._runner = web.ServerRunner(server, shutdown_timeout=0.5)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        site = web.SockSite(self._runner, sock, backlog=2048)
        await site.start()
        return self.url

    async def stop(self) -> None:
        if self._closing is not None:
            self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeLLMServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- HTTP plumbing -------------------------------------------------------------------------
    def _next_id(self) -> str:
        self._counter += 1
        return f"{self._counter:08x}{os.urandom(8).hex()}"

    @staticmethod
    def _reply(status: int, payload: Any, headers: dict[str, str] | None = None) -> Any:
        h = {"Content-Type": _JSON}
        if headers:
            h.update(headers)
        body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        return web.Response(status=status, body=body, headers=h)

    async def _handle(self, request: Any) -> Any:
        raw_path = request.raw_path
        path, _, query = raw_path.partition("?")
        method = request.method
        try:
            if method == "POST":
                if path == "/v1/chat/completions" or path == "/chat/completions":
                    return await self._provider(request, "openai", "openai.chat_completions", None, query)
                if path == "/v1/messages":
                    return await self._provider(request, "anthropic", "anthropic.messages", None, query)
                if path.endswith(":generateContent"):
                    parts = path.split("/", 3)  # ['', 'v1beta', 'models', 'gemini-x:generateContent']
                    if len(parts) == 4 and parts[1] in ("v1beta", "v1", "v1alpha"):
                        model = parts[3][: -len(":generateContent")]
                        if model.startswith("models/"):
                            model = model[len("models/") :]
                        return await self._provider(
                            request, "gemini", "gemini.generate_content", model, query
                        )
                if path == "/_fake/script":
                    return await self._control_script(request)
                if path == "/_fake/reset":
                    self.reset()
                    return self._reply(200, {"ok": True})
            elif method == "GET":
                if path == "/v1/models" or path == "/models":
                    return self._models(request)
                if path == "/_fake/stats":
                    return self._reply(200, self.stats())
                if path == "/_fake/health" or path == "/healthz":
                    return self._reply(200, {"ok": True, "fake": True})
            return self._reply(404, {"error": {"message": f"fake server: no route for {method} {path}"}})
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug in the fake must not look like a hang
            traceback.print_exc(file=sys.stderr)
            return self._reply(500, {"error": {"message": f"fake server internal error: {exc!r}"}})

    async def _control_script(self, request: Any) -> Any:
        try:
            body = orjson.loads(await request.read())
            faults = body.get("faults") if isinstance(body, dict) else body
            if isinstance(faults, dict):
                faults = [faults]
            if not isinstance(faults, list):
                raise ValueError('expected {"faults": [...]}')
            n = self.script(faults)
        except (ValueError, orjson.JSONDecodeError) as exc:
            return self._reply(400, {"error": {"message": str(exc)}})
        return self._reply(200, {"ok": True, "queued": n})

    def _models(self, request: Any) -> Any:
        now = int(time.time())
        if "anthropic-version" in request.headers:
            data = [
                {"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"}
                for m in ("claude-fake-1", "claude-fake-2")
            ]
            return self._reply(
                200, {"data": data, "has_more": False, "first_id": data[0]["id"], "last_id": data[-1]["id"]}
            )
        data = [
            {"id": m, "object": "model", "created": now, "owned_by": "fake-llm-server"}
            for m in ("gpt-fake-mini", "gpt-fake")
        ]
        return self._reply(200, {"object": "list", "data": data})

    # -- auth ----------------------------------------------------------------------------------
    def _key_ok(self, provider: str, request: Any, query: str) -> bool:
        key = self.require_key
        h = request.headers
        if provider == "openai":
            return h.get("Authorization", "") == f"Bearer {key}"
        if provider == "anthropic":
            return h.get("x-api-key") == key or h.get("Authorization", "") == f"Bearer {key}"
        if h.get("x-goog-api-key") == key:
            return True
        if query:
            return key in urllib.parse.parse_qs(query).get("key", ())
        return False

    # -- per-provider errors -------------------------------------------------------------------
    def _error(self, provider: str, status: int, message: str, retry_after: float | None = None) -> Any:
        rid = self._next_id()
        rem_req, rem_tok = self._account(0)
        if status == 429:
            rem_req = rem_tok = 0
        headers = self._ratelimit_headers(provider, rem_req, rem_tok)
        if retry_after is not None:
            ra = f"{retry_after:g}" if retry_after < 1e6 else str(int(retry_after))
            headers["Retry-After"] = ra
        if provider == "openai":
            etype, code = {
                429: ("requests", "rate_limit_exceeded"),
                400: ("invalid_request_error", None),
                401: ("invalid_request_error", "invalid_api_key"),
                503: ("server_error", "overloaded"),
            }.get(status, ("server_error", None))
            headers["x-request-id"] = f"req_{rid}"
            payload: Any = {"error": {"message": message, "type": etype, "param": None, "code": code}}
        elif provider == "anthropic":
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
        else:
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
            payload = {"error": err}
        return self._reply(status, payload, headers)

    # -- the provider request path -------------------------------------------------------------
    async def _provider(
        self, request: Any, provider: str, endpoint: str, path_model: str | None, query: str
    ) -> Any:
        raw = await request.read()
        self._requests += 1
        self._by_endpoint[endpoint] = self._by_endpoint.get(endpoint, 0) + 1
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            return self._error(provider, 400, "fake server: request body is not a JSON object")
        canon = orjson.dumps([endpoint, path_model, body], option=orjson.OPT_SORT_KEYS)
        digest = hash(canon)  # 64-bit SipHash: enough to tell bodies apart within one process
        if digest in self._seen:
            self._repeated += 1
        else:
            self._seen.add(digest)

        # decide the outcome at arrival; answer after the configured latency
        outcome: tuple[int, str, float | None] | None = None
        fault: _Fault | None = None
        if self.require_key is not None and not self._key_ok(provider, request, query):
            self._auth_failures += 1
            outcome = (401, "fake server: invalid or missing API key", None)
        elif self._limiter is not None:
            wait = self._limiter.take()
            if wait > 0.0:
                self._rate_limited += 1
                outcome = (429, "fake server: rate limit exceeded", max(0.001, round(wait, 3)))
        if outcome is None and self._faults:
            for i, f in enumerate(self._faults):
                if f.applies(provider, raw):
                    del self._faults[i]
                    fault = f
                    break
            if fault is not None:
                self._faults_applied += 1
                self._by_fault[fault.kind] = self._by_fault.get(fault.kind, 0) + 1
        if (
            outcome is None
            and fault is None
            and self.fail_rate > 0.0
            and self._fail_rng.random() < self.fail_rate
        ):
            self._random_failures += 1
            outcome = (500, "fake server: random failure (--fail-rate)", None)

        if self.latency > 0.0:
            await asyncio.sleep(self.latency)
        if outcome is not None:
            return self._error(provider, *outcome)

        content_fault: str | None = None
        if fault is not None:
            kind = fault.kind
            if kind in _ERROR_STATUS:
                status = _ERROR_STATUS[kind]
                msg = fault.spec.get("message") or f"fake server: scripted {kind} fault"
                ra = None
                if kind == "rate_limit":
                    ra = float(fault.spec.get("retry_after", 1.0))
                return self._error(provider, status, msg, ra)
            if kind == "hang":
                seconds = float(fault.spec.get("seconds", 30.0))
                assert self._closing is not None
                try:
                    await asyncio.wait_for(self._closing.wait(), seconds)
                except TimeoutError:
                    pass
            else:
                content_fault = kind

        if provider == "openai":
            return self._openai(body, content_fault)
        if provider == "anthropic":
            return self._anthropic(body, content_fault)
        return self._gemini(body, path_model or "gemini-fake", content_fault)

    def _account(self, tokens: int) -> tuple[int, int]:
        win = int(time.time() // 60)
        if win != self._win:
            self._win, self._win_reqs, self._win_tokens = win, 0, 0
        self._win_reqs += 1
        self._win_tokens += tokens
        return (
            max(0, self.requests_limit - self._win_reqs),
            max(0, self.tokens_limit - self._win_tokens),
        )

    def _ratelimit_headers(self, provider: str, rem_req: int, rem_tok: int) -> dict[str, str]:
        if provider == "openai":
            return {
                "x-ratelimit-limit-requests": str(self.requests_limit),
                "x-ratelimit-remaining-requests": str(rem_req),
                "x-ratelimit-limit-tokens": str(self.tokens_limit),
                "x-ratelimit-remaining-tokens": str(rem_tok),
                "x-ratelimit-reset-requests": "1s",
                "x-ratelimit-reset-tokens": "1s",
            }
        if provider == "anthropic":
            reset = _rfc3339((self._win + 1) * 60)
            return {
                "anthropic-ratelimit-requests-limit": str(self.requests_limit),
                "anthropic-ratelimit-requests-remaining": str(rem_req),
                "anthropic-ratelimit-requests-reset": reset,
                "anthropic-ratelimit-tokens-limit": str(self.tokens_limit),
                "anthropic-ratelimit-tokens-remaining": str(rem_tok),
                "anthropic-ratelimit-tokens-reset": reset,
            }
        return {}

    # -- OpenAI ----------------------------------------------------------------------------------
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
        n = body.get("n") or 1
        choices = []
        out_chars = 0
        for i in range(n if isinstance(n, int) and 0 < n <= 16 else 1):
            rng = random.Random(seed + i)
            if tool is not None:
                truncated = fault == "truncated"
                args, _ = _answer_tool_input(tool.get("parameters"), rng, None if truncated else fault)
                arg_text = args if isinstance(args, str) else orjson.dumps(args).decode()
                if truncated:
                    arg_text = _truncate(arg_text)
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
                text, truncated = _answer_text(schema, json_mode, rng, fault)
                out_chars += len(text)
                message = {"role": "assistant", "content": text, "refusal": None, "annotations": []}
            choices.append(
                {
                    "index": i,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": "length" if truncated else "stop",
                }
            )
        prompt_tokens = _ntokens(len(orjson.dumps(messages)))
        completion_tokens = _ntokens(out_chars)
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
            },
            "system_fingerprint": "fp_fake",
        }
        headers = self._ratelimit_headers("openai", rem_req, rem_tok)
        headers["x-request-id"] = f"req_{self._next_id()}"
        return self._reply(200, payload, headers)

    # -- Anthropic -------------------------------------------------------------------------------
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
            inp, truncated = _answer_tool_input(tool.get("input_schema"), rng, fault)
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
            text, truncated = _answer_text(schema, False, rng, fault)
            content = [{"type": "text", "text": text}] if fault != "empty" else []
            out_chars = len(text)
            stop = "max_tokens" if truncated else "end_turn"
        in_tokens = _ntokens(len(orjson.dumps([system, messages])))
        out_tokens = _ntokens(out_chars)
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

    # -- Gemini ----------------------------------------------------------------------------------
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
        n = gc.get("candidateCount") or gc.get("candidate_count") or 1
        candidates = []
        out_chars = 0
        for i in range(n if isinstance(n, int) and 0 < n <= 8 else 1):
            text, truncated = _answer_text(schema, json_mode, random.Random(seed + i), fault)
            out_chars += len(text)
            cand: dict[str, Any] = {
                "content": {"role": "model", "parts": [{"text": text}] if fault != "empty" else []},
                "finishReason": "MAX_TOKENS" if truncated else "STOP",
                "index": i,
            }
            candidates.append(cand)
        prompt_tokens = _ntokens(len(orjson.dumps([system, contents])))
        out_tokens = _ntokens(out_chars)
        self._account(prompt_tokens + out_tokens)
        payload = {
            "candidates": candidates,
            "usageMetadata": {
                "promptTokenCount": prompt_tokens,
                "candidatesTokenCount": out_tokens,
                "totalTokenCount": prompt_tokens + out_tokens,
            },
            "modelVersion": model,
            "responseId": self._next_id()[:22],
        }
        return self._reply(200, payload)


# --------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m factory.testing.fake_llm_server",
        description="Fake OpenAI/Anthropic/Gemini server for tests and benchmarks (a test double).",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 = pick a free port (default)")
    p.add_argument("--latency", type=float, default=0.0, help="seconds to wait before each answer")
    p.add_argument("--rate-limit", type=float, default=0.0, help="requests/s before 429s (0 = off)")
    p.add_argument("--fail-rate", type=float, default=0.0, help="probability of a random 500")
    p.add_argument("--fail-seed", type=int, default=0, help="seed of the --fail-rate coin")
    p.add_argument("--require-key", default=None, help="API key every request must carry")
    p.add_argument("--no-uvloop", action="store_true", help="use the default asyncio event loop")
    return p.parse_args(argv)


async def _serve(args: argparse.Namespace) -> None:
    server = FakeLLMServer(
        args.host,
        args.port,
        latency=args.latency,
        rate_limit=args.rate_limit,
        fail_rate=args.fail_rate,
        fail_seed=args.fail_seed,
        require_key=args.require_key,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - non-POSIX
            signal.signal(sig, lambda *_: loop.call_soon_threadsafe(stop.set))
    url = await server.start()
    sys.stdout.write(f"READY {url}\n")
    sys.stdout.flush()
    try:
        await stop.wait()
    finally:
        await server.stop()


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    loop_factory = None
    if not args.no_uvloop:
        try:
            import uvloop

            loop_factory = uvloop.new_event_loop
        except ImportError:
            pass
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(_serve(args))
    return 0


# --------------------------------------------------------------------------------------------------
# Subprocess helper for tests and benchmarks
# --------------------------------------------------------------------------------------------------

_REPO_ROOT = Path(__file__).resolve().parents[2]


class FakeServerProcess:
    """Runs the fake server in a subprocess; a context manager that never leaks the process.

    Example::

        with FakeServerProcess(latency=0.01) as srv:
            srv.script([{"kind": "rate_limit", "retry_after": 1}])
            client = openai.OpenAI(base_url=srv.url + "/v1", api_key="x")
            ...
            assert srv.stats()["faults_applied"] == 1
    """

    def __init__(
        self,
        *,
        latency: float = 0.0,
        rate_limit: float = 0.0,
        fail_rate: float = 0.0,
        fail_seed: int = 0,
        require_key: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        uvloop: bool = True,
        startup_timeout: float = 20.0,
        stop_timeout: float = 5.0,
        python: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.args = ["--host", host, "--port", str(port)]
        if latency:
            self.args += ["--latency", repr(float(latency))]
        if rate_limit:
            self.args += ["--rate-limit", repr(float(rate_limit))]
        if fail_rate:
            self.args += ["--fail-rate", repr(float(fail_rate)), "--fail-seed", str(int(fail_seed))]
        if require_key:
            self.args += ["--require-key", require_key]
        if not uvloop:
            self.args.append("--no-uvloop")
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.python = python or sys.executable
        self.env = dict(env) if env is not None else None
        self.proc: subprocess.Popen[bytes] | None = None
        self.url: str = ""
        self._lines: queue.Queue[bytes | None] = queue.Queue()
        self._reader: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> FakeServerProcess:
        if self.proc is not None:
            raise RuntimeError("already started")
        env = dict(os.environ if self.env is None else self.env)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_REPO_ROOT), env.get("PYTHONPATH", "")) if p)
        env.setdefault("PYTHONUNBUFFERED", "1")
        self.proc = subprocess.Popen(
            [self.python, "-m", "factory.testing.fake_llm_server", *self.args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            env=env,
            cwd=str(_REPO_ROOT),
        )
        self._reader = threading.Thread(target=self._drain, args=(self.proc.stdout,), daemon=True)
        self._reader.start()
        deadline = time.monotonic() + self.startup_timeout
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"fake LLM server did not print READY within {self.startup_timeout}s")
                try:
                    line = self._lines.get(timeout=min(left, 0.5))
                except queue.Empty:
                    if self.proc.poll() is not None:
                        raise RuntimeError(
                            f"fake LLM server exited early with code {self.proc.returncode}"
                        ) from None
                    continue
                if line is None:
                    raise RuntimeError(f"fake LLM server exited early with code {self.proc.wait()}")
                text = line.decode(errors="replace").strip()
                if text.startswith("READY "):
                    self.url = text.split(" ", 1)[1]
                    return self
        except BaseException:
            self.stop()
            raise

    def _drain(self, stream: Any) -> None:
        try:
            for line in iter(stream.readline, b""):
                self._lines.put(line)
        except (OSError, ValueError):
            pass
        finally:
            self._lines.put(None)

    def stop(self) -> int | None:
        """Terminate the process (SIGTERM, then SIGKILL after ``stop_timeout``); returns its exit code."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        try:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=self.stop_timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=self.stop_timeout)
        finally:
            if proc.stdout is not None:
                proc.stdout.close()
            if self._reader is not None:
                self._reader.join(timeout=1.0)
        return proc.returncode

    def __enter__(self) -> FakeServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    # -- control API ---------------------------------------------------------------------------
    def _call(self, method: str, path: str, payload: Any = None, timeout: float = 10.0) -> Any:
        if not self.url:
            raise RuntimeError("fake LLM server is not running")
        data = orjson.dumps(payload) if payload is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", _JSON)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return orjson.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raise ValueError(
                f"fake server rejected {method} {path}: {exc.read().decode(errors='replace')}"
            ) from exc

    def script(self, faults: Iterable[Mapping[str, Any]] | Mapping[str, Any]) -> int:
        """Queue faults (a list of fault objects, or one); returns the queue length."""
        if isinstance(faults, Mapping):
            faults = [faults]
        return self._call("POST", "/_fake/script", {"faults": list(faults)})["queued"]

    def stats(self) -> dict[str, Any]:
        return self._call("GET", "/_fake/stats")

    def reset(self) -> None:
        self._call("POST", "/_fake/reset", {})


if __name__ == "__main__":
    sys.exit(main())
