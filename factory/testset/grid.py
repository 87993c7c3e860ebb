"""The test-set grid: failure modes, business impacts and hand-written scenarios per cell.

A grid file is YAML with three mappings (see testsets/dynabench_grid.yaml):

    failure_modes:      {key: {name, description, rules?: {min, max}, turns?: {min, max}}}
    business_impacts:   {key: {name, description}}
    scenarios:          {failure_mode key: {business_impact key: [1-3 scenario descriptions]}}

A cell that `scenarios` does not list is not built, so a user's grid may be sparse. Every problem
is a `ConfigError` of one line naming the file and the entry (`scenarios.counting.hipaa[1]`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

from factory.errors import ConfigError
from factory.paths import PROJECT_ROOT
from factory.recipes.laws import MAX_RULES, MAX_TURNS

DEFAULT_GRID = PROJECT_ROOT / "testsets" / "dynabench_grid.yaml"
MAX_SCENARIOS = 3

Key = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*$", max_length=60)]
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=10, max_length=1200)]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=2, max_length=80)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Bounds(_Strict):
    min: int = Field(ge=1)
    max: int = Field(ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> Bounds:
        if self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self


class FailureMode(_Strict):
    name: Name
    description: Text
    rules: Bounds | None = None  # policy size for this mode (default: the recipe's law)
    turns: Bounds | None = None  # dialogue length for this mode (default: the recipe's law)

    @model_validator(mode="after")
    def _limits(self) -> FailureMode:
        if self.rules and self.rules.max > MAX_RULES:
            raise ValueError(f"rules.max {self.rules.max} is above {MAX_RULES}")
        if self.turns and self.turns.max > MAX_TURNS:
            raise ValueError(f"turns.max {self.turns.max} is above {MAX_TURNS}")
        return self


class BusinessImpact(_Strict):
    name: Name
    description: Text


Scenarios = Annotated[list[Text], Field(min_length=1, max_length=MAX_SCENARIOS)]


class Grid(_Strict):
    failure_modes: dict[Key, FailureMode] = Field(min_length=1)
    business_impacts: dict[Key, BusinessImpact] = Field(min_length=1)
    scenarios: dict[str, dict[str, Scenarios]] = Field(min_length=1)


@dataclass(frozen=True)
class Case:
    """One scenario of one cell: a policy with a violating and a complying dialogue."""

    case_id: str  # failure_mode/business_impact/index (1-based)
    failure_mode: str
    business_impact: str
    scenario: str
    mode: FailureMode
    impact: BusinessImpact

    @property
    def slot(self) -> int:
        """The case's random stream: a function of its id alone (adding cells changes no other
        case), kept far above a build's slots; the policy and personas use it, the violating and
        complying dialogues slot + 1 and slot + 2."""
        digest = hashlib.sha256(f"testset:{self.case_id}".encode()).digest()
        return (1 << 50) + 4 * (int.from_bytes(digest[:6], "big") >> 2)


def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def load_grid(path: Path | None = None) -> tuple[Grid, list[Case]]:
    """The grid and its cases in file order; `ConfigError` (file and entry named) if it is not valid."""
    path = Path(path) if path else DEFAULT_GRID
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"--grid {path}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"--grid {path}: cannot read it ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise ConfigError(f"{path}:{where} {problem}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with failure_modes, business_impacts and scenarios")
    try:
        grid = Grid.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        more = f" (and {exc.error_count() - 1} more problem(s))" if exc.error_count() > 1 else ""
        raise ConfigError(f"{path}: {_loc(err['loc']) or 'top level'}: {err['msg']}{more}") from None
    cases: list[Case] = []
    for fm, by_impact in grid.scenarios.items():
        if fm not in grid.failure_modes:
            known = ", ".join(grid.failure_modes)
            raise ConfigError(f"{path}: scenarios.{fm}: unknown failure mode (known: {known})")
        for bi, texts in by_impact.items():
            if bi not in grid.business_impacts:
                known = ", ".join(grid.business_impacts)
                raise ConfigError(f"{path}: scenarios.{fm}.{bi}: unknown business impact (known: {known})")
            for i, text in enumerate(texts, start=1):
                cases.append(
                    Case(
                        case_id=f"{fm}/{bi}/{i}",
                        failure_mode=fm,
                        business_impact=bi,
                        scenario=text,
                        mode=grid.failure_modes[fm],
                        impact=grid.business_impacts[bi],
                    )
                )
    return grid, cases
