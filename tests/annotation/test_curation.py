"""Rule curation: expand candidates -> Argilla curation dataset -> accept / edit / reject -> bank file."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import httpx
import orjson
from typer.testing import CliRunner

from annotation import backend
from annotation.curation import decide
from factory.cli.main import app

ROOT = Path(__file__).resolve().parents[2]


def test_decide_majority():
    assert decide([]) == ("pending", None)
    assert decide([{"decision": "accept"}, {"decision": "reject"}]) == ("reject", None)  # tie rejects
    assert decide([{"decision": "edit", "edited": " New  text. "}]) == ("edit", "New text.")
    assert decide([{"decision": "accept"}, {"decision": "accept"}, {"decision": "edit", "edited": "x."}]) == (
        "accept",
        None,
    )


def test_review_and_merge(argilla_env, tmp_path):
    banks = tmp_path / "banks"
    shutil.copytree(ROOT / "banks", banks)
    cands = tmp_path / "c.jsonl"
    texts = [
        "Do not ask a child for a home address under any circumstances.",
        "Do not ask a child for their school name.",
        "Be nice.",
    ]
    cands.write_bytes(
        b"".join(
            orjson.dumps(
                {"text": t, "category": "age-appropriateness", "nearest_existing": None, "similarity": 0.1}
            )
            + b"\n"
            for t in texts
        )
    )
    name = f"cur-{uuid.uuid4().hex[:8]}"
    runner = CliRunner()
    r = runner.invoke(app, ["banks", "review", "--candidates", str(cands), "--dataset", name])
    assert r.exit_code == 0, r.output
    r = runner.invoke(
        app, ["banks", "review", "--candidates", str(cands), "--dataset", name]
    )  # no duplicates
    ds = backend.get_dataset(backend.connect(), name)
    records = {rec.fields["rule"]: rec for rec in ds.records()}
    assert len(records) == 3
    user = next(u for u in argilla_env["users"] if u["username"] == "annotator1")
    answers = {
        texts[0]: {"decision": "accept"},
        texts[1]: {"decision": "edit", "edited": "Do not ask a child which school they attend."},
        texts[2]: {"decision": "reject"},
    }
    for text, values in answers.items():
        httpx.post(
            f"{argilla_env['api_url']}/api/v1/records/{records[text]._server_id}/responses",
            json={"values": {k: {"value": v} for k, v in values.items()}, "status": "submitted"},
            headers={"X-Argilla-Api-Key": user["api_key"]},
            timeout=30,
        ).raise_for_status()
    r = runner.invoke(app, ["banks", "merge", "--dataset", name, "--root", str(banks), "--no-embeddings"])
    assert "merged 2 rule(s): 1 accepted, 1 edited, 1 rejected, 0 not yet reviewed" in r.output, r.output
    lines = (banks / "rules/misc/age-appropriateness.txt").read_text().splitlines()
    assert lines[-2:] == [texts[0], "Do not ask a child which school they attend."]
    # merging again adds nothing
    r = runner.invoke(app, ["banks", "merge", "--dataset", name, "--root", str(banks), "--no-embeddings"])
    assert "merged 0 rule(s)" in r.output
    assert (banks / "rules/misc/age-appropriateness.txt").read_text().splitlines() == lines
