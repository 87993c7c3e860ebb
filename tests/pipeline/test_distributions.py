"""Policy-size and turn laws without any LLM: the paper's Table 2 train figures within 10%."""

from __future__ import annotations

import statistics

import pytest

from factory.banks.loader import load_banks
from factory.recipes import load_recipe
from factory.recipes.laws import TURNS_LAW
from factory.stages.compose import compose_policy
from factory.stages.sampling import slot_rng

SLOTS = 20_000


def test_policy_size_law_matches_paper() -> None:
    banks, _ = load_banks()
    policy = load_recipe("dynabench").policy
    sizes = []
    ids = set()
    for slot in range(SLOTS):
        p = compose_policy(banks, 0, slot, policy.rules_law, policy.industry_share, policy.max_categories)
        assert len({r.id for r in p.rules}) == len(p.rules), "a policy lists a rule twice"
        sizes.append(len(p.rules))
        ids.add(p.policy_id)
    assert len(ids) == SLOTS
    assert statistics.median(sizes) == pytest.approx(4, rel=0.10)
    assert statistics.mean(sizes) == pytest.approx(6.4, rel=0.10)
    assert min(sizes) == 1 and max(sizes) <= 100
    assert max(sizes) >= 50, "the law should be heavy-tailed"


def test_turns_law_matches_paper() -> None:
    assert load_recipe("dynabench").dialogue.turns_law == TURNS_LAW
    turns = [TURNS_LAW.sample(slot_rng(0, slot, "turns")) for slot in range(SLOTS)]
    assert statistics.median(turns) == pytest.approx(2, rel=0.10)
    assert statistics.mean(turns) == pytest.approx(2.8, rel=0.10)
    assert min(turns) == 1 and max(turns) <= 27
