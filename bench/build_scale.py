"""`factory build --n N` against a zero-latency local OpenAI-compatible server (the fake server).

Measures wall time, LLM calls per second and peak memory (RSS of the build process, polled).
The fake server answers with random schema-valid JSON, so the recipe keeps every ambiguity score
(`ambiguity_threshold: 10`); everything else is the default DynaBench recipe.

    .venv/bin/python bench/build_scale.py --n 40000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from factory.testing.server_process import FakeServerProcess  # noqa: E402

RECIPE = """name: bench-scale
description: DynaBench defaults; every ambiguity kept because the fake server's scores are random.
models: {default: auto}
endpoint_defaults: {concurrency: 128, transport: TRANSPORT}
label: {ambiguity_threshold: 10}
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=40000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument(
        "--transport", choices=("sdk", "http"), default="sdk", help="the openai endpoint's transport"
    )
    ap.add_argument("--timeline", type=Path, default=None, help="write (seconds, RSS MB) every poll here")
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    recipe = work / "recipe.yaml"
    recipe.write_text(RECIPE.replace("TRANSPORT", args.transport))
    db = work / "bench.duckdb"
    with FakeServerProcess() as srv:
        env = dict(
            os.environ, OPENAI_BASE_URL=srv.url + "/v1", OPENAI_API_KEY="bench", FACTORY_MODEL="bench-model"
        )
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        cmd = [
            sys.executable,
            "-m",
            "factory.cli.main",
            "build",
            "--n",
            str(args.n),
            "--seed",
            str(args.seed),
            "--pipeline",
            str(recipe),
            "--db",
            str(db),
            "--no-progress",
        ]
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
        ps = psutil.Process(proc.pid)
        peak = 0
        timeline: list[tuple[float, int]] = []  # (seconds since start, RSS) every poll
        while proc.poll() is None:
            try:
                rss = ps.memory_info().rss
            except psutil.NoSuchProcess:
                break
            peak = max(peak, rss)
            timeline.append((time.perf_counter() - t0, rss))
            time.sleep(0.2)
        wall = time.perf_counter() - t0
        err = proc.stderr.read() if proc.stderr else ""
        server = srv.stats()
    if proc.returncode != 0:
        print(err[-3000:])
        raise SystemExit(f"build failed with exit code {proc.returncode}")
    con = duckdb.connect(str(db), read_only=True)
    samples = con.execute("SELECT count(*) FROM samples").fetchone()[0]
    calls = con.execute("SELECT count(*) FROM llm_calls").fetchone()[0]
    con.close()
    result = {
        "n": args.n,
        "samples": samples,
        "wall_s": round(wall, 1),
        "llm_calls": calls,
        "calls_per_s": round(calls / wall, 1),
        "samples_per_s": round(samples / wall, 1),
        "peak_rss_mb": round(peak / 2**20, 1),
        # RSS when a quarter, half, three quarters and all of the wall time had passed
        "rss_quartiles_mb": [
            round(max((r for t, r in timeline if t <= wall * q), default=0) / 2**20, 1)
            for q in (0.25, 0.5, 0.75, 1.0)
        ],
        "server_requests": server.get("requests"),
        "server_repeated_bodies": server.get("repeated_bodies"),
        "db_mb": round(db.stat().st_size / 2**20, 1),
        # writes DuckDB refused for lack of pool memory, retried with a larger pool (Store._more_room)
        "pool_growths": err.count("was too small for a write"),
    }
    if args.timeline:
        args.timeline.write_text(json.dumps([(round(t, 2), round(r / 2**20, 1)) for t, r in timeline]))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
