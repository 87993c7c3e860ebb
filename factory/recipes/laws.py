"""The heavy-tailed size laws of the paper (rules per policy, turns per dialogue)."""

from __future__ import annotations

import math
import random

from pydantic import BaseModel, ConfigDict, Field, model_validator

# The largest policy and the longest dialogue a recipe may ask for. The paper's train split tops
# out near 100 rules and 27 turns; past these bounds prompts outgrow the context windows of the
# models the factory targets, and a slot would burn calls that cannot succeed.
MAX_RULES = 200
MAX_TURNS = 50


class SizeLaw(BaseModel):
    """n = 1 + floor(LogNormal(mu, sigma)), truncated to [min, max] by redrawing.

    Redrawing (not clipping) keeps the tail smooth: clipping piles every draw above `max` onto
    `max`, a spike no real policy set has. Defaults reproduce DynaBench train (Table 2): rules per
    policy median 4, mean 6.4, max ~100; turns median 2, mean 2.8, max 27.
    """

    model_config = ConfigDict(extra="forbid")

    mu: float = Field(
        ge=-5,
        le=10,
        allow_inf_nan=False,
        description="log-scale location, in [-5, 10] (the median of n is about 1 + e^mu)",
    )
    sigma: float = Field(
        gt=0, le=5, allow_inf_nan=False, description="log-scale spread, in (0, 5]; larger is heavier-tailed"
    )
    max: int = Field(
        ge=1,
        description=f"largest n, >= min (at most {MAX_RULES} rules per policy, {MAX_TURNS} turns per dialogue)",
    )
    min: int = Field(default=1, ge=1, description="smallest n, >= 1 and <= max")

    @model_validator(mode="after")
    def _check_bounds(self) -> SizeLaw:
        if self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self

    def sample(self, rng: random.Random) -> int:
        for _ in range(1000):
            value = 1 + math.floor(rng.lognormvariate(self.mu, self.sigma))
            if self.min <= value <= self.max:
                return value
        return max(self.min, min(self.max, value))  # a law whose mass lies outside its bounds


RULES_LAW = SizeLaw(mu=1.2, sigma=1.09, max=100)
TURNS_LAW = SizeLaw(mu=0.5, sigma=0.82, max=27)
