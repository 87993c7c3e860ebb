"""Each filter of the filter contract, on hand-made candidates."""

from __future__ import annotations

import pytest

from factory.stages import filters
from factory.stages.context import SlotDropped
from factory.stages.dialogue import Dialogue
from factory.stages.label import RuleLabel


def _dialogue(dynamic: str = "normal_comply", turns: list[dict] | None = None) -> Dialogue:
    turns = (
        turns
        if turns is not None
        else [{"role": "user", "content": "hi"}, {"role": "agent", "content": "hello"}]
    )
    return Dialogue("s", dynamic, False, [1], "scenario", turns)


def _lab(i: int, label: str = "NOT VIOLATED", amb: int = 0) -> RuleLabel:
    return RuleLabel(i, label, amb, [1] if label == "VIOLATED" else [], "d", "e", [])


def _labelled(labels, removed=(), dynamic="normal_comply", policy="keep") -> filters.Labelled:
    return filters.Labelled(_dialogue(dynamic), list(labels), list(removed), 6, policy)


def test_malformed_dialogue() -> None:
    assert filters.malformed_dialogue(_dialogue()) is filters.KEEP
    bad = filters.malformed_dialogue(_dialogue(turns=[]))
    assert (bad.keep, bad.reason, bad.detail) == (False, "malformed_dialogue", "empty dialogue")


def test_ambiguous_rules_note_or_drop() -> None:
    assert filters.ambiguous_rules(_labelled([_lab(1)])) is filters.KEEP
    noted = filters.ambiguous_rules(_labelled([_lab(1)], removed=[_lab(3, amb=9)]))
    assert noted.keep and noted.reason == "ambiguous_rule_removed" and "rule 3 (9)" in noted.detail
    dropped = filters.ambiguous_rules(_labelled([], removed=[_lab(1, amb=8), _lab(2, amb=7)]))
    assert not dropped.keep and dropped.reason == "ambiguous_label"


@pytest.mark.parametrize(
    ("dynamic", "label", "policy", "expected"),
    [
        ("normal_comply", "NOT VIOLATED", "drop", None),
        ("trick_break", "VIOLATED", "drop", None),
        ("normal_comply", "VIOLATED", "keep", (True, "intended PASS, labelled FAIL (kept)")),
        ("trick_break", "NOT VIOLATED", "drop", (False, "intended FAIL, labelled PASS")),
    ],
)
def test_intent_disagreement(dynamic, label, policy, expected) -> None:
    v = filters.intent_disagreement(_labelled([_lab(1, label)], dynamic=dynamic, policy=policy))
    if expected is None:
        assert v is filters.KEEP
    else:
        assert (v.keep, v.detail) == expected and v.reason == "intent_disagreement"


def test_apply_stops_at_the_first_drop_and_enforce_raises() -> None:
    calls = []

    def second(c):
        calls.append(c)
        return filters.KEEP

    out = filters.apply("x", [lambda c: filters.note("a"), lambda c: filters.drop("b"), second])
    assert [v.reason for v in out] == ["a", "b"] and calls == []
    notes: list[filters.Verdict] = []
    with pytest.raises(SlotDropped) as err:
        filters.enforce("x", [lambda c: filters.note("a"), lambda c: filters.drop("b", "why")], notes)
    assert (err.value.reason, err.value.detail) == ("b", "why") and [n.reason for n in notes] == ["a"]
