"""Field profiles of the fake LLM server: value distributions for object properties, by property name.

A profile maps a property NAME to a distribution that the schema-instance generator uses wherever it
generates an object property of that name and the property's schema allows the values:

* ``{"weights": [w0, w1, ...]}`` for integer properties: relative weights of the values ``minimum``,
  ``minimum + 1``, ... of the property's schema (missing weights are 0; values outside the schema's
  range, or off its ``multipleOf``, are never produced);
* ``{"choices": {"VIOLATED": 0.08, "NOT VIOLATED": 0.92}}`` for string enum (literal) properties
  and plain strings: relative weights of the listed string values that the schema allows (enum
  members, or lengths within ``minLength``/``maxLength`` of a string without ``format``/``pattern``).

A property whose schema allows none of the profiled values is generated as without a profile. The
draws come from the per-request RNG, so the same request still gets the same answer.

``parse_profile`` accepts a preset name (see :data:`PRESETS`), a JSON mapping (as text or as a
``Mapping``) or ``None``; ``use_profile`` makes a profile the active one of the current context
(the fake server answers each request under its own profile that way).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = [
    "LABELLER_AMBIGUITY_WEIGHTS",
    "LABELLER_VIOLATED_SHARE",
    "PRESETS",
    "FieldProfile",
    "Profile",
    "ProfileLike",
    "active_profile",
    "parse_profile",
    "use_profile",
]

#: Per-turn ambiguity 0..10 of the ``labeller`` preset (the weights sum to 100): 10% of the draws
#: are 6 or more, 7% are more than 6, 52% are 0 or 1.
LABELLER_AMBIGUITY_WEIGHTS = (30, 22, 15, 11, 7, 5, 3, 3, 2, 1, 1)
#: Per-turn share of ``"VIOLATED"`` labels of the ``labeller`` preset.
LABELLER_VIOLATED_SHARE = 0.08

#: Named profiles. ``labeller``: a labelling double whose per-turn judgements
#: ``{"turn", "discussion", "explanation", "label", "ambiguity"}`` look like a real labeller's
#: (ambiguity skewed low, few violations) instead of uniform ambiguity and a 50/50 label.
PRESETS: dict[str, dict[str, Any]] = {
    "labeller": {
        "ambiguity": {"weights": list(LABELLER_AMBIGUITY_WEIGHTS)},
        "label": {
            "choices": {
                "VIOLATED": LABELLER_VIOLATED_SHARE,
                "NOT VIOLATED": round(1.0 - LABELLER_VIOLATED_SHARE, 10),
            }
        },
    },
}


@dataclass(frozen=True)
class FieldProfile:
    """The distribution of one property: integer weights from the minimum up, and/or value choices."""

    weights: tuple[float, ...] | None = None
    choices: tuple[tuple[Any, float], ...] | None = None


@dataclass(frozen=True)
class Profile:
    """A parsed profile. ``spec`` is its JSON form, ``name`` the preset it came from (if any)."""

    fields: Mapping[str, FieldProfile]
    spec: Mapping[str, Any]
    name: str | None = None

    @functools.cached_property
    def key(self) -> bytes:
        """Canonical JSON of the spec (what compiled generators are cached under)."""
        return orjson.dumps(self.spec, option=orjson.OPT_SORT_KEYS)


ProfileLike = Profile | Mapping[str, Any] | str


def _weight(v: Any, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
        raise ValueError(f"profile {where}: weights must be finite numbers >= 0, got {v!r}")
    return float(v)


def _field(name: str, spec: Any) -> FieldProfile:
    if not isinstance(spec, Mapping):
        raise ValueError(f'profile field {name!r}: expected {{"weights": [...]}} or {{"choices": {{...}}}}')
    unknown = set(spec) - {"weights", "choices"}
    if unknown or not spec:
        raise ValueError(
            f"profile field {name!r}: expected the keys 'weights' and/or 'choices', got {sorted(spec)}"
        )
    weights = choices = None
    if "weights" in spec:
        raw = spec["weights"]
        if not isinstance(raw, list | tuple):
            raise ValueError(f"profile field {name!r}: 'weights' must be a list of numbers")
        weights = tuple(_weight(w, f"field {name!r}") for w in raw)
        if not any(weights):
            raise ValueError(f"profile field {name!r}: 'weights' needs a weight > 0")
    if "choices" in spec:
        raw = spec["choices"]
        if not isinstance(raw, Mapping):
            raise ValueError(f"profile field {name!r}: 'choices' must map values to weights")
        if not all(isinstance(v, str) for v in raw):
            raise ValueError(f"profile field {name!r}: 'choices' keys must be strings (the string values)")
        choices = tuple((v, _weight(w, f"field {name!r}")) for v, w in raw.items())
        if not any(w for _, w in choices):
            raise ValueError(f"profile field {name!r}: 'choices' needs a weight > 0")
    return FieldProfile(weights, choices)


def parse_profile(profile: ProfileLike | None) -> Profile | None:
    """A :class:`Profile` from a preset name, a JSON mapping (text or ``Mapping``), or ``None``.

    ``None``, ``""`` and an empty mapping mean no profile. Raises ValueError on anything else.
    """
    if profile is None or isinstance(profile, Profile):
        return profile
    if isinstance(profile, str):
        text = profile.strip()
        if not text:
            return None
        if text in PRESETS:
            return _preset(text)
        if text.startswith("{"):
            try:
                profile = orjson.loads(text)
            except orjson.JSONDecodeError as exc:
                raise ValueError(f"profile is not valid JSON: {exc}") from None
        else:
            raise ValueError(
                f"unknown profile {text!r}: expected a preset ({', '.join(sorted(PRESETS))}) or a JSON mapping"
            )
    if not isinstance(profile, Mapping):
        raise ValueError(f"a profile must be a preset name or a mapping, got {type(profile).__name__}")
    if not profile:
        return None
    fields = {}
    for field_name, spec in profile.items():
        if not isinstance(field_name, str) or not field_name:
            raise ValueError(f"profile: property names must be non-empty strings, got {field_name!r}")
        fields[field_name] = _field(field_name, spec)
    try:  # keep a JSON copy (a round trip also rejects values JSON cannot carry)
        spec_json = orjson.loads(orjson.dumps(profile))
    except TypeError as exc:
        raise ValueError(f"profile is not JSON-serialisable: {exc}") from None
    return Profile(fields, spec_json)


@functools.cache
def _preset(name: str) -> Profile:
    parsed = parse_profile(PRESETS[name])
    assert parsed is not None
    return Profile(parsed.fields, parsed.spec, name)


_ACTIVE: contextvars.ContextVar[Profile | None] = contextvars.ContextVar("fake_llm_profile", default=None)


def active_profile() -> Profile | None:
    """The profile active in the current context (``None`` unless inside :func:`use_profile`)."""
    return _ACTIVE.get()


@contextlib.contextmanager
def use_profile(profile: ProfileLike | None) -> Iterator[Profile | None]:
    """Make ``profile`` the active one (for ``compile_schema``/``instance_for_schema``) in this block."""
    parsed = parse_profile(profile)
    token = _ACTIVE.set(parsed)
    try:
        yield parsed
    finally:
        _ACTIVE.reset(token)
