"""Build the test set: per grid case, a policy from the test pool, a violating and a complying
dialogue written to the case's scenario, per-rule labels (the main pipeline's label stage), and
optionally reasoning traces; one `testset_samples` row per (case, intended label).

Reuse, not copies: the policy comes from `compose_policy` over the test pool of the rule-disjoint
split (`rule_pools`, with the build's seed and split settings when the store holds a build, so the
test set shares no bank rule with the build's train split), the rules are paraphrased and the
personas written by the build's stages, every LLM call goes through `stage_call` (request cache +
journal: a rerun, or a run restarted after a kill, pays for no answer twice), labels come from
`label_policy` with the recipe's ambiguity threshold and spares, and the filters are the build's
(`AFTER_DIALOGUE`, `AFTER_LABELS`). The stages' per-slot rows (policies, paraphrases, ...) belong
to the build's tables and are not written; each test-set row keeps the cache keys of its calls.

Determinism: every random choice of a case comes from (seed, the case's slot), and the slot is a
hash of the case id, so a case's data does not depend on scheduling or on the rest of the grid.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from factory.banks.loader import Banks, load_banks
from factory.errors import BuildStopped, ConfigError
from factory.llm.client import LLMClient
from factory.llm.errors import ProviderOutage, RetryableProviderError
from factory.llm.pricing import PriceTable
from factory.recipes import Recipe
from factory.recipes.model import SplitConfig
from factory.recipes.names import Stage
from factory.runner.build import resolve_endpoints
from factory.runner.window import slot_window
from factory.stages import filters
from factory.stages.compose import ComposedPolicy, compose_policy, numbered
from factory.stages.context import BuildContext, SlotDropped
from factory.stages.dialogue import Dialogue
from factory.stages.label import label_policy
from factory.stages.llm_call import stage_call
from factory.stages.paraphrase import paraphrase
from factory.stages.persona import Personas, personas
from factory.stages.sample_columns import labelled_columns
from factory.stages.sampling import slot_rng, stable_id
from factory.stages.schemas import dialogue_schema
from factory.stages.splits import rule_pools
from factory.stages.trace import write_trace
from factory.store.db import Store
from factory.store.sample_row import sample_row, testset_ddl
from factory.testset.grid import Case, load_grid

PROMPT = "testset_dialogue"
TABLE = "testset_samples"
DYNAMIC = "testset"  # the `dynamic` of a test-set sample (its scenario comes from the grid)
CASE_RETRIES = 3  # a case whose provider failed for transport reasons runs again this often
SIDES = ("FAIL", "PASS")  # the violating dialogue, then the complying one
OUTCOME = {
    "FAIL": "the agent breaks {targets} in at least one reply, in a way a careful reader of the "
    "transcript can point to, and keeps every other rule of the policy.",
    "PASS": "the agent keeps every rule of the policy in every reply, including {targets}, even "
    "where the brief makes that hard.",
}


class _CaseStore:
    """The store as the stages see it during a test-set run: their per-slot rows belong to the
    build's tables and are not written; the cache keys in them are kept, per slot."""

    def __init__(self) -> None:
        self.keys: dict[int, list[str]] = {}

    def add(self, table: str, row: dict[str, Any]) -> None:
        if row.get("call_key") and row.get("slot") is not None:
            self.keys.setdefault(int(row["slot"]), []).append(row["call_key"])


@dataclass
class _CaseLabelled(filters.Labelled):
    """The label filters' view of a test-set dialogue: its intended label is the case side's."""

    side: str = "PASS"

    @property
    def intended(self) -> str:  # type: ignore[override]
        return self.side


class _Uniform:
    """A policy-size or turn-count law uniform over a failure mode's bounds."""

    def __init__(self, lo: int, hi: int) -> None:
        self.lo, self.hi = lo, hi

    def sample(self, rng: Any) -> int:
        return rng.randint(self.lo, self.hi)


