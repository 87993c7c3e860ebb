"""A running build's heartbeat, next to its database (`<db>.live.json`).

DuckDB lets one process hold a database file for writing, and no other process may open it
meanwhile, not even read-only. So a build writes its pid and progress to this small side file
(atomically: written aside, then renamed), and read-only commands (`status`, `stats`, `export`)
that find the database locked print it in one line instead of failing.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import orjson


def live_status_path(db: Path) -> Path:
    return db.with_name(db.name + ".live.json")


def write_live_status(db: Path, **fields: Any) -> None:
    path = live_status_path(db)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    try:
        tmp.write_bytes(orjson.dumps({"pid": os.getpid(), "updated_at": time.time(), **fields}))
        os.replace(tmp, path)
    except OSError:
        pass  # a heartbeat is best effort: never stop a build for it


def clear_live_status(db: Path) -> None:
    try:
        live_status_path(db).unlink()
    except OSError:
        pass


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (it may belong to another user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_live_status(db: Path) -> dict[str, Any] | None:
    """The heartbeat of a build that is running now, or None (none, stale or unreadable)."""
    try:
        data = orjson.loads(live_status_path(db).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("pid"), int) or not pid_alive(data["pid"]):
        return None
    return data


def describe_live_status(db: Path) -> str | None:
    """One line about a build running on `db`, or None."""
    live = read_live_status(db)
    if live is None:
        return None
    age = max(0.0, time.time() - float(live.get("updated_at", 0)))
    return (
        f"a build is running on {db} (pid {live['pid']}): {live.get('accepted', '?')}/{live.get('target', '?')} "
        f"samples, {live.get('slots', '?')} slots committed, state {live.get('state', 'running')}, "
        f"updated {age:.0f}s ago"
    )
