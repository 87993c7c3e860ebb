"""Shared pieces of the end-to-end pipeline tests.

Every build runs the real CLI (`python -m factory.cli.main`) as a subprocess against the fake
OpenAI-compatible server (`factory.testing.server_process.FakeServerProcess`), configured only
through the environment. The fake's answers are random but schema-valid, so most tests use a
permissive recipe (ambiguity threshold 10) to keep every slot.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest
import yaml

from factory.testing.server_process import FakeServerProcess

# The checkout under test: CLI subprocesses run from temporary folders, where `import factory` would
# otherwise find whatever the environment's editable install points at (another worktree).
REPO_ROOT = Path(__file__).resolve().parents[2]

PERMISSIVE: dict[str, Any] = {
    "name": "pipetest",
    "models": {"default": "auto"},
    "label": {"ambiguity_threshold": 10},
}
CLI_TIMEOUT = 240


def write_recipe(path: Path, **extra: Any) -> Path:
    """A recipe YAML: the permissive test recipe updated with `extra` (top-level keys)."""
    data = dict(PERMISSIVE)
    data.update(extra)
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def cli_env(url: str | None, *, key: str = "test", tmp: Path | None = None, **extra: str) -> dict[str, str]:
    """The CLI's environment: only the OpenAI variables point at the fake; other providers cleared."""
    env = dict(os.environ)
    for var in (
        "ANTHROPIC_API_KEY",
        "GEMINI_API_KEY",
        "GOOGLE_API_KEY",
        "OPENAI_BASE_URL",
        "OPENAI_API_KEY",
        "FACTORY_MODEL",
        "HF_TOKEN",
        "HUGGING_FACE_HUB_TOKEN",
    ):
        env.pop(var, None)
    if url is not None:
        env.update(OPENAI_BASE_URL=url + "/v1", OPENAI_API_KEY=key, FACTORY_MODEL="fake-model")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env["COLUMNS"] = "400"  # keep rich from wrapping messages we grep
    env["PYTHONUNBUFFERED"] = "1"
    if tmp is not None:
        env["FACTORY_OUTPUTS"] = str(tmp)
    env.update(extra)
    return env


def factory_cmd(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "factory.cli.main", *(str(a) for a in args)]


def build_cmd(db: Path, recipe: Path, n: int, seed: int = 0) -> list[str]:
    return factory_cmd(
        "build", "--n", str(n), "--seed", str(seed), "--pipeline", recipe, "--db", db, "--no-progress"
    )


