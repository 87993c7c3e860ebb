"""`factory build --executor ray` at 1, 2 and 4 workers against a latency-bound local server.

A local Ray cluster (`ray start --head` on 127.0.0.1, its own process group, stopped at the end) and,
per worker count, a fresh fake server with 0.5 s latency. Each worker may have `--concurrency`
requests in flight (the recipe's per-endpoint bound is per worker), so the latency bound is
`workers * concurrency / latency` calls/s; one global limiter caps all workers at `--rpm`. The
limit of a run is the lower of the two. The server's request count is polled every 0.2 s:
"steady" is the rate between 20% and 80% of the run's requests (no ramp-up, no tail), "peak" the
highest rate over any 2 s window, "overall" requests / wall time of the whole build (Ray start-up
of the workers included).

    .venv/bin/python bench/ray_scaling.py --n 100 --concurrency 16 --rpm 6000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from factory.testing.server_process import FakeServerProcess  # noqa: E402

# loopback only, no auth token (see tests/pipeline/conftest.py)
RAY_ENV = {
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    def __init__(self, cpus: int) -> None:
        self.temp = Path(tempfile.mkdtemp(prefix="rayb-", dir="/tmp"))
        self.address = f"127.0.0.1:{_free_port()}"
        env = dict(os.environ, **RAY_ENV, PYTHONPATH=str(ROOT))
        self.log = (self.temp / "ray-start.log").open("w")
        self.proc = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("ray")),
                "start",
                "--head",
                "--node-ip-address",
                "127.0.0.1",
                "--port",
                self.address.rsplit(":", 1)[1],
                "--num-cpus",
                str(cpus),
                "--include-dashboard",
                "false",
                "--disable-usage-stats",
                "--temp-dir",
                str(self.temp),
                "--block",
            ],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 120
        while "Ray runtime started" not in (self.temp / "ray-start.log").read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((self.temp / "ray-start.log").read_text())
            time.sleep(0.5)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.log.close()
        shutil.rmtree(self.temp, ignore_errors=True)


def _probe(srv: FakeServerProcess, points: list[tuple[float, int]], stop: threading.Event) -> None:
    while not stop.is_set():
        points.append((time.monotonic(), srv.stats()["requests"]))
        time.sleep(0.2)


def _steady(points: list[tuple[float, int]], lo: float = 0.2, hi: float = 0.8) -> float:
    total = points[-1][1]
    t0, c0 = next((t, c) for t, c in points if c >= lo * total)
    t1, c1 = next((t, c) for t, c in points if c >= hi * total)
    return (c1 - c0) / (t1 - t0)


def _peak(points: list[tuple[float, int]], span: float = 2.0) -> float:
    best = 0.0
    for i, (t0, c0) in enumerate(points):
        for t1, c1 in points[i + 1 :]:
            if t1 - t0 >= span:
                best = max(best, (c1 - c0) / (t1 - t0))
                break
    return best


def run(work: Path, cluster: Cluster, workers: int, args: argparse.Namespace) -> dict[str, Any]:
    recipe = work / "recipe.yaml"
    db = work / f"w{workers}.duckdb"
    with FakeServerProcess(latency=args.latency) as srv:
        env = dict(
            os.environ,
            **RAY_ENV,
            OPENAI_BASE_URL=srv.url + "/v1",
            OPENAI_API_KEY="bench",
            FACTORY_MODEL="bench-model",
            PYTHONPATH=str(ROOT),
        )
        cmd = [
            sys.executable,
            "-m",
            "factory.cli.main",
            "build",
            "--n",
            str(args.n),
            "--pipeline",
            str(recipe),
        ]
        cmd += ["--db", str(db), "--no-progress", "--executor", "ray", "--workers", str(workers)]
        cmd += ["--ray-address", cluster.address]
        points: list[tuple[float, int]] = []
        stop = threading.Event()
        probe = threading.Thread(target=_probe, args=(srv, points, stop), daemon=True)
        probe.start()
        t0 = time.monotonic()
        res = subprocess.run(cmd, env=env, cwd=work, capture_output=True, text=True, timeout=1800)
        wall = time.monotonic() - t0
        stop.set()
        probe.join()
        stats = srv.stats()
    if res.returncode != 0:
        raise RuntimeError(res.stderr[-3000:])
    bound = workers * args.concurrency / args.latency
    limit = min(bound, args.rpm / 60) if args.rpm else bound
    steady = _steady(points)
    return {
        "workers": workers,
        "latency_bound": bound,
        "rpm_limit_per_s": args.rpm / 60 if args.rpm else None,
        "limit": limit,
        "requests": stats["requests"],
        "repeated_bodies": stats["repeated_bodies"],
        "wall_s": round(wall, 1),
        "overall": round(stats["requests"] / wall, 1),
        "steady": round(steady, 1),
        "share_of_limit": round(steady / limit, 3),
        "peak_2s": round(_peak(points), 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--concurrency", type=int, default=16, help="per worker, per endpoint")
    ap.add_argument("--latency", type=float, default=0.5)
    ap.add_argument("--rpm", type=float, default=6000, help="global client-side limit (0: none)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    limits = f"concurrency: {args.concurrency}" + (f", rpm: {args.rpm:g}" if args.rpm else "")
    (work / "recipe.yaml").write_text(
        "name: bench-ray\nmodels: {default: auto}\n"
        f"endpoint_defaults: {{{limits}}}\nlabel: {{ambiguity_threshold: 10}}\n"
    )
    cluster = Cluster(cpus=max(args.workers))
    rows = []
    try:
        for k in args.workers:
            row = run(work, cluster, k, args)
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)
    base = rows[0]["steady"]
    print(
        "\n| workers | limit calls/s (latency bound; rpm) | steady calls/s | share of limit | vs 1 worker | peak 2 s | overall calls/s |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        rpm = f"{r['rpm_limit_per_s']:g}" if r["rpm_limit_per_s"] else "none"
        print(
            f"| {r['workers']} | {r['limit']:g} ({r['latency_bound']:g}; {rpm}) | {r['steady']} | "
            f"{100 * r['share_of_limit']:.1f}% | {r['steady'] / base:.2f}x | {r['peak_2s']} | {r['overall']} |"
        )
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
