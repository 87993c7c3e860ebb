"""How many slots a build keeps in flight (shared by the runner and the cost estimate)."""

from __future__ import annotations

import math

from factory.llm.config import EndpointConfig


def slot_window(endpoints: dict[str, EndpointConfig], n: int, workers: int = 1) -> int:
    """Enough slots in flight to keep every endpoint busy, but not many more than a small build
    needs: a slot started beyond the N-th accepted one is paid for and then thrown away. With
    `workers` processes (the Ray executor), each has its own concurrency bound per endpoint."""
    busy = 2 * max(ep.concurrency if ep.provider != "local" else 1 for ep in endpoints.values()) * workers
    return max(2, min(busy, math.ceil(n * 1.2) + 2))
