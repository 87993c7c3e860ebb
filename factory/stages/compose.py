"""Stage 1, policy composition (no LLM): an industry, its rules, and thematic generic rules."""

from __future__ import annotations

import math
from dataclasses import dataclass

from factory.banks.loader import Banks, Rule, slugify
from factory.recipes.laws import SizeLaw
from factory.stages.sampling import slot_rng, stable_id


@dataclass
class ComposedPolicy:
    slot: int
    policy_id: str
    industry: str  # display name
    industry_slug: str
    rules: list[Rule]  # candidates: the policy's rules and its spares, in the order shown to the writer
    size: int = 0  # the drawn policy size (rules wanted in the final policy); the rest are spares

    def row(self) -> dict:
        return {
            "target_size": self.size,
            "slot": self.slot,
            "policy_id": self.policy_id,
            "industry": self.industry,
            "rule_ids": [r.id for r in self.rules],
            "rule_sources": [r.source for r in self.rules],
            "rule_groups": [r.group for r in self.rules],
            "rules": [r.text for r in self.rules],
            "num_rules": len(self.rules),
        }


def spare_count(size: int, spare_share: float, max_spares: int) -> int:
    """Spare rules drawn beyond the policy size: an ambiguous rule is replaced by the next spare."""
    return 0 if spare_share <= 0 else min(max_spares, math.ceil(size * spare_share) + 1)


def compose_policy(
    banks: Banks,
    seed: int,
    slot: int,
    law: SizeLaw,
    industry_share: tuple[float, float],
    max_categories: int = 4,
    spare_share: float = 0.0,
    max_spares: int = 0,
) -> ComposedPolicy:
    """Draw n rules: a share from the industry's own rules, the rest from 1-4 generic categories.

    Generic categories are picked first and drawn from as themes; if they run dry, the remaining
    rules come from any generic category, so a policy of 100 rules is still possible. `banks` may be
    one split's pool (factory.stages.splits); a pool too small for the drawn size gives a smaller
    policy, and one with no rule for this industry and no generic rule gives a policy of other
    industries' rules of that same pool, never rules from outside it.
    """
    rng = slot_rng(seed, slot, "policy")
    industry = rng.choice(banks.industries)
    slug = slugify(industry)
    size = law.sample(rng)
    n = size + spare_count(size, spare_share, max_spares)
    own = list(banks.industry_rules.get(slug, []))
    share = rng.uniform(*industry_share)
    k_industry = min(len(own), max(1 if n > 1 or rng.random() < share else 0, round(n * share)))
    chosen = rng.sample(own, k_industry) if k_industry else []
    remaining = n - len(chosen)
    categories = sorted(banks.misc_rules)
    themes = rng.sample(categories, min(len(categories), rng.randint(1, max_categories)))
    pool = [r for c in themes for r in banks.misc_rules[c]]
    rng.shuffle(pool)
    generic = pool[:remaining]
    if len(generic) < remaining:
        taken = {r.id for r in generic}
        rest = [r for c in categories for r in banks.misc_rules[c] if r.id not in taken]
        generic += rng.sample(rest, min(len(rest), remaining - len(generic)))
    if len(chosen) + len(generic) < n:  # tiny banks: top up with more industry rules
        extra = [r for r in own if r not in chosen]
        chosen += extra[: n - len(chosen) - len(generic)]
    rules = chosen + generic
    if not rules:  # a small pool (a split's share of the bank) with nothing for this industry
        rest = list({r.id: r for r in banks.all_rules}.values())
        rules = rng.sample(rest, min(len(rest), size))
    rng.shuffle(rules)
    policy_id = "pol-" + stable_id(seed, slot, *sorted(r.id for r in rules), length=12)
    return ComposedPolicy(
        slot=slot,
        policy_id=policy_id,
        industry=industry,
        industry_slug=slug,
        rules=rules,
        size=min(size, len(rules)),
    )


def numbered(rules: list[str]) -> str:
    return "\n".join(f"{i}. {text}" for i, text in enumerate(rules, start=1))
