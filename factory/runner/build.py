"""`factory build`: run slots concurrently, commit them in slot order, stop at exactly N samples.

Determinism: every random choice of a slot comes from (seed, slot), and results are committed in slot
order (dedup included), so the accepted set is the first N surviving slots whatever the timing.
Resumability: committed slots are recorded in `slot_status`; every LLM answer is in the request
cache (journal first), so a rerun redoes unfinished slots from the cache without paying again.
Memory: at most `window` slots in flight and at most `4 * window` finished slots awaiting commit.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import orjson

from factory.banks.loader import load_banks
from factory.errors import ConfigError
from factory.llm.auto import resolve_auto
from factory.llm.client import LLMClient
from factory.llm.config import EndpointConfig
from factory.llm.pricing import PriceTable
from factory.recipes import STAGES, Recipe, Stage
from factory.runner.progress import Progress
from factory.runner.slot import SlotResult, run_slot
from factory.stages.context import BuildContext
from factory.stages.dedup import NearDupIndex
from factory.store.db import Store
from factory.store.live_status import clear_live_status, write_live_status


@dataclass
class BuildSummary:
    accepted: int
    dropped: dict[str, int]
    slots: int
    network_calls: int
    cache_hits: int
    cost_usd: float
    wall_s: float
    db: Path


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
        for stage, reason, detail in r.notes:
            store.add(
                "filter_log",
                {"slot": r.slot, "stage": stage, "reason": reason, "detail": detail, "dropped": False},
            )
        if r.sample is not None and self.ctx.recipe.filters.near_duplicates:
            for index, field, reason in (
                (self.policies, "policy", "duplicate_policy"),
                (self.dialogues, "transcript", "duplicate_dialogue"),
            ):
                hit = index.seen(r.sample[field])
                if hit:
                    self._drop(r.slot, Stage.FILTER, reason, f"{hit} duplicate of an accepted sample")
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

    def _drop(self, slot: int, stage: str, reason: str, detail: str) -> None:
        store = self.ctx.store
        store.add(
            "filter_log", {"slot": slot, "stage": stage, "reason": reason, "detail": detail, "dropped": True}
        )
        store.add("slot_status", {"slot": slot, "status": "dropped", "reason": reason})
        self.dropped[reason] = self.dropped.get(reason, 0) + 1


def resolve_endpoints(recipe: Recipe, overrides: dict[str, str]) -> dict[str, EndpointConfig]:
    """Each LLM stage's endpoint: the override or recipe spec, 'auto' resolved by the LLM layer."""
    return {stage: recipe.endpoint(resolve_auto(recipe.model_spec(stage, overrides))) for stage in STAGES}


async def build(
    db: Path,
    recipe: Recipe,
    n: int,
    seed: int,
    model_overrides: dict[str, str] | None = None,
    progress: bool = True,
    banks_root: Path | None = None,
) -> BuildSummary:
    if n < 1:
        raise ConfigError("--n must be at least 1")
    banks, _ = load_banks(banks_root)
    endpoints = resolve_endpoints(recipe, model_overrides or {})
    store = Store(db)
    _check_previous_run(store, seed, recipe)
    run_id = uuid.uuid4().hex[:12]
    store.add(
        "runs",
        {
            "run_id": run_id,
            "started_at": time.time(),
            "seed": seed,
            "n_target": n,
            "pipeline": recipe.name,
            "status": "running",
            "finished_at": None,
            "config_json": orjson.dumps(
                {
                    "recipe": recipe.model_dump(mode="json"),
                    "endpoints": {k: v.model_dump(mode="json") for k, v in endpoints.items()},
                }
            ).decode(),
        },
    )
    store.flush()
    client = LLMClient(
        cache=store.cache,
        prices=PriceTable.from_mapping(recipe.pricing),
        failure_sink=lambda row: store.add("llm_failures", row),
    )
    ctx = BuildContext(store=store, client=client, banks=banks, recipe=recipe, seed=seed, endpoints=endpoints)
    committer = Committer(ctx, n)
    committer.restore()
    start = time.monotonic()
    # Enough slots in flight to keep every endpoint busy, but not many more than a small build needs:
    # a slot started beyond the N-th accepted one is paid for and then thrown away.
    busy = 2 * max(ep.concurrency if ep.provider != "local" else 1 for ep in endpoints.values())
    window = max(2, min(busy, math.ceil(n * 1.2) + 2))
    max_slots = int(n * recipe.oversample_cap) + 50
    display = Progress(ctx, committer, n, enabled=progress)
    last_beat = 0.0

    def heartbeat(state: str = "running", force: bool = False) -> None:
        nonlocal last_beat
        if force or time.monotonic() - last_beat >= 1.0:
            last_beat = time.monotonic()
            write_live_status(db, accepted=committer.accepted, target=n, slots=committer.cursor, state=state)

    heartbeat(force=True)

    next_slot = committer.cursor
    in_flight: dict[int, asyncio.Task] = {}
    try:
        with display:
            while not committer.done:
                while (
                    len(in_flight) < window
                    and next_slot < max_slots
                    and next_slot - committer.cursor < 4 * window
                ):
                    in_flight[next_slot] = asyncio.ensure_future(run_slot(ctx, next_slot))
                    next_slot += 1
                if not in_flight:
                    raise RuntimeError(
                        f"gave up after {max_slots} slots with {committer.accepted}/{n} samples accepted: "
                        f"drops by reason {committer.dropped}. Check `factory stats` and llm_failures, "
                        f"or raise oversample_cap in the recipe."
                    )
                finished, _ = await asyncio.wait(
                    in_flight.values(), return_when=asyncio.FIRST_COMPLETED, timeout=1.0
                )
                for task in finished:
                    result = task.result()  # fatal provider/config errors propagate from here
                    del in_flight[result.slot]
                    committer.offer(result)
                store.maybe_flush()
                display.update()
                heartbeat()
    finally:
        for task in in_flight.values():
            task.cancel()
        if in_flight:
            await asyncio.gather(*in_flight.values(), return_exceptions=True)
        await client.aclose()
        status = "finished" if committer.done else "interrupted"
        store.flush()
        store.query(
            "UPDATE runs SET status = ?, finished_at = ? WHERE run_id = ?", [status, time.time(), run_id]
        )
        store.close()
        clear_live_status(db)
    total = client.accounting.total()
    return BuildSummary(
        accepted=committer.accepted,
        dropped=dict(committer.dropped),
        slots=committer.cursor,
        network_calls=total.network_calls,
        cache_hits=total.cache_hits,
        cost_usd=total.cost_usd,
        wall_s=time.monotonic() - start,
        db=db,
    )


def _check_previous_run(store: Store, seed: int, recipe: Recipe) -> None:
    rows = store.query("SELECT seed, pipeline FROM runs ORDER BY started_at LIMIT 1")
    if rows and (rows[0][0] != seed or rows[0][1] != recipe.name):
        raise ConfigError(
            f"{store.path} holds a build with seed {rows[0][0]} and pipeline {rows[0][1]!r}; "
            f"resuming it with seed {seed} and pipeline {recipe.name!r} would mix datasets. "
            f"Use another --db, or the same --seed and --pipeline."
        )
