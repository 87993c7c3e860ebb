"""Reporting: rich tables, the JSON metrics report, predictions.jsonl and PNG plots
(:func:`save_report` writes them all)."""

from __future__ import annotations

import json
from pathlib import Path

from training.eval.metrics import EvalReport, Metrics


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _metric_row(name: str, m: Metrics, scored: bool = False) -> list[str]:
    row = [
        name,
        str(m.n),
        str(m.gold_fail),
        _fmt(m.recall),
        _fmt(m.false_positive_rate),
        _fmt(m.f1),
        _fmt(m.precision),
        _fmt(m.accuracy),
        _fmt(m.unparseable_rate),
    ]
    if scored:
        row += [_fmt(m.auc), _fmt(m.recall_at_fpr), _fmt(m.fpr_at_fpr), _fmt(m.f1_at_fpr)]
    return row


# recall first: a missed violation is the costly error of a guardian
HEADERS = ["slice", "n", "FAIL", "recall", "FPR", "F1", "precision", "accuracy", "unparseable"]
SCORE_HEADERS = ["AUC", "recall@FPR", "FPR@", "F1@FPR"]

SCORE_SOURCES = {
    "logits": "scores: P(FAIL) from the answer-token logits",
    "run share": "scores: the share of sampled runs that answered FAIL (a coarse score: K runs give K+1 levels)",
}


def render_tables(report: EvalReport, width: int = 120) -> str:
    """Plain-text tables (rich) of the overall and per-slice metrics."""
    from rich.console import Console
    from rich.table import Table

    console = Console(record=True, width=width, force_terminal=False, color_system=None)
    title = f"Guardian evaluation - model {report.model or '?'} - mode {report.mode} (FAIL = positive)"
    table = Table(title=title)
    scored = report.overall.target_fpr is not None
    for h in HEADERS + (SCORE_HEADERS if scored else []):
        table.add_column(h, justify="left" if h == "slice" else "right")
    table.add_row(*_metric_row("overall", report.overall, scored))
    for dimension, groups in report.slices.items():
        table.add_section()
        for key, m in groups.items():
            table.add_row(*_metric_row(f"{dimension}={key}", m, scored))
    console.print(table)
    if scored:
        console.print(
            f"{SCORE_SOURCES.get(report.score_source, 'scores')}; AUC and the operating point with the highest "
            f"recall at FPR <= {report.overall.target_fpr:g} (recall@FPR, achieved FPR@, F1@FPR)"
        )
    if report.runs:
        summary = report.runs_summary()
        parts = [
            f"{summary['k']} runs, temperature {summary.get('temperature')}, top-k {summary.get('top_k')}"
        ]
        for name, label in (("f1", "F1"), ("recall", "recall"), ("false_positive_rate", "FPR")):
            if f"{name}_mean" in summary:
                parts.append(f"{label} {summary[name + '_mean']:.3f} +/- {summary[name + '_std']:.3f}")
        console.print("; ".join(parts))
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
