"""The event loop the factory's async work runs on: uvloop where it is installed (a dependency on
Linux and macOS), else asyncio's own. `FACTORY_EVENT_LOOP=asyncio` picks asyncio's loop."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop factory, or None for asyncio's default loop."""
    if os.environ.get("FACTORY_EVENT_LOOP", "").strip().lower() == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:  # Windows, or an install without it
        return None
    return uvloop.new_event_loop


def run(coro: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run` on the factory's event loop (Ctrl-C cancels the coroutine, as asyncio.run does)."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(coro)
