"""Read the banks from plain-text files, validating every line with a pydantic model.

Layout (see BANKS.md):
  banks/user_traits/{professions,hobbies,personalities,locations}.txt
  banks/agent_traits/{roles,tones,locations,industries}.txt
  banks/rules/industry/<industry-slug>.txt   one rule per line
  banks/rules/misc/<category-slug>.txt       one rule per line
Lines starting with '#' and blank lines are ignored. Errors name the file and line.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ValidationError, field_validator

from factory.paths import banks_dir

USER_TRAITS = ("professions", "hobbies", "personalities", "locations")
AGENT_TRAITS = ("roles", "tones", "locations", "industries")
MISC_CATEGORIES = (
    "tone",
    "style",
    "brand-consistency",
    "user-experience",
    "age-appropriateness",
    "hipaa",
    "gdpr",
    "dodd-frank",
    "sec",
    "false-advertising",
    "ferpa",
    "discounts",
    "returns",
    "sales-conversion",
    "product-offering",
    "sensitive-topics",
    "named-entities",
    "ip-consistency",
    "custom-pii",
    "medical-anatomy",
    "customer-profile-use",
    "product-hallucination",
    "customer-hand-offs",
    "npc-instructions",
    "tool-use",
)


class BankError(ValueError):
    """A malformed bank file; the message names the file and line."""


def slugify(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _plain_line(v: str, lo: int, hi: int, what: str) -> str:
    if v != v.strip():
        raise ValueError("leading or trailing whitespace")
    if not lo <= len(v) <= hi:
        raise ValueError(f"{what} {len(v)} outside {lo}..{hi} characters")
    if "\t" in v:
        raise ValueError("tab character")
    return v


class TraitLine(BaseModel):
    text: str

    @field_validator("text")
    @classmethod
    def _check(cls, v: str) -> str:
        return _plain_line(v, 2, 200, "length")


class RuleLine(BaseModel):
    text: str

    @field_validator("text")
    @classmethod
    def _check(cls, v: str) -> str:
        _plain_line(v, 30, 400, "rule length")
        if re.match(r"^(\d+[.)]|[-*•])\s", v):
            raise ValueError("rules must not carry their own numbering or bullets")
        if v[-1] not in ".!?)\"'":
            raise ValueError("a rule must end with a full stop")
        return v


@dataclass(frozen=True)
class Rule:
    id: str  # stable content hash
    text: str
    source: str  # "industry" | "misc"
    group: str  # industry slug or category slug
    file: str
    line: int


@dataclass
class Banks:
    user: dict[str, list[str]] = field(default_factory=dict)
    agent: dict[str, list[str]] = field(default_factory=dict)
    industries: list[str] = field(default_factory=list)  # display names
    industry_rules: dict[str, list[Rule]] = field(default_factory=dict)  # by industry slug
    misc_rules: dict[str, list[Rule]] = field(default_factory=dict)  # by category slug

    def industry_name(self, slug: str) -> str:
        return {slugify(n): n for n in self.industries}[slug]

    @property
    def all_rules(self) -> list[Rule]:
        out: list[Rule] = []
        for rules in self.industry_rules.values():
            out.extend(rules)
        for rules in self.misc_rules.values():
            out.extend(rules)
        return out


def _lines(path: Path) -> list[tuple[int, str]]:
    if not path.exists():
        raise BankError(f"{path}: file not found")
    try:
        raw = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise BankError(f"{path}: not UTF-8 ({exc})") from exc
    out = []
    for i, line in enumerate(raw.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        out.append((i, line))
    return out


def rule_id(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def read_traits(path: Path, errors: list[str]) -> list[str]:
    items: list[str] = []
    seen: dict[str, int] = {}
    for lineno, line in _lines(path):
        try:
            items.append(TraitLine(text=line).text)
        except ValidationError as exc:
            errors.append(f"{path}:{lineno}: {exc.errors()[0]['msg']}")
            continue
        key = line.lower()
        if key in seen:
            errors.append(f"{path}:{lineno}: duplicate of line {seen[key]}")
        seen[key] = lineno
    if not items:
        errors.append(f"{path}: no entries")
    return items


def read_rules(path: Path, source: str, group: str, errors: list[str]) -> list[Rule]:
    rules: list[Rule] = []
    for lineno, line in _lines(path):
        try:
            text = RuleLine(text=line).text
        except ValidationError as exc:
            errors.append(f"{path}:{lineno}: {exc.errors()[0]['msg']}")
            continue
        rules.append(
            Rule(id=rule_id(text), text=text, source=source, group=group, file=str(path), line=lineno)
        )
    return rules


def load_banks(root: Path | None = None, *, strict: bool = True) -> tuple[Banks, list[str]]:
    """Load every bank. With strict=True any error raises BankError listing all of them."""
    root = root or banks_dir()
    errors: list[str] = []
    banks = Banks()
    for name in USER_TRAITS:
        banks.user[name] = read_traits(root / "user_traits" / f"{name}.txt", errors)
    for name in AGENT_TRAITS:
        banks.agent[name] = read_traits(root / "agent_traits" / f"{name}.txt", errors)
    banks.industries = banks.agent.get("industries", [])
    ind_dir = root / "rules" / "industry"
    known = set()
    for name in banks.industries:
        slug = slugify(name)
        known.add(slug)
        path = ind_dir / f"{slug}.txt"
        if not path.exists():
            errors.append(
                f"{path}: no rule file for industry {name!r} (listed in agent_traits/industries.txt)"
            )
            continue
        banks.industry_rules[slug] = read_rules(path, "industry", slug, errors)
    if ind_dir.exists():
        for path in sorted(ind_dir.glob("*.txt")):
            if path.stem not in known:
                errors.append(f"{path}: industry {path.stem!r} is not listed in agent_traits/industries.txt")
    misc_dir = root / "rules" / "misc"
    for path in sorted(misc_dir.glob("*.txt")) if misc_dir.exists() else []:
        banks.misc_rules[path.stem] = read_rules(path, "misc", path.stem, errors)
    if not banks.misc_rules:
        errors.append(f"{misc_dir}: no generic rule files")
    # exact duplicates across the whole rule bank
    first: dict[str, Rule] = {}
    for rule in banks.all_rules:
        norm = re.sub(r"\W+", " ", rule.text.lower()).strip()
        if norm in first:
            other = first[norm]
            errors.append(f"{rule.file}:{rule.line}: exact duplicate of {other.file}:{other.line}")
        else:
            first[norm] = rule
    if strict and errors:
        shown = "\n  ".join(errors[:50])
        more = f"\n  ... and {len(errors) - 50} more" if len(errors) > 50 else ""
        raise BankError(f"{len(errors)} problem(s) in the banks under {root}:\n  {shown}{more}")
    return banks, errors
