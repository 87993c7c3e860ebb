"""`factory export`: DatasetDict on disk, Parquet and JSONL per split, and a dataset card.

Columns follow the published DynaBench (`policy`, `transcript`, `label` PASS/FAIL) plus structured
extras. Splits are assigned per policy by a seeded hash, so one policy never appears in two splits.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import duckdb
import orjson
import polars as pl

from factory.export.card import dataset_card
from factory.llm.errors import ConfigError

SPLITS = ("train", "validation", "test")


def split_of(policy_id: str, seed: int, val_frac: float, test_frac: float) -> str:
    u = int.from_bytes(hashlib.sha256(f"{seed}:{policy_id}".encode()).digest()[:8], "big") / 2**64
    if u < test_frac:
        return "test"
    if u < test_frac + val_frac:
        return "validation"
    return "train"


def load_samples(db: Path) -> pl.DataFrame:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.sql("SELECT * FROM samples ORDER BY slot").pl()
    finally:
        con.close()


def to_records(df: pl.DataFrame) -> list[dict]:
    records = []
    for r in df.iter_rows(named=True):
        records.append(
            {
                "sample_id": r["sample_id"],
                "policy_id": r["policy_id"],
                "policy": r["policy"],
                "transcript": r["transcript"],
                "label": r["label"],
                "rules": list(r["rules"]),
                "turns": orjson.loads(r["turns_json"]),
                "rule_labels": orjson.loads(r["rule_labels_json"]),
                "violated_rules": list(r["violated_rules"]),
                "explanation": r["explanation"],
                "reasoning": r["reasoning"] or "",
                "trace_mode": r["trace_mode"],
                "industry": r["industry"],
                "dynamic": r["dynamic"],
                "near_miss": bool(r["near_miss"]),
                "num_rules": r["num_rules"],
                "num_turns": r["num_turns"],
                "intended_label": r["intended_label"],
                "agrees_with_intent": bool(r["agrees_with_intent"]),
                "max_ambiguity": r["max_ambiguity"],
                "models": r["models_json"],
            }
        )
    return records


def export(db: Path, out: Path, *, seed: int = 0, val_frac: float = 0.05, test_frac: float = 0.05) -> str:
    import datasets

    if not (0 <= val_frac < 1 and 0 <= test_frac < 1 and val_frac + test_frac < 1):
        raise ConfigError("--val-frac and --test-frac must be in [0, 1) and sum to less than 1")
    df = load_samples(db)
    if df.height == 0:
        raise ConfigError(f"{db} holds no samples; run `factory build` first")
    records = to_records(df)
    by_split: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for rec in records:
        by_split[split_of(rec["policy_id"], seed, val_frac, test_frac)].append(rec)
    features = _features()
    # An empty split (small builds) still gets the full schema: from_list([]) would lose it.
    dd = datasets.DatasetDict(
        {
            s: datasets.Dataset.from_list(rows, features=features)
            if rows
            else datasets.Dataset.from_dict({k: [] for k in features}, features=features)
            for s, rows in by_split.items()
        }
    )
    out.mkdir(parents=True, exist_ok=True)
    dd.save_to_disk(str(out / "hf"))
    (out / "parquet").mkdir(exist_ok=True)
    (out / "jsonl").mkdir(exist_ok=True)
    for s, ds in dd.items():
        ds.to_parquet(str(out / "parquet" / f"{s}.parquet"))
        with open(out / "jsonl" / f"{s}.jsonl", "wb") as fh:
            for rec in by_split[s]:
                fh.write(orjson.dumps(rec) + b"\n")
    from factory.stats.report import stats_report

    stats_text = stats_report(db, out / "stats")
    (out / "README.md").write_text(dataset_card(dd, stats_text), encoding="utf-8")
    sizes = ", ".join(f"{s}={len(dd[s])}" for s in SPLITS)
    return f"{df.height} samples to {out} ({sizes})"


def _features():  # noqa: ANN202
    from datasets import Features, List, Value

    return Features(
        {
            "sample_id": Value("string"),
            "policy_id": Value("string"),
            "policy": Value("string"),
            "transcript": Value("string"),
            "label": Value("string"),
            "rules": List(Value("string")),
            "turns": List({"role": Value("string"), "content": Value("string")}),
            "rule_labels": List(
                {
                    "rule_index": Value("int32"),
                    "label": Value("string"),
                    "ambiguity": Value("int32"),
                    "explanation": Value("string"),
                    "violated_turns": List(Value("int32")),
                }
            ),
            "violated_rules": List(Value("int32")),
            "explanation": Value("string"),
            "reasoning": Value("string"),
            "trace_mode": Value("string"),
            "industry": Value("string"),
            "dynamic": Value("string"),
            "near_miss": Value("bool"),
            "num_rules": Value("int32"),
            "num_turns": Value("int32"),
            "intended_label": Value("string"),
            "agrees_with_intent": Value("bool"),
            "max_ambiguity": Value("int32"),
            "models": Value("string"),
        }
    )
