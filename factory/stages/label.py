"""Stage 5, per-rule labels: one call per rule, a judgement per agent turn (table `rule_labels`)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace

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
    provenance: dict[str, str] = field(default_factory=dict)

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
    """Judge one rule (by its 1-based index among the policy's candidate rules) turn by turn."""
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
    result.provenance = call.provenance
    return result


async def _gather_labels(
    ctx: BuildContext, slot: int, batch: list[tuple[int, str]], dialogue: Dialogue
) -> list[RuleLabel]:
    """Judge several rules concurrently; any failed rule drops the slot.

    When one rule fails, the other calls are awaited, not cancelled: an answer already on the wire
    is paid for, and awaiting it journals it (a resume or a twin slot then gets it for free)."""
    tasks = [asyncio.ensure_future(label_rule(ctx, slot, i, r, dialogue)) for i, r in batch]
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


@dataclass
class PolicyLabels:
    kept: list[RuleLabel]  # the final policy's rules, renumbered 1..k (rule_index), in candidate order
    candidate_index: list[int]  # for each kept rule, its 1-based index among the candidates
    removed: list[RuleLabel]  # judged more ambiguous than the threshold (indices are candidate indices)


async def label_policy(
    ctx: BuildContext, slot: int, candidates: list[str], size: int, dialogue: Dialogue
) -> PolicyLabels:
    """Label the policy's `size` rules; replace each rule judged more ambiguous than the threshold
    by the next spare candidate (labelled in turn), so the policy keeps its drawn size while spares
    last. Only an ambiguous rule leaves the policy: the other rules keep their judgements."""
    threshold = ctx.recipe.label.ambiguity_threshold
    judged: dict[int, RuleLabel] = {}
    next_spare = size + 1
    batch = list(range(1, size + 1))
    while batch:
        for lab in await _gather_labels(ctx, slot, [(i, candidates[i - 1]) for i in batch], dialogue):
            judged[lab.rule_index] = lab
        clear = sum(1 for lab in judged.values() if lab.ambiguity <= threshold)
        missing = size - clear
        batch = (
            list(range(next_spare, min(len(candidates), next_spare + missing - 1) + 1)) if missing > 0 else []
        )
        next_spare += len(batch)
    order = sorted(judged)
    kept_idx = [i for i in order if judged[i].ambiguity <= threshold]
    removed = [judged[i] for i in order if judged[i].ambiguity > threshold]
    kept = []
    for k, i in enumerate(kept_idx, start=1):
        kept.append(replace(judged[i], rule_index=k))
    for i in order:
        lab = judged[i]
        ctx.store.add(
            "rule_labels",
            {
                "slot": slot,
                "rule_index": i,
                "policy_index": kept_idx.index(i) + 1 if i in kept_idx else None,
                "label": lab.label,
                "ambiguity": lab.ambiguity,
                "violated_turns": lab.violated_turns,
                "discussion": lab.discussion,
                "explanation": lab.explanation,
                "turns_json": orjson.dumps([j.model_dump() for j in lab.judgements]).decode(),
            }
            | lab.provenance,
        )
    return PolicyLabels(kept=kept, candidate_index=kept_idx, removed=removed)
