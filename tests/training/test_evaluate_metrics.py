"""Evaluator numbers on constructed cases, checked against hand-computed values."""

from __future__ import annotations

import json

import pytest

from training.evaluate import (
    RULE_BINS,
    TURN_BINS,
    Predictor,
    bin_label,
    compute_metrics,
    evaluate,
    render_tables,
    save_report,
)

GOLDS = ["FAIL", "FAIL", "FAIL", "PASS", "PASS", "PASS", "PASS", "PASS"]  # 3 FAIL, 5 PASS


def approx(x):
    return pytest.approx(x, abs=1e-12)


def test_all_correct():
    m = compute_metrics(GOLDS, GOLDS)
    assert (m.tp, m.fp, m.tn, m.fn, m.unparseable) == (3, 0, 5, 0, 0)
    assert (m.f1, m.recall, m.precision, m.false_positive_rate, m.accuracy, m.unparseable_rate) == (
        1.0,
        1.0,
        1.0,
        0.0,
        1.0,
        0.0,
    )


def test_all_fail_predictions():
    m = compute_metrics(GOLDS, ["FAIL"] * 8)
    assert (m.tp, m.fp, m.tn, m.fn) == (3, 5, 0, 0)
    assert m.recall == 1.0
    assert m.precision == approx(3 / 8)
    assert m.f1 == approx(2 * 3 / (2 * 3 + 5 + 0))  # 6/11
    assert m.false_positive_rate == 1.0
    assert m.accuracy == approx(3 / 8)


def test_all_pass_predictions_have_zero_recall_and_undefined_precision():
    m = compute_metrics(GOLDS, ["PASS"] * 8)
    assert (m.tp, m.fp, m.tn, m.fn) == (0, 0, 5, 3)
    assert m.recall == 0.0
    assert m.precision is None
    assert m.f1 == 0.0
    assert m.false_positive_rate == 0.0
    assert m.accuracy == approx(5 / 8)


def test_unparseable_outputs_count_as_wrong():
    # unparseable on a gold FAIL -> false negative; on a gold PASS -> false positive
    m = compute_metrics(["FAIL", "FAIL", "PASS", "PASS"], [None, "FAIL", None, "PASS"])
    assert (m.tp, m.fp, m.tn, m.fn, m.unparseable) == (1, 1, 1, 1, 2)
    assert (m.recall, m.precision, m.f1, m.false_positive_rate, m.accuracy, m.unparseable_rate) == (
        0.5,
        0.5,
        0.5,
        0.5,
        0.5,
        0.5,
    )
    all_bad = compute_metrics(GOLDS, [None] * 8)
    assert all_bad.accuracy == 0.0 and all_bad.unparseable_rate == 1.0 and all_bad.f1 == 0.0


def test_mixed_case_by_hand():
    golds = ["FAIL"] * 4 + ["PASS"] * 6
    preds = ["FAIL", "FAIL", "FAIL", "PASS", "PASS", "PASS", "PASS", "PASS", "FAIL", None]
    m = compute_metrics(golds, preds)
    assert (m.tp, m.fn, m.tn, m.fp, m.unparseable, m.gold_fail) == (3, 1, 4, 2, 1, 4)
    assert m.recall == approx(0.75)
    assert m.precision == approx(0.6)
    assert m.f1 == approx(6 / 9)
    assert m.false_positive_rate == approx(2 / 6)
    assert m.accuracy == approx(0.7)
    assert m.unparseable_rate == approx(0.1)


def test_undefined_ratios_and_bad_input():
    m = compute_metrics(["PASS", "PASS"], ["PASS", "PASS"])
    assert m.recall is None and m.precision is None and m.f1 is None and m.accuracy == 1.0
    with pytest.raises(ValueError):
        compute_metrics(["PASS"], [])
    with pytest.raises(ValueError):
        compute_metrics(["MAYBE"], ["PASS"])


