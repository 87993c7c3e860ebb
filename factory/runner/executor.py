"""Where a build's slots run: the step "start a slot" of the dispatch loop (runner/build.py).

Everything else (budget, retries of transient slots, the ordered committer, the drain, the
heartbeat) stays in the build loop, whatever the executor. `LocalExecutor` runs slots as tasks of
this event loop; `factory.runner.ray_executor.RayExecutor` runs them on Ray worker actors and
folds what they bring back (rows, answers, counters) into this process's store and context."""

from __future__ import annotations

import asyncio
from typing import Protocol

from factory.runner.slot import SlotResult, run_slot
from factory.stages.context import BuildContext


class Executor(Protocol):
    workers: int

    async def start(self) -> None: ...

    def submit(self, slot: int) -> asyncio.Future[SlotResult]: ...

    def stop_new_requests(self) -> None: ...

    async def requests_on_the_wire(self) -> int: ...

    async def network_calls(self) -> int: ...

    def status_line(self) -> str: ...

    async def close(self) -> None: ...


class LocalExecutor:
    """Slots as tasks of the build's own event loop, sharing its LLM client."""

    workers = 1

    def __init__(self, ctx: BuildContext) -> None:
        self.ctx = ctx

    async def start(self) -> None:
        return None

    def submit(self, slot: int) -> asyncio.Future[SlotResult]:
        return asyncio.ensure_future(run_slot(self.ctx, slot))

    def stop_new_requests(self) -> None:
        self.ctx.client.stop_new_requests()

    async def requests_on_the_wire(self) -> int:
        return self.ctx.client.requests_on_the_wire()

    async def network_calls(self) -> int:
        return self.ctx.client.accounting.total().network_calls

    def status_line(self) -> str:
        return ""

    async def close(self) -> None:
        return None
