"""Evaluate any guardian (a :class:`Predictor`) on an export split.

Orchestration only: :func:`evaluate` runs a predictor over export rows, parses its outputs and
scores them. The pieces live in :mod:`training.eval`:

* :mod:`training.eval.predictors` - the :class:`Predictor` protocol, :class:`HFPredictor` and the
  ``--model SCHEME:NAME`` registry (:func:`register_predictor`, :func:`make_predictor`);
* :mod:`training.eval.metrics` - F1/recall/precision/FPR (FAIL = positive), accuracy, unparseable
  rate (unparseable outputs count as wrong) and the slices by rules/turns/industry/dynamic/near-miss;
* :mod:`training.eval.report` - rich tables, ``metrics.json``, ``predictions.jsonl`` and PNG plots.

Every public name of those modules is re-exported here, so ``from training.evaluate import ...``
keeps working.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from training.eval.metrics import (
    RULE_BINS,
    SLICE_ORDER,
    SLICES,
    TURN_BINS,
    EvalReport,
    Metrics,
    bin_label,
    compute_metrics,
    count_rules,
    count_turns,
    score_records,
)
from training.eval.predictors import (
    DEFAULT_MAX_NEW_TOKENS,
    PREDICTOR_FACTORIES,
    HFPredictor,
    Predictor,
    make_predictor,
    register_predictor,
)
from training.eval.report import HEADERS, plot_report, render_tables, save_report
from training.format import MODES, PREFILL, build_prompt_messages, normalize_label, parse_output

__all__ = [
    "DEFAULT_MAX_NEW_TOKENS",
    "HEADERS",
    "PREDICTOR_FACTORIES",
    "RULE_BINS",
    "SLICES",
    "SLICE_ORDER",
    "TURN_BINS",
    "EvalReport",
    "HFPredictor",
    "Metrics",
    "Predictor",
    "bin_label",
    "compute_metrics",
    "count_rules",
    "count_turns",
    "evaluate",
    "make_predictor",
    "plot_report",
    "register_predictor",
    "render_tables",
    "save_report",
    "score_records",
]


def evaluate(
    predictor: Predictor,
    rows: Iterable[dict[str, Any]],
    mode: str = "answer",
    batch_size: int = 16,
    model_name: str = "",
    on_batch: Callable[[int], None] | None = None,
    template: str | None = None,
) -> EvalReport:
    """Run ``predictor`` over ``rows`` (export rows) and score it; prompts in ``template``'s layout
    (training.format.TEMPLATES, default dynaguard)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    rows = [dict(r) for r in rows]
    records: list[dict[str, Any]] = []
    for start in range(0, len(rows), max(1, batch_size)):
        batch = rows[start : start + batch_size]
        outputs = predictor.predict([build_prompt_messages(r, template=template) for r in batch], mode)
        if len(outputs) != len(batch):
            raise ValueError(f"predictor returned {len(outputs)} outputs for {len(batch)} inputs")
        for row, text in zip(batch, outputs, strict=True):
            parsed = parse_output(text, PREFILL[mode])
            record = {
                "sample_id": row.get("sample_id"),
                "gold": normalize_label(row["label"]),
                "pred": parsed.label,
                "well_formed": parsed.well_formed,
                "output": text,
            }
            for dimension, key_fn in SLICES.items():
                record[f"slice_{dimension}"] = key_fn(row)
            records.append(record)
        if on_batch is not None:
            on_batch(len(batch))
    return score_records(records, mode=mode, model=model_name)
