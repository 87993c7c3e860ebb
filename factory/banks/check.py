"""`factory banks check`: sizes, schema errors, exact and near duplicates of the seed banks.

The report puts the bank sizes next to the paper's figures, lists the loader's schema errors and
exact duplicates, and the near-duplicate pairs that `factory.banks.near_duplicates` finds with
sentence embeddings (`factory.banks.embeddings`) or, without the model package, the lexical fallback.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

from factory.banks.loader import (
    AGENT_TRAITS,
    MISC_CATEGORIES,
    USER_TRAITS,
    BankError,
    Banks,
    Rule,
    load_banks,
)
from factory.banks.near_duplicates import NEAR_MISS, find_near_duplicates
from factory.paths import banks_dir

# --------------------------------------------------------------------------------------------------
# The paper's bank sizes (DynaGuard, arXiv 2509.02563, Figure 2 and Appendix A.1)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Targets:
    """Minimum sizes a bank must reach; the defaults are the paper's."""

    user: dict[str, int] = field(
        default_factory=lambda: {"professions": 19, "hobbies": 28, "personalities": 67, "locations": 325}
    )
    agent: dict[str, int] = field(
        default_factory=lambda: {"roles": 32, "tones": 67, "locations": 325, "industries": 204}
    )
    industry_rules: int = 3949
    misc_rules: int = 758
    min_rules_per_industry: int = 12
    categories: tuple[str, ...] = MISC_CATEGORIES


PAPER_TARGETS = Targets()


# --------------------------------------------------------------------------------------------------
# The check
# --------------------------------------------------------------------------------------------------


@dataclass
class Report:
    fatal: list[str] = field(default_factory=list)
    schema_errors: list[str] = field(default_factory=list)
    exact_duplicates: list[str] = field(default_factory=list)
    near_duplicates: list[tuple[Rule, Rule, float]] = field(default_factory=list)
    closest_below: tuple[Rule, Rule, float] | None = None
    shortfalls: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (
            self.fatal
            or self.schema_errors
            or self.exact_duplicates
            or self.near_duplicates
            or self.shortfalls
        )


def _rel(text: str) -> str:
    cwd = str(Path.cwd())
    return text.replace(cwd + os.sep, "")


def _where(rule: Rule) -> str:
    return f"{_rel(rule.file)}:{rule.line}"


def _prescan(root: Path) -> list[str]:
    """Problems the loader stops at (missing trait file, bytes that are not UTF-8), all of them, with lines."""
    problems: list[str] = []
    if not root.is_dir():
        return [f"{root}: banks folder not found"]
    for sub in ("user_traits", "agent_traits", "rules", "rules/industry", "rules/misc"):
        if (root / sub).exists() and not (root / sub).is_dir():
            problems.append(f"{root / sub}: is a file, expected a folder")
    if problems:
        return problems
    files = [root / "user_traits" / f"{n}.txt" for n in USER_TRAITS]
    files += [root / "agent_traits" / f"{n}.txt" for n in AGENT_TRAITS]
    for path in files:
        if not path.exists():
            problems.append(f"{path}: file not found")
    rules_dir = root / "rules"
    files += sorted(rules_dir.glob("*/*.txt")) if rules_dir.exists() else []
    for path in files:
        if not path.exists():
            continue
        if path.is_dir():
            problems.append(f"{path}: is a folder, expected a bank file")
            continue
        data = path.read_bytes()
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data.count(b"\n", 0, exc.start) + 1
            col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
            problems.append(f"{path}:{line}: not UTF-8 (byte 0x{data[exc.start]:02x} at column {col})")
    return problems


def _spread(counts: Sequence[int]) -> str:
    if not counts:
        return "-"
    return f"{min(counts)} / {statistics.median(counts):g} / {max(counts)}"


def _size_table(banks: Banks, targets: Targets, report: Report) -> Table:
    table = Table(title="Bank sizes", title_justify="left", show_lines=False)
    table.add_column("bank")
    table.add_column("size", justify="right")
    table.add_column("paper / min", justify="right")
    table.add_column("", justify="left")

    def row(name: str, size: int | str, target: int | None, short: bool | None = None) -> None:
        if short is None:
            short = target is not None and isinstance(size, int) and size < target
        mark = "[red]SHORT[/]" if short else ("[green]ok[/]" if target is not None else "")
        if short:
            report.shortfalls.append(f"{name}: {size} < {target}")
        table.add_row(name, str(size), "" if target is None else f"{target:,}", mark)

    for name in USER_TRAITS:
        row(f"user_traits/{name}", len(banks.user.get(name, [])), targets.user.get(name))
    for name in AGENT_TRAITS:
        row(f"agent_traits/{name}", len(banks.agent.get(name, [])), targets.agent.get(name))
    n_ind = sum(len(v) for v in banks.industry_rules.values())
    per_ind = {slug: len(v) for slug, v in banks.industry_rules.items()}
    row("industry rules", n_ind, targets.industry_rules)
    row("industries with a rule file", len(banks.industry_rules), None)
    low = sorted(s for s, c in per_ind.items() if c < targets.min_rules_per_industry)
    row(
        "rules per industry (min / median / max)",
        _spread(list(per_ind.values())),
        targets.min_rules_per_industry,
        short=bool(low),
    )
    if low:
        report.shortfalls[-1] = (
            f"{len(low)} industr{'y' if len(low) == 1 else 'ies'} below "
            f"{targets.min_rules_per_industry} rules: " + ", ".join(f"{s} ({per_ind[s]})" for s in low)
        )
    n_misc = sum(len(v) for v in banks.misc_rules.values())
    row("misc rules", n_misc, targets.misc_rules)
    present = [c for c in targets.categories if banks.misc_rules.get(c)]
    row("misc categories (of the paper's)", len(present), len(targets.categories))
    missing = [c for c in targets.categories if not banks.misc_rules.get(c)]
    if missing:
        report.shortfalls[-1] = "misc categories missing or empty: " + ", ".join(missing)
    row("rules per category (min / median / max)", _spread([len(v) for v in banks.misc_rules.values()]), None)
    extra = sorted(set(banks.misc_rules) - set(targets.categories))
    if extra:
        report.notes.append(
            "categories beyond the paper's 25 (fine, used like the others): " + ", ".join(extra)
        )
    return table


