"""`factory export --mix safety=R`: the share of safety rows per split, `source` on every row, the
reasoning-trace share kept per source, the recipe's export.mix, and licences in the dataset card."""

from __future__ import annotations

import subprocess
from collections import Counter
from pathlib import Path

import datasets
import pytest
import yaml

from factory.errors import ConfigError
from factory.export.hf import _stratified, export, mix_split, parse_mix
from factory.safety.importer import import_source
from tests.safety.conftest import FILES, TRACES, cli_env, factory_cmd, own_samples

SPLITS = ("train", "validation", "test")
SAFETY = {"beavertails", "wildguardmix", "toxicchat", "aegis2"}


@pytest.fixture(scope="module")
def mixed_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("mix") / "mix.duckdb"
    own_samples(db, 30)
    for name, path in FILES.items():
        import_source(db, name, str(path), traces=TRACES)
    return db


def _export_cli(db: Path, out: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        factory_cmd("export", "--db", db, "--out", out, *args),
        env=cli_env(out.parent),
        capture_output=True,
        text=True,
        timeout=180,
        cwd=out.parent,
    )


def _check_half(out: Path) -> datasets.DatasetDict:
    dd = datasets.load_from_disk(str(out / "hf"))
    total_safety = 0
    for split in SPLITS:
        sources = Counter(dd[split]["source"])
        assert all(sources), sources  # `source` set on every row
        assert set(sources) <= SAFETY | {"dynabench"}
        safety = sum(v for k, v in sources.items() if k in SAFETY)
        own = sources["dynabench"]
        assert abs(safety - own) <= 1, (split, sources)
        total_safety += safety
    assert total_safety > 0
    return dd


def test_cli_mix_half_per_split(mixed_db: Path, tmp_path: Path) -> None:
    out = tmp_path / "export"
    result = _export_cli(mixed_db, out, "--mix", "safety=0.5", "--val-frac", "0.2", "--test-frac", "0.2")
    assert result.returncode == 0, result.stderr
    assert "mix:" in result.stderr and "safety samples" in result.stderr
    dd = _check_half(out)
    rows = [r for s in SPLITS for r in dd[s]]
    own = [r for r in rows if r["source"] == "dynabench"]
    assert all(r["source_id"] == r["sample_id"] and r["source_labels"] == "" for r in own)
    safety = [r for r in rows if r["source"] != "dynabench"]
    assert all(r["source_id"] and r["source_labels"].startswith("{") for r in safety)
    assert {r["label"] for r in safety} == {"PASS", "FAIL"}
    card = (out / "README.md").read_text()
    assert "## Sources and licences" in card
    for needle in (
        "CC-BY-NC-4.0",
        "ODC-BY",
        "CC-BY-4.0",
        "AI2 Responsible Use Guidelines",
        "Warning: restricted",
    ):
        assert needle in card, needle
    # the safety rows are kept whole (fewer than ours): each source's splits follow a hash of its ids
    again = tmp_path / "again"
    assert (
        _export_cli(
            mixed_db, again, "--mix", "safety=0.5", "--val-frac", "0.2", "--test-frac", "0.2"
        ).returncode
        == 0
    )
    assert (again / "jsonl" / "train.jsonl").read_bytes() == (out / "jsonl" / "train.jsonl").read_bytes()


def test_recipe_export_mix(mixed_db: Path, tmp_path: Path) -> None:
    recipe = tmp_path / "mixed.yaml"
    recipe.write_text(yaml.safe_dump({"name": "mixed", "export": {"mix": {"safety": 0.5}}}))
    out = tmp_path / "export"
    result = _export_cli(mixed_db, out, "--pipeline", recipe, "--val-frac", "0.2", "--test-frac", "0.2")
    assert result.returncode == 0, result.stderr
    _check_half(out)


def test_no_mix_exports_own_samples_with_source(mixed_db: Path, tmp_path: Path) -> None:
    out = tmp_path / "plain"
    summary = export(mixed_db, out)
    assert summary.startswith("30 samples")
    dd = datasets.load_from_disk(str(out / "hf"))
    assert {s for split in SPLITS for s in dd[split]["source"]} == {"dynabench"}
    assert "Sources and licences" not in (out / "README.md").read_text()


def test_larger_safety_side_is_subsampled(tmp_path: Path) -> None:
    db = tmp_path / "small.duckdb"
    own_samples(db, 6)
    for name, path in FILES.items():
        import_source(db, name, str(path))
    out = tmp_path / "export"
    export(db, out, mix={"safety": 0.5}, val_frac=0.0, test_frac=0.0)
    sources = Counter(datasets.load_from_disk(str(out / "hf"))["train"]["source"])
    assert sources["dynabench"] == 6 and sum(v for k, v in sources.items() if k in SAFETY) == 6


def _recs(source: str, n: int, with_reasoning: int) -> list[dict]:
    return [
        {"source": source, "sample_id": f"{source}-{i}", "reasoning": "r" if i < with_reasoning else ""}
        for i in range(n)
    ]


def test_subsampling_keeps_each_sources_share_and_trace_share() -> None:
    recs = _recs("a", 100, 30) + _recs("b", 60, 60) + _recs("c", 40, 0)
    picked = _stratified(recs, 100, seed=0)
    assert len(picked) == 100
    by = Counter(r["source"] for r in picked)
    assert by == {"a": 50, "b": 30, "c": 20}
    assert sum(1 for r in picked if r["source"] == "a" and r["reasoning"]) == 15
    assert all(r["reasoning"] for r in picked if r["source"] == "b")
    assert _stratified(recs, 100, seed=0) == picked and _stratified(recs, 100, seed=1) != picked


@pytest.mark.parametrize("ours,safety,share", [(10, 100, 0.5), (100, 10, 0.5), (40, 40, 0.25), (7, 3, 0.5)])
def test_mix_split_ratio(ours: int, safety: int, share: float) -> None:
    rows = mix_split(_recs("dynabench", ours, 0), _recs("s", safety, 0), share, seed=0)
    n_safety = sum(r["source"] == "s" for r in rows)
    assert abs(n_safety - share * len(rows)) <= 1


def test_mixed_rows_are_interleaved() -> None:
    """GRPO and --limit take the first N rows of a split: those must be a mixture too."""
    rows = mix_split(_recs("dynabench", 200, 0), _recs("s", 200, 0), 0.5, seed=0)
    first = Counter(r["source"] for r in rows[:40])
    assert 10 <= first["s"] <= 30, first


def test_bad_mix_values() -> None:
    assert parse_mix(["safety=0.5"]) == {"safety": 0.5}
    for bad, match in (("safety", "NAME=SHARE"), ("other=0.1", "unknown part"), ("safety=1", r"\[0, 1\)")):
        with pytest.raises(ConfigError, match=match):
            parse_mix([bad])


def test_mix_without_safety_samples_is_an_error(tmp_path: Path) -> None:
    db = tmp_path / "own.duckdb"
    own_samples(db, 4)
    with pytest.raises(ConfigError, match="factory safety import"):
        export(db, tmp_path / "out", mix={"safety": 0.5})
