"""`factory build`: run slots concurrently, commit them in slot order, stop at exactly N samples.

Determinism: every random choice of a slot comes from (seed, slot), and results are committed in slot
order (dedup included, see committer.py), so the accepted set is the first N surviving slots
whatever the timing. Resumability: committed slots are recorded in `slot_status`; every LLM answer
is journaled the moment it arrives, so a rerun redoes unfinished slots from the cache without
paying again. A resume whose run fingerprint (fingerprint.py) changed is refused.
Outages are not data: a slot whose provider could not be reached is not committed; it runs again,
and an endpoint that stays down trips its circuit breaker, which stops the build (exit 3).
Nothing paid is thrown away: at the end, on Ctrl-C/SIGTERM or on an error, requests already on the
wire are awaited for a grace period and journaled before exit.
Memory: at most `window` slots in flight and at most `4 * window` finished slots awaiting commit.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import orjson

from factory.banks.loader import load_banks
from factory.errors import BuildStopped, ConfigError
from factory.llm.auto import resolve_auto
from factory.llm.client import LLMClient
from factory.llm.config import EndpointConfig
from factory.llm.errors import ClientClosing, ProviderOutage
from factory.llm.pricing import PriceTable
from factory.recipes import STAGES, Recipe
from factory.recipes.names import JUDGE_STAGES
from factory.runner.committer import Committer
from factory.runner.estimate import estimate, recipe_factors, store_estimate
from factory.runner.executor import Executor, LocalExecutor
from factory.runner.fingerprint import describe_changes, run_fingerprint
from factory.runner.gc_tuning import build_gc, gc_thresholds
from factory.runner.progress import Progress
from factory.runner.slot import SlotResult
from factory.runner.window import slot_window
from factory.stages.context import BuildContext
from factory.store.db import Store, is_disk_full
from factory.store.live_status import clear_live_status, write_live_status

# A slot whose provider calls failed for transport reasons (after each request's own retries,
# while the endpoint otherwise answers) runs again this many times before the build stops.
SLOT_TRANSIENT_RETRIES = 3
# How long in-flight requests are awaited (and journaled) when a build ends or is interrupted.
DRAIN_GRACE_S = 30.0


class Terminated(BuildStopped):
    """The build was stopped by SIGTERM after draining (exit 143, as for a process killed by it)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, exit_code=128 + signal.SIGTERM)


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
    already_done: bool = False  # the store held at least --n samples before this run
    drained: int = 0  # answers that were on the wire at the end and were kept
    abandoned: int = 0  # requests still unanswered after the grace period


def resolve_endpoints(recipe: Recipe, overrides: dict[str, str]) -> dict[str, EndpointConfig]:
    """Each LLM stage's endpoint: the override or recipe spec, 'auto' resolved by the LLM layer."""
    return {
        stage: recipe.stage_endpoint(
            stage,
            resolve_auto(recipe.model_spec(stage, overrides), "judge" if stage in JUDGE_STAGES else "writer"),
        )
        for stage in STAGES
    }


def check_executor(executor: str, endpoints: dict[str, EndpointConfig]) -> None:
    """Batch mode needs the local executor (one process collects the jobs and holds the database)."""
    batched = sorted(stage for stage, ep in endpoints.items() if ep.batch is not None)
    if executor == "ray" and batched:
        raise ConfigError(
            f"batch mode ({', '.join(batched)}) runs on the local executor: its jobs are collected by "
            f"one process that holds the database; use --executor local with --mode batch"
        )


def _open_batch_jobs_of_online_stages(store: Store, endpoints: dict[str, EndpointConfig]) -> int:
    """Batch jobs of earlier runs, not collected yet, for a model this run calls online."""
    online = sorted({ep.spec for ep in endpoints.values() if ep.batch is None})
    if not online or not store.query(
        "SELECT 1 FROM information_schema.tables WHERE table_name = 'batch_jobs'"
    ):
        return 0
    marks = ", ".join("?" for _ in online)
    return int(
        store.query(
            f"SELECT count(*) FROM batch_jobs WHERE state <> 'collected' AND endpoint IN ({marks})", online
        )[0][0]
    )


def _record_run(
    store: Store, run_id: str, seed: int, n: int, recipe: Recipe, endpoints: dict, fp: dict
) -> None:
    config = {
        "recipe": recipe.model_dump(mode="json"),
        "endpoints": {k: v.model_dump(mode="json") for k, v in endpoints.items()},
    }
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
            "config_json": orjson.dumps(config).decode(),
            "fingerprint_json": orjson.dumps(fp).decode(),
        },
    )
    store.flush()


