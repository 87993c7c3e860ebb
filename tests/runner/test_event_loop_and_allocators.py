"""The event loop every command runs on, and the allocators a writing Store sets up."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest

from factory import event_loop


def test_commands_run_on_uvloop_unless_asked_for_asyncio(monkeypatch):
    uvloop = pytest.importorskip("uvloop")

    async def loop_type() -> type:
        return type(asyncio.get_running_loop())

    assert event_loop.run(loop_type()) is uvloop.Loop
    monkeypatch.setenv("FACTORY_EVENT_LOOP", "asyncio")
    assert event_loop.run(loop_type()) is not uvloop.Loop


def test_a_writing_store_switches_arrow_to_the_system_allocator(tmp_path):
    # a fresh interpreter: the switch is made once per process
    code = (
        "import sys, pyarrow as pa\n"
        "from factory.store.db import Store\n"
        "before = pa.default_memory_pool().backend_name\n"
        "Store(sys.argv[1]).close()\n"
        "print(before, pa.default_memory_pool().backend_name)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "a.duckdb")],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout.split()
    if out[0] == "system":
        pytest.skip("this pyarrow allocates from the system allocator already")
    assert out[1] == "system"
