"""Shared pieces of the fault suite: the real CLI against the fake provider, with faults.

Every build runs `factory build` as a subprocess (helpers from tests.pipeline.conftest) against
`LoggedServer`, the fake OpenAI-compatible server plus a body log (tests/faults/logged_server.py),
so that requests can be counted across server restarts: the provider going away and coming back
on the same port is a new process whose own counters start at zero.

Two numbers are checked after each fault:
* `Traffic.paid_twice`: answers (HTTP 200) the server gave for a body it had already answered;
  this is money spent twice, and must stay within the requests that were in flight at the fault.
* `Traffic.repeated`: every arrival of a body seen before (the fake's `repeated_bodies`, but over
  all server processes): it also counts re-sends of requests that never got an answer.
"""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

from factory.llm.cache import full_request_json
from factory.store.live_status import read_live_status
from factory.testing.server_process import FakeServerProcess
from tests.faults.logged_server import digest
from tests.pipeline.conftest import (
    REPO_ROOT,
    build_cmd,
    check_ok,
    cli_env,
    query,
    run_factory,
    samples,
    write_recipe,
)

# The endpoint's concurrency: the most requests that can be on the wire at any moment (every stage
# talks to the same endpoint, so they share it). Bounds what a fault can make us pay twice.
CONCURRENCY = 4
PATIENCE_S = 20.0
STARTUP_PATIENCE_S = 3.0
TIMEOUT_S = 3.0
SMALL: dict[str, Any] = {
    "policy": {"rules_law": {"mu": 0.0, "sigma": 0.5, "max": 2}},
    "dialogue": {"turns_law": {"mu": 0.0, "sigma": 0.5, "max": 1}},
    "label": {"ambiguity_threshold": 10},
}


def endpoint_defaults(**overrides: Any) -> dict[str, Any]:
    limits = {
        "concurrency": CONCURRENCY,
        "outage_patience_s": PATIENCE_S,
        "startup_patience_s": STARTUP_PATIENCE_S,
        "timeout_s": TIMEOUT_S,
        "max_retries": 2,
    }
    limits.update(overrides)
    return limits


def fault_recipe(path: Path, **limits: Any) -> Path:
    """The small fault-suite recipe; `limits` override endpoint_defaults (client-side limits are
    not part of the run fingerprint, so every variant makes the same dataset)."""
    return write_recipe(path, **SMALL, endpoint_defaults=endpoint_defaults(**limits))


