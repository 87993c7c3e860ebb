"""The dry-run cost model on its own (no server): structure, the label stage's spares, caching
and unpriced models."""

from __future__ import annotations

import pytest

from factory.recipes import Recipe
from factory.recipes.model import CostConfig, LabelConfig
from factory.runner.estimate import CACHE_MIN_PREFIX, estimate, format_estimate, model_slot, recipe_factors

STAGES = ("paraphrase", "persona", "dialogue", "label", "trace")


def _endpoints(recipe: Recipe, writer: str = "openai:gpt-4.1-mini", judge: str = "openai:gpt-4o") -> dict:
    return {s: recipe.endpoint(judge if s in ("label", "trace") else writer) for s in STAGES}


def test_estimate_has_every_stage_and_a_total_and_prices_them():
    recipe = Recipe(name="t")
    est = estimate(recipe, _endpoints(recipe), 1000, 0, sample_slots=40)
    for part in [*est["stages"].values(), est["total"]]:
        assert {"calls", "input_tokens", "output_tokens", "cost_usd"} <= part.keys()
    assert est["total"]["calls"] == sum(s["calls"] for s in est["stages"].values())
    assert est["total"]["cost_usd"] > est["total"]["cost_usd_with_caching"] > 0
    # one paraphrase per slot; labelling is one call per rule
    slots = est["slots"]
    assert est["stages"]["label"]["calls"] > 3 * slots
    assert "label" in format_estimate(est) and "total" in format_estimate(est)


def test_spares_for_ambiguous_rules_add_label_calls_and_threshold_10_means_none():
    base = Recipe(name="t", cost=CostConfig(expected_ambiguous_rule_rate=0.0))
    more = Recipe(name="t", cost=CostConfig(expected_ambiguous_rule_rate=0.3))
    never = Recipe(
        name="t", label=LabelConfig(ambiguity_threshold=10), cost=CostConfig(expected_ambiguous_rule_rate=0.3)
    )
    calls = {
        name: estimate(r, _endpoints(r), 1000, 0, sample_slots=40)["stages"]["label"]["calls"]
        for name, r in (("base", base), ("more", more), ("never", never))
    }
    assert calls["more"] > 1.2 * calls["base"]
    assert recipe_factors(never).ambiguous_rule_rate == 0.0
    assert calls["never"] == pytest.approx(calls["base"], rel=0.01)


def test_only_a_long_enough_prefix_counts_as_cacheable():
    from factory.banks.loader import load_banks

    banks, _ = load_banks()
    slot = model_slot(Recipe(name="t"), banks, 0, 3, 0.0)
    assert slot["label"].prefix_tokens >= CACHE_MIN_PREFIX * slot["label"].calls  # long instructions
    assert slot["persona"].prefix_tokens == 0  # a short system prompt is never cached


def test_unpriced_models_are_shown_as_such():
    recipe = Recipe(name="t")
    est = estimate(recipe, _endpoints(recipe, writer="openai:some-unknown-model"), 100, 0, sample_slots=20)
    assert est["stages"]["dialogue"]["cost_usd"] is None and est["total"]["cost_usd"] is None
    assert est["stages"]["label"]["cost_usd"] > 0
    assert est["total"]["unpriced"] == ["openai:some-unknown-model"]
    assert "unpriced" in format_estimate(est)
