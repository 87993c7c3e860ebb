"""Compiles a JSON Schema (JSON Schema, OpenAPI or Gemini dialect) into an instance generator.

:class:`SchemaCompiler` turns one root schema into a closure ``gen(rng, depth) -> instance``; the
public, cached entry points are in :mod:`factory.testing.schema_instances`. With a field profile
(:mod:`factory.testing.profiles`) the compiler draws the profiled properties from their weighted
distributions instead of uniformly; without one it is untouched.
"""

from __future__ import annotations

import bisect
import random
import re
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from factory.testing.profiles import FieldProfile
from factory.testing.vocabulary import FORMATS, NWORDS, WORDS, words

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


def _number_bounds(s: dict) -> tuple[float, float, bool, bool]:
    """(lo, hi, lo_open, hi_open) of a number schema; a missing bound lies 100 from the other (or 0)."""
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
    return lo, hi, lo_open, hi_open


def _integer_range(lo: float, hi: float, lo_open: bool, hi_open: bool) -> tuple[int, int]:
    """The integers ``ilo..ihi`` within the bounds (``ihi >= ilo`` always)."""
    ilo = int(lo) + 1 if lo_open and float(lo).is_integer() else -int(-lo // 1)
    ihi = int(hi) - 1 if hi_open and float(hi).is_integer() else int(hi // 1)
    return ilo, max(ihi, ilo)


def _weighted(allowed: list[tuple[Any, float]]) -> Gen | None:
    """A generator of the values of ``allowed`` (value, weight > 0), one ``rng.random()`` a draw."""
    if not allowed:
        return None
    values = [v for v, _ in allowed]
    cum: list[float] = []
    total = 0.0
    for _, w in allowed:
        total += w
        cum.append(total)
    last = len(values) - 1

    def gen_weighted(rng: random.Random, d: int) -> Any:
        return values[min(bisect.bisect_right(cum, rng.random() * total), last)]

    return gen_weighted


def _nullable(g: Gen | None, nullable: bool) -> Gen | None:
    """``g`` answering None as often as the plain nullable generators do (and always when deep)."""
    if g is None or not nullable:
        return g

    def gen_nullable(rng: random.Random, d: int) -> Any:
        if d > _SOFT_DEPTH or rng.random() < 0.1:
            return None
        return g(rng, d)

    return gen_nullable


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


class SchemaCompiler:
    """Turns one (root) schema into a generator closure ``gen(rng, depth) -> instance``."""

    def __init__(self, root: Any, profile: Mapping[str, FieldProfile] | None = None) -> None:
        self.root = root
        self.refs: dict[str, Gen] = {}
        self.profile = profile or None

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
            return lambda rng, d: words(rng, 1, 24)
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
        fields = [(name, self.compile_property(name, props[name]), name in required) for name in order]
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
                    key = WORDS[int(rng.random() * NWORDS)]
                    if key in out:
                        continue
                    out[key] = extra_gen(rng, dd) if extra_gen is not None else words(rng, 1, 24)
                    n_extra -= 1
            return out

        return gen_object

    # -- field profiles ------------------------------------------------------------------------
    def compile_property(self, name: str, s: Any) -> Gen:
        """The generator of object property ``name``: the profiled one if the profile names it and
        its schema allows some of the profiled values, the plain one otherwise."""
        fp = self.profile.get(name) if self.profile is not None else None
        if fp is not None:
            try:
                g = self.compile_profiled(s, fp, 0)
            except SchemaError:
                g = None
            if g is not None:
                return g
        return self.compile(s)

    def compile_profiled(self, s: Any, fp: FieldProfile, level: int) -> Gen | None:
        """A generator drawing from ``fp`` within ``s``, or None where ``fp`` does not apply."""
        s = self.deref(s)
        if not isinstance(s, dict) or level > 8:
            return None
        s = _with_description_hints(_normalize_keys(s))
        if "$ref" in s:
            return self.compile_profiled(self.resolve(s["$ref"]), fp, level + 1)
        if "const" in s or "allOf" in s:
            return None
        if "enum" in s:
            values = s["enum"]
            if not isinstance(values, list) or not values or not fp.choices:
                return None
            allowed = [(v, w) for v, w in fp.choices if w > 0 and v in values]
            return _nullable(_weighted(allowed), bool(s.get("nullable")) and None not in values)
        union = s.get("anyOf") or s.get("oneOf")
        if isinstance(union, list) and union:
            null_ok = bool(s.get("nullable"))
            branches = []
            for b in union:
                target = self.deref(b)
                if isinstance(target, dict) and target.get("type") in ("null", "NULL") and len(target) <= 2:
                    null_ok = True
                else:
                    branches.append(b)
            if len(branches) != 1:
                return None
            return _nullable(self.compile_profiled(branches[0], fp, level + 1), null_ok)
        names, nullable = self.types_of(s)
        if names == ["integer"] and fp.weights:
            lo, hi, lo_open, hi_open = _number_bounds(s)
            ilo, ihi = _integer_range(lo, hi, lo_open, hi_open)
            mult = _as_float(s.get("multipleOf"))
            m = int(mult) if mult and mult >= 1 and float(mult).is_integer() else 1
            allowed = [
                (ilo + i, w)
                for i, w in enumerate(fp.weights)
                if w > 0 and ilo + i <= ihi and (ilo + i) % m == 0
            ]
            return _nullable(_weighted(allowed), nullable)
        if names == ["string"] and fp.choices and "format" not in s and "pattern" not in s:
            lo_len = _as_int(s.get("minLength"), 0) or 0
            hi_len = _as_int(s.get("maxLength"))
            allowed = [
                (v, w)
                for v, w in fp.choices
                if w > 0 and lo_len <= len(v) and (hi_len is None or len(v) <= hi_len)
            ]
            return _nullable(_weighted(allowed), nullable)
        return None

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
        fgen = FORMATS.get(fmt) if isinstance(fmt, str) else None
        if fgen is not None:

            def gen_fmt(rng: random.Random, d: int) -> str:
                v = fgen(rng)
                if len(v) < lo or (hi is not None and len(v) > hi):
                    return words(rng, lo, hi)
                return v

            return gen_fmt
        return lambda rng, d: words(rng, lo, hi)

    def compile_number(self, s: dict, integer: bool) -> Gen:
        lo, hi, lo_open, hi_open = _number_bounds(s)
        mult = _as_float(s.get("multipleOf"))
        if integer:
            ilo, ihi = _integer_range(lo, hi, lo_open, hi_open)
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
