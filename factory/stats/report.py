"""`factory status` and `factory stats`: SQL over the store, polars for the numbers, PNG plots.

Both read the finished file only. While a build holds the database (DuckDB admits no reader next
to a writer), `status` answers with the build's heartbeat line and `stats` refuses in one line;
a file that is not a readable factory database is a one-line StoreError naming it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

import duckdb
import polars as pl

from factory.errors import ConfigError
from factory.store.db import StoreError, StoreLockedError, open_error, open_readonly, table_names
from factory.store.live_status import describe_live_status

PAPER_TRAIN = {"policy_size": (1, 103, 4, 6.4), "turns": (1, 27, 2, 2.8)}  # min, max, median, mean
STATUS_TABLES = ("runs", "samples", "slot_status", "llm_calls", "llm_failures")
STATS_TABLES = ("samples", "filter_log", "rule_labels", "llm_calls", "policies", "dialogues", "slot_status")

T = TypeVar("T")


def _read(db: Path, need: Iterable[str], body: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
    """Run `body` on a read-only connection; DuckDB errors become one-line StoreErrors."""
    con = open_readonly(db, need)
    try:
        return body(con)
    except duckdb.Error as exc:
        raise open_error(db, exc) from exc
    finally:
        con.close()


def _table(con: duckdb.DuckDBPyConnection, sql: str) -> pl.DataFrame:
    return con.sql(sql).pl()


def _has_column(con: duckdb.DuckDBPyConnection, table: str, column: str) -> bool:
    return column in {r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()}


def _status_rows(con: duckdb.DuckDBPyConnection) -> tuple:
    runs = con.execute(
        "SELECT pipeline, seed, n_target, status FROM runs ORDER BY started_at DESC LIMIT 1"
    ).fetchall()
    acc = con.execute("SELECT count(*) FROM samples").fetchall()[0][0]
    drops = con.execute(
        "SELECT reason, count(*) FROM slot_status WHERE status='dropped' GROUP BY 1 ORDER BY 2 DESC, 1"
    ).fetchall()
    calls = con.execute(
        "SELECT count(*), coalesce(sum(input_tokens),0), coalesce(sum(output_tokens),0), "
        "coalesce(sum(cost_usd),0) FROM llm_calls"
    ).fetchall()[0]
    fails = con.execute("SELECT count(*) FROM llm_failures").fetchall()[0][0]
    return (runs[0] if runs else None), acc, drops, calls, fails, _estimate_rows(con), _batch_rows(con)


def _batch_rows(con: duckdb.DuckDBPyConnection) -> list[tuple]:
    """Batch jobs per endpoint and state: (endpoint, state, jobs, requests); [] without batch mode."""
    if "batch_jobs" not in table_names(con):
        return []
    return con.execute(
        "SELECT endpoint, state, count(*), sum(requests) FROM batch_jobs GROUP BY 1, 2 ORDER BY 1, 2"
    ).fetchall()


def batch_lines(rows: list[tuple]) -> list[str]:
    if not rows:
        return []
    lines = ["batch jobs (ids in table batch_jobs):"]
    for endpoint, state, jobs, requests in rows:
        lines.append(f"  {endpoint}: {jobs} {state} ({requests:,} requests)")
    return lines


def _expected_cost(e: dict) -> float | None:
    """The estimated cost of a stage (or the total) in the mode it ran in."""
    return e.get("cost_usd_expected", e["cost_usd"])


def _estimate_rows(con: duckdb.DuckDBPyConnection) -> tuple[dict | None, dict[str, tuple]]:
    """The estimate the latest build recorded (None in files from before estimates), and the
    actual calls, tokens and cost per stage from the ledger."""
    import orjson

    if "estimates" not in table_names(con):
        return None, {}
    rows = con.execute(
        "SELECT estimate_json FROM estimates WHERE run_id IS NOT NULL ORDER BY created_at DESC LIMIT 1"
    ).fetchall()
    if not rows:
        return None, {}
    actual = {
        r[0]: tuple(r[1:])
        for r in con.execute(
            "SELECT stage, count(*), sum(input_tokens), sum(output_tokens), sum(cost_usd) FROM llm_calls GROUP BY 1"
        ).fetchall()
    }
    return orjson.loads(rows[0][0]), actual


def _pct(actual: float, expected: float) -> str:
    return f"{(actual - expected) / expected:+.0%}" if expected else "n/a"


def estimate_lines(est: dict, actual: dict[str, tuple]) -> list[str]:
    lines = [
        f"estimate ({est['source']}, --n {est['n']}) against actual:",
        f"  {'stage':10} {'calls est/actual':>22} {'input tok est/actual':>30} {'output tok est/actual':>30} "
        f"{'cost est/actual':>24}",
    ]
    tot = [0, 0, 0, 0.0]
    for stage, e in est["stages"].items():
        a = actual.get(stage, (0, 0, 0, 0.0))
        a = tuple(x or 0 for x in a)
        tot = [t + x for t, x in zip(tot, a, strict=True)]
        cost = "unpriced" if _expected_cost(e) is None else f"${_expected_cost(e):.4f}/${a[3]:.4f}"
        lines.append(
            f"  {stage:10} {e['calls']:>10}/{a[0]:<7} {_pct(a[0], e['calls']):>4} "
            f"{e['input_tokens']:>12}/{a[1]:<11} {_pct(a[1], e['input_tokens']):>5} "
            f"{e['output_tokens']:>12}/{a[2]:<11} {_pct(a[2], e['output_tokens']):>5} {cost:>24}"
        )
    t = est["total"]
    expected = [_expected_cost(e) for e in est["stages"].values()]
    cost = "unpriced" if None in expected else f"${sum(expected):.4f}/${tot[3]:.4f}"  # type: ignore[arg-type]
    lines.append(
        f"  {'total':10} {t['calls']:>10}/{tot[0]:<7} {_pct(tot[0], t['calls']):>4} "
        f"{t['input_tokens']:>12}/{tot[1]:<11} {_pct(tot[1], t['input_tokens']):>5} "
        f"{t['output_tokens']:>12}/{tot[2]:<11} {_pct(tot[2], t['output_tokens']):>5} {cost:>24}"
    )
    return lines


def status_text(db: Path) -> str:
    """Where the build stands. While a build holds the file: its heartbeat, in one line."""
    try:
        run, acc, drops, calls, fails, (est, actual), batches = _read(db, STATUS_TABLES, _status_rows)
    except StoreLockedError:
        live = describe_live_status(db)
        if live is None:
            raise
        return live
    lines = []
    if run:
        lines.append(f"pipeline {run[0]}, seed {run[1]}, target {run[2]} samples, last run {run[3]}")
    lines.append(f"samples accepted: {acc}")
    lines.append("dropped: " + (", ".join(f"{r}={c}" for r, c in drops) or "none"))
    per_sample = f"${calls[3] / acc:.4f} per accepted sample" if acc else "no sample accepted yet"
    lines.append(
        f"LLM calls paid: {calls[0]} ({calls[1]} in / {calls[2]} out tokens, ${calls[3]:.4f}, {per_sample}); "
        f"failed calls: {fails}"
    )
    if est is not None:
        lines.extend(estimate_lines(est, actual))
    lines.extend(batch_lines(batches))
    return "\n".join(lines)


def _describe(series: pl.Series) -> tuple[int, int, float, float]:
    return int(series.min()), int(series.max()), float(series.median()), float(series.mean())


def _stats_frames(con: duckdb.DuckDBPyConnection) -> tuple[pl.DataFrame, ...]:
    samples = _table(
        con,
        "SELECT num_rules, num_turns, label, dynamic, near_miss, agrees_with_intent, "
        "max_ambiguity, trace_mode, industry FROM samples",
    )
    filters = _table(
        con, "SELECT stage, reason, dropped, count(*) AS n FROM filter_log GROUP BY ALL ORDER BY n DESC"
    )
    amb = _table(con, "SELECT ambiguity FROM rule_labels")
    # before filtering: what every committed slot drew (policy size) and was written with (turns)
    drawn = _table(
        con,
        "SELECT p.target_size AS num_rules FROM policies p JOIN slot_status USING (slot) "
        "WHERE p.target_size IS NOT NULL",
    )
    written = _table(con, "SELECT d.num_turns FROM dialogues d JOIN slot_status USING (slot)")
    cached = (
        "coalesce(sum(cached_input_tokens), 0)"
        if _has_column(con, "llm_calls", "cached_input_tokens")
        else "0"
    )
    cost = _table(
        con,
        "SELECT stage, model, count(*) AS calls, sum(input_tokens) AS tokens_in, "
        f"{cached} AS tokens_cached, sum(output_tokens) AS tokens_out, sum(cost_usd) AS cost_usd "
        "FROM llm_calls GROUP BY ALL ORDER BY stage",
    )
    return samples, filters, amb, cost, drawn, written


def stats_report(db: Path, out: Path) -> str:
    """Text report; histograms as PNG files under `out`."""
    try:
        samples, filters, amb, cost, drawn, written = _read(db, STATS_TABLES, _stats_frames)
    except StoreLockedError as exc:
        live = describe_live_status(db)
        if live is None:
            raise
        raise StoreError(
            f"{live}; `factory stats` needs the finished file: run it when the build is done "
            f"(`factory status` shows its progress meanwhile)"
        ) from exc
    lines = [f"samples: {samples.height}"]
    if samples.height:
        lines.append("")
        lines.append(
            f"{'':20}{'min':>6}{'max':>6}{'median':>8}{'mean':>8}   paper train (min/max/median/mean)"
        )
        rows = [
            ("policy size", samples["num_rules"], "policy_size"),
            ("turns", samples["num_turns"], "turns"),
        ]
        if drawn.height:
            rows.insert(0, ("policy size, drawn", drawn["num_rules"], "policy_size"))
        if written.height:
            rows.insert(len(rows) - 1, ("turns, written", written["num_turns"], "turns"))
        lines.append("(drawn / written: every committed slot, before filtering; the others: the dataset)")
        for name, series, key in rows:
            mn, mx, med, mean = _describe(series)
            paper = PAPER_TRAIN[key]
            lines.append(
                f"{name:20}{mn:>6}{mx:>6}{med:>8.1f}{mean:>8.2f}   {paper[0]}/{paper[1]}/{paper[2]}/{paper[3]}"
            )
        lines.append("")
        labels = samples.group_by("label").len().sort("label")
        lines.append(
            "labels: "
            + ", ".join(
                f"{r['label']}={r['len']} ({r['len'] / samples.height:.1%})"
                for r in labels.iter_rows(named=True)
            )
        )
        dyn = samples.group_by("dynamic").agg(
            pl.len().alias("n"), pl.col("agrees_with_intent").mean().alias("agree")
        )
        lines.append(
            "dynamics (n, label agrees with intent): "
            + ", ".join(
                f"{r['dynamic']}={r['n']} ({r['agree']:.0%})"
                for r in dyn.sort("dynamic").iter_rows(named=True)
            )
        )
        lines.append(f"intent/label agreement: {samples['agrees_with_intent'].mean():.1%}")
        lines.append(f"near-miss dialogues: {samples['near_miss'].sum()}")
        modes = samples.group_by("trace_mode").len().sort("trace_mode")
        lines.append(
            "trace modes: " + ", ".join(f"{r['trace_mode']}={r['len']}" for r in modes.iter_rows(named=True))
        )
        lines.append(f"industries covered: {samples['industry'].n_unique()}")
    if amb.height:
        hist = amb.group_by("ambiguity").len().sort("ambiguity")
        lines.append(
            "rule-label ambiguity (0-10): "
            + ", ".join(f"{r['ambiguity']}:{r['len']}" for r in hist.iter_rows(named=True))
        )
    lines.append("")
    lines.append("filters (dropped / kept-with-note):")
    if filters.height:
        for r in filters.iter_rows(named=True):
            lines.append(
                f"  {r['stage']:8} {r['reason']:24} {'dropped' if r['dropped'] else 'noted':8} {r['n']}"
            )
    else:
        lines.append("  none")
    lines.append("")
    lines.append("LLM cost by stage and model (calls actually paid):")
    for r in cost.iter_rows(named=True):
        lines.append(
            f"  {r['stage']:10} {r['model']:28} calls={r['calls']:<7} tokens={r['tokens_in']}/{r['tokens_out']}"
            f" (cached in: {r['tokens_cached']})  ${r['cost_usd']:.4f}"
        )
    if cost.height:
        total = cost["cost_usd"].sum()
        per = f", ${total / samples.height:.4f} per accepted sample" if samples.height else ""
        lines.append(f"  total ${total:.4f}{per}")
    try:
        _plots(samples, amb, out)
    except OSError as exc:
        raise ConfigError(f"--out {out}: cannot write the plots there: {exc.strerror or exc}") from exc
    return "\n".join(lines)


def _plots(samples: pl.DataFrame, amb: pl.DataFrame, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    if samples.height:
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
        for ax, col, title in (
            (axes[0], "num_rules", "Rules per policy"),
            (axes[1], "num_turns", "Turns per dialogue"),
        ):
            values = samples[col].to_list()
            ax.hist(values, bins=range(1, max(values) + 2), color="#4472c4", edgecolor="white")
            ax.set_yscale("log")
            ax.set_title(title)
            ax.set_xlabel(title.split(" per ")[0])
            ax.set_ylabel("samples (log)")
        fig.tight_layout()
        fig.savefig(out / "policy_size_and_turns.png", dpi=110)
        plt.close(fig)
        fig, ax = plt.subplots(figsize=(4, 3))
        counts = samples.group_by("label").len().sort("label")
        ax.bar(
            counts["label"].to_list(), counts["len"].to_list(), color=["#c00000", "#70ad47"][: counts.height]
        )
        ax.set_title("Label balance")
        fig.tight_layout()
        fig.savefig(out / "labels.png", dpi=110)
        plt.close(fig)
    if amb.height:
        fig, ax = plt.subplots(figsize=(5, 3))
        ax.hist(
            amb["ambiguity"].to_list(), bins=range(0, 12), color="#ed7d31", edgecolor="white", align="left"
        )
        ax.set_title("Per-rule ambiguity")
        ax.set_xlabel("ambiguity (0-10)")
        fig.tight_layout()
        fig.savefig(out / "ambiguity.png", dpi=110)
        plt.close(fig)
