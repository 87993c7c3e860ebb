"""One slot = one candidate sample taken through every stage, in order, with its filters applied
where their input exists (factory/stages/filters.py); the result goes to the ordered committer."""

from __future__ import annotations

from dataclasses import dataclass, field

from factory.llm.errors import RetryableProviderError
from factory.recipes.names import Stage
from factory.stages import filters
from factory.stages.compose import compose_policy
from factory.stages.context import BuildContext, SlotDropped
from factory.stages.dialogue import write_dialogue
from factory.stages.label import label_policy
from factory.stages.paraphrase import paraphrase
from factory.stages.persona import personas
from factory.stages.sample_columns import labelled_columns
from factory.stages.trace import write_trace
from factory.store.sample_row import sample_row


@dataclass
class SlotResult:
    slot: int
    sample: dict | None = None
    drop: SlotDropped | None = None
    notes: list[filters.Verdict] = field(default_factory=list)  # reasons of a kept sample
    # the provider could not be reached (after retries): the slot is not committed, it runs again
    transient: RetryableProviderError | None = None


async def run_slot(ctx: BuildContext, slot: int) -> SlotResult:
    result = SlotResult(slot=slot)
    try:
        await _run(ctx, slot, result)
    except SlotDropped as drop:
        result.drop = drop
    except RetryableProviderError as exc:
        return SlotResult(slot=slot, transient=exc)
    return result


async def _run(ctx: BuildContext, slot: int, result: SlotResult) -> None:
    recipe = ctx.recipe
    split, pool = ctx.split_and_banks(slot)
    policy = compose_policy(
        pool,
        ctx.seed,
        slot,
        recipe.policy.rules_law,
        recipe.policy.industry_share,
        recipe.policy.max_categories,
        recipe.label.spare_share,
        recipe.label.max_spares,
    )
    ctx.store.add("policies", policy.row())
    ctx.count(Stage.COMPOSE).done += 1
    candidates = await paraphrase(ctx, policy)
    people = await personas(ctx, slot, policy.industry)
    dialogue = await write_dialogue(ctx, slot, candidates, people, core=policy.size)
    filters.enforce(dialogue, filters.AFTER_DIALOGUE, result.notes)

    labelled = await label_policy(ctx, slot, candidates, policy.size, dialogue)
    check = filters.Labelled(
        dialogue=dialogue,
        labels=labelled.kept,
        removed=labelled.removed,
        threshold=recipe.label.ambiguity_threshold,
        on_intent_disagreement=recipe.label.on_intent_disagreement,
    )
    filters.enforce(check, filters.AFTER_LABELS, result.notes)

    labels = labelled.kept
    rules = [candidates[i - 1] for i in labelled.candidate_index]
    targets = [
        labelled.candidate_index.index(t) + 1 for t in dialogue.target_rules if t in labelled.candidate_index
    ]
    trace = await write_trace(ctx, slot, rules, dialogue, labels, targets)
    result.sample = sample_row(
        slot=slot,
        sample_id=dialogue.sample_id,
        split=split,
        dynamic=dialogue.dynamic,
        near_miss=dialogue.near_miss,
        intended_label=check.intended,
        agrees_with_intent=check.label == check.intended,
        **labelled_columns(policy, candidates, labelled, dialogue, people, check.label, trace, ctx.endpoints),
    )
