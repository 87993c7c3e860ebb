"""What every stage needs: the store, the LLM client, the banks, the recipe and the seed."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from factory.banks.loader import Banks
from factory.errors import BuildStopped
from factory.llm.client import LLMClient
from factory.llm.config import EndpointConfig
from factory.recipes import Recipe
from factory.store.db import Store


@dataclass
class StageCounts:
    started: int = 0
    done: int = 0
    failed: int = 0


class OutputQuality:
    """Stops a build whose model keeps giving unusable answers, instead of paying for the whole
    oversample budget: `max_consecutive` failed calls in a row on one stage (after re-asks), or more
    than `max_share` of the last `window` calls of a stage."""

    def __init__(self, max_consecutive: int = 25, window: int = 100, max_share: float = 0.5) -> None:
        self.max_consecutive = max_consecutive
        self.window = window
        self.max_share = max_share
        self._recent: dict[str, deque[bool]] = {}
        self._run: dict[str, int] = {}

    def record(self, stage: str, spec: str, ok: bool, error: str = "") -> None:
        recent = self._recent.setdefault(stage, deque(maxlen=self.window))
        recent.append(ok)
        self._run[stage] = 0 if ok else self._run.get(stage, 0) + 1
        failed = recent.count(False)
        if self._run[stage] >= self.max_consecutive or (
            len(recent) == self.window and failed > self.max_share * self.window
        ):
            raise BuildStopped(
                f"{spec} keeps returning unusable output for the {stage} stage ({self._run[stage]} failed calls "
                f"in a row, {failed} of the last {len(recent)}; last error: {error[:200]}). Check the model "
                f"and its structured-output support (`factory stats`, table llm_failures); rerun to resume.",
                exit_code=4,
            )


@dataclass
class BuildContext:
    store: Store
    client: LLMClient
    banks: Banks
    recipe: Recipe
    seed: int
    endpoints: dict[str, EndpointConfig]  # stage name -> endpoint
    counts: dict[str, StageCounts] = field(default_factory=dict)
    quality: OutputQuality = field(default_factory=OutputQuality)
    _pools: dict[str, Banks] | None = field(default=None, repr=False)

    def split_and_banks(self, slot: int) -> tuple[str, Banks]:
        """The slot's split and the rules it may compose from: with `splits.method: rules`, the
        split from (seed, slot) and that split's rule pool; with `policy`, '' (the export hashes
        policy ids) and the whole bank."""
        from factory.stages.splits import rule_pools, slot_split

        cfg = self.recipe.splits
        if cfg.method == "policy":
            return "", self.banks
        if self._pools is None:
            self._pools = rule_pools(self.banks, self.seed, cfg)
        split = slot_split(self.seed, slot, cfg)
        return split, self._pools[split]

    def count(self, stage: str) -> StageCounts:
        return self.counts.setdefault(stage, StageCounts())


class SlotDropped(Exception):
    """A slot leaves the pipeline; `reason` is counted in filter_log."""

    def __init__(self, stage: str, reason: str, detail: str = "") -> None:
        self.stage = stage
        self.reason = reason
        self.detail = detail
        super().__init__(f"{stage}: {reason} {detail}".strip())
