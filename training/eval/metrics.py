"""Metrics and slices for scoring a guardian on an export split.

Metrics treat **FAIL (a rule was broken) as the positive class**:

* recall = TP / (TP + FN) - share of real violations caught (the number that matters most for
  a guardian: a missed violation is the costly error);
* precision = TP / (TP + FP); F1 = 2TP / (2TP + FP + FN);
* false-positive rate = FP / (FP + TN) - compliant dialogues wrongly flagged;
* accuracy = (TP + TN) / n; unparseable rate = outputs with no readable verdict / n.

**Unparseable outputs count as wrong.** An unreadable output is scored as the opposite of the
gold label: on a gold FAIL it is a false negative (a missed violation), on a gold PASS a false
positive. So it lowers accuracy, recall or precision/FPR exactly as a wrong verdict would, and
F1 includes it through FN or FP; the unparseable rate is also reported on its own.

A ratio whose denominator is zero (e.g. recall on a slice with no FAIL rows) is ``None`` and
shown as ``-``.

Everything is also computed per slice: policy size (number of rules, binned), dialogue length
(number of turns, binned), industry, dynamic and near-miss.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from training.format import normalize_label


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


@dataclass
class Metrics:
    n: int = 0
    tp: int = 0
    fp: int = 0
    tn: int = 0
    fn: int = 0
    unparseable: int = 0
    gold_fail: int = 0
    f1: float | None = None
    recall: float | None = None
    precision: float | None = None
    false_positive_rate: float | None = None
    accuracy: float | None = None
    unparseable_rate: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def compute_metrics(golds: Sequence[str], preds: Sequence[str | None]) -> Metrics:
    """Confusion counts and rates with FAIL positive; ``None`` predictions are unparseable."""
    if len(golds) != len(preds):
        raise ValueError(f"{len(golds)} gold labels but {len(preds)} predictions")
    m = Metrics(n=len(golds))
    for gold_raw, pred_raw in zip(golds, preds, strict=True):
        gold = normalize_label(gold_raw)
        if gold is None:
            raise ValueError(f"gold label must be PASS or FAIL, got {gold_raw!r}")
        pred = normalize_label(pred_raw)
        if pred is None:
            m.unparseable += 1
            pred = "PASS" if gold == "FAIL" else "FAIL"  # scored as wrong
        if gold == "FAIL":
            m.gold_fail += 1
            if pred == "FAIL":
                m.tp += 1
            else:
                m.fn += 1
        elif pred == "FAIL":
            m.fp += 1
        else:
            m.tn += 1
    m.recall = _ratio(m.tp, m.tp + m.fn)
    m.precision = _ratio(m.tp, m.tp + m.fp)
    m.f1 = _ratio(2 * m.tp, 2 * m.tp + m.fp + m.fn)
    m.false_positive_rate = _ratio(m.fp, m.fp + m.tn)
    m.accuracy = _ratio(m.tp + m.tn, m.n)
    m.unparseable_rate = _ratio(m.unparseable, m.n)
    return m


RULE_BINS: list[tuple[int, int | None]] = [(1, 1), (2, 3), (4, 6), (7, 10), (11, 20), (21, 50), (51, None)]
TURN_BINS: list[tuple[int, int | None]] = [(1, 1), (2, 2), (3, 4), (5, 8), (9, 16), (17, None)]


def bin_label(value: int | None, bins: list[tuple[int, int | None]]) -> str:
    if value is None:
        return "unknown"
    for lo, hi in bins:
        if value >= lo and (hi is None or value <= hi):
            if hi is None:
                return f"{lo}+"
            return str(lo) if lo == hi else f"{lo}-{hi}"
    return f"<{bins[0][0]}"


def _bin_order(bins: list[tuple[int, int | None]]) -> list[str]:
    return [bin_label(lo, bins) for lo, _ in bins]


def count_rules(row: dict[str, Any]) -> int | None:
    if row.get("num_rules") is not None:
        return int(row["num_rules"])
    if row.get("rules"):
        return len(row["rules"])
    policy = row.get("policy") or ""
    lines = [ln for ln in policy.splitlines() if ln.strip()]
    return len(lines) or None


def count_turns(row: dict[str, Any]) -> int | None:
    if row.get("num_turns") is not None:
        return int(row["num_turns"])
    if row.get("turns"):
        return len(row["turns"])
    transcript = row.get("transcript") or ""
    n = sum(1 for ln in transcript.splitlines() if ln.startswith(("User:", "Agent:")))
    return n or None


SLICES: dict[str, Callable[[dict[str, Any]], str]] = {
    "rules": lambda r: bin_label(count_rules(r), RULE_BINS),
    "turns": lambda r: bin_label(count_turns(r), TURN_BINS),
    "industry": lambda r: str(r.get("industry") or "unknown"),
    "dynamic": lambda r: str(r.get("dynamic") or "unknown"),
    "near_miss": lambda r: "unknown" if r.get("near_miss") is None else str(bool(r["near_miss"])).lower(),
}
SLICE_ORDER = {"rules": _bin_order(RULE_BINS), "turns": _bin_order(TURN_BINS)}


@dataclass
class EvalReport:
    mode: str
    model: str
    overall: Metrics
    slices: dict[str, dict[str, Metrics]] = field(default_factory=dict)
    records: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "model": self.model,
            "overall": self.overall.as_dict(),
            "slices": {k: {b: m.as_dict() for b, m in v.items()} for k, v in self.slices.items()},
        }


def _sorted_keys(dimension: str, keys: Iterable[str]) -> list[str]:
    order = SLICE_ORDER.get(dimension)
    keys = list(keys)
    if order:
        return sorted(keys, key=lambda k: (order.index(k) if k in order else len(order), k))
    return sorted(keys)


def score_records(records: list[dict[str, Any]], mode: str = "answer", model: str = "") -> EvalReport:
    """Metrics overall and per slice from records with ``gold``, ``pred`` and slice keys."""
    overall = compute_metrics([r["gold"] for r in records], [r["pred"] for r in records])
    slices: dict[str, dict[str, Metrics]] = {}
    for dimension in SLICES:
        groups: dict[str, list[dict[str, Any]]] = {}
        for record in records:
            key = record.get(f"slice_{dimension}")
            if key is None:
                continue
            groups.setdefault(key, []).append(record)
        if not groups or set(groups) == {"unknown"}:
            continue
        slices[dimension] = {
            key: compute_metrics([r["gold"] for r in groups[key]], [r["pred"] for r in groups[key]])
            for key in _sorted_keys(dimension, groups)
        }
    return EvalReport(mode=mode, model=model, overall=overall, slices=slices, records=records)