@dataclass
class TestsetSummary:
    cases: int  # cases in the grid
    built: int  # cases finished by this run
    already: int  # cases the store held before this run
    accepted: int  # accepted rows in the store (both sides of every case when all goes well)
    dropped: dict[str, int] = field(default_factory=dict)  # dropped rows by reason
    network_calls: int = 0
    cache_hits: int = 0
    cost_usd: float = 0.0
    wall_s: float = 0.0
    db: Path = Path()


def build_splits(store: Store, recipe: Recipe, seed: int | None) -> tuple[int, SplitConfig]:
    """The seed and split settings whose test pool the test set draws from: the build's when the
    store holds one (so no test-set rule is in the build's train pool), else --seed and the recipe's."""
    rows = store.query("SELECT seed, config_json FROM runs ORDER BY started_at LIMIT 1")
    if not rows:
        return (seed or 0), recipe.splits
    build_seed, config_json = rows[0]
    if seed is not None and seed != build_seed:
        raise ConfigError(
            f"--seed {seed}: {store.path} holds a build made with seed {build_seed}, whose rule pools the "
            f"test set must share; rerun with --seed {build_seed} (or leave --seed out)"
        )
    stored = orjson.loads(config_json or "{}").get("recipe", {}).get("splits")
    cfg = SplitConfig.model_validate(stored) if stored else recipe.splits
    return int(build_seed), cfg


def _check_seed(store: Store, seed: int) -> None:
    rows = store.query(f"SELECT DISTINCT seed FROM {TABLE} WHERE seed <> ?", [seed])
    if rows:
        raise ConfigError(
            f"{store.path} holds a test set made with seed {rows[0][0]}; rerun with --seed {rows[0][0]}, "
            f"or use another --db"
        )


def _law(bounds: Any, default: Any) -> Any:
    return _Uniform(bounds.min, bounds.max) if bounds is not None else default


async def _write_dialogue(
    ctx: BuildContext,
    case: Case,
    slot: int,
    side: str,
    candidates: list[str],
    people: Personas,
    targets: list[int],
    n_turns: int,
) -> Dialogue:
    ref = f"rule {targets[0]}" if len(targets) == 1 else "rules " + " and ".join(map(str, targets))
    call = await stage_call(
        ctx,
        Stage.DIALOGUE,
        PROMPT,
        dialogue_schema(n_turns),
        slot=slot,
        temperature=ctx.recipe.dialogue.temperature,
        max_tokens=400 + 500 * n_turns,
        failure_mode=case.mode.name,
        failure_mode_description=case.mode.description,
        business_impact=case.impact.name,
        business_impact_description=case.impact.description,
        scenario=case.scenario,
        agent_name=people.agent_name,
        company=people.company,
        agent_persona=people.agent,
        user_persona=people.user,
        policy=numbered(candidates),
        target_instructions="Rules in focus:\n" + "\n".join(f"{i}. {candidates[i - 1]}" for i in targets),
        side_instructions=OUTCOME[side].format(targets=ref),
        n_turns=n_turns,
    )
    turns: list[dict[str, str]] = []
    for ex in call.parsed.exchanges:
        turns.append({"role": "user", "content": ex.user.strip()})
        turns.append({"role": "agent", "content": ex.agent.strip()})
    ctx.store.add("dialogues", {"slot": slot} | call.provenance)
    return Dialogue(
        sample_id=sample_id(ctx.seed, slot),
        dynamic=DYNAMIC,
        near_miss=False,
        target_rules=targets,
        scenario=call.parsed.scenario.strip(),
        turns=turns,
    )


def sample_id(seed: int, slot: int) -> str:
    return "tst-" + stable_id(seed, slot, length=14)


