"""The heavy-tailed size laws of the paper (rules per policy, turns per dialogue)."""

from __future__ import annotations

import math
import random

from pydantic import BaseModel, Field


class SizeLaw(BaseModel):
    """n = 1 + floor(LogNormal(mu, sigma)), truncated to [min, max] by redrawing.

    Redrawing (not clipping) keeps the tail smooth: clipping piles every draw above `max` onto
    `max`, a spike no real policy set has. Defaults reproduce DynaBench train (Table 2): rules per
    policy median 4, mean 6.4, max ~100; turns median 2, mean 2.8, max 27.
    """

    mu: float
    sigma: float = Field(gt=0)
    max: int = Field(ge=1)
    min: int = Field(default=1, ge=1)

    def sample(self, rng: random.Random) -> int:
        for _ in range(1000):
            value = 1 + math.floor(rng.lognormvariate(self.mu, self.sigma))
            if self.min <= value <= self.max:
                return value
        return max(self.min, min(self.max, value))  # a law whose mass lies outside its bounds


RULES_LAW = SizeLaw(mu=1.2, sigma=1.09, max=100)
TURNS_LAW = SizeLaw(mu=0.5, sigma=0.82, max=27)
