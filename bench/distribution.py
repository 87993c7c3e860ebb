"""What the ambiguity filter does to the DynaBench distributions (policy size, turns).

Builds N samples with the default `dynabench` recipe against the fake OpenAI-compatible server
with its `labeller` profile (a labeller double: per-turn ambiguity skewed low, 10% of judgements at
6 or more, 7% above the default threshold 6; 8% of judgements VIOLATED), once with the filter on
(threshold 6: an ambiguous rule is replaced by a spare) and once with it off (threshold 10), and
prints each build's policy size and turns against the paper's train set (Table 2).

    .venv/bin/python bench/distribution.py --n 600
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from factory.testing.server_process import FakeServerProcess  # noqa: E402

PAPER = {"policy size": (4, 6.4), "turns": (2, 2.8)}  # Table 2, train: median, mean


def _describe(values: list[int]) -> dict[str, float]:
    return {
        "min": min(values),
        "max": max(values),
        "median": statistics.median(values),
        "mean": statistics.mean(values),
    }


def run(n: int, threshold: int, work: Path, server_url: str) -> dict:
    recipe = work / f"t{threshold}.yaml"
    recipe.write_text(
        f"name: dist-t{threshold}\nmodels: {{default: auto}}\nendpoint_defaults: {{concurrency: 64}}\n"
        f"label: {{ambiguity_threshold: {threshold}}}\n"
    )
    db = work / f"t{threshold}.duckdb"
    env = dict(
        os.environ, OPENAI_BASE_URL=server_url + "/v1", OPENAI_API_KEY="bench", FACTORY_MODEL="labeller"
    )
    cmd = [
        str(ROOT / ".venv/bin/factory"),
        "build",
        "--n",
        str(n),
        "--pipeline",
        str(recipe),
        "--db",
        str(db),
    ]
    t0 = time.perf_counter()
    subprocess.run([*cmd, "--no-progress"], env=env, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    con = duckdb.connect(str(db), read_only=True)
    try:
        q = lambda sql: [r[0] for r in con.execute(sql).fetchall()]  # noqa: E731
        out = {
            "threshold": threshold,
            "wall_s": round(wall, 1),
            "dataset": {
                "policy size": _describe(q("SELECT num_rules FROM samples")),
                "turns": _describe(q("SELECT num_turns FROM samples")),
            },
            "drawn": {
                "policy size": _describe(q("SELECT target_size FROM policies JOIN slot_status USING (slot)")),
                "turns": _describe(q("SELECT num_turns FROM dialogues JOIN slot_status USING (slot)")),
            },
            "slots": q("SELECT count(*) FROM slot_status")[0],
            "drops": dict(
                con.execute(
                    "SELECT reason, count(*) FROM slot_status WHERE status='dropped' GROUP BY 1"
                ).fetchall()
            ),
            "rules_removed": q(
                "SELECT count(*) FROM rule_labels WHERE policy_index IS NULL AND slot IN (SELECT slot FROM samples)"
            )[0],
            "rules_in_samples": q("SELECT sum(num_rules) FROM samples")[0],
            "label_calls": q("SELECT count(*) FROM llm_calls WHERE stage = 'label'")[0],
            "fail_share": q("SELECT avg((label = 'FAIL')::INT) FROM samples")[0],
        }
    finally:
        con.close()
    for part, stats in out["dataset"].items():
        med, mean = PAPER[part]
        stats["median_vs_paper"] = round(stats["median"] / med - 1, 3)
        stats["mean_vs_paper"] = round(stats["mean"] / mean - 1, 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=600)
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-dist-"))
    work.mkdir(parents=True, exist_ok=True)
    with FakeServerProcess(profile="labeller") as server:
        results = [run(args.n, t, work, server.url) for t in (6, 10)]
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
