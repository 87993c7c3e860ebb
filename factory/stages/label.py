"""Stage 5, per-rule labels: one call per rule, a judgement per agent turn (table `rule_labels`)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import orjson

from factory.recipes.names import Stage
from factory.stages.context import BuildContext, SlotDropped
from factory.stages.dialogue import Dialogue, numbered_transcript
from factory.stages.llm_call import stage_call
from factory.stages.schemas import TurnJudgement, judgement_schema


@dataclass
class RuleLabel:
    rule_index: int  # 1-based
    label: str  # VIOLATED | NOT VIOLATED
    ambiguity: int
    violated_turns: list[int]
    discussion: str
    explanation: str
    judgements: list[TurnJudgement]

    def public(self) -> dict:
        return {
            "rule_index": self.rule_index,
            "label": self.label,
            "ambiguity": self.ambiguity,
            "explanation": self.explanation,
            "violated_turns": self.violated_turns,
        }


def aggregate(rule_index: int, judgements: list[TurnJudgement]) -> RuleLabel:
    """A rule is violated if any agent turn violates it; its ambiguity is the worst turn's.

    Judgements are taken by position (turn k is the k-th item), whatever turn number the model wrote.
    """
    violated = [k for k, j in enumerate(judgements, start=1) if j.label == "VIOLATED"]
    decisive = judgements[violated[0] - 1] if violated else max(judgements, key=lambda j: j.ambiguity)
    return RuleLabel(
        rule_index=rule_index,
        label="VIOLATED" if violated else "NOT VIOLATED",
        ambiguity=max(j.ambiguity for j in judgements),
        violated_turns=violated,
        discussion=decisive.discussion.strip(),
        explanation=decisive.explanation.strip(),
        judgements=judgements,
    )


async def label_rule(
    ctx: BuildContext, slot: int, rule_index: int, rule: str, dialogue: Dialogue
) -> RuleLabel:
    n = dialogue.num_turns
    call = await stage_call(
        ctx,
        Stage.LABEL,
        "label",
        judgement_schema(n),
        slot=slot,
        temperature=ctx.recipe.label.temperature,
        max_tokens=300 + 450 * n,
        rule=rule,
        n_turns=n,
        transcript=numbered_transcript(dialogue.turns),
    )
    result = aggregate(rule_index, list(call.parsed.judgements))
    ctx.store.add(
        "rule_labels",
        {
            "slot": slot,
            "rule_index": rule_index,
            "label": result.label,
            "ambiguity": result.ambiguity,
            "violated_turns": result.violated_turns,
            "discussion": result.discussion,
            "explanation": result.explanation,
            "turns_json": orjson.dumps([j.model_dump() for j in result.judgements]).decode(),
        }
        | call.provenance,
    )
    return result


async def label_all(ctx: BuildContext, slot: int, rules: list[str], dialogue: Dialogue) -> list[RuleLabel]:
    """Judge every rule separately and concurrently; any failed rule drops the slot.

    When one rule fails, the other calls are awaited, not cancelled: an answer already on the wire
    is paid for, and awaiting it journals it (a resume or a twin slot then gets it for free)."""
    tasks = [
        asyncio.ensure_future(label_rule(ctx, slot, i, r, dialogue)) for i, r in enumerate(rules, start=1)
    ]
    try:
        results = await asyncio.gather(*tasks, return_exceptions=True)
    except BaseException:  # cancelled from outside
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        # a stop (outage, bad key, closing) outranks a dropped slot
        errors.sort(key=lambda e: isinstance(e, SlotDropped))
        raise errors[0]
    return list(results)  # type: ignore[arg-type]
