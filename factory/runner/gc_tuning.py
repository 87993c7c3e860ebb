"""Python's cyclic garbage collector, set for a long build.

A zero-latency build allocates about 60 tracked objects per LLM call (request dicts, response
bodies, pydantic models, aiohttp's per-request objects). With Python's default thresholds
(700, 10, 10) that is a young collection every ~12 calls, and the full collections walk every
long-lived object the build holds: measured, 8.5 s of a 60 s 4,000-sample build was spent in the
collector (bench/README.md). After the build's setup, `build_gc` moves what exists into the
permanent generation (`gc.freeze`: banks, recipe, modules, never garbage) and collects the young
generation every 10,000 allocations instead of every 700. Cycles are still collected, only in
fewer, larger passes. `FACTORY_GC_THRESHOLDS="700,10,10"` restores Python's defaults (nothing is
frozen then).
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from contextlib import contextmanager

from factory.errors import ConfigError

BUILD_THRESHOLDS = (10_000, 10, 10)
PYTHON_DEFAULTS = (700, 10, 10)
ENV = "FACTORY_GC_THRESHOLDS"


def gc_thresholds() -> tuple[int, int, int]:
    """The collector's thresholds for a build: FACTORY_GC_THRESHOLDS, else BUILD_THRESHOLDS."""
    raw = os.environ.get(ENV, "").strip()
    if not raw:
        return BUILD_THRESHOLDS
    try:
        values = tuple(int(part) for part in raw.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or min(values) < 1:
        raise ConfigError(f"{ENV}={raw!r}: expected three positive integers, e.g. '10000,10,10'")
    return values  # type: ignore[return-value]


@contextmanager
def build_gc(values: tuple[int, int, int]) -> Iterator[None]:
    """Within: what existed is frozen and `values` are the thresholds. After: both as they were
    (a process that runs several builds, such as the test suite, gets its collector back)."""
    before = gc.get_threshold()
    frozen = _apply(values)
    try:
        yield
    finally:
        gc.set_threshold(*before)
        if frozen:
            gc.unfreeze()


def worker_gc(values: tuple[int, int, int]) -> None:
    """`build_gc` for a process that only runs a build's slots (a Ray worker): set, not put back."""
    _apply(values)


def _apply(values: tuple[int, int, int]) -> bool:
    """Freeze what exists (unless Python's defaults are asked for) and set `values`; True if frozen."""
    freeze = values != PYTHON_DEFAULTS
    if freeze:
        gc.collect()
        gc.freeze()
    gc.set_threshold(*values)
    return freeze
