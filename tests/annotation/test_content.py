"""What the annotator sees and which samples are chosen (no server)."""

from collections import Counter

import pytest

from annotation.content import (
    parse_turns,
    policy_text,
    select,
    split_of,
    transcript_text,
    turns_text,
    violated_rules,
)
from factory.export.hf import split_of as export_split_of

from .conftest import make_sample


def test_policy_and_transcript_are_numbered():
    row = make_sample(3, "FAIL", "user_tricks_agent_breaks", {2: [1]})
    assert policy_text(row).splitlines()[1] == "2. Rule text 2 of sample 3."
    text = transcript_text(row)
    assert "**Agent (turn 1):** First answer." in text and "**Agent (turn 2):** Second answer." in text
    assert violated_rules(row) == [2]


def test_turns_text_round_trip_and_lenient_parse():
    assert turns_text({3: [1, 2], 5: [4]}) == "3: 1,2; 5: 4"
    assert parse_turns("3: 1,2; 5: 4") == {3: [1, 2], 5: [4]}
    assert parse_turns("rule 3: turn 1 and 2\n5:4") == {3: [1, 2], 5: [4]}
    assert parse_turns("") == {} and parse_turns(None) == {}


def test_split_matches_export():
    for pid in ("p-1", "p-2", "abc", "zz"):
        assert split_of(pid, 7, 0.2, 0.3) == export_split_of(pid, 7, 0.2, 0.3)


def _rows(k):
    dyn = ["a", "b", "c", "d"]
    return [
        {
            "slot": i,
            "label": "FAIL" if i % 5 == 0 else "PASS",
            "dynamic": dyn[i % 4] if i % 5 else "a",
            "num_rules": 1 + (i % 10) * 4,
            "num_turns": 1 + i % 3,
        }
        for i in range(200)
    ]


def test_strategies():
    rows = _rows(200)
    assert len(select(rows, 20, "random", 1)) == 20
    assert select(rows, 20, "random", 1) == select(rows, 20, "random", 1)  # deterministic
    hard = select(rows, 40, "hard", 1)
    rand = select(rows, 40, "random", 1)
    assert sum(r["num_rules"] * r["num_turns"] for r in hard) > sum(
        r["num_rules"] * r["num_turns"] for r in rand
    )
    strat = select(rows, 40, "stratified", 1)
    labels = Counter(r["label"] for r in strat)
    assert labels["FAIL"] == labels["PASS"] == 20  # FAIL is 1/5 of the data, half of the choice
    pass_dyn = Counter(r["dynamic"] for r in strat if r["label"] == "PASS")
    assert sorted(pass_dyn.values()) == [5, 5, 5, 5]
    assert len(select(rows, 500, "hard")) == 200
    with pytest.raises(ValueError, match="strategy"):
        select(rows, 3, "nope")