def _classify(errors: list[str], report: Report) -> None:
    for err in errors:
        if " exact duplicate of " in err or ": duplicate of line " in err:
            report.exact_duplicates.append(_rel(err))
        else:
            report.schema_errors.append(_rel(err))


def _near_duplicates(
    banks: Banks, threshold: float, report: Report, console: Console, use_cache: bool
) -> None:
    rules = banks.all_rules
    if not rules:
        return
    pairs, notes = find_near_duplicates([r.text for r in rules], threshold, console, use_cache)
    report.near_duplicates = [(rules[i], rules[j], s) for i, j, s in pairs if s >= threshold]
    below = [(rules[i], rules[j], s) for i, j, s in pairs if s < threshold]
    report.closest_below = below[0] if below else None
    report.notes.extend(notes)


def run_check(
    root: Path | None = None,
    *,
    threshold: float = 0.9,
    embeddings: bool = True,
    targets: Targets = PAPER_TARGETS,
    console: Console | None = None,
    use_cache: bool = True,
) -> Report:
    """Check the banks under `root` and print the report; returns the findings."""
    console = console or Console(highlight=False, soft_wrap=True)
    root = Path(root) if root else banks_dir()
    report = Report()
    report.fatal = [_rel(p) for p in _prescan(root)]
    if report.fatal:
        console.print(f"[bold red]The banks under {root} cannot be read:[/]")
        for line in report.fatal:
            console.print(f"  {line}", markup=False)
        return report
    try:
        banks, errors = load_banks(root, strict=False)
    except BankError as exc:  # anything the prescan did not foresee
        report.fatal = [_rel(str(exc))]
        console.print(f"[bold red]The banks under {root} cannot be read:[/]")
        console.print(f"  {report.fatal[0]}", markup=False)
        return report
    _classify(errors, report)
    console.print(_size_table(banks, targets, report))
    if embeddings:
        _near_duplicates(banks, threshold, report, console, use_cache)
    else:
        report.notes.append("near-duplicate scan skipped (--no-embeddings)")

    def section(title: str, lines: list[str]) -> None:
        colour = "red" if lines else "green"
        console.print(f"[bold {colour}]{title}: {len(lines)}[/]")
        for line in lines:
            console.print(f"  {line}", markup=False)

    section("Size shortfalls", report.shortfalls)
    section("Schema errors", report.schema_errors)
    section("Exact duplicates", report.exact_duplicates)
    if embeddings:
        near = [
            f"{s:.3f}  {_where(a)}  ~  {_where(b)}\n      {a.text}\n      {b.text}"
            for a, b, s in report.near_duplicates
        ]
        section(f"Near duplicates (cosine >= {threshold:g})", near)
        if report.closest_below is not None:
            a, b, s = report.closest_below
            console.print(
                f"  closest pair below the threshold: {s:.3f}  {_where(a)}  ~  {_where(b)}", markup=False
            )
        elif not report.near_duplicates:
            console.print(f"  no pair above {max(0.0, threshold - NEAR_MISS):.2f}", markup=False)
    for note in report.notes:
        console.print(f"[dim]note:[/] {note}")
    return report


def check_banks(
    root: Path | None = None,
    *,
    threshold: float = 0.9,
    embeddings: bool = True,
    targets: Targets = PAPER_TARGETS,
    console: Console | None = None,
    use_cache: bool = True,
) -> int:
    """Print the check report; exit code 1 on any schema error, duplicate, near duplicate or shortfall."""
    t0 = time.perf_counter()
    console = console or Console(highlight=False, soft_wrap=True)
    report = run_check(
        root,
        threshold=threshold,
        embeddings=embeddings,
        targets=targets,
        console=console,
        use_cache=use_cache,
    )
    elapsed = time.perf_counter() - t0
    if report.ok:
        console.print(f"[bold green]banks OK[/] (checked in {elapsed:.1f} s)")
        return 0
    parts = [
        f"{len(report.fatal)} unreadable file(s)" if report.fatal else "",
        f"{len(report.shortfalls)} size shortfall(s)" if report.shortfalls else "",
        f"{len(report.schema_errors)} schema error(s)" if report.schema_errors else "",
        f"{len(report.exact_duplicates)} exact duplicate(s)" if report.exact_duplicates else "",
        f"{len(report.near_duplicates)} near duplicate(s)" if report.near_duplicates else "",
    ]
    console.print(f"[bold red]banks FAIL:[/] {', '.join(p for p in parts if p)} (checked in {elapsed:.1f} s)")
    return 1


__all__ = [
    "PAPER_TARGETS",
    "Report",
    "Targets",
    "check_banks",
    "run_check",
]
