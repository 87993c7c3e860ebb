"""Token, dollar and outcome counters per stage and per model, for progress and reports."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field


@dataclass
class Counter:
    calls: int = 0  # logical requests answered (after re-asks)
    network_calls: int = 0  # HTTP exchanges actually paid for
    cache_hits: int = 0
    retries: int = 0
    reasks: int = 0
    failures: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0  # of input_tokens, read from the provider's prompt cache
    cost_usd: float = 0.0  # paid in this process
    cost_cached_usd: float = 0.0  # what cache hits would have cost
    unpriced: bool = False


@dataclass
class Accounting:
    by_key: dict[tuple[str, str], Counter] = field(default_factory=lambda: defaultdict(Counter))

    def counter(self, stage: str, model_spec: str) -> Counter:
        return self.by_key[(stage, model_spec)]

    def by_stage(self) -> dict[str, Counter]:
        out: dict[str, Counter] = defaultdict(Counter)
        for (stage, _), c in self.by_key.items():
            agg = out[stage]
            for name in (
                "calls",
                "network_calls",
                "cache_hits",
                "retries",
                "reasks",
                "failures",
                "input_tokens",
                "output_tokens",
                "cached_input_tokens",
                "cost_usd",
                "cost_cached_usd",
            ):
                setattr(agg, name, getattr(agg, name) + getattr(c, name))
            agg.unpriced = agg.unpriced or c.unpriced
        return dict(out)

    def total(self) -> Counter:
        agg = Counter()
        for c in self.by_stage().values():
            for name in (
                "calls",
                "network_calls",
                "cache_hits",
                "retries",
                "reasks",
                "failures",
                "input_tokens",
                "output_tokens",
                "cached_input_tokens",
                "cost_usd",
                "cost_cached_usd",
            ):
                setattr(agg, name, getattr(agg, name) + getattr(c, name))
            agg.unpriced = agg.unpriced or c.unpriced
        return agg