def check_previous_run(store: Store, fp: dict) -> None:
    """Refuse to resume a store whose first run had another fingerprint, naming what changed."""
    rows = store.query("SELECT seed, pipeline, fingerprint_json FROM runs ORDER BY started_at LIMIT 1")
    if not rows:
        return
    seed, pipeline, old_json = rows[0]
    old = orjson.loads(old_json) if old_json else {"seed": seed}
    changes = describe_changes(old, fp) if old_json else (["seed"] if seed != fp["seed"] else [])
    if changes:
        shown = "; ".join(changes[:8]) + (f"; and {len(changes) - 8} more" if len(changes) > 8 else "")
        raise ConfigError(
            f"{store.path} holds a build (pipeline {pipeline!r}, seed {seed}) made under other settings: "
            f"{shown}. Resuming would mix datasets: rerun with the original settings, or start a new "
            f"build with another --db."
        )


async def build(
    db: Path,
    recipe: Recipe,
    n: int,
    seed: int,
    model_overrides: dict[str, str] | None = None,
    progress: bool = True,
    banks_root: Path | None = None,
    max_cost: float | None = None,
    record_estimate: bool = True,
    executor: str = "local",
    workers: int = 2,
    ray_address: str | None = None,
) -> BuildSummary:
    """`executor="ray"` runs the slots on `workers` Ray actors (runner/ray_executor.py); the
    dataset is the same as a local build's."""
    if n < 1:
        raise ConfigError("--n must be at least 1")
    if executor not in ("local", "ray"):
        raise ConfigError(f"--executor {executor!r}: expected local or ray")
    if executor == "ray":
        from factory.runner.ray_executor import require_ray

        require_ray()
        if workers < 1:
            raise ConfigError(f"--workers {workers}: must be at least 1")
    gc_values = gc_thresholds()  # a bad FACTORY_GC_THRESHOLDS stops here, before anything is opened
    banks, _ = load_banks(banks_root)
    endpoints = resolve_endpoints(recipe, model_overrides or {})
    check_executor(executor, endpoints)
    fp = run_fingerprint(recipe, endpoints, seed, banks_root)
    store = Store(db)
    try:
        check_previous_run(store, fp)
    except BaseException:
        store.close()
        raise
    run_id = uuid.uuid4().hex[:12]
    _record_run(store, run_id, seed, n, recipe, endpoints, fp)
    client = LLMClient(
        cache=store.cache,
        prices=PriceTable.from_mapping(recipe.pricing),
        failure_sink=lambda row: store.add("llm_failures", row),
    )
    ctx = BuildContext(store=store, client=client, banks=banks, recipe=recipe, seed=seed, endpoints=endpoints)
    committer = Committer(ctx, n)
    committer.restore()
    runner: Executor
    if executor == "ray":
        from factory.runner.ray_executor import RayExecutor

        runner = RayExecutor(ctx, db=db, workers=workers, address=ray_address)
    else:
        runner = LocalExecutor(ctx)
    budget = max_cost if max_cost is not None else recipe.cost.max_usd
    slot_cost_guess = 0.0  # expected cost of one slot before this run has measured any
    if record_estimate or budget is not None:
        est = _run_estimate(store, recipe, endpoints, n, seed, banks)
        if record_estimate:
            store_estimate(store, run_id, est)
        expected = est["total"].get("cost_usd_expected", est["total"]["cost_usd"])
        if expected and est["slots"]:
            slot_cost_guess = expected / est["slots"]
    # a resumed build has paid for earlier runs too: the ledger has every paid call
    spent_before = float(store.query("SELECT coalesce(sum(cost_usd), 0) FROM llm_calls")[0][0])
    # slots of this run that came back and what they cost (for the mean cost per slot): a sum and
    # a count, not a list, so that memory does not grow with the build
    finished_count, finished_cost = 0, 0.0
    over_budget = False  # the next slot would pass the budget: none starts until the estimate allows
    already_done = committer.done
    start = time.monotonic()
    window = slot_window(endpoints, n, runner.workers, recipe.batch.window)
    max_slots = committer.cursor + int(max(0, n - committer.accepted) * recipe.oversample_cap) + 50
    display = Progress(ctx, committer, n, enabled=progress and not already_done, extra=runner.status_line)
    left_open = _open_batch_jobs_of_online_stages(store, endpoints)
    if left_open:
        display.console.print(
            f"warning: {left_open} batch job(s) of an earlier --mode batch run are still open for "
            f"{', '.join(sorted({ep.spec for ep in endpoints.values() if ep.batch is None}))}; this online "
            f"run pays again for the requests they hold. Rerun with --mode batch to collect them instead."
        )
    last_beat = 0.0

    # The heartbeat shows what the store holds: (accepted, slots) as of the last committed write.
    # Writes run in the background (Store.flush_in_background), so the committer can be ahead.
    stored = (committer.accepted, committer.cursor)
    writing = (store.writes_started, stored)  # the latest write handed to the store, and its state

    def heartbeat(state: str = "running", force: bool = False) -> None:
        nonlocal last_beat, stored, writing
        if store.writes_started != writing[0]:  # a write started since: it holds what is committed now
            writing = (store.writes_started, (committer.accepted, committer.cursor))
        if store.writes_committed >= writing[0]:
            stored = writing[1]
        if force or time.monotonic() - last_beat >= 1.0:
            last_beat = time.monotonic()
            write_live_status(db, accepted=stored[0], target=n, slots=stored[1], state=state)

    heartbeat(force=True)
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    assert main_task is not None
    terminated = draining = False

    def on_sigterm() -> None:
        """SIGTERM drains like Ctrl-C (a second one while draining changes nothing: the drain is
        bounded by its grace period)."""
        nonlocal terminated
        if not draining:
            terminated = True
            main_task.cancel()

    try:
        loop.add_signal_handler(signal.SIGTERM, on_sigterm)
    except (NotImplementedError, RuntimeError):  # pragma: no cover - not on the main thread / Windows
        pass

    next_slot = committer.cursor
    retry_queue: list[int] = []  # slots to run again after a transport failure
    transient_tries: dict[int, int] = {}
    in_flight: dict[int, asyncio.Future[SlotResult]] = {}
    drained = abandoned = 0
    try:
        if not already_done:
            await runner.start()
        with build_gc(gc_values), display:
            while not committer.done:
                over_budget = False
                while len(in_flight) < window and (
                    retry_queue or (next_slot < max_slots and next_slot - committer.cursor < 4 * window)
                ):
                    if budget is not None:
                        # spent, plus what the slots in flight will still spend (the mean cost of a
                        # finished slot of this run, less what each has spent so far) and the next slot
                        paid = client.slot_cost  # slots in flight only: finished ones are taken out
                        per_slot = finished_cost / finished_count if finished_count >= 3 else slot_cost_guess
                        pending = sum(max(0.0, per_slot - paid.get(s, 0.0)) for s in in_flight)
                        spent_now = spent_before + client.accounting.total().cost_usd
                        if spent_now + pending + per_slot > budget:
                            over_budget = True  # the slots in flight finish first
                            break
                    slot = retry_queue.pop(0) if retry_queue else next_slot
                    if slot == next_slot:
                        next_slot += 1
                    in_flight[slot] = runner.submit(slot)
                if not in_flight and over_budget:
                    spent = spent_before + client.accounting.total().cost_usd
                    raise BuildStopped(
                        f"budget reached: ${spent:.4f} spent of --max-cost ${budget:.4f} with "
                        f"{committer.accepted}/{n} samples accepted (${spent / max(1, committer.accepted):.4f} "
                        f"per accepted sample); rerun with a larger --max-cost (or recipe cost.max_usd) to "
                        f"resume: nothing paid is lost",
                        exit_code=5,
                    )
                if not in_flight:
                    raise BuildStopped(
                        f"gave up after {max_slots} slots with {committer.accepted}/{n} samples accepted: "
                        f"drops by reason {committer.dropped}. Check `factory stats` and llm_failures, "
                        f"or raise oversample_cap in the recipe.",
                        exit_code=1,
                    )
                finished, _ = await asyncio.wait(
                    in_flight.values(), return_when=asyncio.FIRST_COMPLETED, timeout=1.0
                )
                for task in finished:
                    try:
                        result = task.result()  # fatal provider/config errors propagate from here
                    except ProviderOutage as exc:
                        raise BuildStopped(str(exc), exit_code=3) from exc
                    except ClientClosing:  # the client stopped itself: an answer could not be journaled
                        if client.journal_error is not None:
                            raise client.journal_error from None
                        raise
                    del in_flight[result.slot]
                    finished_count += 1
                    finished_cost += client.take_slot_cost(result.slot)
                    if result.transient is not None:
                        _retry_later(result, transient_tries, retry_queue)
                    else:
                        transient_tries.pop(result.slot, None)
                        committer.offer(result)
                store.flush_in_background()  # the loop goes on while DuckDB writes
                display.update()
                heartbeat()
    except OSError as exc:  # a journal write (an answer on its way to the store) found the disk full
        if is_disk_full(exc):
            raise store.disk_full(exc) from exc
        raise
    except asyncio.CancelledError:
        if not terminated:
            raise  # Ctrl-C: asyncio.run turns it into KeyboardInterrupt once we are done
        main_task.uncancel()
        raise Terminated(
            "stopped by SIGTERM: every answer received was journaled; rerun the same command to resume "
            "(it pays only for requests that had no answer yet)"
        ) from None
    finally:
        draining = True
        try:
            drained, abandoned = await _drain(runner, in_flight)
        finally:
            await runner.close()
        if (drained or abandoned) and store.failed is not None:
            display.console.print(
                f"{drained + abandoned} request(s) on the wire when the build stopped could not be kept "
                f"(the store cannot be written) and will be sent again"
            )
        elif drained or abandoned:
            display.console.print(
                f"kept {drained} answer(s) that were on the wire when the build stopped"
                + (
                    f"; {abandoned} request(s) got no answer in {DRAIN_GRACE_S:.0f}s and will be sent again"
                    if abandoned
                    else ""
                )
            )
        try:
            loop.remove_signal_handler(signal.SIGTERM)
        except (NotImplementedError, RuntimeError):  # pragma: no cover
            pass
        try:
            if store.failed is None:  # a store that hit a full disk is not written again
                status = "finished" if committer.done else "interrupted"
                store.flush()
                store.query(
                    "UPDATE runs SET status = ?, finished_at = ? WHERE run_id = ?",
                    [status, time.time(), run_id],
                )
        finally:
            try:
                await client.aclose(flush_cache=False)  # store.flush wrote the cache's entries
            finally:
                try:
                    store.close()
                finally:
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
        already_done=already_done,
        drained=drained,
        abandoned=abandoned,
    )


