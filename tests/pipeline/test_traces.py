"""The trace stage in a real build: paid calls of its own, traces distilled (not concatenated
judgements), verdicts that match the label, varied PASS explanations, and native reasoning."""

from __future__ import annotations

from pathlib import Path

from tests.pipeline.conftest import (
    build_cmd,
    check_ok,
    cli_env,
    fake_server,
    query,
    run_factory,
    write_recipe,
)

N = 30
SMALL = {
    "policy": {"rules_law": {"mu": 0.5, "sigma": 0.5, "max": 4}},
    "dialogue": {"turns_law": {"mu": 0.0, "sigma": 0.5, "max": 2}},
    "oversample_cap": 10,
}


def _build(tmp_path: Path, name: str, server_options: dict, **recipe: object) -> Path:
    path = write_recipe(tmp_path / f"{name}.yaml", name=name, **SMALL, **recipe)
    db = tmp_path / f"{name}.duckdb"
    with fake_server(**server_options) as server:
        check_ok(run_factory(build_cmd(db, path, N), cli_env(server.url, tmp=tmp_path), tmp_path))
    return db


def test_traces_are_distilled_and_verified(tmp_path: Path) -> None:
    db = _build(tmp_path, "traced", {}, traces={"think_fraction": 0.5})
    # one paid trace call (plus re-asks) per slot that reached the stage, in the ledger like any other
    assert query(db, "SELECT count(*) FROM llm_calls WHERE stage = 'trace'")[0][0] >= N
    rows = query(
        db,
        "SELECT s.slot, s.label, s.trace_mode, s.reasoning, s.explanation, t.verdict, t.source, "
        "t.model, t.call_key FROM samples s JOIN traces t USING (slot)",
    )
    assert len(rows) == N
    for slot, label, mode, reasoning, explanation, verdict, source, model, key in rows:
        assert verdict == label, slot  # a trace that contradicts its label never reaches samples
        assert source == "llm" and model == "openai:fake-model" and key
        assert explanation
        assert (mode == "think") == bool(reasoning)
        discussions = [r[0] for r in query(db, "SELECT discussion FROM rule_labels WHERE slot = ?", [slot])]
        assert not any(d and d in reasoning for d in discussions), "reasoning is not the labeller's text"
    modes = {r[2] for r in rows}
    assert modes == {"think", "answer"}
    passes = [r[4] for r in rows if r[1] == "PASS"]
    assert len(set(passes)) == len(passes), "PASS explanations are written per sample, not a fixed sentence"
    # mismatching traces were re-asked, and the ones that still disagreed dropped their slot
    dropped = query(db, "SELECT count(*) FROM slot_status WHERE reason LIKE 'trace_%'")[0][0]
    logged = query(db, "SELECT count(*) FROM filter_log WHERE stage = 'trace' AND dropped")[0][0]
    assert dropped == logged


def test_native_reasoning_is_kept_as_the_trace(tmp_path: Path) -> None:
    db = _build(
        tmp_path, "native", {"reasoning": True}, traces={"think_fraction": 1.0, "native_reasoning": True}
    )
    rows = query(
        db, "SELECT s.reasoning, t.source, t.verdict, s.label FROM samples s JOIN traces t USING (slot)"
    )
    assert len(rows) == N
    for reasoning, source, verdict, label in rows:
        assert source == "native" and reasoning and verdict == label
    # the reasoning is the provider's own field, stored with the call
    stored = {
        r[0] for r in query(db, "SELECT reasoning FROM llm_calls WHERE stage = 'trace' AND reasoning <> ''")
    }
    assert {r[0] for r in rows} <= stored
