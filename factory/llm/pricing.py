"""Dollar cost of a call from a per-model price table (USD per million tokens).

The built-in table holds list prices as published by the providers at the time of writing; they
change, so users override or extend it with `pricing:` in a recipe or `--pricing FILE` (YAML:
`model-name: {input: 0.15, output: 0.60, cached_input: 0.075}`; `cached_input` is optional). A model missing from the table costs 0 and is reported
as unpriced in the accounting, so a missing price is visible rather than silently wrong.
`Usage.input_tokens` includes the cached ones (`Usage.cached_input_tokens`), which are billed at
`cached_input` where the provider publishes one, else at the plain input rate. A call answered
through a provider batch job costs `BATCH_PRICE_FACTOR` of that (OpenAI Batch, Anthropic Message
Batches and Gemini batch mode all bill half the online price).
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from factory.llm.types import Usage

BATCH_PRICE_FACTOR = 0.5


class Price(BaseModel):
    input: float = Field(ge=0, description="USD per 1M input tokens")
    output: float = Field(ge=0, description="USD per 1M output tokens")
    cached_input: float | None = Field(
        default=None, ge=0, description="USD per 1M input tokens read from the provider's prompt cache"
    )


DEFAULT_PRICES: dict[str, Price] = {
    # cached_input: OpenAI's cached-input rates (50% for 4o, 25% for 4.1), Anthropic's cache reads
    # (0.1x input; cache writes, 1.25x, are billed as plain input here), Gemini's implicit-cache rates.
    "gpt-4o": Price(input=2.50, output=10.00, cached_input=1.25),
    "gpt-4o-mini": Price(input=0.15, output=0.60, cached_input=0.075),
    "gpt-4.1": Price(input=2.00, output=8.00, cached_input=0.50),
    "gpt-4.1-mini": Price(input=0.40, output=1.60, cached_input=0.10),
    "gpt-4.1-nano": Price(input=0.10, output=0.40, cached_input=0.025),
    "claude-3-5-haiku-latest": Price(input=0.80, output=4.00, cached_input=0.08),
    "claude-sonnet-4-5": Price(input=3.00, output=15.00, cached_input=0.30),
    "claude-haiku-4-5": Price(input=1.00, output=5.00, cached_input=0.10),
    "gemini-2.0-flash": Price(input=0.10, output=0.40, cached_input=0.025),
    "gemini-2.5-flash": Price(input=0.30, output=2.50, cached_input=0.03),
    "gemini-2.5-pro": Price(input=1.25, output=10.00, cached_input=0.125),
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

    def cost(self, model: str, usage: Usage, batch: bool = False) -> float:
        price = self.lookup(model)
        if price is None:
            return 0.0
        cached = min(usage.cached_input_tokens, usage.input_tokens)
        cached_rate = price.input if price.cached_input is None else price.cached_input
        online = (
            (usage.input_tokens - cached) * price.input
            + cached * cached_rate
            + usage.output_tokens * price.output
        ) / 1_000_000
        return online * BATCH_PRICE_FACTOR if batch else online

    def is_priced(self, model: str) -> bool:
        return self.lookup(model) is not None