def run_factory(
    cmd: list[str],
    env: dict[str, str],
    cwd: Path,
    timeout: float = CLI_TIMEOUT,
) -> subprocess.CompletedProcess[str]:
    """Run the CLI to completion (subprocess.run kills it on timeout)."""
    return subprocess.run(
        cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


def check_ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, (
        f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )
    return result


def flat(text: str) -> str:
    return " ".join(text.split())


def query(db: Path, sql: str, params: list[Any] | None = None) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def samples(db: Path) -> list[tuple]:
    return query(db, "SELECT * FROM samples ORDER BY slot")


def recorded_keys(db: Path) -> set[str]:
    """Keys of every LLM answer the store holds: llm_calls plus the crash journal not yet folded in."""
    keys = {r[0] for r in query(db, "SELECT key FROM llm_calls")}
    journal = db.with_suffix(db.suffix + ".journal")
    if journal.exists():
        for line in journal.read_bytes().splitlines():
            try:
                keys.add(orjson.loads(line)["key"])
            except (orjson.JSONDecodeError, KeyError, TypeError):
                pass  # a torn last line
    return keys


def settled_stats(server: FakeServerProcess, quiet_s: float = 0.5, limit_s: float = 10.0) -> dict[str, Any]:
    """Server counters once no new request arrived for `quiet_s`."""
    last = server.stats()
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        time.sleep(quiet_s)
        now = server.stats()
        if now["requests"] == last["requests"]:
            return now
        last = now
    return last


@contextmanager
def fake_server(**options: Any) -> Iterator[FakeServerProcess]:
    with FakeServerProcess(**options) as server:
        yield server


@dataclass
class Built:
    db: Path
    recipe: Path
    n: int
    seed: int
    workdir: Path
    server_stats: dict[str, Any]
    stderr: str
    extra: dict[str, Any] = field(default_factory=dict)


@pytest.fixture(scope="session")
def permissive_recipe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_recipe(tmp_path_factory.mktemp("recipe") / "pipetest.yaml")


def _build(workdir: Path, recipe: Path, n: int, seed: int = 0, **server_options: Any) -> Built:
    db = workdir / "build.duckdb"
    with fake_server(**server_options) as server:
        result = check_ok(
            run_factory(build_cmd(db, recipe, n, seed), cli_env(server.url, tmp=workdir), workdir)
        )
        stats = settled_stats(server)
    return Built(
        db=db, recipe=recipe, n=n, seed=seed, workdir=workdir, server_stats=stats, stderr=result.stderr
    )


@pytest.fixture(scope="session")
def built200(tmp_path_factory: pytest.TempPathFactory, permissive_recipe: Path) -> Built:
    """`factory build --n 200` against a zero-latency fake, then `factory export`."""
    workdir = tmp_path_factory.mktemp("built200")
    built = _build(workdir, permissive_recipe, 200)
    export_dir = workdir / "export"
    result = check_ok(
        run_factory(
            factory_cmd("export", "--db", built.db, "--out", export_dir), cli_env(None, tmp=workdir), workdir
        )
    )
    built.extra.update(export_dir=export_dir, export_stderr=result.stderr)
    return built


@pytest.fixture(scope="session")
def reference150(tmp_path_factory: pytest.TempPathFactory, permissive_recipe: Path) -> Built:
    """An uninterrupted build of N=150, seed 0, against a fresh fake with 50 ms latency."""
    return _build(tmp_path_factory.mktemp("reference150"), permissive_recipe, 150, latency=0.05)


# -- Ray: one local cluster on 127.0.0.1 per test session (tests/pipeline/test_ray_executor.py) --
# Loopback only: Ray replaces 127.0.0.1 by the machine's routable address unless it runs in its
# single-machine mode (the one it uses on macOS/Windows); no auth token on a loopback cluster.
RAY_ENV = {
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
}


@dataclass
class RayCluster:
    address: str
    temp_dir: Path
    pgid: int  # the process group of `ray start` and every process of the cluster


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[RayCluster]:
    """`ray start --head --block` on 127.0.0.1 (4 CPUs, no dashboard) in its own process group;
    SIGTERM at the end stops every process it started (the group is killed if it lingers)."""
    import shutil
    import signal
    import tempfile

    ray_bin = Path(sys.executable).with_name("ray")
    assert ray_bin.exists(), "Ray is not installed: bash scripts/install.sh local,ray,dev"
    temp_dir = Path(tempfile.mkdtemp(prefix="rayt-", dir="/tmp"))  # short: Ray's socket paths
    port = _free_port()
    env = dict(os.environ, **RAY_ENV)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    log = (temp_dir / "ray-start.log").open("w")
    proc = subprocess.Popen(
        [
            str(ray_bin),
            "start",
            "--head",
            "--node-ip-address",
            "127.0.0.1",
            "--port",
            str(port),
            "--num-cpus",
            "4",
            "--include-dashboard",
            "false",
            "--disable-usage-stats",
            "--temp-dir",
            str(temp_dir),
            "--block",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        while "Ray runtime started" not in (temp_dir / "ray-start.log").read_text():
            assert proc.poll() is None, (temp_dir / "ray-start.log").read_text()
            assert time.monotonic() < deadline, "ray start did not come up in 90 s"
            time.sleep(0.5)
        yield RayCluster(address=f"127.0.0.1:{port}", temp_dir=temp_dir, pgid=proc.pid)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # whatever of its group is left (our own group only)
        except ProcessLookupError:
            pass
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)
