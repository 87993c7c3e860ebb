"""Per-rule aggregation of per-turn judgements."""

from __future__ import annotations

from factory.stages.label import aggregate
from factory.stages.schemas import TurnJudgement


def _j(turn: int, label: str, amb: int, text: str = "x") -> TurnJudgement:
    return TurnJudgement(turn=turn, discussion=f"d{text}", explanation=f"e{text}", label=label, ambiguity=amb)


def test_violated_if_any_turn_violates_with_turns_by_position() -> None:
    lab = aggregate(2, [_j(1, "NOT VIOLATED", 1), _j(7, "VIOLATED", 3, "v"), _j(3, "VIOLATED", 0)])
    assert lab.label == "VIOLATED"
    assert lab.violated_turns == [2, 3]  # positions, not the turn numbers the model wrote
    assert lab.ambiguity == 3
    assert (lab.discussion, lab.explanation) == ("dv", "ev")  # the first violating turn explains


def test_not_violated_takes_the_most_ambiguous_turn() -> None:
    lab = aggregate(1, [_j(1, "NOT VIOLATED", 2, "a"), _j(2, "NOT VIOLATED", 5, "b")])
    assert lab.label == "NOT VIOLATED" and lab.violated_turns == [] and lab.ambiguity == 5
    assert lab.explanation == "eb"
    assert lab.public() == {
        "rule_index": 1,
        "label": "NOT VIOLATED",
        "ambiguity": 5,
        "explanation": "eb",
        "violated_turns": [],
    }
