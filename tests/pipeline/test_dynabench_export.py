"""A small build (rule-disjoint splits, the default) exported and read the way the DynaBench /
DynaGuard ecosystem reads it: Hub-style configs, the `metadata` JSON, transcripts, zero rule overlap.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import datasets
import orjson
import pytest
import yaml

from factory.store.sample_row import METADATA_KEYS
from tests.pipeline.conftest import (
    Built,
    _build,
    check_ok,
    cli_env,
    factory_cmd,
    query,
    run_factory,
    write_recipe,
)

N = 30
SPLITS = ("train", "validation", "test")


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Built:
    workdir = tmp_path_factory.mktemp("dynabench-export")
    recipe = write_recipe(workdir / "split.yaml", splits={"validation": 0.2, "test": 0.3})
    built = _build(workdir, recipe, N, seed=4)  # a seed whose test split holds PASS and FAIL (fake labels)
    out = workdir / "export"
    result = check_ok(
        run_factory(
            factory_cmd("export", "--db", built.db, "--out", out), cli_env(None, tmp=workdir), workdir
        )
    )
    built.extra.update(export_dir=out, stdout=result.stdout + result.stderr)
    return built


def _jsonl(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def test_stored_splits_are_exported_and_share_no_bank_rule(exported: Built) -> None:
    out = exported.extra["export_dir"]
    stored = dict(query(exported.db, "SELECT sample_id, split FROM samples"))
    assert set(stored.values()) == set(SPLITS)  # 30 samples at 50/20/30: every split is filled
    rows = {s: _jsonl(out / "jsonl" / f"{s}.jsonl") for s in SPLITS}
    for s, recs in rows.items():
        assert recs and all(stored[r["sample_id"]] == s for r in recs)
    ids = {s: {i for r in recs for i in r["rule_ids"]} for s, recs in rows.items()}
    assert all(ids.values())
    assert not ids["train"] & ids["test"] and not ids["train"] & ids["validation"]
    assert not ids["validation"] & ids["test"]
    card = " ".join((out / "README.md").read_text(encoding="utf-8").split())
    assert "Split method: `rules` (rule-disjoint)" in card
    assert "bank rule ids shared: train/test 0, train/validation 0, validation/test 0" in card


def test_dynabench_configs_load_with_datasets(exported: Built, tmp_path: Path) -> None:
    out = str(exported.extra["export_dir"])
    cache = str(tmp_path / "hf-cache")
    test = datasets.load_dataset(out, "DynaBench", split="test", cache_dir=cache)
    train = datasets.load_dataset(out, "DynaBenchTrain", split="train", cache_dir=cache)
    val = datasets.load_dataset(out, "DynaBenchTrain", split="validation", cache_dir=cache)
    sizes = dict(query(exported.db, "SELECT split, count(*) FROM samples GROUP BY split"))
    assert (len(train), len(val), len(test)) == (sizes["train"], sizes["validation"], sizes["test"])
    assert set(datasets.load_dataset(out, "DynaBench", cache_dir=cache)) == {"test"}
    for ds in (train, test):
        assert {"policy", "transcript", "label", "metadata", "base_id", "turns", "rule_ids"} <= set(
            ds.column_names
        )
        assert {"formatted_input", "formatted_output"} <= set(ds.column_names)


def test_metadata_and_dynabench_columns(exported: Built) -> None:
    out = exported.extra["export_dir"]
    for s in SPLITS:
        for rec in _jsonl(out / "jsonl" / f"{s}.jsonl"):
            meta = json.loads(rec["metadata"])
            assert list(meta)[: len(METADATA_KEYS)] == list(METADATA_KEYS)
            assert meta["num_rules"] == rec["num_rules"] == len(rec["rules"])
            assert meta["num_turns"] == rec["num_turns"]
            assert meta["num_tokens"] == len(rec["policy"].split()) + len(rec["transcript"].split())
            assert meta["num_hops"] == meta["num_counts"] == -1
            assert meta["rule_len"] == round(sum(map(len, rec["rules"])) / len(rec["rules"]), 1)
            assert meta["failure_mode"] == meta["business_impact"] == ""
            assert rec["base_id"] == rec["sample_id"]
            lines = rec["transcript"].split("\n")
            assert len(lines) == len(rec["turns"])
            for line, turn in zip(lines, rec["turns"], strict=True):
                tag = "'User': " if turn["role"] == "user" else "'Agent': "
                assert line == tag + turn["content"]
            assert rec["formatted_input"].startswith("<rules>\n" + rec["policy"].strip() + "\n</rules>\n")
            assert rec["formatted_input"].endswith("<transcript>\n" + rec["transcript"] + "\n</transcript>")
            assert f"<answer>\n{rec['label']}\n</answer>" in rec["formatted_output"]


# --- the DynaGuard evaluation harness's data path -------------------------------------------------

#: Labels a stubbed generation gives: alternate FAIL / PASS inside the answer tags.
STUB_OUTPUTS = ("<answer>\nFAIL\n</answer>", "<answer>\nPASS\n</answer>")


def test_dynaguard_harness_data_path_on_the_jsonl_test_split(exported: Built) -> None:
    """A faithful check of what montehoover/DynaGuard `eval.py` (default flags, generation stubbed)
    reads from our `jsonl/test.jsonl`; no code of theirs is copied or fetched. Matched against the
    repository's eval.py / helpers.py / constants.py at the snapshot read for issue 11:

    * eval.py `main`, dataset block (lines 68-69): a local path is loaded with
      `datasets.load_dataset("json", data_files={"test": path})["test"]` -> done below;
    * lines 77-89 (`--label_col label` default): `label` must be a column, rows whose label is None,
      "" or "null" are dropped -> we require none to be dropped;
    * lines 140-150: `--subset DynaBench` (default) marks a compliance dataset, and the transcripts
      and policies are `x["transcript"]` and `x["policy"]`;
    * line 222, helpers.format_user_agent_tags with DYNAGUARD_USER_TAG "'User':" /
      DYNAGUARD_AGENT_TAG "'Agent':" (constants.py 392-393): a global replace of `User:` / `Agent:`
      -> every line of our transcripts must already carry the quoted prefix, so the replace leaves
      the prefixes alone (it still rewrites such words inside message text: their harness's doing);
    * line 231: DYNAGUARD_CONTENT_TEMPLATE.format(policy=..., conversation=...) -> str.format on
      the template only, so any text in our columns is safe;
    * line 278, helpers.get_dataset_labels with custom label column/pos FAIL/neg PASS: every label
      must be exactly PASS or FAIL (anything else becomes "null");
    * helpers.get_stats (line 280): recall divides by the number of FAIL labels, and
      get_binary_classification_report (`--get_auc` default) needs both classes for roc_auc_score
      -> the test split holds both labels;
    * `--save_stats` default, helpers.get_analysis (strict=False): `metadata` column required; each
      value parsed with yaml.safe_load (then json.loads, then ast.literal_eval); the keys
      num_counts, num_hops, num_turns, num_rules, rule_len are indexed directly and num_tokens,
      failure_mode, business_impact read with .get; -1 / "" mean unknown; num_tokens is bucketed;
    * helpers.create_enriched_outputs (only with --enriched_outputs) reads `base_id`.

    Running their real eval.py needs Python 3.12 (nested quotes in f-strings) plus torch, vLLM,
    peft and litellm at import time; `test_real_dynaguard_harness_if_available` does so when a
    checkout and an interpreter are given through the environment.
    """
    path = exported.extra["export_dir"] / "jsonl" / "test.jsonl"
    ds = datasets.load_dataset("json", data_files={"test": str(path)})["test"]
    assert "label" in ds.column_names and "metadata" in ds.column_names and "base_id" in ds.column_names
    assert len(
        ds.filter(lambda x: x["label"] is not None and str(x["label"]).strip() not in ("", "null"))
    ) == len(ds)
    labels = [x["label"] for x in ds]
    assert set(labels) <= {"PASS", "FAIL"}
    assert "FAIL" in labels and "PASS" in labels, "the harness's recall and AUC need both labels"
    for x in ds:
        lines = x["transcript"].split("\n")
        assert all(line.startswith(("'User': ", "'Agent': ")) for line in lines)
        harness_view = x["transcript"].replace("User:", "'User':").replace("Agent:", "'Agent':")
        assert [ln.split(" ", 1)[0] for ln in harness_view.split("\n")] == [
            ln.split(" ", 1)[0] for ln in lines
        ]
        content = "<rules>\n{policy}\n</rules>\n<transcript>\n{conversation}\n</transcript>\n".format(
            policy=x["policy"], conversation=x["transcript"]
        )
        assert x["policy"] in content and x["transcript"] in content
        meta = yaml.safe_load(x["metadata"])
        for key in ("num_counts", "num_hops", "num_turns", "num_rules", "rule_len"):
            assert isinstance(meta[key], int | float)
        assert isinstance(meta.get("num_tokens"), int) and meta["num_tokens"] > 0
        assert meta.get("failure_mode") == "" and meta.get("business_impact") == ""
        assert x["base_id"]
    predicted = [
        STUB_OUTPUTS[i % 2].split("<answer>")[-1].split("</answer>")[0].strip() for i in range(len(ds))
    ]
    assert set(predicted) == {"FAIL", "PASS"}


HARNESS_ENV = ("DYNAGUARD_REPO", "DYNAGUARD_PYTHON")


@pytest.mark.skipif(
    not all(os.environ.get(v) for v in HARNESS_ENV),
    reason="set DYNAGUARD_REPO (a checkout of montehoover/DynaGuard) and DYNAGUARD_PYTHON (Python 3.12 "
    "with datasets, numpy, scikit-learn, pyyaml, pandas, matplotlib) to run their eval.py",
)
def test_real_dynaguard_harness_if_available(exported: Built, tmp_path: Path) -> None:
    """Their eval.py `main` with its default flags on our jsonl test split; only the model is
    replaced (scripts/dynaguard_harness.py stubs the GPU/LLM imports and the model wrapper)."""
    script = Path(__file__).resolve().parents[2] / "scripts" / "dynaguard_harness.py"
    data = exported.extra["export_dir"] / "jsonl" / "test.jsonl"
    result = subprocess.run(
        [os.environ["DYNAGUARD_PYTHON"], str(script), os.environ["DYNAGUARD_REPO"], str(data)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "F1 Score" in result.stdout and "Analysis saved" in result.stdout
    assert "DYNAGUARD HARNESS FINISHED" in result.stdout