# -- the logged fake server ------------------------------------------------------------------------
class LoggedServer(FakeServerProcess):
    """FakeServerProcess running tests.faults.logged_server, which appends to `log`."""

    def __init__(self, log: Path, **options: Any) -> None:
        super().__init__(**options)
        self.log = Path(log)

    def start(self) -> LoggedServer:
        if self.proc is not None:
            raise RuntimeError("already started")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.faults.logged_server", "--body-log", str(self.log), *self.args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            env=env,
            cwd=str(REPO_ROOT),
        )
        self._reader = threading.Thread(target=self._drain, args=(self.proc.stdout,), daemon=True)
        self._reader.start()
        deadline = time.monotonic() + self.startup_timeout
        try:
            while True:
                line = self._lines.get(timeout=max(0.1, deadline - time.monotonic()))
                if line is None:
                    raise RuntimeError(f"logged fake server exited early with code {self.proc.wait()}")
                text = line.decode(errors="replace").strip()
                if text.startswith("READY "):
                    self.url = text.split(" ", 1)[1]
                    return self
        except BaseException:
            self.stop()
            raise

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def kill(self) -> None:
        """The provider vanishes: SIGKILL, no goodbye to the connections it holds."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.stop()


@dataclass
class Traffic:
    """What the server(s) writing one body log saw."""

    arrivals: list[str] = field(default_factory=list)  # body digest per request, in order
    answers: list[tuple[str, str, float]] = field(default_factory=list)  # HTTP 200: (body, messages, t)
    statuses: collections.Counter = field(default_factory=collections.Counter)

    @property
    def requests(self) -> int:
        return len(self.arrivals)

    @property
    def repeated(self) -> int:
        return len(self.arrivals) - len(set(self.arrivals))

    @property
    def paid_twice(self) -> int:
        return len(self.answers) - len({b for b, _, _ in self.answers})

    def answered_messages(self, before: float = float("inf")) -> set[str]:
        return {m for _, m, t in self.answers if t < before}


def traffic(log: Path) -> Traffic:
    out = Traffic()
    if not log.exists():
        return out
    for line in log.read_text().splitlines():
        parts = line.split()
        if len(parts) != 4:
            continue
        kind, body, messages, t = parts
        if kind == "R":
            out.arrivals.append(body)
        else:
            out.statuses[kind] += 1
            if kind == "200":
                out.answers.append((body, messages, float(t)))
    return out


def recorded_messages(db: Path) -> set[str]:
    """Digests of the request messages of every answer the store holds (llm_calls + journal)."""
    found = {
        digest(full_request_json(request_json, system).encode())
        for request_json, system in query(
            db,
            "SELECT c.request_json, p.content FROM llm_calls c LEFT JOIN llm_prompts p ON p.digest = c.system_ref",
        )
    }
    journal = db.with_suffix(db.suffix + ".journal")
    if journal.exists():
        for line in journal.read_bytes().splitlines():
            try:
                found.add(digest(orjson.loads(line)["request_json"].encode()))
            except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
                pass
    return found


# -- running builds --------------------------------------------------------------------------------
@dataclass
class Running:
    """A `factory build` started in the background; its output goes to files (no pipe to fill)."""

    proc: subprocess.Popen[bytes]
    out: Path
    started: float

    def wait(self, timeout: float = 180) -> int:
        return self.proc.wait(timeout=timeout)

    @property
    def stderr(self) -> str:
        return self.out.with_suffix(".err").read_text()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


def start_build(cmd: list[str], env: dict[str, str], cwd: Path, name: str = "build") -> Running:
    out = cwd / f"{name}-{time.monotonic_ns()}.out"
    with open(out, "wb") as so, open(out.with_suffix(".err"), "wb") as se:
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=so, stderr=se)
    return Running(proc=proc, out=out, started=time.monotonic())


def wait_until(what: str, check: Callable[[], bool], run: Running | None = None, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if run is not None and run.proc.poll() is not None:
            raise AssertionError(f"build ended (exit {run.proc.returncode}) before {what}:\n{run.stderr}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def live_accepted(db: Path) -> int:
    live = read_live_status(db)
    return int(live.get("accepted", 0)) if live else 0


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def assert_one_line_error(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = error_lines(stderr)
    assert len(lines) == 1, stderr
    return lines[0]


def assert_same_dataset(db: Path, reference: Path, n: int) -> None:
    got, want = samples(db), samples(reference)
    assert len(want) == n
    assert len(got) == n
    assert got == want  # every column, in slot order


def llm_failure_drops(db: Path) -> int:
    return query(db, "SELECT count(*) FROM slot_status WHERE reason = 'llm_failure'")[0][0]


# -- fixtures --------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def recipe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fault_recipe(tmp_path_factory.mktemp("faults-recipe") / "faults.yaml")


class References:
    """Uninterrupted builds with the fault recipe, seed 0, one per N, made on first use."""

    def __init__(self, root: Path, recipe: Path) -> None:
        self.root = root
        self.recipe = recipe
        self.dbs: dict[int, Path] = {}

    def __call__(self, n: int) -> Path:
        if n not in self.dbs:
            work = self.root / f"ref{n}"
            work.mkdir()
            db = work / "ref.duckdb"
            with FakeServerProcess() as server:
                check_ok(run_factory(build_cmd(db, self.recipe, n), cli_env(server.url, tmp=work), work))
            self.dbs[n] = db
        return self.dbs[n]


@pytest.fixture(scope="session")
def reference(tmp_path_factory: pytest.TempPathFactory, recipe: Path) -> References:
    return References(tmp_path_factory.mktemp("faults-ref"), recipe)


@pytest.fixture
def logged(tmp_path: Path) -> Iterator[Callable[..., LoggedServer]]:
    """Start logged fake servers sharing tmp_path/bodies.log; all are stopped at the end."""
    servers: list[LoggedServer] = []

    def start(**options: Any) -> LoggedServer:
        server = LoggedServer(tmp_path / "bodies.log", **options).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
