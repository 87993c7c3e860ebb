"""`factory eval --model openai:NAME`: an LLM provider scored as a guardian through the LLM layer."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from factory.testing.server_process import FakeServerProcess
from training.cli import app

runner = CliRunner()


def test_eval_scores_a_provider_and_caches_its_answers(export_dir, tmp_path, monkeypatch):
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("FACTORY_OUTPUTS", str(tmp_path / "outputs"))
    with FakeServerProcess() as srv:
        monkeypatch.setenv("OPENAI_BASE_URL", srv.url + "/v1")
        monkeypatch.setenv("OPENAI_API_KEY", "test")
        args = [
            "eval",
            "--model",
            "openai:fake-guard",
            "--data",
            str(export_dir),
            "--split",
            "test",
            "--mode",
            "answer",
            "--limit",
            "8",
            "--out",
            str(tmp_path / "eval"),
            "--no-plots",
        ]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        first = srv.stats()["requests"]
        assert first == 8
        metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
        overall = metrics["overall"]
        assert overall["n"] == 8
        # The fake answers free text without <answer> tags: every output is unparseable, and
        # unparseable outputs count as wrong verdicts.
        assert overall["unparseable_rate"] == 1.0
        assert overall["accuracy"] == 0.0
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        assert srv.stats()["requests"] == first  # answered from outputs/eval-cache.duckdb
    assert (tmp_path / "outputs" / "eval-cache.duckdb").exists()
