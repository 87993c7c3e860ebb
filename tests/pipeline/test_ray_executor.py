"""`factory build --executor ray`: 2 Ray workers (a local cluster on 127.0.0.1, started once per
session) against the fake server give exactly the samples of a local build with the same seed; a
SIGKILLed driver resumes without paying twice; workers scale with a per-worker concurrency bound
while one global limiter keeps the server's rate at or under the configured rpm."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson

from tests.pipeline.conftest import (
    RAY_ENV,
    Built,
    RayCluster,
    check_ok,
    cli_env,
    factory_cmd,
    fake_server,
    flat,
    query,
    run_factory,
    samples,
    settled_stats,
    write_recipe,
)

CORE = "SELECT slot, sample_id, policy, transcript, label FROM samples ORDER BY slot"


def ray_cmd(
    db: Path, recipe: Path, n: int, cluster: RayCluster, workers: int = 2, progress: bool = False
) -> list[str]:
    return factory_cmd(
        "build",
        "--n",
        str(n),
        "--seed",
        "0",
        "--pipeline",
        recipe,
        "--db",
        db,
        "--executor",
        "ray",
        "--workers",
        str(workers),
        "--ray-address",
        cluster.address,
        *(() if progress else ("--no-progress",)),
    )


def ray_env(url: str, tmp: Path) -> dict[str, str]:
    return cli_env(url, tmp=tmp, **RAY_ENV)


def recorded_keys(db: Path) -> set[str]:
    """Every answer the store holds: llm_calls, the driver's journal and the workers' slot journals."""
    keys = {r[0] for r in query(db, "SELECT key FROM llm_calls")}
    journal = db.with_suffix(db.suffix + ".journal")
    files = [journal, *sorted(journal.with_name(journal.name + ".ray").glob("slot-*.jsonl"))]
    for path in files:
        if not path.exists():
            continue
        for line in path.read_bytes().splitlines():
            try:
                keys.add(orjson.loads(line)["key"])
            except (orjson.JSONDecodeError, KeyError, TypeError):
                pass  # a torn last line
    return keys


def test_two_workers_build_the_samples_of_a_local_build(
    tmp_path: Path, ray_cluster: RayCluster, built200: Built
) -> None:
    db = tmp_path / "ray.duckdb"
    with fake_server() as server:
        res = check_ok(
            run_factory(
                ray_cmd(db, built200.recipe, 200, ray_cluster, progress=True),
                ray_env(server.url, tmp_path),
                tmp_path,
            )
        )
        stats = settled_stats(server)
    assert "done: 200 samples" in flat(res.stderr)
    assert query(db, CORE) == query(built200.db, CORE)
    assert samples(db) == samples(built200.db)  # every column
    last = query(built200.db, "SELECT max(slot) FROM slot_status")[0][0]
    for table in ("policies", "paraphrases", "personas", "dialogues", "rule_labels", "traces"):
        sql = f"SELECT * FROM {table} WHERE slot <= {last} ORDER BY ALL"
        assert query(db, sql) == query(built200.db, sql), table
    for table in ("filter_log", "slot_status"):
        sql = f"SELECT * FROM {table} ORDER BY ALL"
        assert query(db, sql) == query(built200.db, sql), table
    # every answer was paid once and is in the ledger with its slot; no worker journal is left
    assert stats["repeated_bodies"] == 0
    assert query(db, "SELECT count(*), count(DISTINCT key), count(slot) FROM llm_calls")[0] == (
        stats["requests"],
        stats["requests"],
        stats["requests"],
    )
    assert not list((tmp_path / "ray.duckdb.journal.ray").glob("*"))
    # per-worker throughput in the progress line
    assert "workers: w0 " in res.stderr and "; w1 " in res.stderr, res.stderr[-2000:]


def _start_and_kill(cmd: list[str], env: dict[str, str], cwd: Path, server, min_requests: int) -> None:  # noqa: ANN001
    proc = subprocess.Popen(
        cmd,
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while server.stats()["requests"] < min_requests:
            assert proc.poll() is None, f"build ended before the kill (exit {proc.returncode})"
            assert time.monotonic() < deadline, "no progress on the fake server"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        if proc.stderr is not None:
            proc.stderr.close()


def test_kill9_of_the_driver_then_resume(
    tmp_path: Path, ray_cluster: RayCluster, reference150: Built
) -> None:
    n = 150
    db = tmp_path / "resume.duckdb"
    cmd = ray_cmd(db, reference150.recipe, n, ray_cluster)
    with fake_server(latency=0.05) as server:
        env = ray_env(server.url, tmp_path)
        _start_and_kill(cmd, env, tmp_path, server, min_requests=700)
        time.sleep(2)  # the killed driver's workers go with it (they are its actors)
        killed = settled_stats(server)
        lost = killed["requests"] - len(recorded_keys(db))
        assert 0 <= lost < killed["requests"]
        assert query(db, "SELECT count(*) FROM samples")[0][0] < n
        final = check_ok(run_factory(cmd, env, tmp_path))
        stats = settled_stats(server)
    assert f"done: {n} samples" in flat(final.stderr)
    # no answer that reached a journal was paid again: the only repeated bodies are requests that
    # were on the wire when the driver died
    assert stats["repeated_bodies"] <= lost, (killed, stats, lost)
    assert query(db, "SELECT count(*) - count(DISTINCT key) FROM llm_calls")[0][0] == 0
    assert not list((tmp_path / "resume.duckdb.journal.ray").glob("*"))
    assert samples(db) == samples(reference150.db)
    for table in ("policies", "paraphrases", "dialogues", "traces"):
        sql = f"SELECT * FROM {table} WHERE slot < {n} ORDER BY slot"
        assert query(db, sql) == query(reference150.db, sql), table


class RateProbe:
    """Polls the fake server's request count while a build runs."""

    def __init__(self, server) -> None:  # noqa: ANN001
        self.server = server
        self.points: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.points.append((time.monotonic(), self.server.stats()["requests"]))
            time.sleep(0.2)

    def __enter__(self) -> RateProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def steady_rate(self, lo: float = 0.2, hi: float = 0.8) -> float:
        """Requests/s between the moments the count passed lo and hi of its final value (no ramp, no tail)."""
        total = self.points[-1][1]
        t_lo = next(t for t, c in self.points if c >= lo * total)
        c_lo = next(c for t, c in self.points if c >= lo * total)
        t_hi, c_hi = next((t, c) for t, c in self.points if c >= hi * total)
        return (c_hi - c_lo) / (t_hi - t_lo)

    def peak_rate(self, span_s: float = 2.0) -> float:
        """The highest rate over any `span_s` window of the polls."""
        best = 0.0
        for i, (t0, c0) in enumerate(self.points):
            for t1, c1 in self.points[i + 1 :]:
                if t1 - t0 >= span_s:
                    best = max(best, (c1 - c0) / (t1 - t0))
                    break
        return best


