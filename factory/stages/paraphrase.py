"""Stage 2, paraphrase: an LLM rewrites every rule of a policy (table `paraphrases`)."""

from __future__ import annotations

from factory.stages.compose import ComposedPolicy, numbered
from factory.stages.context import BuildContext
from factory.stages.llm_call import stage_call
from factory.stages.schemas import paraphrase_schema


async def paraphrase(ctx: BuildContext, policy: ComposedPolicy) -> list[str]:
    n = len(policy.rules)
    response, prompt_hash = await stage_call(
        ctx, "paraphrase", "paraphrase", paraphrase_schema(n), slot=policy.slot,
        temperature=ctx.recipe.paraphrase_temperature, max_tokens=200 + 120 * n,
        n_rules=n, industry=policy.industry, rules=numbered([r.text for r in policy.rules]))
    rules = [r.strip() for r in response.parsed.rules]
    ctx.store.add("paraphrases", {"slot": policy.slot, "policy_id": policy.policy_id, "rules": rules,
                                  "model": ctx.endpoints["paraphrase"].spec, "prompt_hash": prompt_hash,
                                  "call_key": response.key})
    return rules
