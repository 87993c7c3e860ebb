"""The ordered committer: applies the order-dependent filters and writes final rows in slot order.

Whatever the timing of slots, results are committed strictly by slot number (near-duplicate
filtering included), so the accepted set is the first N surviving slots. `slot_status` marks the
resume point; `restore()` rebuilds the state from it after a crash.
"""

from __future__ import annotations

from factory.runner.slot import SlotResult
from factory.stages.context import BuildContext
from factory.stages.dedup import NearDupIndex
from factory.stages.filters import KEEP, Verdict, drop


class Committer:
    """Applies the order-dependent filters and writes final rows, strictly in slot order."""

    def __init__(self, ctx: BuildContext, n_target: int) -> None:
        self.ctx = ctx
        self.n_target = n_target
        self.cursor = 0  # next slot to commit
        self.accepted = 0
        self.dropped: dict[str, int] = {}
        self.pending: dict[int, SlotResult] = {}
        cfg = ctx.recipe.filters
        self.policies = NearDupIndex(cfg.simhash_max_distance)
        self.dialogues = NearDupIndex(cfg.simhash_max_distance)

    def restore(self) -> None:
        """Rebuild state from a previous run's committed slots."""
        store = self.ctx.store
        rows = store.query("SELECT slot, status, reason FROM slot_status ORDER BY slot")
        for slot, status, reason in rows:
            if slot != self.cursor:
                break
            self.cursor += 1
            if status == "accepted":
                self.accepted += 1
            else:
                self.dropped[reason] = self.dropped.get(reason, 0) + 1
        if self.ctx.recipe.filters.near_duplicates:
            for policy, transcript in store.query(
                "SELECT policy, transcript FROM samples WHERE slot < ? ORDER BY slot", [self.cursor]
            ):
                self.policies.add(policy)
                self.dialogues.add(transcript)

    @property
    def done(self) -> bool:
        return self.accepted >= self.n_target

    def offer(self, result: SlotResult) -> None:
        self.pending[result.slot] = result
        while self.cursor in self.pending and not self.done:
            self._commit(self.pending.pop(self.cursor))
            self.cursor += 1

    def _commit(self, r: SlotResult) -> None:
        store = self.ctx.store
        for v in r.notes:
            store.add(
                "filter_log",
                {"slot": r.slot, "stage": v.stage, "reason": v.reason, "detail": v.detail, "dropped": False},
            )
        if r.sample is not None and self.ctx.recipe.filters.near_duplicates:
            verdict = self._near_duplicate(r.sample)
            if not verdict.keep:
                self._drop(r.slot, verdict.stage, verdict.reason, verdict.detail)
                return
            self.policies.add(r.sample["policy"])
            self.dialogues.add(r.sample["transcript"])
        if r.sample is None:
            assert r.drop is not None
            self._drop(r.slot, r.drop.stage, r.drop.reason, r.drop.detail)
            return
        store.add("samples", r.sample)
        store.add("slot_status", {"slot": r.slot, "status": "accepted", "reason": ""})
        self.accepted += 1

    def _near_duplicate(self, sample: dict) -> Verdict:
        """The order-dependent filter: a policy or dialogue too close to an accepted sample's."""
        for index, field, reason in (
            (self.policies, "policy", "duplicate_policy"),
            (self.dialogues, "transcript", "duplicate_dialogue"),
        ):
            hit = index.seen(sample[field])
            if hit:
                return drop(reason, f"{hit} duplicate of an accepted sample")
        return KEEP

    def _drop(self, slot: int, stage: str, reason: str, detail: str) -> None:
        store = self.ctx.store
        store.add(
            "filter_log", {"slot": slot, "stage": stage, "reason": reason, "detail": detail, "dropped": True}
        )
        store.add("slot_status", {"slot": slot, "status": "dropped", "reason": reason})
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
