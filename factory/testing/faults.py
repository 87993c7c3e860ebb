"""Fault injection of the fake LLM server: the fault kinds, a scripted fault (:class:`Fault`) with
its matching rules, and the token bucket behind the server-side ``rate_limit`` option.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from typing import Any

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
        "batch_expire",
        "batch_item_error",
        "batch_fail",
    }
)
BATCH_FAULTS = frozenset({"batch_expire", "batch_item_error", "batch_fail"})  # batch jobs only
CONTENT_FAULTS = frozenset({"malformed", "truncated", "wrong_schema", "empty"})
ERROR_STATUS = {
    "rate_limit": 429,
    "server_error": 500,
    "overloaded": 503,
    "bad_request": 400,
    "unauthorized": 401,
}
PROVIDERS = ("openai", "anthropic", "gemini")


class TokenBucket:
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


class Fault:
    __slots__ = ("kind", "spec", "match", "match_alt", "provider")

    def __init__(self, spec: Mapping[str, Any]) -> None:
        kind = spec.get("kind")
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {sorted(FAULT_KINDS)}")
        provider = spec.get("provider")
        if provider is not None and provider not in PROVIDERS:
            raise ValueError(f"unknown provider {provider!r}; expected one of {PROVIDERS}")
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


def parse_faults(faults: Iterable[Mapping[str, Any]]) -> list[Fault]:
    """The queue entries of a script: ``times`` copies of each fault. Raises ValueError on a bad fault."""
    parsed: list[Fault] = []
    for spec in faults:
        if not isinstance(spec, Mapping):
            raise ValueError("each fault must be an object")
        f = Fault(spec)
        times = spec.get("times", 1)
        if not isinstance(times, int) or times < 0:
            raise ValueError("fault 'times' must be a non-negative integer")
        parsed.extend([f] * times)
    return parsed
