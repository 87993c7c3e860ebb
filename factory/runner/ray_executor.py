"""The Ray executor (`factory build --executor ray`): slots run on K worker actors, the driver keeps
everything order-dependent.

Driver (this process, `RayExecutor`): the build loop of runner/build.py as in a local build
(budget, retries of transient slots, the ordered committer with near-duplicate filtering, drain,
heartbeat); only the step "start a slot" is a call on the least-loaded worker actor. When a slot
comes back, the driver journals the answers it brings (its own journal and `llm_calls`, the source
of truth), writes its stage rows with `store.add`, adds its counters to the build's context and
accounting, replays its output-quality records, and hands the `SlotResult` to the committer. So
the dataset is the one a local build makes with the same seed and answers.

Workers (`SlotWorker`, async actors with their own event loop and `LLMClient`): `run_slot` with a
context whose store only collects rows. A worker cannot open the DuckDB file (the driver holds
it): the driver sends each slot's earlier answers with it (`RequestCache.rows_for_slot`), and the
worker journals every new answer to `<db>.journal.ray/slot-<S>.jsonl` before using it
(`DetachedCache`). The driver removes that file once it has journaled the answers itself; a file
left by a killed driver or worker is folded in on the next open (or when the slot is dispatched
again), so nothing paid is lost. The folder must be reachable from every worker at the same path
(one machine, or a shared filesystem).

Provider limits stay global: one `SharedLimiter` actor holds a token bucket per endpoint
(requests/min, tokens/min) and workers lease capacity in chunks of about 50 ms of the rate
(`LeasedLimiter`), so K workers together never pass the endpoint's rpm/tpm. `concurrency` is per
worker (each worker has its own bound per endpoint).

Ray is an optional extra (`pip install 'dynabench-factory[ray]'`); this module imports it only
inside functions, so it loads (and `require_ray` explains) without it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import pickle
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from factory.banks.loader import Banks
from factory.errors import BuildStopped, ConfigError
from factory.llm.accounting import Counter
from factory.llm.cache import DetachedCache, slot_journal_path
from factory.llm.client import LLMClient
from factory.llm.config import API_KEY_ENV, BASE_URL_ENV, EndpointConfig
from factory.llm.errors import RetryableProviderError
from factory.llm.pricing import PriceTable
from factory.llm.ratelimit import LeasedLimiter, RateLimiter, TokenBucket
from factory.recipes import Recipe
from factory.runner.gc_tuning import BUILD_THRESHOLDS, gc_thresholds, worker_gc
from factory.runner.slot import SlotResult, run_slot
from factory.stages.context import BuildContext, OutputQuality, SlotDropped

INSTALL_HINT = (
    "--executor ray needs Ray, which is not installed: pip install 'dynabench-factory[ray]' "
    "(or bash scripts/install.sh local,ray)"
)


def require_ray() -> None:
    """ConfigError (one line: how to install it) unless Ray can be imported."""
    try:
        import ray  # noqa: F401
    except ImportError:
        raise ConfigError(INSTALL_HINT) from None


def endpoint_key(config: EndpointConfig) -> str:
    """One shared bucket per distinct endpoint configuration (as LLMClient.endpoint keys them)."""
    return f"{config.model_dump_json()}|{config.resolved_base_url()}"


def provider_env() -> dict[str, str]:
    """The providers' key and base-URL variables of the driver, for workers started elsewhere."""
    names = {v for group in (*API_KEY_ENV.values(), *BASE_URL_ENV.values()) for v in group}
    return {name: os.environ[name] for name in sorted(names) if os.environ.get(name)}


