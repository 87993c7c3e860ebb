"""AUC and recall/F1 at a target FPR, on hand-computed cases; where scores come from in `evaluate`."""

from __future__ import annotations

import json

import pytest

from training.eval.metrics import at_target_fpr, roc_auc, score_records
from training.evaluate import evaluate, render_tables, save_report


def approx(x: float) -> object:
    return pytest.approx(x, abs=1e-12)


def test_auc_counts_ordered_pairs():
    # FAIL scores 0.9, 0.4; PASS scores 0.6, 0.1: of the 4 (FAIL, PASS) pairs, 3 are ordered right
    assert roc_auc(["FAIL", "FAIL", "PASS", "PASS"], [0.9, 0.4, 0.6, 0.1]) == approx(0.75)


def test_auc_ties_count_one_half_and_extremes():
    assert roc_auc(["FAIL", "PASS"], [0.5, 0.5]) == approx(0.5)
    # one FAIL above both PASS, one tied with a PASS and above the other: (1 + 1 + 0.5 + 1) / 4
    assert roc_auc(["FAIL", "FAIL", "PASS", "PASS"], [0.8, 0.3, 0.3, 0.1]) == approx(0.875)
    assert roc_auc(["FAIL", "PASS", "PASS"], [0.9, 0.2, 0.1]) == approx(1.0)
    assert roc_auc(["FAIL", "PASS", "PASS"], [0.0, 0.2, 0.1]) == approx(0.0)
    assert roc_auc(["FAIL", "FAIL"], [0.1, 0.9]) is None  # one class: undefined


GOLDS = ["FAIL"] * 3 + ["PASS"] * 20
SCORES = [0.95, 0.7, 0.3] + [0.8, 0.6] + [0.05] * 18


def test_operating_point_at_5_percent_fpr():
    # 20 PASS rows: FPR <= 0.05 allows one false positive. Thresholds, highest first:
    # 0.95 (tp 1, fp 0), 0.8 (tp 1, fp 1), 0.7 (tp 2, fp 1) <- best, 0.6 (fp 2: FPR 0.10, too many)
    p = at_target_fpr(GOLDS, SCORES, 0.05)
    assert p is not None and p.threshold == 0.7
    assert (p.tp, p.fp, p.fn, p.tn) == (2, 1, 1, 19)
    assert p.recall == approx(2 / 3) and p.fpr == approx(0.05)
    assert p.precision == approx(2 / 3) and p.f1 == approx(4 / 6)


def test_operating_point_at_zero_fpr_and_when_nothing_fits():
    p = at_target_fpr(GOLDS, SCORES, 0.0)
    assert p is not None and p.threshold == 0.95 and p.recall == approx(1 / 3) and p.fpr == 0.0
    # the top-scored row is a PASS: at FPR 0 nothing can be flagged
    q = at_target_fpr(["PASS", "FAIL"], [0.9, 0.1], 0.0)
    assert q is not None and q.threshold == float("inf") and q.recall == 0.0 and q.f1 == 0.0
    # ties move together: a threshold at 0.5 flags both tied rows
    r = at_target_fpr(["FAIL", "PASS", "PASS"], [0.5, 0.5, 0.1], 0.4)
    assert r is not None and r.threshold == float("inf")
    r = at_target_fpr(["FAIL", "PASS", "PASS"], [0.5, 0.5, 0.1], 0.5)
    assert r is not None and r.threshold == 0.5 and r.recall == 1.0 and r.fpr == 0.5


def _rows() -> list[dict]:
    meta = [("Counting", "HIPAA"), ("Counting", "HIPAA"), ("Math", "Transactions"), ("Math", "Transactions")]
    labels = ["FAIL", "PASS", "FAIL", "PASS"]
    return [
        {
            "sample_id": f"s{i}",
            "policy": "1. Be kind.",
            "transcript": "User: hi\nAgent: hello",
            "label": label,
            "metadata": json.dumps({"failure_mode": fm, "business_impact": bi}),
        }
        for i, (label, (fm, bi)) in enumerate(zip(labels, meta, strict=True))
    ]


class _Logits:
    """A predictor with scores: P(FAIL) per row, looked up from the user message."""

    def __init__(self, scores: list[float]) -> None:
        self.scores = scores
        self.seen: list[dict] = []

    def predict(self, batch, mode):  # noqa: ANN001
        return ["<answer>\nPASS\n</answer>" for _ in batch]

    def fail_scores(self, batch, continuations):  # noqa: ANN001
        self.seen.append(continuations)
        return self.scores[: len(batch)]


