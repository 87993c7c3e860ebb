"""The ordered committer: applies the order-dependent filters and writes final rows in slot order.

Whatever the timing of slots, results are committed strictly by slot number (near-duplicate
filtering included), so the accepted set is the first N surviving slots. `slot_status` marks the
resume point; `restore()` rebuilds the state from it after a crash.

Memory does not grow with the dataset: the near-duplicate index is a memory-mapped file next to the
database (`<db>.dedup`, see `FingerprintFile`), checked against the stored samples on restore and
rebuilt from them when it does not match; counts are all that is kept per reason.
"""

from __future__ import annotations

import numpy as np

from factory.runner.slot import SlotResult
from factory.stages.context import BuildContext
from factory.stages.dedup import FingerprintFile, fingerprint
from factory.stages.filters import KEEP, Verdict, drop

_REBUILD_BATCH = 2048  # stored samples read at a time when the index file is rebuilt


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
        self.index: FingerprintFile | None = None
        if cfg.near_duplicates:
            path = ctx.store.path.with_name(ctx.store.path.name + ".dedup")
            self.index = FingerprintFile(path, cfg.simhash_max_distance)

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
        if self.index is not None:
            with store.lock:
                slots = store.con.execute(
                    "SELECT slot FROM samples WHERE slot < ? ORDER BY slot", [self.cursor]
                ).fetchnumpy()["slot"]
            if not self.index.load(np.asarray(slots)):
                self._rebuild_index()

    def _rebuild_index(self) -> None:
        """Fingerprint the stored samples again (the index file was missing or out of date)."""
        assert self.index is not None
        store = self.ctx.store
        with store.lock:
            cur = store.con.execute(
                "SELECT slot, policy, transcript FROM samples WHERE slot < ? ORDER BY slot", [self.cursor]
            )
            while rows := cur.fetchmany(_REBUILD_BATCH):
                for slot, policy, transcript in rows:
                    self.index.add(slot, fingerprint(policy), fingerprint(transcript))

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
        if r.sample is not None and self.index is not None:
            policy, dialogue = fingerprint(r.sample["policy"]), fingerprint(r.sample["transcript"])
            verdict = self._near_duplicate(policy, dialogue)
            if not verdict.keep:
                self._drop(r.slot, verdict.stage, verdict.reason, verdict.detail)
                return
            self.index.add(r.slot, policy, dialogue)
        if r.sample is None:
            assert r.drop is not None
            self._drop(r.slot, r.drop.stage, r.drop.reason, r.drop.detail)
            return
        store.add("samples", r.sample)
        store.add("slot_status", {"slot": r.slot, "status": "accepted", "reason": ""})
        self.accepted += 1

    def _near_duplicate(self, policy: tuple[bytes, int], dialogue: tuple[bytes, int]) -> Verdict:
        """The order-dependent filter: a policy or dialogue too close to an accepted sample's
        (the policy is checked first)."""
        assert self.index is not None
        hit = self.index.seen(policy, dialogue)
        if hit is None:
            return KEEP
        field, how = hit
        return drop(f"duplicate_{field}", f"{how} duplicate of an accepted sample")

    def _drop(self, slot: int, stage: str, reason: str, detail: str) -> None:
        store = self.ctx.store
        store.add(
            "filter_log", {"slot": slot, "stage": stage, "reason": reason, "detail": detail, "dropped": True}
        )
        store.add("slot_status", {"slot": slot, "status": "dropped", "reason": reason})
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