def _rate(tmp_path: Path, cluster: RayCluster, workers: int, recipe: Path, n: int) -> tuple[float, float]:
    db = tmp_path / f"w{workers}-{recipe.stem}.duckdb"
    with fake_server(latency=0.5) as server, RateProbe(server) as probe:
        check_ok(
            run_factory(ray_cmd(db, recipe, n, cluster, workers), ray_env(server.url, tmp_path), tmp_path)
        )
    return probe.steady_rate(), probe.peak_rate()


def test_workers_scale_and_the_limiter_is_global(tmp_path: Path, ray_cluster: RayCluster) -> None:
    n = 40
    # latency-bound: 16 requests in flight per worker and 0.5 s per answer => about 32 calls/s per worker
    bound = write_recipe(tmp_path / "bound.yaml", endpoint_defaults={"concurrency": 16})
    one, _ = _rate(tmp_path, ray_cluster, 1, bound, n)
    two, _ = _rate(tmp_path, ray_cluster, 2, bound, n)
    assert two >= 1.8 * one, (one, two)
    # the same 2 workers under a 1,200 rpm (20/s) limit: one limiter for both keeps the server at it
    rpm = 1200
    limited = write_recipe(tmp_path / "limited.yaml", endpoint_defaults={"concurrency": 16, "rpm": rpm})
    steady, peak = _rate(tmp_path, ray_cluster, 2, limited, n)
    assert steady <= rpm / 60 * 1.02, (steady, peak)
    assert peak <= rpm / 60 * 1.1, (steady, peak)  # 2 s windows: a lease is about 50 ms of the rate
    assert steady >= 0.75 * rpm / 60, (steady, peak)  # and the limit is used, not starved


def test_without_ray_the_executor_says_how_to_install_it(tmp_path: Path, permissive_recipe: Path) -> None:
    """`import ray` failing (sys.modules["ray"] = None) gives one line and exit 2, before any call."""
    args = ["build", "--n", "5", "--pipeline", str(permissive_recipe), "--db", str(tmp_path / "x.duckdb")]
    code = (
        "import sys; sys.modules['ray'] = None\n"
        "from factory.cli.main import app\n"
        f"app({[*args, '--executor', 'ray']!r})\n"
    )
    with fake_server() as server:
        res = subprocess.run(
            [sys.executable, "-c", code],
            env=cli_env(server.url, tmp=tmp_path),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert server.stats()["requests"] == 0
    assert res.returncode == 2, res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "pip install 'dynabench-factory[ray]'" in lines[0], res.stderr
    assert not (tmp_path / "x.duckdb").exists()


def _worker_pids(cluster: RayCluster) -> list[int]:
    """The SlotWorker actor processes of our own cluster (descendants of its `ray start`)."""
    import psutil

    pids = []
    for proc in psutil.Process(cluster.pgid).children(recursive=True):
        try:
            if "ray::SlotWorker" in " ".join(proc.cmdline()):
                pids.append(proc.pid)
        except psutil.Error:
            continue
    return sorted(pids)


def test_a_killed_worker_loses_nothing_paid(
    tmp_path: Path, ray_cluster: RayCluster, reference150: Built
) -> None:
    """SIGKILL one worker mid-build: Ray restarts it, its slots run again from its journal, and the
    build finishes with the reference dataset."""
    n = 150
    db = tmp_path / "worker.duckdb"
    with fake_server(latency=0.05) as server:
        proc = subprocess.Popen(
            ray_cmd(db, reference150.recipe, n, ray_cluster),
            env=ray_env(server.url, tmp_path),
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 120
            while server.stats()["requests"] < 600:
                assert proc.poll() is None and time.monotonic() < deadline, "build ended before the kill"
                time.sleep(0.02)
            pids = _worker_pids(ray_cluster)
            assert len(pids) == 2, pids
            os.kill(pids[0], signal.SIGKILL)
            _, stderr = proc.communicate(timeout=240)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
        stats = settled_stats(server)
    assert proc.returncode == 0, stderr[-3000:]
    assert f"done: {n} samples" in flat(stderr)
    m = re.search(r"LLM: \d+ calls paid, (\d+) answered from cache", flat(stderr))
    assert m and int(m.group(1)) > 0, "the dead worker's journaled answers should be reused"
    # repeated bodies: at most the dead worker's requests on the wire (its concurrency bound, 64)
    assert stats["repeated_bodies"] <= 64, stats
    assert samples(db) == samples(reference150.db)
    assert query(db, "SELECT count(*) - count(DISTINCT key) FROM llm_calls")[0][0] == 0
