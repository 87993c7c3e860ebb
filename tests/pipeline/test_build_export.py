"""`factory build --n 200` into DuckDB, then `factory export`: the Hugging Face DatasetDict and the
Parquet files load with `datasets`, carry policy/transcript/label, and no policy spans two splits."""

from __future__ import annotations

from pathlib import Path

import datasets
import orjson

from tests.pipeline.conftest import Built, flat, query

SPLITS = ("train", "validation", "test")


def test_build_yields_exactly_n_samples(built200: Built) -> None:
    db = built200.db
    assert query(db, "SELECT count(*) FROM samples")[0][0] == 200
    assert query(db, "SELECT count(*) FROM slot_status WHERE status = 'accepted'")[0][0] == 200
    assert query(db, "SELECT count(DISTINCT sample_id), count(DISTINCT policy_id) FROM samples")[0] == (
        200,
        200,
    )
    assert "done: 200 samples" in flat(built200.stderr)
    # every LLM call is in the ledger with its stage, prompt hash and model; an uninterrupted build pays none twice
    stages = dict(query(db, "SELECT stage, count(*) FROM llm_calls GROUP BY stage"))
    assert set(stages) == {"paraphrase", "persona", "dialogue", "label", "trace"}
    assert stages["paraphrase"] >= 200 and stages["dialogue"] >= 200
    assert (
        query(db, "SELECT count(*) FROM llm_calls WHERE prompt_hash IS NULL OR prompt_hash = ''")[0][0] == 0
    )
    assert built200.server_stats["repeated_bodies"] == 0
    run = query(db, "SELECT seed, n_target, pipeline, status FROM runs")
    assert run == [(0, 200, "pipetest", "finished")]
    # the journal was folded into the database at the end
    journal = db.with_suffix(".duckdb.journal")
    assert not journal.exists() or journal.stat().st_size == 0


def _check_split_rows(by_split: dict[str, list[dict]], db_ids: set[str]) -> None:
    assert set(by_split) == set(SPLITS)
    ids: set[str] = set()
    policies: dict[str, set[str]] = {}
    for split, rows in by_split.items():
        for row in rows:
            assert row["label"] in ("PASS", "FAIL")
            assert row["policy"].strip() and row["transcript"].strip()
            ids.add(row["sample_id"])
        policies[split] = {row["policy_id"] for row in rows}
    assert sum(len(rows) for rows in by_split.values()) == 200
    assert ids == db_ids
    assert len(by_split["train"]) > len(by_split["validation"]) and len(by_split["train"]) > len(
        by_split["test"]
    )
    for a in SPLITS:
        for b in SPLITS:
            if a < b:
                assert not policies[a] & policies[b], f"policy leaks between {a} and {b}"
    # the policy text itself does not leak either
    texts = {s: {row["policy"] for row in rows} for s, rows in by_split.items()}
    assert not texts["train"] & texts["test"] and not texts["train"] & texts["validation"]


def test_export_loads_with_datasets(built200: Built, tmp_path: Path) -> None:
    out: Path = built200.extra["export_dir"]
    db_ids = {r[0] for r in query(built200.db, "SELECT sample_id FROM samples")}
    db_labels = dict(query(built200.db, "SELECT sample_id, label FROM samples"))

    dd = datasets.load_from_disk(str(out / "hf"))
    assert isinstance(dd, datasets.DatasetDict)
    for split in SPLITS:
        assert {
            "policy",
            "transcript",
            "label",
            "policy_id",
            "rules",
            "turns",
            "rule_labels",
            "violated_rules",
            "explanation",
            "reasoning",
        } <= set(dd[split].column_names)
    hf_rows = {s: dd[s].to_list() for s in SPLITS}
    _check_split_rows(hf_rows, db_ids)
    for rows in hf_rows.values():
        for row in rows:
            assert row["label"] == db_labels[row["sample_id"]]
            assert len(row["rules"]) == row["num_rules"] == len(row["rule_labels"])
            assert (row["label"] == "FAIL") == bool(row["violated_rules"])

    files = {s: str(out / "parquet" / f"{s}.parquet") for s in SPLITS}
    pq = datasets.load_dataset("parquet", data_files=files, cache_dir=str(tmp_path / "hf-cache"))
    pq_rows = {s: pq[s].to_list() for s in SPLITS}
    _check_split_rows(pq_rows, db_ids)
    for s in SPLITS:
        assert [r["sample_id"] for r in pq_rows[s]] == [r["sample_id"] for r in hf_rows[s]]
        assert [(r["policy"], r["transcript"], r["label"]) for r in pq_rows[s]] == [
            (r["policy"], r["transcript"], r["label"]) for r in hf_rows[s]
        ]

    for s in SPLITS:
        lines = (out / "jsonl" / f"{s}.jsonl").read_bytes().splitlines()
        assert [orjson.loads(line)["sample_id"] for line in lines] == [r["sample_id"] for r in hf_rows[s]]
    card = (out / "README.md").read_text(encoding="utf-8")
    assert card.startswith("---\n") and "parquet/train.parquet" in card and "policy size" in card
    assert "exported 200 samples" in flat(built200.extra["export_stderr"])
