"""Time `factory testset` on a grid against the fake OpenAI-compatible server, then rerun it.

    .venv/bin/python bench/testset.py [--grid testsets/dynabench_grid.yaml] [--pipeline dynabench]

Prints, per run, the wall time, the calls the server received and the CLI's summary line; the
rerun must pay nothing (the request cache answers every call, finished cases are skipped).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from factory.testing.server_process import FakeServerProcess

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid", default=str(REPO / "testsets" / "dynabench_grid.yaml"))
    ap.add_argument("--pipeline", default="dynabench")
    ap.add_argument("--profile", default="labeller", help="fake server field profile ('' for uniform)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, FakeServerProcess(profile=args.profile or None) as server:
        db = Path(tmp) / "testset.duckdb"
        env = dict(
            os.environ, OPENAI_BASE_URL=server.url + "/v1", OPENAI_API_KEY="bench", FACTORY_MODEL="fake"
        )
        for var in ("ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY"):
            env.pop(var, None)
        env["COLUMNS"] = "300"  # one line per message
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
        cmd = [sys.executable, "-m", "factory.cli.main", "testset", "--grid", args.grid]
        cmd += ["--pipeline", args.pipeline, "--db", str(db)]
        for run in ("first", "rerun"):
            before = server.stats()["requests"]
            start = time.monotonic()
            result = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
            wall = time.monotonic() - start
            if result.returncode:
                sys.exit(f"factory testset failed ({result.returncode}): {result.stderr[-2000:]}")
            done = [line for line in result.stderr.splitlines() if line.startswith(("done:", "LLM:"))]
            stats = server.stats()
            print(f"{run}: {wall:.1f}s, {stats['requests'] - before} calls received by the server")
            print("  " + "\n  ".join(done))
        print(f"repeated request bodies: {stats['repeated_bodies']}")


if __name__ == "__main__":
    main()
