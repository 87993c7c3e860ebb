"""Dollar cost of a call from a per-model price table (USD per million tokens).

The built-in table holds list prices as published by the providers at the time of writing; they
change, so users override or extend it with `pricing:` in a recipe or `--pricing FILE` (YAML:
`model-name: {input: 0.15, output: 0.60}`). A model missing from the table costs 0 and is reported
as unpriced in the accounting, so a missing price is visible rather than silently wrong.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from factory.llm.types import Usage


class Price(BaseModel):
    input: float = Field(ge=0, description="USD per 1M input tokens")
    output: float = Field(ge=0, description="USD per 1M output tokens")


DEFAULT_PRICES: dict[str, Price] = {
    "gpt-4o": Price(input=2.50, output=10.00),
    "gpt-4o-mini": Price(input=0.15, output=0.60),
    "gpt-4.1": Price(input=2.00, output=8.00),
    "gpt-4.1-mini": Price(input=0.40, output=1.60),
    "gpt-4.1-nano": Price(input=0.10, output=0.40),
    "claude-3-5-haiku-latest": Price(input=0.80, output=4.00),
    "claude-sonnet-4-5": Price(input=3.00, output=15.00),
    "claude-haiku-4-5": Price(input=1.00, output=5.00),
    "gemini-2.0-flash": Price(input=0.10, output=0.40),
    "gemini-2.5-flash": Price(input=0.30, output=2.50),
    "gemini-2.5-pro": Price(input=1.25, output=10.00),
    "smollm2-135m": Price(input=0.0, output=0.0),
}


class PriceTable:
    def __init__(self, overrides: dict[str, Price] | None = None) -> None:
        self._prices = dict(DEFAULT_PRICES)
        if overrides:
            self._prices.update(overrides)

    @classmethod
    def from_mapping(cls, mapping: dict[str, dict[str, float]] | None) -> PriceTable:
        return cls({k: Price.model_validate(v) for k, v in (mapping or {}).items()})

    def lookup(self, model: str) -> Price | None:
        if model in self._prices:
            return self._prices[model]
        # Dated snapshots ("gpt-4o-mini-2024-07-18") fall back to their family's price.
        best = max((k for k in self._prices if model.startswith(k)), key=len, default=None)
        return self._prices[best] if best else None

    def cost(self, model: str, usage: Usage) -> float:
        price = self.lookup(model)
        if price is None:
            return 0.0
        return (usage.input_tokens * price.input + usage.output_tokens * price.output) / 1_000_000

    def is_priced(self, model: str) -> bool:
        return self.lookup(model) is not None
