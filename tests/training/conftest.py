"""Shared fixtures: a synthetic export, a tiny offline model, and one SFT run reused by the
GRPO/DPO/generation tests (session scope keeps the suite within a few minutes on 2 CPUs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.training.fixtures import make_export

REPO = Path(__file__).resolve().parents[2]
CPU_TINY = REPO / "training" / "configs" / "cpu_tiny.yaml"


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    import datasets
    import torch
    import transformers

    torch.set_num_threads(1)
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()


@pytest.fixture(scope="session")
def export_dir(tmp_path_factory) -> Path:
    return make_export(tmp_path_factory.mktemp("export"))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, export_dir) -> Path:
    from training.data import load_split
    from training.tiny_model import build_tiny_model, corpus_from_rows

    rows = list(load_split(export_dir, "train")) + list(load_split(export_dir, "test"))
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", corpus_from_rows(rows))


@pytest.fixture(scope="session")
def sft_run(tmp_path_factory, export_dir, tiny_model_dir) -> Path:
    """One SFT run with the CPU recipe (30 steps); returns the run directory."""
    from training.config import load_run_config
    from training.sft import run_sft

    out = tmp_path_factory.mktemp("sft_run")
    config = load_run_config("sft", CPU_TINY, model=str(tiny_model_dir), data=str(export_dir), out=str(out))
    final = run_sft(config)
    assert final == out / "final"
    return out
