"""Recipe validation: one line per problem, naming the recipe file and the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from factory.errors import ConfigError
from factory.llm.pricing import PriceTable
from factory.paths import pipelines_dir
from factory.recipes import SizeLaw, load_recipe
from factory.recipes.laws import MAX_RULES, MAX_TURNS

LAW = {"mu": 1.0, "sigma": 1.0, "max": 10}


def _load(tmp_path: Path, **extra: Any) -> ConfigError:
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"name": "r", **extra}), encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_recipe(str(path))
    return err.value


CASES = [
    ({"policy": {"industry_share": [-0.1, 0.5]}}, "policy.industry_share.0", "greater than or equal to 0"),
    ({"policy": {"industry_share": [0.2, 1.5]}}, "policy.industry_share.1", "less than or equal to 1"),
    ({"policy": {"industry_share": [0.8, 0.2]}}, "policy.industry_share", "low 0.8 is above high 0.2"),
    ({"policy": {"industry_share": [0.1]}}, "policy.industry_share.1", "required"),
    (
        {"dialogue": {"dynamics": {"normal_comply": -1, "trick_break": 2}}},
        "dialogue.dynamics.normal_comply",
        ">= 0",
    ),
    (
        {"dialogue": {"dynamics": {"normal_comply": 0, "trick_break": 0}}},
        "dialogue.dynamics",
        "sum to a positive",
    ),
    ({"dialogue": {"dynamics": {"sideways": 1}}}, "dialogue.dynamics", "unknown dynamics"),
    ({"pricing": {"m": {"input": -1, "output": 1}}}, "pricing.m.input", "greater than or equal to 0"),
    ({"pricing": {"m": {"input": 1}}}, "pricing.m.output", "required"),
    ({"pricing": {"m": {"input": 1, "output": 1, "cached": 0.1}}}, "pricing.m.cached", "Extra inputs"),
    ({"pricing": {"m": 3}}, "pricing.m", "valid dictionary"),
    ({"policy": {"rules_law": {**LAW, "max": MAX_RULES + 1}}}, "policy.rules_law", f"above {MAX_RULES}"),
    ({"dialogue": {"turns_law": {**LAW, "max": MAX_TURNS + 1}}}, "dialogue.turns_law", f"above {MAX_TURNS}"),
    ({"policy": {"rules_law": {**LAW, "min": 11}}}, "policy.rules_law", "min 11 is above max 10"),
    ({"policy": {"rules_law": {**LAW, "sigma": 0}}}, "policy.rules_law.sigma", "greater than 0"),
    ({"policy": {"rules_law": {**LAW, "sigma": 6}}}, "policy.rules_law.sigma", "less than or equal to 5"),
    ({"policy": {"rules_law": {**LAW, "mu": 11}}}, "policy.rules_law.mu", "less than or equal to 10"),
    ({"dialogue": {"turns_law": {**LAW, "mu": -6}}}, "dialogue.turns_law.mu", "greater than or equal to -5"),
    ({"dialogue": {"turns_law": {**LAW, "max": 0}}}, "dialogue.turns_law.max", "greater than or equal to 1"),
    ({"dialogue": {"turns_law": {**LAW, "mean": 3}}}, "dialogue.turns_law.mean", "Extra inputs"),
    ({"models": {"default": "openai:"}}, "models", "names no model"),
    ({"models": {"label": "bogus"}}, "models", "label: model spec 'bogus' must look like 'provider:model'"),
    ({"endpoints": {"gpt-4o": {"rpm": 10}}}, "endpoints", "must look like 'provider:model'"),
]


@pytest.mark.parametrize(("extra", "key", "needle"), CASES, ids=[c[1] + ":" + c[2] for c in CASES])
def test_bad_value_is_one_line_naming_file_and_key(tmp_path: Path, extra, key: str, needle: str) -> None:
    message = str(_load(tmp_path, **extra))
    assert "\n" not in message, message
    assert message.startswith(f"{tmp_path / 'r.yaml'}: {key}: "), message
    assert needle.replace(">= 0", "greater than or equal to 0") in message, message


def test_several_problems_one_line_each(tmp_path: Path) -> None:
    lines = str(
        _load(
            tmp_path,
            policy={"industry_share": [0.9, 0.1]},
            dialogue={"dynamics": {"trick_break": -2}},
            pricing={"m": {"input": 1, "output": -3}},
        )
    ).splitlines()
    prefix = f"{tmp_path / 'r.yaml'}: "
    assert len(lines) == 3 and all(ln.startswith(prefix) for ln in lines)
    assert sorted(ln[len(prefix) :].split(":")[0] for ln in lines) == [
        "dialogue.dynamics.trick_break",
        "policy.industry_share",
        "pricing.m.output",
    ]


def test_recipe_file_that_is_no_mapping_a_folder_or_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"list.yaml: a recipe must be a YAML mapping, got list"):
        load_recipe(str(path))
    folder = tmp_path / "dir.yaml"
    folder.mkdir()
    with pytest.raises(ConfigError, match="dir.yaml: is a folder"):
        load_recipe(str(folder))
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="latin.yaml: not UTF-8"):
        load_recipe(str(latin))
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_recipe(str(broken))
    assert "\n" not in str(err.value) and "broken.yaml: invalid YAML" in str(err.value)


def test_shipped_recipes_are_valid_and_prices_usable(tmp_path: Path) -> None:
    for path in sorted(pipelines_dir().glob("*.yaml")):
        load_recipe(str(path))
    path = tmp_path / "priced.yaml"
    path.write_text(yaml.safe_dump({"name": "p", "pricing": {"my-model": {"input": 0, "output": 2.5}}}))
    recipe = load_recipe(str(path))
    assert PriceTable.from_mapping(recipe.pricing).lookup("my-model").output == 2.5


def test_size_law_bounds_are_documented() -> None:
    fields = SizeLaw.model_fields
    assert "[-5, 10]" in fields["mu"].description and "(0, 5]" in fields["sigma"].description
    assert str(MAX_RULES) in fields["max"].description and str(MAX_TURNS) in fields["max"].description
