"""Evaluate any guardian (a :class:`Predictor`) on an export split.

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

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from training.format import (
    GUARDIAN_CHAT_TEMPLATE,
    IM_START,
    MODES,
    PREFILL,
    build_prompt_messages,
    normalize_label,
    parse_output,
    render_prompt,
)

# --------------------------------------------------------------------------------------------
# Predictors
# --------------------------------------------------------------------------------------------


@runtime_checkable
class Predictor(Protocol):
    """Anything that can act as a guardian.

    ``predict`` receives a batch of conversations (each ``[system, user]`` messages as built by
    :func:`training.format.build_prompt_messages`) and the mode (``"think"`` or ``"answer"``)
    and returns one assistant text per conversation. The text may start with the mode's tag or
    omit it (a model that was prefilled with ``<answer>`` usually returns only what follows);
    the evaluator parses both. Predictors that cannot prefill can add the instruction from
    :func:`training.format.mode_messages_for_api`.
    """

    def predict(self, messages_batch: list[list[dict[str, str]]], mode: str) -> list[str]: ...


DEFAULT_MAX_NEW_TOKENS = {"think": 1024, "answer": 160}


class HFPredictor:
    """Local transformers model: greedy decoding, batched, prompt prefilled with the mode tag."""

    def __init__(
        self,
        model_path: str,
        batch_size: int = 8,
        max_new_tokens: int | dict[str, int] | None = None,
        device: str | None = None,
        torch_threads: int | None = None,
        dtype: str = "auto",
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if torch_threads:
            torch.set_num_threads(torch_threads)
        self.model_path = model_path
        self.batch_size = batch_size
        if isinstance(max_new_tokens, int):
            self.max_new_tokens = {m: max_new_tokens for m in MODES}
        else:
            self.max_new_tokens = {**DEFAULT_MAX_NEW_TOKENS, **(max_new_tokens or {})}
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        if self.tokenizer.chat_template is None and IM_START in self.tokenizer.get_vocab():
            self.tokenizer.chat_template = GUARDIAN_CHAT_TEMPLATE
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        torch_dtype = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16}.get(
            dtype, "auto"
        )
        if device == "cpu" and dtype == "auto":
            torch_dtype = torch.float32
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch_dtype).to(device)
        self.model.eval()

    def render(self, messages: list[dict[str, str]], mode: str) -> str:
        return render_prompt(self.tokenizer, messages, mode)

    def predict(self, messages_batch: list[list[dict[str, str]]], mode: str) -> list[str]:
        from training.generation import generate_continuations

        prompts = [self.render(m, mode) for m in messages_batch]
        outputs = generate_continuations(
            self.model,
            self.tokenizer,
            prompts,
            max_new_tokens=self.max_new_tokens[mode],
            batch_size=self.batch_size,
        )
        return [PREFILL[mode] + texts[0] for texts in outputs]


#: Factories for ``--model SCHEME:NAME`` (e.g. an LLM-API backed predictor registered by the
#: project's LLM layer). A model argument without a registered scheme is a local directory or
#: Hub name loaded with :class:`HFPredictor`.
PREDICTOR_FACTORIES: dict[str, Callable[..., Predictor]] = {}


def register_predictor(scheme: str, factory: Callable[..., Predictor]) -> None:
    """Register ``factory(name: str, **options) -> Predictor`` for ``--model scheme:name``."""
    PREDICTOR_FACTORIES[scheme] = factory


def make_predictor(model: str, **options: Any) -> Predictor:
    scheme, sep, rest = model.partition(":")
    if sep and scheme in PREDICTOR_FACTORIES:
        return PREDICTOR_FACTORIES[scheme](rest, **options)
    return HFPredictor(model, **options)


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------


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


def evaluate(
    predictor: Predictor,
    rows: Iterable[dict[str, Any]],
    mode: str = "answer",
    batch_size: int = 16,
    model_name: str = "",
    on_batch: Callable[[int], None] | None = None,
) -> EvalReport:
    """Run ``predictor`` over ``rows`` (export rows) and score it."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    rows = [dict(r) for r in rows]
    records: list[dict[str, Any]] = []
    for start in range(0, len(rows), max(1, batch_size)):
        batch = rows[start : start + batch_size]
        outputs = predictor.predict([build_prompt_messages(r) for r in batch], mode)
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


