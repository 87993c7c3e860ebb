"""The web UI, headless: an annotator logs in, opens the dataset, answers a record and submits;
`factory annotate pull` then has that judgement. Playwright (in .argilla-venv) drives Debian's
chromium; `scripts/argilla.sh ui-deps` installs both. The docs' screenshot (annotation/docs/) is refreshed with FACTORY_UPDATE_SCREENSHOTS=1."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import duckdb

from annotation import backend, service

ROOT = Path(__file__).resolve().parents[2]


def test_annotator_submits_in_the_browser(argilla_env, sample_db, tmp_path):
    deps = subprocess.run(
        ["bash", str(ROOT / "scripts/argilla.sh"), "ui-deps"], capture_output=True, text=True, timeout=900
    )
    assert deps.returncode == 0, deps.stderr[-2000:]
    name = f"ui-{uuid.uuid4().hex[:8]}"
    service.push(sample_db, name, 2)
    ds = backend.get_dataset(backend.connect(), name)
    user = next(u for u in argilla_env["users"] if u["username"] == "annotator2")
    shots = tmp_path / "shots"
    run = subprocess.run(
        [
            str(ROOT / ".argilla-venv/bin/python"),
            str(Path(__file__).parent / "ui/annotate_in_browser.py"),
            argilla_env["api_url"],
            user["username"],
            user["password"],
            str(ds.id),
            str(shots),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    out = service.pull(sample_db, name)
    assert out["judgements"] == 1 and out["annotators"] == ["annotator2"]
    con = duckdb.connect(str(sample_db), read_only=True)
    assert con.execute("SELECT label FROM human_judgements WHERE dataset = ?", [name]).fetchall() == [
        ("FAIL",)
    ]
    con.close()
    assert (shots / "annotation-view.png").stat().st_size > 10_000
    if os.environ.get("FACTORY_UPDATE_SCREENSHOTS") == "1":  # refresh the docs' screenshot
        shutil.copy(shots / "answered.png", ROOT / "annotation" / "docs" / "annotation-view.png")