def test_bins():
    assert [bin_label(v, RULE_BINS) for v in (1, 2, 3, 4, 10, 11, 60)] == [
        "1",
        "2-3",
        "2-3",
        "4-6",
        "7-10",
        "11-20",
        "51+",
    ]
    assert [bin_label(v, TURN_BINS) for v in (1, 2, 4, 8, 27, None)] == [
        "1",
        "2",
        "3-4",
        "5-8",
        "17+",
        "unknown",
    ]


class ScriptedPredictor:
    """Returns fixed outputs keyed by sample id; records the modes it was asked for."""

    def __init__(self, outputs: dict[str, str]):
        self.outputs = outputs
        self.modes: list[str] = []
        self.seen: list[str] = []

    def predict(self, messages_batch, mode):
        self.modes.append(mode)
        out = []
        for messages in messages_batch:
            assert messages[0]["role"] == "system" and messages[1]["role"] == "user"
            sid = messages[1]["content"].split("ID:")[1].split()[0]
            self.seen.append(sid)
            out.append(self.outputs[sid])
        return out


def _rows():
    rows = []
    spec = [  # id, gold, num_rules, num_turns, industry, dynamic
        ("a", "FAIL", 1, 2, "bank", "trick_break"),
        ("b", "FAIL", 5, 2, "bank", "normal_break"),
        ("c", "PASS", 1, 6, "shop", "normal_comply"),
        ("d", "PASS", 12, 6, "shop", "trick_resist"),
        ("e", "FAIL", 12, 1, "shop", "trick_break"),
    ]
    for sid, gold, nr, nt, ind, dyn in spec:
        rows.append(
            {
                "sample_id": sid,
                "label": gold,
                "policy": "1. rule",
                "transcript": f"User: ID:{sid} hi\nAgent: ok",
                "num_rules": nr,
                "num_turns": nt,
                "industry": ind,
                "dynamic": dyn,
                "near_miss": False,
            }
        )
    return rows


def test_evaluate_with_any_predictor_and_slices(tmp_path):
    outputs = {
        "a": "FAIL</answer>\n<explanation>rule 1</explanation>",  # prefill omitted: correct
        "b": "<answer>PASS</answer>",  # missed violation
        "c": "<answer>PASS</answer>",  # correct
        "d": "I am not sure",  # unparseable on PASS -> FP
        "e": "<answer> fail </answer>",  # correct
    }
    predictor = ScriptedPredictor(outputs)
    assert isinstance(predictor, Predictor)
    report = evaluate(predictor, _rows(), mode="answer", batch_size=2, model_name="scripted")
    assert predictor.modes == ["answer"] * 3
    assert predictor.seen == ["a", "b", "c", "d", "e"]
    o = report.overall
    assert (o.tp, o.fn, o.tn, o.fp, o.unparseable) == (2, 1, 1, 1, 1)
    assert o.recall == approx(2 / 3) and o.precision == approx(2 / 3) and o.accuracy == approx(3 / 5)
    rules = report.slices["rules"]
    assert list(rules) == ["1", "4-6", "11-20"]  # ordered by bin, not alphabetically
    assert (rules["1"].n, rules["1"].accuracy) == (2, 1.0)
    assert rules["4-6"].recall == 0.0
    assert rules["11-20"].accuracy == 0.5
    assert report.slices["industry"]["bank"].recall == 0.5
    assert report.slices["dynamic"]["trick_break"].recall == 1.0
    assert list(report.slices["turns"]) == ["1", "2", "5-8"]

    table = render_tables(report)
    assert "overall" in table and "rules=11-20" in table and "recall" in table
    paths = save_report(report, tmp_path / "eval")
    metrics = json.loads(paths["metrics"].read_text())
    assert metrics["overall"]["fn"] == 1 and metrics["slices"]["industry"]["shop"]["n"] == 3
    lines = paths["predictions"].read_text().splitlines()
    assert len(lines) == 5 and json.loads(lines[3])["pred"] is None
    for name in ("accuracy_vs_rules_turns", "metrics_by_industry", "metrics_by_dynamic"):
        assert paths[name].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_rejects_bad_mode_and_short_output():
    with pytest.raises(ValueError):
        evaluate(ScriptedPredictor({}), _rows(), mode="fast")

    class Short:
        def predict(self, messages_batch, mode):
            return []

    with pytest.raises(ValueError):
        evaluate(Short(), _rows(), mode="think")


