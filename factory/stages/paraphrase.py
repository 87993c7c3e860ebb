"""Stage 2, paraphrase: an LLM rewrites every rule of a policy (table `paraphrases`)."""

from __future__ import annotations

from factory.recipes.names import Stage
from factory.stages.compose import ComposedPolicy, numbered
from factory.stages.context import BuildContext
from factory.stages.llm_call import stage_call
from factory.stages.sampling import slot_rng
from factory.stages.schemas import paraphrase_schema

# Drawn per slot: varies the voice of policies (real rule sets are written in many styles) and
# keeps two slots that drew the same rules from sending the same request.
STYLES = (
    "short imperative sentences addressed to the assistant",
    'the second person, speaking to the assistant as "you"',
    'the third person, as "the agent must" / "the agent must not"',
    "the tone of an internal compliance handbook",
    "plain, friendly language a new support hire would understand",
    "precise, formal wording with conditions stated first",
    "the style of a product manager's operating guidelines",
    "compact wording, each rule as brief as its details allow",
)


async def paraphrase(ctx: BuildContext, policy: ComposedPolicy) -> list[str]:
    n = len(policy.rules)
    style = slot_rng(ctx.seed, policy.slot, "paraphrase").choice(STYLES)
    call = await stage_call(
        ctx,
        Stage.PARAPHRASE,
        "paraphrase",
        paraphrase_schema(n),
        slot=policy.slot,
        temperature=ctx.recipe.paraphrase_temperature,
        max_tokens=200 + 120 * n,
        n_rules=n,
        industry=policy.industry,
        style=style,
        rules=numbered([r.text for r in policy.rules]),
    )
    rules = [r.strip() for r in call.parsed.rules]
    ctx.store.add(
        "paraphrases", {"slot": policy.slot, "policy_id": policy.policy_id, "rules": rules} | call.provenance
    )
    return rules
