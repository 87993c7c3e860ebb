"""`factory annotate` end to end through the CLI, and its one-line errors."""

from __future__ import annotations

import json
import uuid

from typer.testing import CliRunner

from factory.cli.main import app


def test_cli_push_pull_report_json(argilla_env, sample_db):
    runner = CliRunner()
    name = f"c-{uuid.uuid4().hex[:8]}"
    r = runner.invoke(
        app, ["annotate", "push", "--db", str(sample_db), "--dataset", name, "--n", "2", "--strategy", "hard"]
    )
    assert r.exit_code == 0, r.output
    assert f"pushed 2 records to {name}" in r.output
    r = runner.invoke(app, ["annotate", "pull", "--db", str(sample_db), "--dataset", name])
    assert r.exit_code == 0, r.output
    assert "pulled 0 judgements" in r.output
    r = runner.invoke(app, ["annotate", "report", "--db", str(sample_db), "--dataset", name, "--json"])
    assert r.exit_code == 2
    assert "no human judgements" in r.output


def test_cli_unreachable_is_one_line(sample_db, monkeypatch):
    monkeypatch.setenv("ARGILLA_API_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("ARGILLA_API_KEY", "x")
    r = CliRunner().invoke(app, ["annotate", "push", "--db", str(sample_db), "--dataset", "x", "--n", "1"])
    assert r.exit_code == 2
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: Argilla is unreachable at http://127.0.0.1:9")


def test_cli_report_json_keys(argilla_env, sample_db):
    import httpx

    from annotation import backend

    runner = CliRunner()
    name = f"j-{uuid.uuid4().hex[:8]}"
    assert (
        runner.invoke(
            app, ["annotate", "push", "--db", str(sample_db), "--dataset", name, "--n", "4"]
        ).exit_code
        == 0
    )
    ds = backend.get_dataset(backend.connect(), name)
    user = next(u for u in argilla_env["users"] if u["username"] == "annotator1")
    for rec in ds.records():
        label = {"s-0000": "FAIL", "s-0002": "FAIL"}.get(rec.id, "PASS")
        values = {"label": {"value": label}}
        if label == "FAIL":
            values["violated_rules"] = {"value": ["2" if rec.id == "s-0000" else "1"]}
        httpx.post(
            f"{argilla_env['api_url']}/api/v1/records/{rec._server_id}/responses",
            json={"values": values, "status": "submitted"},
            headers={"X-Argilla-Api-Key": user["api_key"]},
            timeout=30,
        ).raise_for_status()
    assert runner.invoke(app, ["annotate", "pull", "--db", str(sample_db), "--dataset", name]).exit_code == 0
    r = runner.invoke(app, ["annotate", "report", "--db", str(sample_db), "--dataset", name, "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert set(out) == {
        "dataset",
        "annotators",
        "samples",
        "judgements",
        "sample_level",
        "rule_level",
        "inter_annotator",
        "worst",
        "gate",
    }
    # perfect agreement: 4/4 samples, 12/12 rules, kappa 1
    assert out["sample_level"]["agreement"] == 1.0 and out["sample_level"]["cohen_kappa"] == 1.0
    assert out["rule_level"]["agreement"] == 1.0 and out["rule_level"]["cohen_kappa"] == 1.0
    assert out["gate"]["passed"] is True
    assert out["inter_annotator"]["samples"] == 0 and out["inter_annotator"]["fleiss_kappa"] is None
    r = runner.invoke(app, ["annotate", "report", "--db", str(sample_db), "--dataset", name])
    assert "gate: PASS (sample agreement 100.0%, threshold 90.0%)" in r.output
