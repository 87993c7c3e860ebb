"""The loader names the file and line of every problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from factory.banks.loader import BankError, load_banks


def _append(path: Path, line: str) -> int:
    """Append a line; return its line number."""
    text = path.read_text(encoding="utf-8")
    path.write_text(text + line + "\n", encoding="utf-8")
    return len(text.splitlines()) + 1


def test_tiny_bank_loads(bank: Path) -> None:
    banks, errors = load_banks(bank)
    assert errors == []
    assert sorted(banks.industry_rules) == ["freight-trucking", "pet-grooming"]
    assert sum(len(v) for v in banks.misc_rules.values()) == 6


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("Too short.", "outside 30..400"),
        ("Always greet the user by name at the start of a chat", "full stop"),
        ("1. Always greet the user by name at the start of every chat.", "numbering"),
        ("Always greet the user by name\tat the start of every chat.", "tab"),
    ],
)
def test_bad_rule_line_names_file_and_line(bank: Path, line: str, message: str) -> None:
    path = bank / "rules" / "industry" / "pet-grooming.txt"
    lineno = _append(path, line)
    _, errors = load_banks(bank, strict=False)
    assert len(errors) == 1
    assert errors[0].startswith(f"{path}:{lineno}: ")
    assert message in errors[0]
    with pytest.raises(BankError, match=f"pet-grooming.txt:{lineno}: "):
        load_banks(bank)


def test_missing_industry_file(bank: Path) -> None:
    path = bank / "rules" / "industry" / "freight-trucking.txt"
    path.unlink()
    _, errors = load_banks(bank, strict=False)
    assert errors == [
        f"{path}: no rule file for industry 'Freight Trucking' (listed in agent_traits/industries.txt)"
    ]


def test_rule_file_of_unlisted_industry(bank: Path) -> None:
    path = bank / "rules" / "industry" / "space-tourism.txt"
    path.write_text("Never promise a launch date before the flight manifest is final.\n", encoding="utf-8")
    _, errors = load_banks(bank, strict=False)
    assert errors == [f"{path}: industry 'space-tourism' is not listed in agent_traits/industries.txt"]


def test_duplicate_trait(bank: Path) -> None:
    path = bank / "user_traits" / "hobbies.txt"
    lineno = _append(path, "birdwatching")  # case-insensitive duplicate of line 1
    _, errors = load_banks(bank, strict=False)
    assert errors == [f"{path}:{lineno}: duplicate of line 1"]


def test_exact_duplicate_rule_across_files(bank: Path) -> None:
    path = bank / "rules" / "misc" / "tone.txt"
    lineno = _append(
        path, "Detention is charged at 75 USD per hour, after 2 free hours at pickup or delivery!"
    )
    _, errors = load_banks(bank, strict=False)
    other = bank / "rules" / "industry" / "freight-trucking.txt"
    assert errors == [f"{path}:{lineno}: exact duplicate of {other}:2"]


def test_non_utf8_file(bank: Path) -> None:
    path = bank / "rules" / "misc" / "returns.txt"
    path.write_bytes(path.read_bytes() + "Refunds are paid in euros \u20ac only.\n".encode("cp1252"))
    with pytest.raises(BankError, match="returns.txt: not UTF-8"):
        load_banks(bank, strict=False)


def test_missing_trait_file(bank: Path) -> None:
    path = bank / "agent_traits" / "tones.txt"
    path.unlink()
    with pytest.raises(BankError, match="tones.txt: file not found"):
        load_banks(bank, strict=False)