async def _side(
    ctx: BuildContext,
    case: Case,
    policy: ComposedPolicy,
    candidates: list[str],
    people: Personas,
    targets: list[int],
    n_turns: int,
    side: str,
    traces: bool,
) -> dict[str, Any]:
    """One dialogue of a case as a `testset_samples` row (a dropped one keeps only its reason)."""
    slot = case.slot + 1 + SIDES.index(side)
    base: dict[str, Any] = {
        "sample_id": sample_id(ctx.seed, slot),
        "case_id": case.case_id,
        "slot": slot,
        "seed": ctx.seed,
        "failure_mode": case.mode.name,
        "business_impact": case.impact.name,
        "scenario": case.scenario,
        "intended_label": side,
        "reason": "",
        "detail": "",
    }
    store: _CaseStore = ctx.store  # type: ignore[assignment]
    try:
        dialogue = await _write_dialogue(ctx, case, slot, side, candidates, people, targets, n_turns)
        notes: list[filters.Verdict] = []
        filters.enforce(dialogue, filters.AFTER_DIALOGUE, notes)
        labelled = await label_policy(ctx, slot, candidates, policy.size, dialogue)
        check = _CaseLabelled(
            dialogue=dialogue,
            labels=labelled.kept,
            removed=labelled.removed,
            threshold=ctx.recipe.label.ambiguity_threshold,
            on_intent_disagreement=ctx.recipe.label.on_intent_disagreement,
            side=side,
        )
        filters.enforce(check, filters.AFTER_LABELS, notes)
        labels = labelled.kept
        rules = [candidates[i - 1] for i in labelled.candidate_index]
        kept_targets = [
            labelled.candidate_index.index(t) + 1 for t in targets if t in labelled.candidate_index
        ]
        trace = await write_trace(ctx, slot, rules, dialogue, labels, kept_targets) if traces else None
    except SlotDropped as drop:
        keys = store.keys.get(case.slot, []) + store.keys.get(slot, [])
        return base | {
            "status": "dropped",
            "reason": drop.reason,
            "detail": drop.detail[:300],
            "call_keys": keys,
        }
    keys = list(dict.fromkeys(store.keys.get(case.slot, []) + store.keys.get(slot, [])))
    row = sample_row(
        slot=slot,
        sample_id=base["sample_id"],
        split="test",
        dynamic=DYNAMIC,
        near_miss=False,
        intended_label=side,
        agrees_with_intent=check.label == side,
        **labelled_columns(policy, candidates, labelled, dialogue, people, check.label, trace, ctx.endpoints),
    )
    reason = ",".join(v.reason for v in notes)
    return row | base | {"status": "accepted", "reason": reason, "call_keys": [k for k in keys if k]}


async def run_case(ctx: BuildContext, case: Case, pool: Banks, traces: bool) -> list[dict[str, Any]]:
    """Both rows of a case. Transport failures propagate (the case is not stored and runs again)."""
    recipe = ctx.recipe
    slot = case.slot
    policy = compose_policy(
        pool,
        ctx.seed,
        slot,
        _law(case.mode.rules, recipe.policy.rules_law),
        recipe.policy.industry_share,
        recipe.policy.max_categories,
        recipe.label.spare_share,
        recipe.label.max_spares,
    )
    rng = slot_rng(ctx.seed, slot, "testset")
    k = min(policy.size, rng.randint(1, recipe.dialogue.max_target_rules))
    targets = sorted(rng.sample(range(1, policy.size + 1), k))
    n_turns = _law(case.mode.turns, recipe.dialogue.turns_law).sample(rng)
    try:
        candidates = await paraphrase(ctx, policy)
        people = await personas(ctx, slot, policy.industry)
    except SlotDropped as drop:
        store: _CaseStore = ctx.store  # type: ignore[assignment]
        return [
            {
                "sample_id": sample_id(ctx.seed, slot + 1 + i),
                "case_id": case.case_id,
                "slot": slot + 1 + i,
                "seed": ctx.seed,
                "failure_mode": case.mode.name,
                "business_impact": case.impact.name,
                "scenario": case.scenario,
                "intended_label": side,
                "status": "dropped",
                "reason": drop.reason,
                "detail": drop.detail[:300],
                "call_keys": store.keys.get(slot, []),
            }
            for i, side in enumerate(SIDES)
        ]
    results = await asyncio.gather(
        *(_side(ctx, case, policy, candidates, people, targets, n_turns, side, traces) for side in SIDES),
        return_exceptions=True,
    )
    for r in results:
        if isinstance(r, BaseException):
            raise r
    return list(results)  # type: ignore[arg-type]


