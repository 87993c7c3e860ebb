"""The filter contract: each filter is a small function of a candidate sample that returns KEEP,
`drop(reason, detail)` or `note(reason, detail)` (kept, with a reason counted in filter_log).

Filters run at the point of the pipeline where their input exists (a malformed dialogue is dropped
before any rule is labelled); `apply()` is the one place that applies a list of them. The slot
carries the verdicts to the ordered committer, the one writer of `filter_log` and `slot_status`.
Order-dependent filters (near duplicates) run in the committer with the same Verdict type.
Every reason here is a row of the stats report's filter table.

>>> drop("malformed_dialogue", "empty dialogue").keep
False
>>> [v.reason for v in apply(None, [lambda c: KEEP, lambda c: note("odd", "x")])]
['odd']
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from factory.recipes.names import BREAKS, Stage
from factory.stages.context import SlotDropped
from factory.stages.dialogue import Dialogue, check_turns


@dataclass(frozen=True)
class Verdict:
    keep: bool
    reason: str = ""
    detail: str = ""
    stage: str = Stage.FILTER


KEEP = Verdict(True)


def drop(reason: str, detail: str = "", stage: str = Stage.FILTER) -> Verdict:
    return Verdict(False, reason, detail, stage)


def note(reason: str, detail: str = "", stage: str = Stage.FILTER) -> Verdict:
    return Verdict(True, reason, detail, stage)


Filter = Callable[[Any], Verdict]


def apply(candidate: Any, filters: Sequence[Filter]) -> list[Verdict]:
    """Run filters in order; return the notes and, last, the first drop (then stop)."""
    out = []
    for f in filters:
        v = f(candidate)
        if v.reason:
            out.append(v)
        if not v.keep:
            break
    return out


def enforce(candidate: Any, filters: Sequence[Filter], notes: list[Verdict]) -> None:
    """apply(); keep the notes, and raise SlotDropped on a drop (the slot then leaves the pipeline)."""
    for v in apply(candidate, filters):
        if not v.keep:
            raise SlotDropped(v.stage, v.reason, v.detail)
        notes.append(v)


# -- the filters --------------------------------------------------------------------------------
def malformed_dialogue(dialogue: Dialogue) -> Verdict:
    """A transcript that is empty, has an empty message, or does not go user ... agent."""
    problem = check_turns(dialogue.turns)
    return drop("malformed_dialogue", problem) if problem else KEEP


@dataclass
class Labelled:
    """A candidate after labelling: what the label filters look at."""

    dialogue: Dialogue
    labels: list[Any]  # RuleLabel of the final policy
    removed: list[Any]  # RuleLabel judged too ambiguous (candidate indices)
    threshold: int
    on_intent_disagreement: str = "keep"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return "FAIL" if any(lab.label == "VIOLATED" for lab in self.labels) else "PASS"

    @property
    def intended(self) -> str:
        return "FAIL" if self.dialogue.dynamic in BREAKS else "PASS"


def ambiguous_rules(c: Labelled) -> Verdict:
    """Rules judged more ambiguous than the threshold leave the policy (spares replace them);
    a policy left with no rule is dropped."""
    if not c.removed:
        return KEEP
    detail = ", ".join(f"rule {lab.rule_index} ({lab.ambiguity})" for lab in c.removed)
    if not c.labels:
        return drop("ambiguous_label", f"every rule above threshold {c.threshold}: {detail}")
    return note("ambiguous_rule_removed", f"{len(c.removed)} removed, ambiguity > {c.threshold}: {detail}")


def intent_disagreement(c: Labelled) -> Verdict:
    """The labeller's verdict differs from the dynamic the dialogue was written for."""
    if c.label == c.intended:
        return KEEP
    detail = f"intended {c.intended}, labelled {c.label}"
    if c.on_intent_disagreement == "drop":
        return drop("intent_disagreement", detail)
    return note("intent_disagreement", detail + " (kept)")


AFTER_DIALOGUE: tuple[Filter, ...] = (malformed_dialogue,)
AFTER_LABELS: tuple[Filter, ...] = (ambiguous_rules, intent_disagreement)
