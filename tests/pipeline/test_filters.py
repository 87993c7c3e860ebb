"""Filters with a reason that is counted and kept: ambiguity above the threshold (default recipe
threshold) and labeller/intent disagreement with `on_intent_disagreement: drop`."""

from __future__ import annotations

from pathlib import Path

from factory.recipes import LabelConfig, load_recipe
from tests.pipeline.conftest import (
    build_cmd,
    check_ok,
    cli_env,
    factory_cmd,
    fake_server,
    flat,
    query,
    run_factory,
    write_recipe,
)

N = 20
# small policies and one-turn dialogues, so that a fair share of slots pass the default ambiguity filter
SMALL = {
    "policy": {"rules_law": {"mu": 0.0, "sigma": 0.5, "max": 2}},
    "dialogue": {"turns_law": {"mu": 0.0, "sigma": 0.5, "max": 1}},
    "oversample_cap": 20,
}


def _build(tmp_path: Path, recipe: Path) -> tuple[Path, str]:
    db = tmp_path / f"{recipe.stem}.duckdb"
    with fake_server() as server:
        result = check_ok(run_factory(build_cmd(db, recipe, N), cli_env(server.url, tmp=tmp_path), tmp_path))
    return db, result.stderr


def test_default_ambiguity_threshold_removes_rules_and_reports(tmp_path: Path) -> None:
    """A rule judged more ambiguous than the threshold leaves the policy and a spare takes its
    place, so policies keep their drawn size; a slot whose candidates are all ambiguous is dropped."""
    default = LabelConfig().ambiguity_threshold
    assert load_recipe("dynabench").label.ambiguity_threshold == default == 6
    recipe = write_recipe(tmp_path / "ambiguity.yaml", name="ambiguity", label={}, **SMALL)
    db, stderr = _build(tmp_path, recipe)

    assert query(db, "SELECT count(*) FROM samples")[0][0] == N
    assert query(db, "SELECT max(max_ambiguity) FROM samples")[0][0] <= default
    # every judged rule above the threshold is out of its policy, every other judged rule is in it
    assert (
        query(
            db, "SELECT count(*) FROM rule_labels WHERE ambiguity > ? AND policy_index IS NOT NULL", [default]
        )[0][0]
        == 0
    )
    assert (
        query(
            db, "SELECT count(*) FROM rule_labels WHERE ambiguity <= ? AND policy_index IS NULL", [default]
        )[0][0]
        == 0
    )
    removed = query(db, "SELECT count(*) FROM filter_log WHERE reason = 'ambiguous_rule_removed'")[0][0]
    assert removed > 0  # the fake's ambiguity is uniform 0-10: about a third of the rules are replaced
    # a sample's policy has its drawn size whenever the spares sufficed, and its rules are the kept ones
    for slot, num_rules in query(db, "SELECT slot, num_rules FROM samples"):
        target = query(db, "SELECT target_size FROM policies WHERE slot = ?", [slot])[0][0]
        kept = query(
            db, "SELECT count(*) FROM rule_labels WHERE slot = ? AND policy_index IS NOT NULL", [slot]
        )
        assert num_rules == kept[0][0] <= target
    sizes = query(
        db,
        "SELECT count(*) FILTER (WHERE s.num_rules = p.target_size), count(*) FROM samples s "
        "JOIN policies p USING (slot)",
    )[0]
    assert sizes[0] >= 0.8 * sizes[1]
    dropped = query(db, "SELECT count(*) FROM slot_status WHERE reason = 'ambiguous_label'")[0][0]
    for slot, detail in query(db, "SELECT slot, detail FROM filter_log WHERE reason = 'ambiguous_label'"):
        assert f"every rule above threshold {default}" in detail
        assert query(db, "SELECT min(ambiguity) FROM rule_labels WHERE slot = ?", [slot])[0][0] > default
    if dropped:
        assert f"ambiguous_label={dropped}" in flat(stderr)

    stats = check_ok(
        run_factory(
            factory_cmd("stats", "--db", db, "--out", tmp_path / "plots"),
            cli_env(None, tmp=tmp_path),
            tmp_path,
        )
    )
    line = next(ln for ln in stats.stdout.splitlines() if "ambiguous_rule_removed" in ln)
    assert line.split()[:4] == ["filter", "ambiguous_rule_removed", "noted", str(removed)]
    assert "policy size, drawn" in stats.stdout and "policy size" in stats.stdout


def test_intent_disagreement_drop(tmp_path: Path) -> None:
    recipe = write_recipe(
        tmp_path / "intent.yaml",
        name="intent",
        label={"ambiguity_threshold": 10, "on_intent_disagreement": "drop"},
        **SMALL,
    )
    db, stderr = _build(tmp_path, recipe)

    assert query(db, "SELECT count(*) FROM samples")[0][0] == N
    assert query(db, "SELECT bool_and(agrees_with_intent), bool_and(label = intended_label) FROM samples")[
        0
    ] == (True, True)
    dropped = query(db, "SELECT count(*) FROM filter_log WHERE reason = 'intent_disagreement' AND dropped")[
        0
    ][0]
    assert dropped > 0  # random labels disagree with the intended dynamic about half of the time
    assert (
        query(db, "SELECT count(*) FROM filter_log WHERE reason = 'intent_disagreement' AND NOT dropped")[0][
            0
        ]
        == 0
    )
    # the dropped slots really disagree: their dialogue's dynamic against their rule labels
    for (slot,) in query(db, "SELECT slot FROM slot_status WHERE reason = 'intent_disagreement'"):
        dynamic = query(db, "SELECT dynamic FROM dialogues WHERE slot = ?", [slot])[0][0]
        violated = query(db, "SELECT bool_or(label = 'VIOLATED') FROM rule_labels WHERE slot = ?", [slot])[0][
            0
        ]
        assert violated != (dynamic in ("trick_break", "normal_break"))
    assert f"intent_disagreement={dropped}" in flat(stderr)
