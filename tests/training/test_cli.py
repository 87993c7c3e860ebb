"""`factory train sft` then `factory eval` end to end through typer's CliRunner, plus errors."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from tests.training.conftest import CPU_TINY
from training.cli import app, eval_command, train_app

runner = CliRunner()


def _out(result) -> str:
    """Output with rich's error box drawing removed and whitespace collapsed (rich wraps lines)."""
    text = result.output
    try:
        text += result.stderr
    except (ValueError, AttributeError):
        pass
    for ch in "│╭╮╰╯─":
        text = text.replace(ch, " ")
    return " ".join(text.split())


def test_app_exposes_train_and_eval():
    assert callable(eval_command)
    names = {c.name for c in train_app.registered_commands}
    assert names == {"sft", "grpo", "dpo"}
    result = runner.invoke(app, ["train", "dpo", "--help"])
    assert result.exit_code == 0
    assert "--hard" in _out(result)


def test_train_sft_then_eval_end_to_end(export_dir, tiny_model_dir, tmp_path):
    run = tmp_path / "run"
    result = runner.invoke(
        app,
        [
            "train",
            "sft",
            "--data",
            str(export_dir),
            "--model",
            str(tiny_model_dir),
            "--config",
            str(CPU_TINY),
            "--out",
            str(run),
            "--max-steps",
            "12",
            "--cpu",
        ],
    )
    assert result.exit_code == 0, _out(result)
    assert (run / "final" / "config.json").is_file()

    report = tmp_path / "eval"
    result = runner.invoke(
        app,
        [
            "eval",
            "--model",
            str(run / "final"),
            "--data",
            str(export_dir),
            "--mode",
            "answer",
            "--split",
            "test",
            "--out",
            str(report),
            "--limit",
            "8",
            "--max-new-tokens",
            "16",
            "--threads",
            "1",
        ],
    )
    assert result.exit_code == 0, _out(result)
    assert "recall" in _out(result)
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["overall"]["n"] == 8 and metrics["mode"] == "answer"
    assert {"rules", "turns", "industry", "dynamic"} <= set(metrics["slices"])
    assert len((report / "predictions.jsonl").read_text().splitlines()) == 8
    assert (report / "accuracy_vs_rules_turns.png").is_file()
    assert (report / "report.txt").read_text().count("overall") == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "sft", "--data", "/nonexistent/export", "--model", "m"], "does not exist"),
        (["train", "sft", "--model", "m"], "no export given"),
        (["eval", "--model", "m", "--data", "/nonexistent/export"], "does not exist"),
    ],
)
def test_missing_export_is_a_clear_usage_error(args, message):
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert message in _out(result)


def test_eval_unknown_split_and_empty_dir(export_dir, tmp_path):
    result = runner.invoke(app, ["eval", "--model", "m", "--data", str(export_dir), "--split", "dev"])
    assert result.exit_code == 2
    assert "available: train, validation, test" in _out(result)
    (tmp_path / "empty").mkdir()
    result = runner.invoke(app, ["train", "grpo", "--data", str(tmp_path / "empty"), "--model", "m"])
    assert result.exit_code == 2
    assert "not a factory export" in _out(result)


def test_invalid_config_is_a_clear_usage_error(export_dir, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("sft:\n  learning_rat: 0.1\n")
    result = runner.invoke(
        app, ["train", "sft", "--data", str(export_dir), "--model", "m", "--config", str(bad)]
    )
    assert result.exit_code == 2
    assert "learning_rat" in _out(result)
    result = runner.invoke(
        app,
        [
            "train",
            "sft",
            "--data",
            str(export_dir),
            "--model",
            "m",
            "--config",
            str(tmp_path / "missing.yaml"),
        ],
    )
    assert result.exit_code == 2
    assert "does not exist" in _out(result)


def test_eval_bad_model_is_reported(export_dir, tmp_path):
    result = runner.invoke(
        app, ["eval", "--model", str(tmp_path / "no_model"), "--data", str(export_dir), "--limit", "1"]
    )
    assert result.exit_code == 2
    assert "could not load model" in _out(result)


@pytest.mark.parametrize("kind", ["grpo", "dpo"])
def test_template_flag_reaches_grpo_and_dpo_configs(kind, export_dir, tmp_path, monkeypatch):
    import importlib

    module = importlib.import_module(f"training.{kind}")
    seen = []
    monkeypatch.setattr(module, f"run_{kind}", lambda cfg: seen.append(cfg) or tmp_path)
    base = ["train", kind, "--data", str(export_dir), "--model", "m", "--out", str(tmp_path / "o")]
    result = runner.invoke(app, [*base, "--template", "factory"])
    assert result.exit_code == 0, _out(result)
    assert seen[-1].template == "factory"
    result = runner.invoke(app, base)
    assert result.exit_code == 0, _out(result)
    assert seen[-1].template == "dynaguard"  # the default, as for sft and eval
    result = runner.invoke(app, [*base, "--template", "llama"])
    assert result.exit_code == 2 and "unknown template 'llama'" in _out(result)
