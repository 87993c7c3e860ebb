"""Keep a long build's memory flat: allocators that give freed memory back.

A build writes a batch to DuckDB about once a second from a worker thread (Arrow tables built
from Python rows). With pyarrow's default pool (mimalloc) and glibc's one-arena-per-thread malloc,
the memory of those transient batches is kept by the allocators and resident memory climbs by
hundreds of MB over a build, although nothing live grows. Measured on a 3,000-sample build
(bench/build_scale.py): peak RSS 589 MB with the defaults, 551 MB with Arrow's system pool alone,
595 MB with two malloc arenas alone; with both, DuckDB's pool at 128MB (store/db.py) and the system
prompts stored once, 384-400 MB (bench/README.md has the table).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

import pyarrow as pa

_M_ARENA_MAX = -8  # glibc's mallopt parameter for the number of malloc arenas
_done = False


def limit_allocator_retention() -> None:
    """Once per process: Arrow allocates from the system allocator (unless ARROW_DEFAULT_MEMORY_POOL
    says otherwise) and glibc keeps at most two malloc arenas (unless MALLOC_ARENA_MAX is set)."""
    global _done
    if _done:
        return
    _done = True
    if not os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        pa.set_memory_pool(pa.system_memory_pool())
    if sys.platform.startswith("linux") and not os.environ.get("MALLOC_ARENA_MAX"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            libc.mallopt(_M_ARENA_MAX, 2)
        except (OSError, AttributeError):  # not glibc (musl has no mallopt): nothing to tune
            pass
