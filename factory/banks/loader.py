"""Read the banks from plain-text files, validating every line with a pydantic model.

Layout (see BANKS.md):
  banks/user_traits/{professions,hobbies,personalities,locations}.txt
  banks/agent_traits/{roles,tones,locations,industries}.txt
  banks/rules/industry/<industry-slug>.txt   one rule per line
  banks/rules/misc/<category-slug>.txt       one rule per line
Lines starting with '#' and blank lines are ignored. Errors name the file and line.

What a build needs, checked at load time (before any LLM call is paid; `check_bank_sizes`):
  * every trait bank at least MIN_USER_TRAITS / MIN_AGENT_TRAITS entries: the persona stage draws
    two distinct hobbies per user and one of every other trait, and a policy draws one industry;
  * at least one generic rule under rules/misc: a policy takes its non-industry share from them,
    and a policy of an industry with no rules of its own is made of generic rules only;
  * a rule file for every industry listed in agent_traits/industries.txt (a missing file is a
    misspelt slug far more often than an intent). An existing industry file with no rules is
    accepted: that industry's policies are composed from generic rules alone.
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

# The fewest entries a trait bank may have for what a build draws from it.
MIN_USER_TRAITS = {"professions": 1, "hobbies": 2, "personalities": 1, "locations": 1}
MIN_AGENT_TRAITS = {"roles": 1, "tones": 1, "locations": 1, "industries": 1}
_WHY = {
    ("user_traits", "hobbies"): "each user persona draws 2 distinct hobbies",
    ("agent_traits", "industries"): "each policy draws an industry",
}


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
    root: Path | None = None  # the folder they were loaded from
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
    if path.is_dir():
        raise BankError(f"{path}: is a folder, expected a bank file (one entry per line)")
    if not path.exists():
        raise BankError(f"{path}: file not found")
    try:
        raw = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise BankError(f"{path}: not UTF-8 ({exc})") from exc
    except OSError as exc:
        raise BankError(f"{path}: cannot read: {exc.strerror or exc}") from exc
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


def _need_folder(path: Path, what: str) -> None:
    if path.exists() and not path.is_dir():
        raise BankError(f"{path}: is a file, expected the {what} folder (see BANKS.md)")


def check_bank_sizes(banks: Banks, root: Path | None = None) -> list[str]:
    """What a build would fail on mid-way, found before any LLM call: one message per problem,
    naming the bank file and the minimum (see the module docstring for what is refused)."""
    root = root or banks.root or banks_dir()
    problems: list[str] = []
    for folder, items, minimums in (
        ("user_traits", banks.user, MIN_USER_TRAITS),
        ("agent_traits", banks.agent, MIN_AGENT_TRAITS),
    ):
        for name, least in minimums.items():
            have = len(items.get(name, []))
            if have >= least:
                continue
            why = _WHY.get((folder, name), "a build draws from it")
            got = "no entries" if have == 0 else f"{have} entr{'y' if have == 1 else 'ies'}"
            problems.append(f"{root / folder / f'{name}.txt'}: {got}, needs at least {least} ({why})")
    misc_dir = root / "rules" / "misc"
    if not banks.misc_rules:
        problems.append(f"{misc_dir}: no generic rule files (policies draw their generic rules from them)")
    elif not any(banks.misc_rules.values()):
        problems.append(
            f"{misc_dir}: every generic rule file is empty; at least one generic rule is needed "
            f"(policies draw their non-industry rules from them)"
        )
    return problems


def load_banks(root: Path | None = None, *, strict: bool = True) -> tuple[Banks, list[str]]:
    """Load every bank. With strict=True any error raises BankError listing all of them.

    Unreadable files (missing, a folder, not UTF-8) raise BankError at once, strict or not."""
    root = root or banks_dir()
    if not root.exists():
        raise BankError(f"{root}: banks folder not found")
    _need_folder(root, "banks")
    for sub, what in (
        ("user_traits", "user traits"),
        ("agent_traits", "agent traits"),
        ("rules", "rules"),
        ("rules/industry", "industry rules"),
        ("rules/misc", "generic rules"),
    ):
        _need_folder(root / sub, what)
    errors: list[str] = []
    banks = Banks(root=root)
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
    errors.extend(check_bank_sizes(banks, root))
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
        if len(errors) == 1:
            raise BankError(errors[0])
        shown = "\n  ".join(errors[:50])
        more = f"\n  ... and {len(errors) - 50} more" if len(errors) > 50 else ""
        raise BankError(f"{len(errors)} problem(s) in the banks under {root}:\n  {shown}{more}")
    return banks, errors
