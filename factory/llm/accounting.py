"""Token, dollar and outcome counters per stage and per model, for progress and reports."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, fields


@dataclass
class Counter:
    calls: int = 0  # logical requests answered (after re-asks)
    network_calls: int = 0  # HTTP exchanges actually paid for
    batched_calls: int = 0  # of network_calls, answered through a provider batch job (half price)
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

    def add(self, other: Counter) -> None:
        """Add another counter's figures to this one."""
        for f in fields(self):
            if f.name == "unpriced":
                self.unpriced = self.unpriced or other.unpriced
            else:
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


@dataclass
class Accounting:
    by_key: dict[tuple[str, str], Counter] = field(default_factory=lambda: defaultdict(Counter))

    def counter(self, stage: str, model_spec: str) -> Counter:
        return self.by_key[(stage, model_spec)]

    def by_stage(self) -> dict[str, Counter]:
        out: dict[str, Counter] = defaultdict(Counter)
        for (stage, _), c in self.by_key.items():
            out[stage].add(c)
        return dict(out)

    def total(self) -> Counter:
        agg = Counter()
        for c in self.by_key.values():
            agg.add(c)
        return agg
