"""Rule-disjoint split pools: a partition of the bank by rule id, stratified, seeded; slots get a
split from (seed, slot) and compose from that split's pool only, small pools included."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pytest

from factory.banks.loader import Banks, Rule, load_banks
from factory.errors import ConfigError
from factory.recipes import RULES_LAW
from factory.recipes.model import SplitConfig
from factory.stages.compose import compose_policy
from factory.stages.splits import SPLITS, assign_rules, rule_pools, slot_split

BANKS, _ = load_banks()
CFG = SplitConfig(validation=0.05, test=0.05)


def test_partition_covers_every_rule_once_and_is_seeded() -> None:
    a = assign_rules(BANKS, 3, CFG)
    assert set(a) == {r.id for r in BANKS.all_rules}
    assert a == assign_rules(BANKS, 3, CFG) and a != assign_rules(BANKS, 4, CFG)
    counts = Counter(a.values())
    total = len(a)
    for split, share in (("test", 0.05), ("validation", 0.05)):
        assert abs(counts[split] - total * share) <= 1.5


def test_partition_is_stratified_by_group() -> None:
    a = assign_rules(BANKS, 0, CFG)
    for group, rules in {**BANKS.industry_rules, **BANKS.misc_rules}.items():
        ids = {r.id for r in rules}
        if len(ids) >= 40:
            test = sum(a[i] == "test" for i in ids)
            assert 0 < test <= len(ids) * 0.05 + 2, group


def test_pools_are_disjoint_and_policies_stay_in_their_pool() -> None:
    pools = rule_pools(BANKS, 0, CFG)
    ids = {s: {r.id for r in pools[s].all_rules} for s in SPLITS}
    assert not ids["train"] & ids["test"] and not ids["train"] & ids["validation"]
    assert not ids["validation"] & ids["test"]
    for slot in range(300):
        split = slot_split(0, slot, CFG)
        p = compose_policy(pools[split], 0, slot, RULES_LAW, (0.3, 0.7))
        assert p.rules and {r.id for r in p.rules} <= ids[split]


def test_slot_split_depends_on_seed_and_slot_only() -> None:
    splits = [slot_split(1, s, CFG) for s in range(4000)]
    assert splits == [slot_split(1, s, CFG) for s in range(4000)]
    counts = Counter(splits)
    assert 100 < counts["test"] < 300 and 100 < counts["validation"] < 300


def _tiny_bank(n_misc: int) -> Banks:
    rules = [
        Rule(id=f"r{i}", text=f"Rule number {i}.", source="misc", group="tone", file="x", line=i)
        for i in range(n_misc)
    ]
    return replace(BANKS, industry_rules={k: [] for k in BANKS.industry_rules}, misc_rules={"tone": rules})


def test_small_pools_still_compose_within_their_pool() -> None:
    bank = _tiny_bank(12)
    cfg = SplitConfig(validation=0.1, test=0.1)
    pools = rule_pools(bank, 0, cfg)
    ids = {s: {r.id for r in pools[s].all_rules} for s in SPLITS}
    assert all(ids[s] for s in SPLITS) and sum(len(v) for v in ids.values()) == 12
    for slot in range(100):
        split = slot_split(0, slot, cfg)
        p = compose_policy(pools[split], 0, slot, RULES_LAW, (0.3, 0.7))
        assert p.rules, (split, slot)
        assert {r.id for r in p.rules} <= ids[split]
        assert 1 <= p.size <= len(p.rules)


def test_a_bank_too_small_for_the_splits_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="too few for rule-disjoint"):
        rule_pools(_tiny_bank(2), 0, SplitConfig(validation=0.1, test=0.1))
    rule_pools(_tiny_bank(1), 0, SplitConfig(validation=0.0, test=0.0))  # train only: fine