def test_evaluate_uses_the_predictor_scores():
    predictor = _Logits([0.9, 0.2, 0.1, 0.4])
    report = evaluate(predictor, _rows(), mode="answer", target_fpr=0.5)
    assert report.score_source == "logits"
    assert predictor.seen[0] == {"PASS": "\nPASS", "FAIL": "\nFAIL"}  # the DynaGuard layout
    # FAIL 0.9, 0.1; PASS 0.2, 0.4: pairs (0.9>0.2) (0.9>0.4) (0.1<0.2) (0.1<0.4) -> 0.5
    assert report.overall.auc == approx(0.5)
    # FPR <= 0.5 allows one of two PASS rows, but flagging 0.4 (a PASS) catches no more FAIL rows
    # than flagging 0.9 alone: recall 1/2 at FPR 0 (the same recall, fewer false positives)
    assert report.overall.recall_at_fpr == approx(0.5) and report.overall.fpr_at_fpr == 0.0
    assert report.overall.threshold_at_fpr == 0.9
    assert report.overall.recall == 0.0  # the decoded verdicts say PASS everywhere
    counting = report.slices["failure_mode"]["Counting"]
    assert counting.auc == approx(1.0)  # FAIL 0.9 above PASS 0.2
    assert report.slices["business_impact"]["Transactions"].auc == approx(0.0)
    table = render_tables(report)
    assert "AUC" in table and "recall@FPR" in table and "answer-token logits" in table


class _Voter:
    """No scores; answers FAIL per (row, run) from a script, as a sampled provider model would."""

    def __init__(self, script: dict[int, list[str]]) -> None:
        self.script = script  # run -> verdict per row
        self.run = 0

    def set_sampling(self, temperature, top_k, run):  # noqa: ANN001
        self.run = run

    def predict(self, batch, mode):  # noqa: ANN001
        return [f"<answer>{v}</answer>" for v in self.script[self.run][: len(batch)]]


def test_provider_scores_are_the_share_of_runs_answering_fail(tmp_path):
    # rows: FAIL, PASS, FAIL, PASS; run 0 and run 1 verdicts
    script = {0: ["FAIL", "FAIL", "FAIL", "PASS"], 1: ["FAIL", "PASS", "PASS", "PASS"]}
    report = evaluate(_Voter(script), _rows(), mode="answer", runs=2, temperature=0.6)
    assert report.score_source == "run share"
    scores = [r["score"] for r in report.records if r["run"] == 0]
    assert scores == [1.0, 0.5, 0.5, 0.0]
    # FAIL {1.0, 0.5}, PASS {0.5, 0.0}: (1 + 1 + 0.5 + 1) / 4
    assert report.overall.auc == approx(0.875)
    # computed once per row, not once per run: 4 rows, 2 PASS; FPR <= 0.05 -> threshold 1.0
    assert report.overall.recall_at_fpr == approx(0.5) and report.overall.fpr_at_fpr == 0.0
    metrics = json.loads(save_report(report, tmp_path, plots=False)["metrics"].read_text())
    assert metrics["score_source"] == "run share" and metrics["overall"]["auc"] == approx(0.875)
    assert "share of sampled runs" in render_tables(report)


def test_no_scores_no_score_metrics():
    records = [{"gold": "FAIL", "pred": "FAIL"}, {"gold": "PASS", "pred": "FAIL"}]
    report = score_records(records)
    assert report.overall.auc is None and report.overall.target_fpr is None
    assert "AUC" not in render_tables(report)


def test_hf_predictor_scores_from_logits(tiny_model_dir):
    from training.eval.predictors import HFPredictor
    from training.format import build_prompt_messages

    predictor = HFPredictor(str(tiny_model_dir), batch_size=2, device="cpu")
    messages = [build_prompt_messages(r) for r in _rows()]
    scores = predictor.fail_scores(messages, {"FAIL": "\nFAIL", "PASS": "\nPASS"})
    assert len(scores) == 4 and all(0.0 < s < 1.0 for s in scores)
    # batching does not change a row's score
    alone = predictor.fail_scores(messages[:1], {"FAIL": "\nFAIL", "PASS": "\nPASS"})
    assert alone[0] == pytest.approx(scores[0], abs=1e-5)
    # the same continuation for both verdicts gives exactly one half
    same = predictor.fail_scores(messages[:1], {"FAIL": "\nFAIL", "PASS": "\nFAIL"})
    assert same[0] == pytest.approx(0.5)