# -- actors ------------------------------------------------------------------------------------
class SharedLimiter:
    """The build's one rate limiter (a Ray actor): a token bucket per (endpoint, kind), granting
    leases in arrival order at the configured rate."""

    def __init__(self) -> None:
        self.buckets: dict[tuple[str, str], TokenBucket] = {}
        self.granted: dict[str, float] = {"requests": 0.0, "tokens": 0.0}
        self.leases = 0

    def _bucket(self, endpoint: str, kind: str, rate: float) -> TokenBucket:
        bucket = self.buckets.get((endpoint, kind))
        if bucket is None:
            # requests: a token bucket with small bursts (1/20 s; RateLimiter's own is a SlidingWindow,
            # not leased yet); tokens: 1 s of them, as RateLimiter's token bucket
            capacity = max(1.0, rate / 20) if kind == "requests" else rate
            bucket = self.buckets[(endpoint, kind)] = TokenBucket(rate, capacity=capacity)
        return bucket

    async def lease(self, endpoint: str, kind: str, rate: float, amount: float) -> None:
        await self._bucket(endpoint, kind, rate).acquire(amount)
        self.granted[kind] = self.granted.get(kind, 0.0) + amount
        self.leases += 1

    def block_for(self, endpoint: str, kind: str, rate: float, seconds: float) -> None:
        self._bucket(endpoint, kind, rate).block_for(seconds)

    def stats(self) -> dict[str, Any]:
        return {"leases": self.leases, "granted": dict(self.granted)}


class RowCollector:
    """The store of a worker's slot: stages only `add(table, row)`; the rows go back to the driver."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, dict[str, Any]]] = []

    def add(self, table: str, row: dict[str, Any]) -> None:
        self.rows.append((table, row))


class RecordingQuality(OutputQuality):
    """Records outcomes for the driver's OutputQuality, which decides (over all workers)."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[tuple[str, str, bool, str]] = []

    def record(self, stage: str, spec: str, ok: bool, error: str = "") -> None:
        self.records.append((stage, spec, ok, error))


@dataclass
class WorkerSetup:
    index: int
    recipe: Recipe
    seed: int
    endpoints: dict[str, EndpointConfig]
    journal_path: Path
    env: dict[str, str]
    limiter: Any  # the SharedLimiter actor handle
    gc_values: tuple[int, int, int] = BUILD_THRESHOLDS  # the driver's collector settings


