"""What every stage needs: the store, the LLM client, the banks, the recipe and the seed."""

from __future__ import annotations

from dataclasses import dataclass, field

from factory.banks.loader import Banks
from factory.llm.client import LLMClient
from factory.llm.config import EndpointConfig
from factory.recipes import Recipe
from factory.store.db import Store


@dataclass
class StageCounts:
    started: int = 0
    done: int = 0
    failed: int = 0


@dataclass
class BuildContext:
    store: Store
    client: LLMClient
    banks: Banks
    recipe: Recipe
    seed: int
    endpoints: dict[str, EndpointConfig]  # stage name -> endpoint
    counts: dict[str, StageCounts] = field(default_factory=dict)

    def count(self, stage: str) -> StageCounts:
        return self.counts.setdefault(stage, StageCounts())


class SlotDropped(Exception):
    """A slot leaves the pipeline; `reason` is counted in filter_log."""

    def __init__(self, stage: str, reason: str, detail: str = "") -> None:
        self.stage = stage
        self.reason = reason
        self.detail = detail
        super().__init__(f"{stage}: {reason} {detail}".strip())
