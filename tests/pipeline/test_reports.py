"""`factory stats`, `factory status` and `factory push` on the N=200 build and its export."""

from __future__ import annotations

import fnmatch
import shutil
import statistics
from pathlib import Path
from typing import Any

import pytest

from factory.export.push import push_export
from factory.llm.errors import ConfigError
from tests.pipeline.conftest import Built, check_ok, cli_env, factory_cmd, flat, query, run_factory

PNG = b"\x89PNG\r\n\x1a\n"


def test_stats_table_and_plots(built200: Built, tmp_path: Path) -> None:
    out = tmp_path / "plots"
    result = check_ok(
        run_factory(
            factory_cmd("stats", "--db", built200.db, "--out", out), cli_env(None, tmp=tmp_path), tmp_path
        )
    )
    lines = result.stdout.splitlines()
    assert "samples: 200" in lines
    assert any("paper train" in ln and "median" in ln and "mean" in ln for ln in lines)
    for name, col in (("policy size", "num_rules"), ("turns", "num_turns")):
        row = next(ln for ln in lines if ln.startswith(name + " "))
        mn, mx, med, mean = row[len(name) :].split()[:4]
        values = [r[0] for r in query(built200.db, f"SELECT {col} FROM samples")]
        assert (int(mn), int(mx)) == (min(values), max(values))
        assert float(med) == pytest.approx(statistics.median(values), abs=0.05)
        assert float(mean) == pytest.approx(statistics.mean(values), abs=0.005)
    text = flat(result.stdout)
    for needle in (
        "labels: FAIL=",
        "intent/label agreement:",
        "rule-label ambiguity (0-10):",
        "filters",
        "LLM cost by stage and model",
        "label fake-model calls=",
    ):
        assert needle in text, needle
    for png in ("policy_size_and_turns.png", "labels.png", "ambiguity.png"):
        data = (out / png).read_bytes()
        assert data.startswith(PNG) and len(data) > 1000, png
    assert f"plots written to {out}" in flat(result.stderr)


def test_status(built200: Built, tmp_path: Path) -> None:
    result = check_ok(
        run_factory(factory_cmd("status", "--db", built200.db), cli_env(None, tmp=tmp_path), tmp_path)
    )
    text = flat(result.stdout)
    assert "pipeline pipetest, seed 0, target 200 samples, last run finished" in text
    drops = query(
        built200.db,
        "SELECT reason, count(*) FROM slot_status WHERE status = 'dropped' GROUP BY 1 ORDER BY 2 DESC, 1",
    )
    expected = ", ".join(f"{r}={c}" for r, c in drops) or "none"
    # the fake's verdicts are random, so some traces disagree with the label and are dropped
    assert "samples accepted: 200" in text and f"dropped: {expected}" in text
    calls = query(built200.db, "SELECT count(*) FROM llm_calls")[0][0]
    assert f"LLM calls paid: {calls} " in text
    missing = run_factory(
        factory_cmd("status", "--db", tmp_path / "nope.duckdb"), cli_env(None, tmp=tmp_path), tmp_path
    )
    assert missing.returncode != 0 and "factory build" in flat(missing.stderr)


def test_push_without_token_names_hf_token(built200: Built, tmp_path: Path) -> None:
    result = run_factory(
        factory_cmd("push", "--repo", "x/y", "--data", built200.extra["export_dir"]),
        cli_env(None, tmp=tmp_path),
        tmp_path,
        timeout=60,
    )
    assert result.returncode != 0
    assert "HF_TOKEN" in flat(result.stderr) and "Traceback" not in result.stderr


class FakeHubApi:
    """Records the calls push_export makes; uploads nothing."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def create_repo(self, **kwargs: Any) -> str:
        self.calls.append(("create_repo", kwargs))
        return f"https://huggingface.co/datasets/{kwargs['repo_id']}"

    def upload_folder(self, **kwargs: Any) -> None:
        self.calls.append(("upload_folder", kwargs))


def _uploaded(folder: Path, patterns: list[str]) -> set[str]:
    rel = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    return {r for r in rel if any(fnmatch.fnmatch(r, pat) for pat in patterns)}


def test_push_export_with_fake_api(built200: Built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "export"
    shutil.copytree(built200.extra["export_dir"], data)
    secret = "hf_sentinel_Secret_7f3a9c"
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setenv("HF_TOKEN", secret)
    api = FakeHubApi()
    url = push_export(data, "someone/dynabench-test", private=True, api=api)
    assert url.endswith("someone/dynabench-test")
    assert [name for name, _ in api.calls] == ["create_repo", "upload_folder"]
    create, upload = api.calls[0][1], api.calls[1][1]
    assert create["repo_id"] == "someone/dynabench-test" and create["repo_type"] == "dataset"
    assert create["private"] is True
    assert upload["repo_id"] == "someone/dynabench-test" and upload["repo_type"] == "dataset"
    assert Path(upload["folder_path"]) == data
    files = _uploaded(data, upload["allow_patterns"])
    assert {
        "README.md",
        "parquet/train.parquet",
        "parquet/validation.parquet",
        "parquet/test.parquet",
    } <= files
    assert not any(f.startswith("hf/") for f in files)
    assert not any(f.endswith(".duckdb") or f.endswith(".journal") for f in files)
    # the token is passed to nobody here and written nowhere
    for name, kwargs in api.calls:
        assert secret not in repr(kwargs), name
    for path in data.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    # without a token: a clear error, and the fake api is never called
    monkeypatch.delenv("HF_TOKEN")
    other = FakeHubApi()
    with pytest.raises(ConfigError, match="HF_TOKEN"):
        push_export(data, "someone/dynabench-test", api=other)
    assert other.calls == []
    monkeypatch.setenv("HF_TOKEN", secret)
    with pytest.raises(ConfigError, match="not an export folder"):
        push_export(tmp_path / "missing", "someone/x", api=other)
    with pytest.raises(ConfigError, match="owner/name"):
        push_export(data, "no-slash", api=other)