def _portable_error(exc: BaseException) -> BaseException:
    """The exception itself when it survives pickling, else a BuildStopped with its text."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return BuildStopped(f"a Ray worker failed: {type(exc).__name__}: {exc}", exit_code=1)


class SlotWorker:
    """Runs slots (a Ray async actor): its own event loop, LLM client and detached cache."""

    def __init__(self, setup: WorkerSetup, banks: Banks) -> None:
        os.environ.update(setup.env)
        self.setup = setup
        self.banks = banks
        self.cache = DetachedCache(setup.journal_path)
        self.collectors: dict[int, RowCollector] = {}
        self.orphan_failures: list[dict[str, Any]] = []
        self.client = LLMClient(
            cache=self.cache,
            prices=PriceTable.from_mapping(setup.recipe.pricing),
            failure_sink=self._failure,
            limiter_factory=self._limiter,
        )
        base = self._context(RowCollector(), OutputQuality())
        base.split_and_banks(0)  # the split pools, computed once per worker
        self.pools = base._pools
        self.reported: dict[tuple[str, str], Counter] = {}
        worker_gc(setup.gc_values)  # this process runs slots only: set once, never put back

    def _context(self, store: RowCollector, quality: OutputQuality) -> BuildContext:
        s = self.setup
        return BuildContext(
            store=store,  # type: ignore[arg-type]  # stages only call store.add
            client=self.client,
            banks=self.banks,
            recipe=s.recipe,
            seed=s.seed,
            endpoints=s.endpoints,
            quality=quality,
            _pools=getattr(self, "pools", None),
        )

    def _failure(self, row: dict[str, Any]) -> None:
        collector = self.collectors.get(row.get("slot"))  # type: ignore[arg-type]
        if collector is not None:
            collector.add("llm_failures", row)
        else:
            self.orphan_failures.append(row)

    def _limiter(self, config: EndpointConfig) -> RateLimiter:
        key, actor = endpoint_key(config), self.setup.limiter
        rates = {"requests": (config.rpm or 0) / 60.0, "tokens": (config.tpm or 0) / 60.0}

        async def lease(kind: str, amount: float) -> None:
            await actor.lease.remote(key, kind, rates[kind], amount)

        def block(kind: str, seconds: float) -> None:
            actor.block_for.remote(key, kind, rates[kind], seconds)

        return LeasedLimiter(lease, block, config.rpm, config.tpm)

    def ready(self) -> int:
        return os.getpid()

    def stop_new_requests(self) -> None:
        self.client.stop_new_requests()

    def on_wire(self) -> int:
        return self.client.requests_on_the_wire()

    def network_calls(self) -> int:
        return self.client.accounting.total().network_calls

    def _accounting_delta(self) -> list[tuple[str, str, dict[str, Any]]]:
        """What the client counted since the last slot result (all slots of this worker)."""
        out = []
        for key, now in list(self.client.accounting.by_key.items()):
            before = self.reported.get(key, Counter())
            delta: dict[str, Any] = {
                f.name: getattr(now, f.name) - getattr(before, f.name)
                for f in dataclasses.fields(Counter)
                if f.name != "unpriced"
            }
            if any(delta.values()) or now.unpriced != before.unpriced:
                delta["unpriced"] = now.unpriced
                out.append((key[0], key[1], delta))
                self.reported[key] = dataclasses.replace(now)
        return out

    async def run_slot(self, slot: int, preload: list[dict[str, Any]]) -> dict[str, Any]:
        self.cache.preload(preload)
        collector = self.collectors[slot] = RowCollector()
        quality = RecordingQuality()
        ctx = self._context(collector, quality)
        result: SlotResult | None = None
        error: BaseException | None = None
        try:
            result = await run_slot(ctx, slot)
        except Exception as exc:  # fatal provider errors, ClientClosing, a journal write: the driver decides
            error = _portable_error(exc)
        finally:
            answers = self.cache.take(slot)
            del self.collectors[slot]
        rows = collector.rows
        if self.orphan_failures:
            rows += [("llm_failures", r) for r in self.orphan_failures]
            self.orphan_failures = []
        portable = None
        if result is not None:
            d = result.drop
            portable = {
                "sample": result.sample,
                "drop": (d.stage, d.reason, d.detail) if d is not None else None,
                "notes": result.notes,
                "transient": _portable_error(result.transient) if result.transient is not None else None,
            }
        return {
            "slot": slot,
            "result": portable,
            "error": error,
            "answers": answers,
            "rows": rows,
            "counts": {k: (c.started, c.done, c.failed) for k, c in ctx.counts.items()},
            "quality": quality.records,
            "accounting": self._accounting_delta(),
            "cost": self.client.slot_cost.pop(slot, 0.0),
        }


# -- driver ------------------------------------------------------------------------------------
@dataclass
class WorkerStats:
    slots: int = 0
    calls: int = 0  # network calls reported with this worker's slot results
    in_flight: int = 0


class RayExecutor:
    """Starts slots on K Ray worker actors and folds their results into the driver's store."""

    def __init__(self, ctx: BuildContext, *, db: Path, workers: int, address: str | None = None) -> None:
        self.ctx = ctx
        self.db = db
        self.workers = workers
        self.address = address
        self.actors: list[Any] = []
        self.stats = [WorkerStats() for _ in range(workers)]
        self.limiter: Any = None
        self._owns_ray = False
        self._started = time.monotonic()
        self._next = 0
        self._banks: Any = None

    async def start(self) -> None:
        import ray

        if not ray.is_initialized():
            options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            try:
                if self.address:
                    ray.init(address=self.address, **options)
                else:
                    ray.init(num_cpus=max(self.workers, os.cpu_count() or 1), **options)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = f"the Ray cluster at {self.address}" if self.address else "a local Ray instance"
                raise ConfigError(f"--executor ray: cannot start or reach {where}: {exc}") from None
            self._owns_ray = True
        ctx = self.ctx
        self.limiter = ray.remote(num_cpus=0, max_concurrency=10_000)(SharedLimiter).remote()
        worker_cls = ray.remote(num_cpus=1, max_restarts=3, max_concurrency=10_000)(SlotWorker)
        banks = self._banks = ray.put(ctx.banks)  # held: a restarted worker reads it again
        env = provider_env()
        journal = Path(ctx.store.journal_path).resolve()
        for i in range(self.workers):
            setup = WorkerSetup(
                i, ctx.recipe, ctx.seed, ctx.endpoints, journal, env, self.limiter, gc_thresholds()
            )
            self.actors.append(worker_cls.remote(setup, banks))
        await asyncio.gather(*(a.ready.remote() for a in self.actors))
        self._started = time.monotonic()

    def _pick(self) -> int:
        """The least-loaded worker (round robin among equals)."""
        best = min(
            range(self.workers), key=lambda i: (self.stats[i].in_flight, (i - self._next) % self.workers)
        )
        self._next = (best + 1) % self.workers
        return best

    def submit(self, slot: int) -> asyncio.Future[SlotResult]:
        return asyncio.ensure_future(self._run(slot))

    async def _run(self, slot: int) -> SlotResult:
        import ray

        cache = self.ctx.store.cache
        cache.absorb_slot_journal(slot)  # answers a killed worker or driver left for this slot
        preload = cache.rows_for_slot(slot)
        w = self._pick()
        self.stats[w].in_flight += 1
        try:
            out = await self.actors[w].run_slot.remote(slot, preload)
        except ray.exceptions.RayActorError as exc:  # the worker died: its journal keeps what it paid
            cache.absorb_slot_journal(slot)
            return SlotResult(
                slot=slot,
                transient=RetryableProviderError(
                    f"Ray worker {w} died ({type(exc).__name__}); the slot runs again",
                    provider="ray",
                    model=f"worker-{w}",
                ),
            )
        finally:
            self.stats[w].in_flight -= 1
        return self._absorb(w, out)

    def _absorb(self, w: int, out: dict[str, Any]) -> SlotResult:
        ctx = self.ctx
        cache = ctx.store.cache
        slot = out["slot"]
        for row in out["answers"]:  # into the driver's journal first, then the worker's file goes
            cache.put_row(row)
        slot_journal_path(cache.journal_path, slot).unlink(missing_ok=True)
        for table, row in out["rows"]:
            ctx.store.add(table, row)
        for stage, (started, done, failed) in out["counts"].items():
            c = ctx.count(stage)
            c.started += started
            c.done += done
            c.failed += failed
        calls = 0
        for stage, spec, delta in out["accounting"]:
            ctx.client.accounting.counter(stage, spec).add(Counter(**delta))
            calls += delta["network_calls"]
        if out["cost"]:
            ctx.client.slot_cost[slot] = ctx.client.slot_cost.get(slot, 0.0) + out["cost"]
        self.stats[w].slots += 1
        self.stats[w].calls += calls
        if out["error"] is not None:
            raise out["error"]
        for stage, spec, ok, error in out["quality"]:
            ctx.quality.record(stage, spec, ok, error)
        r = out["result"]
        return SlotResult(
            slot=slot,
            sample=r["sample"],
            drop=SlotDropped(*r["drop"]) if r["drop"] is not None else None,
            notes=list(r["notes"]),
            transient=r["transient"],
        )

    def stop_new_requests(self) -> None:
        for actor in self.actors:
            actor.stop_new_requests.remote()

    async def _sum(self, method: str) -> int:
        if not self.actors:
            return 0
        try:
            counts = await asyncio.wait_for(
                asyncio.gather(*(getattr(a, method).remote() for a in self.actors)), timeout=10.0
            )
        except Exception:  # a dead worker has nothing on the wire
            return 0
        return sum(counts)

    async def requests_on_the_wire(self) -> int:
        return await self._sum("on_wire")

    async def network_calls(self) -> int:
        """Calls the workers made (their own count: slot results report theirs later)."""
        return await self._sum("network_calls")

    def status_line(self) -> str:
        elapsed = max(1e-6, time.monotonic() - self._started)
        parts = [
            f"w{i} {s.slots} slots, {s.calls} calls ({s.calls / elapsed:.1f}/s)"
            for i, s in enumerate(self.stats)
        ]
        return "workers: " + "; ".join(parts)

    async def close(self) -> None:
        try:
            import ray
        except ImportError:  # pragma: no cover - start() needs it
            return
        if not ray.is_initialized():
            return
        for actor in self.actors:
            ray.kill(actor, no_restart=True)
        if self.limiter is not None:
            ray.kill(self.limiter, no_restart=True)
        self.actors = []
        if self.ctx.store.failed is None:  # the workers are gone: what they journaled comes home
            self.ctx.store.cache.absorb_slot_journals()
        if self._owns_ray:
            ray.shutdown()
