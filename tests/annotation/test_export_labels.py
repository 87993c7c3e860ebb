"""`factory export --labels human|llm|prefer-human`: the human label where one exists, and label_source."""

from __future__ import annotations

import duckdb
import orjson
import pytest

from factory.errors import ConfigError
from factory.export.hf import export
from factory.store.tables import ANNOTATION_TABLES


def _judge(db, rows):
    con = duckdb.connect(str(db))
    for ddl in ANNOTATION_TABLES.values():
        con.execute(ddl)
    for sid, annotator, label in rows:
        con.execute(
            "INSERT INTO human_judgements VALUES ('ds', ?, 0, ?, ?, [], '{}', 0, NULL, 0)",
            [sid, annotator, label],
        )
    con.close()


def _labels(out):
    rows = []
    for split in ("train", "validation", "test"):
        rows += [orjson.loads(line) for line in (out / "jsonl" / f"{split}.jsonl").read_bytes().splitlines()]
    return {r["sample_id"]: (r["label"], r["label_source"]) for r in rows}


def test_prefer_human_human_and_llm(sample_db, tmp_path):
    # s-0000 LLM FAIL, two annotators say PASS; s-0003 LLM PASS, a 1-1 tie counts as FAIL
    _judge(
        sample_db,
        [("s-0000", "a", "PASS"), ("s-0000", "b", "PASS"), ("s-0003", "a", "PASS"), ("s-0003", "b", "FAIL")],
    )
    export(sample_db, tmp_path / "ph", labels="prefer-human")
    assert _labels(tmp_path / "ph") == {
        "s-0000": ("PASS", "human"),
        "s-0001": ("PASS", "llm"),
        "s-0002": ("FAIL", "llm"),
        "s-0003": ("FAIL", "human"),
    }
    export(sample_db, tmp_path / "h", labels="human")
    assert _labels(tmp_path / "h") == {"s-0000": ("PASS", "human"), "s-0003": ("FAIL", "human")}
    export(sample_db, tmp_path / "l", labels="llm")
    assert _labels(tmp_path / "l")["s-0000"] == ("FAIL", "llm")


def test_human_without_judgements_is_refused(sample_db, tmp_path):
    with pytest.raises(ConfigError, match="no human judgements"):
        export(sample_db, tmp_path / "x", labels="human")
    with pytest.raises(ConfigError, match="--labels"):
        export(sample_db, tmp_path / "y", labels="bogus")
