"""Banks a build cannot use are refused at load time, in one line naming the path: a folder where a
bank file belongs, a file where a folder belongs, a trait bank smaller than what is drawn from it,
no generic rule at all. An industry file with no rules is accepted (generic rules only)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from factory.banks.check import run_check
from factory.banks.loader import MIN_AGENT_TRAITS, MIN_USER_TRAITS, BankError, check_bank_sizes, load_banks
from factory.recipes import RULES_LAW
from factory.stages.compose import compose_policy


def _one_line(exc: pytest.ExceptionInfo[BankError]) -> str:
    text = str(exc.value)
    assert "\n" not in text, text
    return text


def test_minimums_cover_every_trait_bank() -> None:
    assert MIN_USER_TRAITS["hobbies"] == 2  # persona.py draws rng.sample(hobbies, 2)
    assert set(MIN_AGENT_TRAITS) >= {"roles", "tones", "locations", "industries"}


def test_one_hobby_is_refused(bank: Path) -> None:
    path = bank / "user_traits" / "hobbies.txt"
    path.write_text("Birdwatching\n", encoding="utf-8")
    with pytest.raises(BankError) as err:
        load_banks(bank)
    assert _one_line(err) == f"{path}: 1 entry, needs at least 2 (each user persona draws 2 distinct hobbies)"


@pytest.mark.parametrize(
    "rel", ["user_traits/professions.txt", "agent_traits/tones.txt", "agent_traits/industries.txt"]
)
def test_empty_trait_bank_is_refused(bank: Path, rel: str) -> None:
    path = bank / rel
    path.write_text("# nothing yet\n\n", encoding="utf-8")
    if rel.endswith("industries.txt"):  # the industry rule files are then unlisted: move them away
        shutil.rmtree(bank / "rules" / "industry")
    with pytest.raises(BankError) as err:
        load_banks(bank)
    assert _one_line(err).startswith(f"{path}: no entries, needs at least 1")


def test_all_generic_rule_files_empty_is_refused(bank: Path) -> None:
    for path in (bank / "rules" / "misc").glob("*.txt"):
        path.write_text("# emptied\n", encoding="utf-8")
    with pytest.raises(BankError) as err:
        load_banks(bank)
    assert _one_line(err).startswith(f"{bank / 'rules' / 'misc'}: every generic rule file is empty")


def test_no_generic_rule_files_is_refused(bank: Path) -> None:
    shutil.rmtree(bank / "rules" / "misc")
    with pytest.raises(BankError) as err:
        load_banks(bank)
    assert _one_line(err).startswith(f"{bank / 'rules' / 'misc'}: no generic rule files")


def test_industry_without_rule_file_is_refused_in_one_line(bank: Path) -> None:
    path = bank / "rules" / "industry" / "freight-trucking.txt"
    path.unlink()
    with pytest.raises(BankError) as err:
        load_banks(bank)
    assert _one_line(err).startswith(f"{path}: no rule file for industry 'Freight Trucking'")


def test_industry_with_empty_rule_file_is_composed_from_generic_rules(bank: Path) -> None:
    path = bank / "rules" / "industry" / "freight-trucking.txt"
    path.write_text("# no rules of our own yet\n", encoding="utf-8")
    banks, errors = load_banks(bank)
    assert errors == [] and banks.industry_rules["freight-trucking"] == []
    policies = [compose_policy(banks, 0, slot, RULES_LAW, (0.3, 0.7)) for slot in range(200)]
    freight = [p for p in policies if p.industry_slug == "freight-trucking"]
    assert freight and all(p.rules and all(r.source == "misc" for r in p.rules) for p in freight)


def test_check_bank_sizes_on_loaded_banks(bank: Path) -> None:
    banks, _ = load_banks(bank)
    assert check_bank_sizes(banks) == []
    banks.user["hobbies"] = banks.user["hobbies"][:1]
    banks.agent["roles"] = []
    problems = check_bank_sizes(banks)
    assert problems == [
        f"{bank / 'user_traits' / 'hobbies.txt'}: 1 entry, needs at least 2 "
        "(each user persona draws 2 distinct hobbies)",
        f"{bank / 'agent_traits' / 'roles.txt'}: no entries, needs at least 1 (a build draws from it)",
    ]


def test_several_problems_are_listed_one_per_line(bank: Path) -> None:
    (bank / "user_traits" / "hobbies.txt").write_text("Birdwatching\n", encoding="utf-8")
    (bank / "agent_traits" / "roles.txt").write_text("", encoding="utf-8")
    with pytest.raises(BankError) as err:
        load_banks(bank)
    lines = str(err.value).splitlines()
    assert lines[0] == f"2 problem(s) in the banks under {bank}:"
    assert [ln.strip().split(":")[0] for ln in lines[1:]] == [
        str(bank / "user_traits" / "hobbies.txt"),
        str(bank / "agent_traits" / "roles.txt"),
    ]


@pytest.mark.parametrize(
    "rel", ["user_traits/hobbies.txt", "agent_traits/industries.txt", "rules/misc/tone.txt"]
)
def test_folder_where_a_bank_file_belongs(bank: Path, rel: str) -> None:
    path = bank / rel
    path.unlink()
    path.mkdir()
    with pytest.raises(BankError) as err:
        load_banks(bank, strict=False)
    assert _one_line(err) == f"{path}: is a folder, expected a bank file (one entry per line)"
    report = run_check(bank, embeddings=False)  # `banks check` names it too, without a traceback
    assert report.fatal and str(rel) in report.fatal[0] and "is a folder" in report.fatal[0]


@pytest.mark.parametrize("rel", ["user_traits", "rules", "rules/industry", "rules/misc"])
def test_file_where_a_folder_belongs(bank: Path, rel: str) -> None:
    path = bank / rel
    shutil.rmtree(path)
    path.write_text("not a folder\n", encoding="utf-8")
    with pytest.raises(BankError) as err:
        load_banks(bank)
    assert _one_line(err).startswith(f"{path}: is a file, expected the ")
    report = run_check(bank, embeddings=False)
    assert report.fatal and "is a file, expected a folder" in report.fatal[0]


def test_banks_root_that_is_a_file_or_missing(tmp_path: Path) -> None:
    root = tmp_path / "banks.txt"
    root.write_text("x\n", encoding="utf-8")
    with pytest.raises(BankError) as err:
        load_banks(root)
    assert _one_line(err).startswith(f"{root}: is a file, expected the banks folder")
    with pytest.raises(BankError, match="banks folder not found"):
        load_banks(tmp_path / "nowhere")
