"""The real Argilla stack, started once per test session by scripts/argilla.sh (and stopped at the
end when this session started it), plus a small factory database to push from."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import orjson
import pytest

from factory.store.db import Store
from factory.store.sample_row import sample_row

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "argilla.sh"


@pytest.fixture(scope="session")
def argilla_stack():
    """{api_url, api_key, users} of a local Argilla on 127.0.0.1."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARGILLA_API_")}
    running = subprocess.run(["bash", str(SCRIPT), "status"], capture_output=True, env=env).returncode == 0
    if not running:
        done = subprocess.run(
            ["bash", str(SCRIPT), "start"], capture_output=True, text=True, env=env, timeout=1200
        )
        if done.returncode != 0:
            pytest.fail(f"scripts/argilla.sh start failed: {done.stderr[-2000:]}")
    creds = json.loads((ROOT / "outputs" / "argilla" / "credentials.json").read_text())
    yield creds
    if not running:
        subprocess.run(["bash", str(SCRIPT), "stop"], capture_output=True, env=env, timeout=120)


@pytest.fixture
def argilla_env(argilla_stack, monkeypatch):
    monkeypatch.setenv("ARGILLA_API_URL", argilla_stack["api_url"])
    monkeypatch.setenv("ARGILLA_API_KEY", argilla_stack["api_key"])
    monkeypatch.setenv("ARGILLA_WORKSPACE", "default")
    return argilla_stack


# (label, dynamic, violated rule -> agent turns) of the four test samples; three rules each, two agent turns.
SAMPLES = [
    ("FAIL", "user_tricks_agent_breaks", {2: [1]}),
    ("PASS", "user_normal_agent_complies", {}),
    ("FAIL", "user_normal_agent_breaks", {1: [2]}),
    ("PASS", "user_tricks_agent_resists", {}),
]


def make_sample(slot: int, label: str, dynamic: str, violated: dict[int, list[int]]) -> dict:
    rules = [f"Rule text {k} of sample {slot}." for k in (1, 2, 3)]
    turns = [
        {"role": "user", "content": f"Hello {slot}"},
        {"role": "agent", "content": "First answer."},
        {"role": "user", "content": "And then?"},
        {"role": "agent", "content": "Second answer."},
    ]
    labs = [
        {
            "rule_index": i,
            "label": "VIOLATED" if i in violated else "NOT VIOLATED",
            "ambiguity": 2 if i in violated else 0,
            "explanation": f"explanation {i}",
            "violated_turns": violated.get(i, []),
        }
        for i in (1, 2, 3)
    ]
    return sample_row(
        slot=slot,
        sample_id=f"s-{slot:04d}",
        policy_id=f"p-{slot}",
        policy="\n".join(rules),
        transcript="t",
        label=label,
        rules=rules,
        rule_ids=[f"bank.r{slot}.{k}" for k in (1, 2, 3)],
        turns_json=orjson.dumps(turns).decode(),
        rule_labels_json=orjson.dumps(labs).decode(),
        violated_rules=sorted(violated),
        explanation="",
        reasoning="",
        trace_mode="explanation",
        industry="banking" if slot % 2 == 0 else "retail",
        dynamic=dynamic,
        near_miss=False,
        num_rules=3,
        num_turns=2,
        intended_label=label,
        agrees_with_intent=True,
        max_ambiguity=2 if violated else 0,
        models_json=orjson.dumps({"label": "fake:labeller"}).decode(),
        user_persona="",
        agent_persona="",
        split=None,
    )


@pytest.fixture
def sample_db(tmp_path) -> Path:
    db = tmp_path / "f.duckdb"
    store = Store(db)
    for slot, (label, dynamic, violated) in enumerate(SAMPLES):
        store.add("samples", make_sample(slot, label, dynamic, violated))
    store.close()
    return db
