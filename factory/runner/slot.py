"""One slot = one candidate sample taken through every stage, in order."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from factory.llm.errors import RetryableProviderError
from factory.recipes.names import BREAKS, STAGES, Stage
from factory.stages.compose import compose_policy, numbered
from factory.stages.context import BuildContext, SlotDropped
from factory.stages.dialogue import transcript, write_dialogue
from factory.stages.label import label_all
from factory.stages.paraphrase import paraphrase
from factory.stages.persona import personas
from factory.stages.traces import build_trace
from factory.store.sample_row import sample_row


@dataclass
class SlotResult:
    slot: int
    sample: dict[str, Any] | None = None
    drop: SlotDropped | None = None
    # the provider could not be reached (after retries): the slot is not committed, it runs again
    transient: RetryableProviderError | None = None
    notes: list[tuple[str, str, str]] = field(default_factory=list)  # (stage, reason, detail), kept rows


async def run_slot(ctx: BuildContext, slot: int) -> SlotResult:
    try:
        return await _run(ctx, slot)
    except SlotDropped as drop:
        return SlotResult(slot=slot, drop=drop)
    except RetryableProviderError as exc:
        return SlotResult(slot=slot, transient=exc)


async def _run(ctx: BuildContext, slot: int) -> SlotResult:
    recipe = ctx.recipe
    policy = compose_policy(
        ctx.banks,
        ctx.seed,
        slot,
        recipe.policy.rules_law,
        recipe.policy.industry_share,
        recipe.policy.max_categories,
    )
    ctx.store.add("policies", policy.row())
    ctx.count(Stage.COMPOSE).done += 1
    rules = await paraphrase(ctx, policy)
    people = await personas(ctx, slot, policy.industry)
    dialogue = await write_dialogue(ctx, slot, rules, people)
    labels = await label_all(ctx, slot, rules, dialogue)
    result = SlotResult(slot=slot)

    max_amb = max(lab.ambiguity for lab in labels)
    if max_amb > recipe.label.ambiguity_threshold:
        raise SlotDropped(
            Stage.FILTER,
            "ambiguous_label",
            f"max ambiguity {max_amb} > threshold {recipe.label.ambiguity_threshold}",
        )
    violated = [lab.rule_index for lab in labels if lab.label == "VIOLATED"]
    label = "FAIL" if violated else "PASS"
    intended = "FAIL" if dialogue.dynamic in BREAKS else "PASS"
    agrees = label == intended
    if not agrees:
        if recipe.label.on_intent_disagreement == "drop":
            raise SlotDropped(Stage.FILTER, "intent_disagreement", f"intended {intended}, labelled {label}")
        result.notes.append(
            (Stage.FILTER, "intent_disagreement", f"intended {intended}, labelled {label} (kept)")
        )

    trace = build_trace(ctx.seed, slot, labels, recipe.traces)
    for flag in trace.flags:
        result.notes.append((Stage.TRACES, flag, "reasoning dropped, sample kept in answer mode"))
    ctx.store.add(
        "traces",
        {
            "slot": slot,
            "mode": trace.mode,
            "reasoning": trace.reasoning,
            "explanation": trace.explanation,
            "quality_flags": trace.flags,
        },
    )
    ctx.count(Stage.TRACES).done += 1
    models = {stage: ctx.endpoints[stage].spec for stage in STAGES}
    result.sample = sample_row(
        slot=slot,
        sample_id=dialogue.sample_id,
        policy_id=policy.policy_id,
        industry=policy.industry,
        policy=numbered(rules),
        transcript=transcript(dialogue.turns),
        label=label,
        rules=rules,
        turns_json=orjson.dumps(dialogue.turns).decode(),
        rule_labels_json=orjson.dumps([lab.public() for lab in labels]).decode(),
        violated_rules=violated,
        explanation=trace.explanation,
        reasoning=trace.reasoning,
        trace_mode=trace.mode,
        dynamic=dialogue.dynamic,
        near_miss=dialogue.near_miss,
        intended_label=intended,
        agrees_with_intent=agrees,
        num_rules=len(rules),
        num_turns=dialogue.num_turns,
        max_ambiguity=max_amb,
        user_persona=people.user,
        agent_persona=f"{people.agent_name} ({people.company}): {people.agent}",
        models_json=orjson.dumps(models).decode(),
    )
    return result