async def build_testset(
    db: Path,
    recipe: Recipe,
    *,
    grid_path: Path | None = None,
    seed: int | None = None,
    model_overrides: dict[str, str] | None = None,
    traces: bool = False,
    banks_root: Path | None = None,
    report: Callable[[str], None] | None = None,
) -> TestsetSummary:
    """Build (or finish) the test set of `grid_path` into `db`; see the module docstring."""
    _, cases = load_grid(grid_path)
    banks, _ = load_banks(banks_root)
    endpoints = resolve_endpoints(recipe, model_overrides or {})
    store = Store(db)
    start = time.monotonic()
    client: LLMClient | None = None
    try:
        store.query(testset_ddl())
        seed, split_cfg = build_splits(store, recipe, seed)
        _check_seed(store, seed)
        if split_cfg.test <= 0:
            raise ConfigError(
                "the recipe's splits have test: 0, so there is no test pool to draw the test set from"
            )
        pool = rule_pools(banks, seed, split_cfg)["test"]
        done = {
            r[0]
            for r in store.query(
                f"SELECT case_id FROM {TABLE} GROUP BY case_id HAVING count(*) = {len(SIDES)}"
            )
        }
        todo = [c for c in cases if c.case_id not in done]
        client = LLMClient(
            cache=store.cache,
            prices=PriceTable.from_mapping(recipe.pricing),
            failure_sink=lambda row: store.add("llm_failures", row),
        )
        ctx = BuildContext(
            store=_CaseStore(),  # type: ignore[arg-type]
            client=client,
            banks=banks,
            recipe=recipe,
            seed=seed,
            endpoints=endpoints,
        )
        if report and done:
            report(f"resuming: {len(done)}/{len(cases)} case(s) already in {db}")
        window = slot_window(endpoints, 2 * max(1, len(todo)))
        built = 0
        pending = list(todo)
        tries: dict[str, int] = {}
        in_flight: dict[asyncio.Task, Case] = {}
        last_report = 0.0
        try:
            while pending or in_flight:
                while pending and len(in_flight) < window:
                    case = pending.pop(0)
                    in_flight[asyncio.ensure_future(run_case(ctx, case, pool, traces))] = case
                finished, _ = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                for task in finished:
                    case = in_flight.pop(task)
                    try:
                        rows = task.result()
                    except ProviderOutage as exc:
                        raise BuildStopped(str(exc), exit_code=3) from exc
                    except RetryableProviderError as exc:
                        tries[case.case_id] = tries.get(case.case_id, 0) + 1
                        if tries[case.case_id] > CASE_RETRIES:
                            raise BuildStopped(
                                f"test-set case {case.case_id}: {exc.provider}:{exc.model} keeps failing ({exc}); "
                                f"rerun the same command to resume: nothing paid is lost",
                                exit_code=3,
                            ) from exc
                        pending.append(case)
                        continue
                    for row in rows:
                        store.add(TABLE, row)
                    built += 1
                store.maybe_flush()
                if report and (time.monotonic() - last_report >= 2.0 or not (pending or in_flight)):
                    last_report = time.monotonic()
                    report(f"testset: {len(done) + built}/{len(cases)} cases")
        finally:
            for task in in_flight:
                task.cancel()
            if in_flight:
                await asyncio.gather(*in_flight, return_exceptions=True)
        store.flush()
        accepted = int(store.query(f"SELECT count(*) FROM {TABLE} WHERE status = 'accepted'")[0][0])
        dropped = {
            r[0]: int(r[1])
            for r in store.query(
                f"SELECT reason, count(*) FROM {TABLE} WHERE status = 'dropped' GROUP BY reason"
            )
        }
        total = client.accounting.total()
        return TestsetSummary(
            cases=len(cases),
            built=built,
            already=len(done),
            accepted=accepted,
            dropped=dropped,
            network_calls=total.network_calls,
            cache_hits=total.cache_hits,
            cost_usd=total.cost_usd,
            wall_s=time.monotonic() - start,
            db=db,
        )
    finally:
        try:
            if client is not None:
                try:
                    if store.failed is None:
                        store.flush()
                finally:
                    await client.aclose(flush_cache=False)
        finally:
            store.close()
