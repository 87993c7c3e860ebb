"""Policy composition: deterministic per (seed, slot), sizes from the law, industry plus themes."""

from __future__ import annotations

from factory.banks.loader import load_banks
from factory.recipes import RULES_LAW, SizeLaw
from factory.stages.compose import compose_policy, numbered

BANKS, _ = load_banks()


def test_same_seed_and_slot_same_policy_other_slot_differs() -> None:
    a = compose_policy(BANKS, 7, 3, RULES_LAW, (0.3, 0.7))
    b = compose_policy(BANKS, 7, 3, RULES_LAW, (0.3, 0.7))
    assert a == b
    others = {compose_policy(BANKS, 7, s, RULES_LAW, (0.3, 0.7)).policy_id for s in range(4, 30)}
    assert a.policy_id not in others and len(others) == 26


def test_rules_are_distinct_from_the_industry_and_generic_banks() -> None:
    for slot in range(200):
        p = compose_policy(BANKS, 1, slot, SizeLaw(mu=2.0, sigma=0.5, max=30), (0.3, 0.7))
        ids = [r.id for r in p.rules]
        assert len(ids) == len(set(ids)), "a rule appears twice in one policy"
        for r in p.rules:
            assert r.source in ("industry", "misc")
            if r.source == "industry":
                assert r.group == p.industry_slug
        assert p.row()["num_rules"] == len(p.rules) <= 30


def test_size_follows_a_fixed_law_exactly() -> None:
    law = SizeLaw(mu=0.0, sigma=0.1, min=5, max=5)
    assert {len(compose_policy(BANKS, 0, s, law, (0.3, 0.7)).rules) for s in range(50)} == {5}


def test_numbered() -> None:
    assert numbered(["a", "b"]) == "1. a\n2. b"