def test_metadata_slices_failure_mode_business_impact_tokens_hops():
    from training.eval.metrics import SLICES, score_records

    def rec(label, pred, meta):
        row = {"metadata": json.dumps(meta) if meta is not None else None}
        return {"gold": label, "pred": pred, **{f"slice_{d}": fn(row) for d, fn in SLICES.items()}}

    base = {"num_hops": -1, "failure_mode": "", "business_impact": ""}
    records = [
        rec(
            "FAIL",
            "FAIL",
            {**base, "num_tokens": 120, "failure_mode": "Counting", "business_impact": "Fraud"},
        ),
        rec("PASS", "FAIL", {**base, "num_tokens": 900, "failure_mode": "Counting", "num_hops": 2}),
        rec("FAIL", "PASS", {**base, "num_tokens": 40000}),
        rec("PASS", "PASS", None),
    ]
    report = score_records(records)
    assert list(report.slices["tokens"]) == ["<=500", "<=1000", "<=32000", "unknown"]
    assert report.slices["failure_mode"]["Counting"].n == 2
    assert report.slices["failure_mode"]["unknown"].n == 2
    assert set(report.slices["business_impact"]) == {"Fraud", "unknown"}
    assert set(report.slices["hops"]) == {"2", "unknown"}
    # a dimension with nothing known is left out
    only_unknown = score_records([rec("PASS", "PASS", base)])
    assert not {"failure_mode", "business_impact", "hops"} & set(only_unknown.slices)


class _SamplingPredictor(ScriptedPredictor):
    """Answers FAIL on every row in run 0 and PASS in run 1: runs differ, as sampled runs do."""

    def __init__(self):
        super().__init__({})
        self.calls: list[tuple] = []

    def set_sampling(self, temperature, top_k, run):
        self.calls.append((temperature, top_k, run))
        self.run = run

    def predict(self, messages_batch, mode):
        return ["<answer>FAIL</answer>" if self.run == 0 else "<answer>PASS</answer>" for _ in messages_batch]


def test_evaluate_runs_pool_predictions_and_report_mean_and_spread(tmp_path):
    predictor = _SamplingPredictor()
    rows = _rows()
    report = evaluate(predictor, rows, mode="answer", runs=2, temperature=0.6, top_k=300)
    assert predictor.calls == [(0.6, 300, 0), (0.6, 300, 1)]
    assert report.overall.n == 2 * len(rows) and [m.n for m in report.runs] == [len(rows)] * 2
    gold_fail = sum(r["label"] == "FAIL" for r in rows)
    assert report.runs[0].recall == 1.0 and report.runs[1].recall == 0.0
    summary = report.runs_summary()
    assert (
        summary["k"] == 2 and summary["recall_mean"] == approx(0.5) and summary["recall_std"] == approx(0.5)
    )
    assert summary["temperature"] == 0.6 and summary["top_k"] == 300 and gold_fail
    assert {r["run"] for r in report.records} == {0, 1}
    metrics = json.loads(save_report(report, tmp_path / "eval", plots=False)["metrics"].read_text())
    assert metrics["runs"]["k"] == 2 and len(metrics["runs"]["per_run"]) == 2
    assert "2 runs, temperature 0.6, top-k 300" in render_tables(report)
    with pytest.raises(ValueError, match="cannot sample"):
        evaluate(ScriptedPredictor({}), rows, runs=2)
