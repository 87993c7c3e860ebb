"""How many slots a build keeps in flight (shared by the runner and the cost estimate)."""

from __future__ import annotations

import math

from factory.llm.config import EndpointConfig


def slot_window(
    endpoints: dict[str, EndpointConfig], n: int, workers: int = 1, batch_window: int = 5000
) -> int:
    """Enough slots in flight to keep every endpoint busy, but not many more than a small build
    needs: a slot started beyond the N-th accepted one is paid for and then thrown away. With
    `workers` processes (the Ray executor), each has its own concurrency bound per endpoint.

    With a stage in batch mode the endpoint is "busy" with as many requests as its jobs hold:
    `batch_window` slots wait on each stage together, so each stage's requests go out as one job."""
    batched = any(ep.batch is not None for ep in endpoints.values())
    busy = (
        batch_window
        if batched
        else 2 * max(ep.concurrency if ep.provider != "local" else 1 for ep in endpoints.values()) * workers
    )
    return max(2, min(busy, math.ceil(n * 1.2) + 2))
