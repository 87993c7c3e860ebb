"""`factory export`: DatasetDict on disk, Parquet and JSONL per split, and a dataset card.

Columns follow the published DynaBench (`policy`, `transcript`, `label` PASS/FAIL) plus structured
extras. Splits are assigned per policy by a seeded hash, so one policy never appears in two splits.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import duckdb
import orjson
import polars as pl

from factory.errors import ConfigError
from factory.export.card import dataset_card
from factory.store.sample_row import export_features, export_record

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
    return [export_record(r) for r in df.iter_rows(named=True)]


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


def _feature(desc: Any) -> Any:
    from datasets import List, Value

    if isinstance(desc, str):
        return Value(desc)
    if isinstance(desc, list):
        return List(_feature(desc[0]))
    return {k: _feature(v) for k, v in desc.items()}


def _features():  # noqa: ANN202
    from datasets import Features

    return Features({name: _feature(desc) for name, desc in export_features().items()})
