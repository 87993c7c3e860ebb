"""push / pull / report: the store side of human validation (Argilla stays in annotation.backend)."""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson

from annotation import backend
from annotation.backend import AnnotationError
from annotation.content import SAMPLE_COLUMNS, parse_turns, rule_labels, select, split_of
from annotation.stats import cohen_kappa, confusion, fleiss_kappa, pairwise_agreement, percent_agreement
from factory.store.db import Store, StoreError, open_readonly
from factory.store.tables import ANNOTATION_TABLES

LABELS = ("PASS", "FAIL")
RULE_LABELS = ("NOT VIOLATED", "VIOLATED")


def _rows(con: Any, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
    cur = con.execute(sql, params or [])
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


def _open_store(db: Path) -> Store:
    if not Path(db).exists():
        raise StoreError(f"{db} does not exist; build it first with `factory build --db {db}`")
    store = Store(Path(db))
    for ddl in ANNOTATION_TABLES.values():
        store.con.execute(ddl).fetchall()
    return store


def push(
    db: Path,
    dataset: str,
    n: int,
    *,
    strategy: str = "random",
    overlap: int = 1,
    split: str | None = None,
    blind: bool = False,
    seed: int = 0,
    client: Any = None,
) -> dict[str, Any]:
    """Choose n samples and create or update the dataset; records are keyed by sample_id (a second
    push updates them in place, never duplicates them)."""
    if n < 1:
        raise AnnotationError(f"--n {n}: must be at least 1")
    if overlap < 1:
        raise AnnotationError(f"--overlap {overlap}: must be at least 1")
    con = open_readonly(Path(db), need=("samples",))
    try:
        rows = _rows(con, f"SELECT {SAMPLE_COLUMNS} FROM samples ORDER BY slot")
    finally:
        con.close()
    for r in rows:  # the stored split (rule-disjoint pools), else the export's policy hash
        r["split"] = r.get("split") or split_of(r["policy_id"] or "", seed)
    if split:
        rows = [r for r in rows if r["split"] == split]
    if not rows:
        raise AnnotationError(f"{db} has no samples" + (f" in split {split!r}" if split else ""))
    try:
        chosen = select(rows, n, strategy, seed)
    except ValueError as exc:
        raise AnnotationError(str(exc)) from exc
    client = client or backend.connect()
    ds = backend.ensure_dataset(client, dataset, max(r["num_rules"] or 0 for r in chosen), overlap)
    backend.log_records(ds, [backend.to_record(r, r["split"], blind) for r in chosen])
    store = _open_store(Path(db))
    try:
        now = time.time()
        store.con.executemany(
            "INSERT OR REPLACE INTO annotation_pushes VALUES (?, ?, ?, ?, ?, ?)",
            [[dataset, r["sample_id"], r["slot"], now, blind, overlap] for r in chosen],
        )
    finally:
        store.close()
    return {
        "dataset": dataset,
        "pushed": len(chosen),
        "strategy": strategy,
        "overlap": overlap,
        "blind": blind,
    }


def pull(db: Path, dataset: str, *, client: Any = None) -> dict[str, Any]:
    """Submitted responses into human_judgements / human_rule_judgements; the dataset's rows are
    replaced in one transaction, so pulling twice gives the same rows."""
    client = client or backend.connect()
    ds = backend.get_dataset(client, dataset)
    responses, present, strangers = backend.fetch_responses(client, ds)
    if strangers:
        raise AnnotationError(
            f"dataset {dataset!r} has responses from {', '.join(strangers)}, who is not a member of workspace "
            f"{client._factory_workspace!r}; add them to the workspace or delete their responses"
        )
    store = _open_store(Path(db))
    try:
        pushed = {
            r[0]: r[1]
            for r in store.query("SELECT sample_id, slot FROM annotation_pushes WHERE dataset = ?", [dataset])
        }
        missing = sorted(set(pushed) - present)
        if missing:
            raise AnnotationError(
                f"{len(missing)} record(s) pushed to {dataset!r} were deleted on the server (e.g. {missing[0]}); "
                f"push them again with `factory annotate push` or remove them from annotation_pushes"
            )
        ids = sorted({r.sample_id for r in responses})
        samples = {}
        if ids:
            samples = {
                r["sample_id"]: r
                for r in _rows(
                    store.con,
                    "SELECT slot, sample_id, rule_labels_json, num_rules FROM samples WHERE sample_id IN (SELECT unnest(?))",
                    [ids],
                )
            }
        unknown = [i for i in ids if i not in samples]
        if unknown:
            raise AnnotationError(
                f"dataset {dataset!r} holds record {unknown[0]} which is not a sample of {db}: wrong --db?"
            )
        now = time.time()
        judgements, per_rule = [], []
        for resp in responses:
            s = samples[resp.sample_id]
            v = resp.values
            violated = sorted(
                {
                    int(x)
                    for x in (v.get("violated_rules") or [])
                    if str(x).isdigit() and 1 <= int(x) <= s["num_rules"]
                }
            )
            turns = parse_turns(v.get("violated_turns"))
            label = v.get("label")
            judgements.append(
                [
                    dataset,
                    resp.sample_id,
                    s["slot"],
                    resp.annotator,
                    label,
                    violated,
                    orjson.dumps({str(k): t for k, t in turns.items()}).decode(),
                    v.get("ambiguity"),
                    v.get("comment"),
                    now,
                ]
            )
            for lab in rule_labels(s):
                i = lab["rule_index"]
                per_rule.append(
                    [
                        dataset,
                        resp.sample_id,
                        s["slot"],
                        i,
                        resp.annotator,
                        "VIOLATED" if i in violated else "NOT VIOLATED",
                        turns.get(i, []),
                        lab["label"],
                    ]
                )
        con = store.con
        con.execute("BEGIN TRANSACTION").fetchall()
        try:
            con.execute("DELETE FROM human_judgements WHERE dataset = ?", [dataset]).fetchall()
            con.execute("DELETE FROM human_rule_judgements WHERE dataset = ?", [dataset]).fetchall()
            if judgements:
                con.executemany(
                    "INSERT INTO human_judgements VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", judgements
                )
            if per_rule:
                con.executemany("INSERT INTO human_rule_judgements VALUES (?, ?, ?, ?, ?, ?, ?, ?)", per_rule)
            con.execute("COMMIT").fetchall()
        except BaseException:
            con.execute("ROLLBACK").fetchall()
            raise
    finally:
        store.close()
    return {
        "dataset": dataset,
        "judgements": len(judgements),
        "rule_judgements": len(per_rule),
        "annotators": sorted({r.annotator for r in responses}),
        "samples": len(ids),
    }


def _group_agreement(pairs: list[tuple[str, str, str]], min_n: int = 1) -> list[dict[str, Any]]:
    by: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for key, a, b in pairs:
        by[key].append((a, b))
    out = [
        {"key": k, "n": len(v), "agreement": percent_agreement([a for a, _ in v], [b for _, b in v])}
        for k, v in by.items()
        if len(v) >= min_n
    ]
    out.sort(key=lambda d: (d["agreement"], -d["n"], d["key"]))
    return out


def report(db: Path, dataset: str, *, gate: float = 0.9, worst: int = 5) -> dict[str, Any]:
    """Human-vs-LLM and inter-annotator agreement of a pulled dataset (see annotation/README.md for keys)."""
    con = open_readonly(Path(db), need=("samples", "human_judgements", "human_rule_judgements"))
    try:
        sj = _rows(
            con,
            """
            SELECT h.sample_id, h.annotator, h.label AS human, s.label AS llm, s.industry, s.dynamic
            FROM human_judgements h JOIN samples s USING (sample_id)
            WHERE h.dataset = ? AND h.label IS NOT NULL ORDER BY h.sample_id, h.annotator""",
            [dataset],
        )
        rj = _rows(
            con,
            """
            SELECT r.sample_id, r.rule_index, r.annotator, r.label AS human, r.llm_label AS llm,
                   s.rule_ids[r.rule_index] AS rule_id, s.industry, s.dynamic
            FROM human_rule_judgements r JOIN samples s USING (sample_id)
            WHERE r.dataset = ? ORDER BY r.sample_id, r.rule_index, r.annotator""",
            [dataset],
        )
    finally:
        con.close()
    if not sj:
        raise AnnotationError(
            f"no human judgements of {dataset!r} in {db}: run `factory annotate pull --dataset {dataset}` first"
        )
    human, llm = [r["human"] for r in sj], [r["llm"] for r in sj]
    rh, rl = [r["human"] for r in rj], [r["llm"] for r in rj]
    by_sample: dict[str, list[str]] = defaultdict(list)
    for r in sj:
        by_sample[r["sample_id"]].append(r["human"])
    by_rule: dict[tuple[str, int], list[str]] = defaultdict(list)
    for r in rj:
        by_rule[(r["sample_id"], r["rule_index"])].append(r["human"])
    overlapped = [v for v in by_sample.values() if len(v) >= 2]
    overlapped_rules = [v for v in by_rule.values() if len(v) >= 2]
    agreement = percent_agreement(llm, human)
    out = {
        "dataset": dataset,
        "annotators": sorted({r["annotator"] for r in sj}),
        "samples": len(by_sample),
        "judgements": len(sj),
        "sample_level": {
            "agreement": agreement,
            "cohen_kappa": cohen_kappa(llm, human),
            "confusion": confusion(llm, human, LABELS),
        },
        "rule_level": {
            "judgements": len(rj),
            "agreement": percent_agreement(rl, rh),
            "cohen_kappa": cohen_kappa(rl, rh),
            "confusion": confusion(rl, rh, RULE_LABELS),
        },
        "inter_annotator": {
            "samples": len(overlapped),
            "pairwise_agreement": pairwise_agreement(overlapped),
            "fleiss_kappa": fleiss_kappa(overlapped),
            "rules": len(overlapped_rules),
            "rule_pairwise_agreement": pairwise_agreement(overlapped_rules),
            "rule_fleiss_kappa": fleiss_kappa(overlapped_rules),
        },
        "worst": {
            "rules": _group_agreement(
                [(r["rule_id"] or f"#{r['rule_index']}", r["llm"], r["human"]) for r in rj]
            )[:worst],
            "industries": _group_agreement([(r["industry"] or "", r["llm"], r["human"]) for r in sj])[:worst],
            "dynamics": _group_agreement([(r["dynamic"] or "", r["llm"], r["human"]) for r in sj])[:worst],
        },
        "gate": {
            "threshold": gate,
            "agreement": agreement,
            "passed": agreement is not None and agreement >= gate,
        },
    }
    return out


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def format_report(r: dict[str, Any]) -> str:
    s, ru, ia, g = r["sample_level"], r["rule_level"], r["inter_annotator"], r["gate"]
    lines = [
        f"dataset {r['dataset']}: {r['samples']} samples, {r['judgements']} judgements by {', '.join(r['annotators'])}",
        f"sample level (human vs LLM): agreement {_pct(s['agreement'])}, Cohen's kappa {_num(s['cohen_kappa'])}",
        f"rule level (human vs LLM): {ru['judgements']} judgements, agreement {_pct(ru['agreement'])}, "
        f"Cohen's kappa {_num(ru['cohen_kappa'])}",
        f"inter-annotator: {ia['samples']} samples with >= 2 annotators, pairwise agreement "
        f"{_pct(ia['pairwise_agreement'])}, Fleiss' kappa {_num(ia['fleiss_kappa'])}; rules: "
        f"{_pct(ia['rule_pairwise_agreement'])}, Fleiss' kappa {_num(ia['rule_fleiss_kappa'])}",
        "confusion (rows LLM, columns human):      PASS  FAIL",
    ]
    for llm in LABELS:
        row = s["confusion"].get(llm, {})
        lines.append(
            f"  LLM {llm:<4}                               {row.get('PASS', 0):>5} {row.get('FAIL', 0):>5}"
        )
    for kind in ("rules", "industries", "dynamics"):
        worst = (
            ", ".join(f"{w['key']} {_pct(w['agreement'])} (n={w['n']})" for w in r["worst"][kind]) or "none"
        )
        lines.append(f"worst {kind}: {worst}")
    verdict = "PASS" if g["passed"] else "FAIL"
    lines.append(
        f"gate: {verdict} (sample agreement {_pct(g['agreement'])}, threshold {_pct(g['threshold'])})"
    )
    return "\n".join(lines)
