from __future__ import annotations

from pathlib import Path

import pytest

from tests.training.conftest import CPU_TINY
from tests.training.fixtures import make_rows
from training.config import ConfigError, DPORunConfig, GRPORunConfig, SFTRunConfig, load_run_config
from training.data import ExportError, describe_export, load_split

CONFIG_DIR = Path(__file__).resolve().parents[2] / "training" / "configs"


def test_load_split_hf_tolerates_extra_columns(export_dir):
    ds = load_split(export_dir, "train")
    assert len(ds) == 48
    assert "extra_column_we_do_not_know" in ds.column_names
    assert set(ds["label"]) == {"PASS", "FAIL"}
    assert len(load_split(export_dir, "test", limit=5)) == 5


def test_parquet_only_export_and_label_normalisation(tmp_path):
    from datasets import Dataset

    rows = make_rows(6)
    for r in rows:
        r["label"] = r["label"].lower()
        del r["sample_id"]
    (tmp_path / "parquet").mkdir()
    Dataset.from_list(rows).to_parquet(str(tmp_path / "parquet" / "train.parquet"))
    assert describe_export(tmp_path)["layout"] == "parquet"
    ds = load_split(tmp_path, "train")
    assert set(ds["label"]) <= {"PASS", "FAIL"}
    assert ds["sample_id"][0] == "row-0"


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("missing", "does not exist"),
        ("file", "not a directory"),
        ("empty", "not a factory export"),
        ("bad_label", "not PASS/FAIL"),
        ("no_policy", "lacks required column"),
    ],
)
def test_export_errors_are_clear(tmp_path, setup, message):
    from datasets import Dataset

    target = tmp_path / "export"
    if setup == "file":
        target.write_text("x")
    elif setup == "empty":
        target.mkdir()
    elif setup in ("bad_label", "no_policy"):
        rows = make_rows(3)
        if setup == "bad_label":
            rows[1]["label"] = "UNSURE"
        else:
            for r in rows:
                del r["policy"], r["rules"]
        (target / "parquet").mkdir(parents=True)
        Dataset.from_list(rows).to_parquet(str(target / "parquet" / "train.parquet"))
    with pytest.raises(ExportError, match=message):
        load_split(target, "train")


def test_missing_split_lists_available(export_dir):
    with pytest.raises(ExportError, match="available splits: train, validation, test"):
        load_split(export_dir, "dev")


def test_cpu_tiny_sections_and_overrides():
    sft = load_run_config("sft", CPU_TINY, max_steps=3, lora=None)
    assert isinstance(sft, SFTRunConfig) and sft.max_steps == 3 and sft.use_cpu and not sft.bf16
    assert sft.think_fraction == pytest.approx(1 / 3)
    assert isinstance(load_run_config("grpo", CPU_TINY), GRPORunConfig)
    assert load_run_config("dpo", CPU_TINY).hard is True


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("qwen3-*.yaml")), ids=lambda p: p.name)
def test_gpu_recipes_parse(path):
    sft = load_run_config("sft", path)
    grpo = load_run_config("grpo", path)
    dpo = load_run_config("dpo", path)
    assert sft.model.startswith("Qwen/Qwen3-")
    assert sft.per_device_train_batch_size * sft.gradient_accumulation_steps == 128
    assert grpo.num_generations == 8 and grpo.beta == 1e-3 and grpo.max_completion_length == 1024
    assert (grpo.per_device_train_batch_size * grpo.gradient_accumulation_steps) // grpo.num_generations == 48
    assert sft.lora == grpo.lora == dpo.lora == path.stem.endswith("-lora")
    assert isinstance(dpo, DPORunConfig) and dpo.hard


def test_config_errors(tmp_path):
    bad_key = tmp_path / "bad.yaml"
    bad_key.write_text("sft:\n  learning_rat: 1.0\n")
    with pytest.raises(ConfigError, match="learning_rat"):
        load_run_config("sft", bad_key)
    bad_yaml = tmp_path / "broken.yaml"
    bad_yaml.write_text("sft: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_run_config("sft", bad_yaml)
    with pytest.raises(ConfigError, match="does not exist"):
        load_run_config("sft", tmp_path / "nope.yaml")
    only_sft = tmp_path / "only_sft.yaml"
    only_sft.write_text("sft:\n  max_steps: 2\n")
    with pytest.raises(ConfigError, match="no 'grpo' section"):
        load_run_config("grpo", only_sft)
    with pytest.raises(ConfigError, match="think_fraction"):
        load_run_config("sft", None, think_fraction=2.0)
