"""The grid loader: one-line errors naming the file and the entry; cases and their slots."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from factory.errors import ConfigError
from factory.testset.grid import load_grid

GRID = {
    "failure_modes": {"math": {"name": "Math", "description": "Checking the agent needs arithmetic."}},
    "business_impacts": {"transactions": {"name": "Transactions", "description": "Payments and refunds."}},
    "scenarios": {
        "math": {"transactions": ["A refund capped at 30 days is asked on day 32.", "Ten per cent off 80."]}
    },
}


def _write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "g.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data), encoding="utf-8")
    return path


def test_cases_in_file_order_with_distinct_stable_slots(tmp_path):
    _, cases = load_grid(_write(tmp_path, GRID))
    assert [c.case_id for c in cases] == ["math/transactions/1", "math/transactions/2"]
    assert cases[0].mode.name == "Math" and cases[0].impact.name == "Transactions"
    assert cases[0].slot != cases[1].slot and cases[0].slot % 4 == 0 and cases[0].slot >= 1 << 50
    _, again = load_grid(_write(tmp_path, GRID))
    assert [c.slot for c in again] == [c.slot for c in cases]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("failure_modes: [unclosed\n", "line 2"),
        ("- a list\n", "expected a mapping"),
        ({**GRID, "extra": 1}, "extra: Extra inputs are not permitted"),
        (
            {
                **GRID,
                "failure_modes": {"math": {**GRID["failure_modes"]["math"], "rules": {"min": 5, "max": 2}}},
            },
            "failure_modes.math.rules: Value error, min 5 is above max 2",
        ),
        (
            {
                **GRID,
                "failure_modes": {"math": {**GRID["failure_modes"]["math"], "turns": {"min": 1, "max": 99}}},
            },
            "failure_modes.math: Value error, turns.max 99 is above 50",
        ),
        (
            {**GRID, "scenarios": {"maths": {"transactions": ["A scenario text here."]}}},
            "scenarios.maths: unknown failure mode",
        ),
        ({**GRID, "scenarios": {"math": {"transactions": ["short"]}}}, "scenarios.math.transactions[0]"),
        (
            {**GRID, "scenarios": {"math": {"transactions": []}}},
            "scenarios.math.transactions: List should have at least 1",
        ),
    ],
)
def test_bad_grid_is_one_line_naming_file_and_entry(tmp_path, data, message):
    path = _write(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        load_grid(path)
    text = str(info.value)
    assert "\n" not in text and str(path) in text and message in text, text


def test_missing_grid_file(tmp_path):
    with pytest.raises(ConfigError, match="--grid .*nope.yaml: no such file"):
        load_grid(tmp_path / "nope.yaml")
