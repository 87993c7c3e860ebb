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
    DEFAULT_TARGET_FPR,
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
from training.format import (
    MODES,
    PREFILL,
    build_prompt_messages,
    get_template,
    label_continuations,
    normalize_label,
    parse_output,
)

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
    runs: int = 1,
    temperature: float | None = None,
    top_k: int | None = None,
    target_fpr: float = DEFAULT_TARGET_FPR,
) -> EvalReport:
    """Run ``predictor`` over ``rows`` (export rows) and score it; prompts in ``template``'s layout
    (training.format.TEMPLATES, default dynaguard).

    With ``runs`` > 1 or a ``temperature``, the predictor samples (``set_sampling``; the paper's
    protocol is temperature 0.6, top-k 300) and the rows are scored ``runs`` times: ``overall``
    and the slices pool every run's predictions, ``report.runs`` keeps each run's metrics and
    ``runs_summary()`` their mean and spread.

    Scores (P(FAIL)) for AUC and the metrics at ``target_fpr``: a predictor with
    ``fail_scores(messages_batch, continuations)`` (HFPredictor: from the answer-token logits)
    gives them; otherwise, with ``runs`` > 1, a row's score is the share of runs that answered FAIL
    (``report.score_source`` says which; a single run of a predictor without scores has none)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    rows = [dict(r) for r in rows]
    if not 0 <= target_fpr < 1:
        raise ValueError(f"target_fpr must be in [0, 1), got {target_fpr}")
    sampled = runs > 1 or temperature is not None
    logits = hasattr(predictor, "fail_scores")
    if not sampled:
        report = _one_run(predictor, rows, mode, batch_size, model_name, on_batch, template, None, target_fpr)
        report.score_source = "logits" if logits else ""
        return report
    if not hasattr(predictor, "set_sampling"):
        raise ValueError(f"{type(predictor).__name__} cannot sample; it has no set_sampling()")
    temp = 0.6 if temperature is None else temperature
    per_run = []
    for run in range(runs):
        predictor.set_sampling(temp, top_k, run)
        per_run.append(
            _one_run(predictor, rows, mode, batch_size, model_name, on_batch, template, run, target_fpr)
        )
    if not logits:  # a row's score: the share of runs that answered FAIL (unparseable is not FAIL)
        for i in range(len(rows)):
            share = sum(rep.records[i]["pred"] == "FAIL" for rep in per_run) / runs
            for rep in per_run:
                rep.records[i]["score"] = share
    records = [r for rep in per_run for r in rep.records]
    report = score_records(records, mode=mode, model=model_name, target_fpr=target_fpr)
    report.score_source = "logits" if logits else "run share" if runs > 1 else ""
    report.runs = [rep.overall for rep in per_run]
    report.sampling = {"temperature": temp, "top_k": top_k}
    return report


def _one_run(
    predictor: Predictor,
    rows: list[dict[str, Any]],
    mode: str,
    batch_size: int,
    model_name: str,
    on_batch: Callable[[int], None] | None,
    template: str | None,
    run: int | None,
    target_fpr: float = DEFAULT_TARGET_FPR,
) -> EvalReport:
    records: list[dict[str, Any]] = []
    scorer = getattr(predictor, "fail_scores", None)
    continuations = label_continuations(get_template(template))
    for start in range(0, len(rows), max(1, batch_size)):
        batch = rows[start : start + batch_size]
        messages = [build_prompt_messages(r, template=template) for r in batch]
        outputs = predictor.predict(messages, mode)
        if len(outputs) != len(batch):
            raise ValueError(f"predictor returned {len(outputs)} outputs for {len(batch)} inputs")
        # scores are deterministic: computed with the first run only
        scores = scorer(messages, continuations) if scorer is not None and run in (None, 0) else None
        if scores is not None and len(scores) != len(batch):
            raise ValueError(f"predictor returned {len(scores)} scores for {len(batch)} inputs")
        for k, (row, text) in enumerate(zip(batch, outputs, strict=True)):
            parsed = parse_output(text, PREFILL[mode])
            record = {
                "sample_id": row.get("sample_id"),
                "gold": normalize_label(row["label"]),
                "pred": parsed.label,
                "well_formed": parsed.well_formed,
                "output": text,
            }
            if scores is not None:
                record["score"] = float(scores[k])
            if run is not None:
                record["run"] = run
            for dimension, key_fn in SLICES.items():
                record[f"slice_{dimension}"] = key_fn(row)
            records.append(record)
        if on_batch is not None:
            on_batch(len(batch))
    return score_records(records, mode=mode, model=model_name, target_fpr=target_fpr)
