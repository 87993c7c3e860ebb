"""Shared pieces of the safety-import tests: the fixture files and a small store of own samples."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import orjson

from factory.store.db import Store
from factory.store.sample_row import sample_row

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "safety"
FILES = {
    "beavertails": FIXTURES / "beavertails.jsonl",
    "wildguardmix": FIXTURES / "wildguardmix.parquet",
    "toxicchat": FIXTURES / "toxicchat.csv",
    "aegis2": FIXTURES / "aegis2.json",
}
TRACES = FIXTURES / "traces.jsonl"


def cli_env(tmp: Path, **extra: str) -> dict[str, str]:
    """The CLI's environment: this checkout's `factory`, a private datasets cache, no Hub token."""
    env = dict(os.environ)
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_ENDPOINT"):
        env.pop(var, None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    env["HF_DATASETS_CACHE"] = str(tmp / "hf-cache")
    env["COLUMNS"] = "400"
    env.update(extra)
    return env


def factory_cmd(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "factory.cli.main", *(str(a) for a in args)]


def own_samples(db: Path, n: int, *, think_every: int = 3) -> None:
    """`n` made-up factory samples (one policy each) written straight into `samples`."""
    store = Store(db)
    try:
        for i in range(n):
            turns = [
                {"role": "user", "content": f"question {i}"},
                {"role": "agent", "content": f"answer {i}"},
            ]
            think = i % think_every == 0
            store.add(
                "samples",
                sample_row(
                    slot=i,
                    sample_id=f"own-{i}",
                    policy_id=f"policy-{i}",
                    split="",  # no stored split: the export hashes policy ids (these tests' fractions)
                    policy="1. Be polite.",
                    transcript=f"User: question {i}\nAgent: answer {i}",
                    label="PASS" if i % 2 else "FAIL",
                    rules=["Be polite."],
                    rule_ids=["misc-1"],
                    turns_json=orjson.dumps(turns).decode(),
                    rule_labels_json=orjson.dumps(
                        [
                            {
                                "rule_index": 1,
                                "label": "NOT VIOLATED",
                                "ambiguity": 0,
                                "explanation": "",
                                "violated_turns": [],
                            }
                        ]
                    ).decode(),
                    violated_rules=[] if i % 2 else [1],
                    explanation="made up",
                    reasoning="thinking" if think else "",
                    trace_mode="think" if think else "answer",
                    industry="retail",
                    dynamic="normal_comply",
                    near_miss=False,
                    num_rules=1,
                    num_turns=1,
                    intended_label="PASS",
                    agrees_with_intent=True,
                    max_ambiguity=0,
                    models_json="{}",
                    user_persona="",
                    agent_persona="",
                ),
            )
    finally:
        store.close()