# --------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _metric_row(name: str, m: Metrics) -> list[str]:
    return [
        name,
        str(m.n),
        str(m.gold_fail),
        _fmt(m.f1),
        _fmt(m.recall),
        _fmt(m.precision),
        _fmt(m.false_positive_rate),
        _fmt(m.accuracy),
        _fmt(m.unparseable_rate),
    ]


HEADERS = ["slice", "n", "FAIL", "F1", "recall", "precision", "FPR", "accuracy", "unparseable"]


def render_tables(report: EvalReport, width: int = 120) -> str:
    """Plain-text tables (rich) of the overall and per-slice metrics."""
    from rich.console import Console
    from rich.table import Table

    console = Console(record=True, width=width, force_terminal=False, color_system=None)
    title = f"Guardian evaluation - model {report.model or '?'} - mode {report.mode} (FAIL = positive)"
    table = Table(title=title)
    for h in HEADERS:
        table.add_column(h, justify="left" if h == "slice" else "right")
    table.add_row(*_metric_row("overall", report.overall))
    for dimension, groups in report.slices.items():
        table.add_section()
        for key, m in groups.items():
            table.add_row(*_metric_row(f"{dimension}={key}", m))
    console.print(table)
    return console.export_text()


def plot_report(report: EvalReport, out_dir: str | Path) -> list[Path]:
    """PNG plots: accuracy/recall vs number of rules and turns (cf. DynaGuard Fig. 3), and
    F1/recall/FPR per industry and per dynamic."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    panels = [
        (d, label)
        for d, label in (("rules", "Rules in policy"), ("turns", "Turns in dialogue"))
        if d in report.slices
    ]
    if panels:
        fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
        for ax, (dimension, xlabel) in zip(axes[0], panels, strict=True):
            groups = report.slices[dimension]
            keys = list(groups)
            xs = range(len(keys))
            for metric, style in (("accuracy", "o-"), ("recall", "s--")):
                ys = [getattr(groups[k], metric) for k in keys]
                ax.plot(
                    [x for x, y in zip(xs, ys, strict=True) if y is not None],
                    [y for y in ys if y is not None],
                    style,
                    label=metric,
                )
            ax.set_xticks(list(xs), [f"{k}\n(n={groups[k].n})" for k in keys])
            ax.set_ylim(0.0, 1.05)
            ax.set_xlabel(xlabel)
            ax.set_ylabel("score")
            ax.grid(alpha=0.3)
            ax.legend(loc="best")
        fig.suptitle(f"{report.model or 'model'} ({report.mode} mode)")
        fig.tight_layout()
        path = out / "accuracy_vs_rules_turns.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)

    for dimension in ("industry", "dynamic"):
        if dimension not in report.slices:
            continue
        groups = report.slices[dimension]
        keys = list(groups)
        metrics = ("f1", "recall", "false_positive_rate", "accuracy")
        width = 0.8 / len(metrics)
        fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(keys) + 2), 4))
        for i, metric in enumerate(metrics):
            ys = [getattr(groups[k], metric) for k in keys]
            ax.bar(
                [x + (i - (len(metrics) - 1) / 2) * width for x in range(len(keys))],
                [0.0 if y is None else y for y in ys],
                width=width,
                label=metric,
            )
        ax.set_xticks(range(len(keys)), [f"{k}\n(n={groups[k].n})" for k in keys], fontsize=8)
        ax.set_ylim(0.0, 1.05)
        ax.set_title(f"Metrics by {dimension} - {report.model or 'model'} ({report.mode} mode)")
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        path = out / f"metrics_by_{dimension}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)
    return written


def save_report(report: EvalReport, out_dir: str | Path, plots: bool = True) -> dict[str, Path]:
    """Write metrics.json, predictions.jsonl, report.txt and the plots into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "metrics": out / "metrics.json",
        "predictions": out / "predictions.jsonl",
        "table": out / "report.txt",
    }
    paths["metrics"].write_text(json.dumps(report.as_dict(), indent=2))
    with paths["predictions"].open("w") as fh:
        for record in report.records:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    paths["table"].write_text(render_tables(report))
    if plots:
        for p in plot_report(report, out):
            paths[p.stem] = p
    return paths