def _run_estimate(store: Store, recipe: Recipe, endpoints: dict, n: int, seed: int, banks: object) -> dict:
    """The estimate this run is measured against: the latest `--dry-run` one for this --n, seed and
    models (it may come from a pilot), else the recipe's."""
    rows = store.query(
        "SELECT estimate_json FROM estimates WHERE run_id IS NULL AND n_target = ? ORDER BY created_at DESC LIMIT 1",
        [n],
    )
    if rows:
        est = orjson.loads(rows[0][0])
        models = {stage: s.get("model") for stage, s in est.get("stages", {}).items()}
        if models == {stage: endpoints[stage].spec for stage in models} and est.get("seed") == seed:
            return est
    return estimate(recipe, endpoints, n, seed, recipe_factors(recipe), banks)  # type: ignore[arg-type]


def _retry_later(result: SlotResult, tries: dict[int, int], queue: list[int]) -> None:
    """A slot whose provider failed for transport reasons is never committed: it runs again."""
    tries[result.slot] = tries.get(result.slot, 0) + 1
    if tries[result.slot] > SLOT_TRANSIENT_RETRIES:
        exc = result.transient
        raise BuildStopped(
            f"slot {result.slot}: {exc.provider}:{exc.model} keeps failing ({exc}) after "  # type: ignore[union-attr]
            f"{SLOT_TRANSIENT_RETRIES} retries of the slot. Nothing is lost: rerun the same command to resume.",
            exit_code=3,
        )
    queue.append(result.slot)


async def _drain(runner: Executor, in_flight: dict[int, asyncio.Future[SlotResult]]) -> tuple[int, int]:
    """Stop new requests; await those on the wire (their answers are journaled as they arrive);
    cancel what is left after the grace period. Returns (answers kept, requests abandoned)."""
    if not in_flight:
        return 0, 0
    runner.stop_new_requests()
    before = await runner.network_calls()
    waiting = await runner.requests_on_the_wire()
    if waiting:
        await asyncio.wait(in_flight.values(), timeout=DRAIN_GRACE_S)
    for task in in_flight.values():
        task.cancel()
    await asyncio.gather(*in_flight.values(), return_exceptions=True)
    kept = await runner.network_calls() - before
    return kept, max(0, waiting - kept)
