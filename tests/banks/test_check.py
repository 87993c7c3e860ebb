"""`factory banks check` on a tiny synthetic bank: exit codes and what the report names."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from factory.banks import embeddings as embeddings_mod
from factory.banks.check import PAPER_TARGETS, check_banks, run_check
from factory.banks.near_duplicates import similar_pairs
from tests.banks.conftest import TINY_TARGETS

PARAPHRASE = "Late arrivals of more than 15 minutes may need to be rescheduled; mention this in every booking confirmation."


def _check(root: Path, **kwargs: object) -> tuple[int, str]:
    buf = io.StringIO()
    console = Console(file=buf, width=200, highlight=False, soft_wrap=True, color_system=None)
    kwargs.setdefault("targets", TINY_TARGETS)
    code = check_banks(root, console=console, **kwargs)  # type: ignore[arg-type]
    return code, buf.getvalue()


def _append(path: Path, line: str) -> int:
    text = path.read_text(encoding="utf-8")
    path.write_text(text + line + "\n", encoding="utf-8")
    return len(text.splitlines()) + 1


def test_clean_bank_passes_with_embeddings(bank: Path) -> None:
    code, out = _check(bank)
    assert code == 0, out
    assert "banks OK" in out
    assert "Near duplicates (cosine >= 0.9): 0" in out
    assert "encoding 14 rule(s)" in out
    # the second run takes every embedding from the cache and does not load the model
    code, out = _check(bank)
    assert code == 0 and "14 embeddings from the cache" in out and "model load 0.0 s" in out


def test_planted_near_duplicate_fails(bank: Path) -> None:
    path = bank / "rules" / "misc" / "tone.txt"
    lineno = _append(path, PARAPHRASE)
    code, out = _check(bank)
    assert code == 1
    assert "Near duplicates (cosine >= 0.9): 1" in out
    assert f"tone.txt:{lineno}" in out and "pet-grooming.txt:3" in out
    report = run_check(bank, targets=TINY_TARGETS, console=Console(file=io.StringIO()))
    ((a, b, sim),) = report.near_duplicates
    assert {a.group, b.group} == {"pet-grooming", "tone"} and 0.9 <= sim < 1.0
    # a higher threshold lets the pair through; --no-embeddings skips the scan
    assert _check(bank, threshold=0.97)[0] == 0
    assert _check(bank, embeddings=False)[0] == 0


def test_exact_duplicate_and_schema_error_fail(bank: Path) -> None:
    path = bank / "rules" / "misc" / "returns.txt"
    dup = _append(path, "Never use sarcasm, or rhetorical questions, that could read as mocking the user.")
    code, out = _check(bank, embeddings=False)
    assert code == 1
    assert "Exact duplicates: 1" in out
    assert f"tone.txt:2: exact duplicate of {path}:{dup}" in out
    bad = _append(bank / "rules" / "industry" / "freight-trucking.txt", "Be nice")
    code, out = _check(bank, embeddings=False)
    assert code == 1 and "Schema errors: 1" in out and f"freight-trucking.txt:{bad}:" in out


def test_sizes_below_target_fail(bank: Path) -> None:
    code, out = _check(bank, embeddings=False, targets=PAPER_TARGETS)
    assert code == 1
    assert "SHORT" in out and "size shortfall" in out
    assert "misc categories missing or empty:" in out and "hipaa" in out
    assert "2 industries below 12 rules" in out


def test_unreadable_file_names_line(bank: Path) -> None:
    path = bank / "rules" / "industry" / "pet-grooming.txt"
    path.write_bytes(path.read_bytes() + b"Prices are in \xa3 sterling for every grooming service.\n")
    code, out = _check(bank, embeddings=False)
    assert code == 1
    assert "pet-grooming.txt:6: not UTF-8 (byte 0xa3 at column 15)" in out


def test_lexical_fallback_when_model_missing(bank: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embeddings_mod, "_model_version", lambda: None)
    lineno = _append(
        bank / "rules" / "misc" / "returns.txt",
        "State the 30 day return window before you start any return in the chat.",
    )
    code, out = _check(bank)
    assert code == 1
    assert "not installed" in out and "lexical fallback" in out
    assert f"returns.txt:{lineno}" in out


def test_similar_pairs_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(size=(40, 16)).astype(np.float32)
    emb = np.concatenate([base, base[:10] + 0.05 * rng.normal(size=(10, 16)).astype(np.float32)])
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    sims = emb @ emb.T
    want = {(i, j) for i in range(50) for j in range(i + 1, 50) if sims[i, j] >= 0.8}
    got = similar_pairs(emb, 0.8, block=7)
    assert {(i, j) for i, j, _ in got} == want and len(want) >= 10
    assert all(abs(s - sims[i, j]) < 1e-5 for i, j, s in got)
    assert [s for *_, s in got] == sorted((s for *_, s in got), reverse=True)


def test_cli_exit_code(bank: Path) -> None:
    from typer.testing import CliRunner

    from factory.cli.main import app

    result = CliRunner().invoke(app, ["banks", "check", "--root", str(bank), "--no-embeddings"])
    assert result.exit_code == 1  # the tiny bank is far below the paper's sizes
    assert "SHORT" in result.output and "Schema errors: 0" in result.output
