"""Rule-disjoint splits: the bank's rules are partitioned by rule id into one pool per split.

The partition is made before any policy is composed (`rule_pools`), seeded and stratified by rule
group (each industry's own rules and each generic category are split in the recipe's proportions,
with the rounding remainder carried from group to group so that the totals come out right). A slot
is assigned a split from (seed, slot) alone (`slot_split`) and composes its policy from that
split's pool only, so no bank rule can appear in two splits.

A rule id is a content hash, so the same text in two bank files is one rule: it goes to the pool of
the first group it appears in, and every copy of it follows.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import replace

from factory.banks.loader import Banks, Rule
from factory.errors import ConfigError
from factory.recipes.model import SplitConfig
from factory.stages.sampling import slot_rng

SPLITS = ("train", "validation", "test")


def fractions(cfg: SplitConfig) -> dict[str, float]:
    return {"validation": cfg.validation, "test": cfg.test}


def slot_split(seed: int, slot: int, cfg: SplitConfig) -> str:
    """The split of a slot, from (seed, slot) only."""
    u = slot_rng(seed, slot, "split").random()
    if u < cfg.test:
        return "test"
    if u < cfg.test + cfg.validation:
        return "validation"
    return "train"


def _group_rng(seed: int, group: str) -> random.Random:
    digest = hashlib.sha256(f"{seed}:rule-split:{group}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def assign_rules(banks: Banks, seed: int, cfg: SplitConfig) -> dict[str, str]:
    """rule id -> split. Stratified by (source, group); a split with a share > 0 gets at least one
    rule whenever the bank has enough distinct rules (taken from the largest group's train part)."""
    groups: dict[tuple[str, str], list[str]] = {}
    seen: set[str] = set()
    for key, rules in [(("industry", g), r) for g, r in sorted(banks.industry_rules.items())] + [
        (("misc", g), r) for g, r in sorted(banks.misc_rules.items())
    ]:
        ids = []
        for rule in rules:
            if rule.id not in seen:
                seen.add(rule.id)
                ids.append(rule.id)
        groups[key] = ids
    out: dict[str, str] = {}
    carry = {"test": 0.0, "validation": 0.0}
    for key, ids in groups.items():
        ids = sorted(ids)
        _group_rng(seed, f"{key[0]}/{key[1]}").shuffle(ids)
        start = 0
        for split in ("test", "validation"):
            want = len(ids) * getattr(cfg, split) + carry[split]
            k = min(len(ids) - start, math.floor(want + 1e-9))
            carry[split] = want - k
            for rid in ids[start : start + k]:
                out[rid] = split
            start += k
        for rid in ids[start:]:
            out[rid] = "train"
    # Small banks: make sure every split that is asked for has a rule to compose from.
    for split in ("test", "validation"):
        if getattr(cfg, split) > 0 and split not in out.values():
            train = sorted(rid for rid, s in out.items() if s == "train")
            if len(train) > 1:
                out[_group_rng(seed, f"top-up/{split}").choice(train)] = split
    return out


def rule_pools(banks: Banks, seed: int, cfg: SplitConfig) -> dict[str, Banks]:
    """One `Banks` per split holding only that split's rules (trait banks and industries shared)."""
    assigned = assign_rules(banks, seed, cfg)
    for split in SPLITS:
        share = 1 - cfg.validation - cfg.test if split == "train" else getattr(cfg, split)
        if share > 0 and split not in assigned.values():
            raise ConfigError(
                f"the rule bank has {len(assigned)} distinct rule(s), too few for rule-disjoint "
                f"{split} split; add rules or use `splits: {{method: policy}}` in the recipe"
            )

    def only(rules: dict[str, list[Rule]], split: str) -> dict[str, list[Rule]]:
        return {g: [r for r in rs if assigned.get(r.id) == split] for g, rs in rules.items()}

    return {
        s: replace(banks, industry_rules=only(banks.industry_rules, s), misc_rules=only(banks.misc_rules, s))
        for s in SPLITS
    }
