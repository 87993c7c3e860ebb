"""A tiny, valid bank in tmp_path, and targets scaled down to it."""

from __future__ import annotations

from pathlib import Path

import pytest

from factory.banks.check import Targets

TRAITS = {
    "user_traits/professions.txt": ["Nurse", "Welder", "Accountant"],
    "user_traits/hobbies.txt": ["Birdwatching", "Rock climbing", "Baking sourdough"],
    "user_traits/personalities.txt": ["Impatient and terse", "Chatty and curious", "Anxious"],
    "user_traits/locations.txt": ["Lagos, Nigeria", "Osaka, Japan", "Lima, Peru"],
    "agent_traits/roles.txt": ["Booking assistant", "Dispatch coordinator"],
    "agent_traits/tones.txt": ["Warm and plain-spoken", "Brisk and precise"],
    "agent_traits/locations.txt": ["Hamburg, Germany", "Nairobi, Kenya"],
    "agent_traits/industries.txt": ["Pet Grooming", "Freight Trucking"],
}

RULES = {
    "rules/industry/pet-grooming.txt": [
        "All dogs must have current rabies vaccination records on file before their appointment.",
        "Late arrivals of more than 15 minutes may need to be rescheduled; state this when confirming appointments.",
        "Never agree to sedate an anxious pet for grooming; suggest a veterinarian-supervised groom instead.",
        "Nail trims alone cost $15 and can be done as walk-ins between 10 a.m. and 2 p.m.",
    ],
    "rules/industry/freight-trucking.txt": [
        "Detention is charged at 75 USD per hour after 2 free hours at pickup or delivery.",
        "Do not share driver names, mobile numbers or truck GPS locations with consignees.",
        "Never ask a driver to exceed hours-of-service limits to meet a delivery appointment.",
        "Read back the pickup reference number, pickup window and dock hours after booking.",
    ],
    "rules/misc/tone.txt": [
        "Never use sarcasm or rhetorical questions that could read as mocking the user.",
        "Do not use exclamation marks in replies about billing errors or outages.",
        "If the user is frustrated, acknowledge the specific problem before offering a fix.",
    ],
    "rules/misc/returns.txt": [
        "State the 30-day return window before starting any return in the chat.",
        "Ask for the order number and the reason for return before creating a return label.",
        "Never promise a refund to the original card before the returned item has been inspected.",
    ],
}

TINY_TARGETS = Targets(
    user={"professions": 3, "hobbies": 3, "personalities": 3, "locations": 3},
    agent={"roles": 2, "tones": 2, "locations": 2, "industries": 2},
    industry_rules=8,
    misc_rules=6,
    min_rules_per_industry=4,
    categories=("tone", "returns"),
)


def write_bank(root: Path) -> Path:
    for rel, lines in {**TRAITS, **RULES}.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        header = [f"# {path.stem}"] if rel.startswith("rules/") else []
        path.write_text("\n".join(header + lines) + "\n", encoding="utf-8")
    return root


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(autouse=True)
def _outputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep the embedding cache and candidates of the tests out of the project's outputs/."""
    out = tmp_path / "outputs"
    monkeypatch.setenv("FACTORY_OUTPUTS", str(out))
    return out


@pytest.fixture
def bank(tmp_path: Path) -> Path:
    return write_bank(tmp_path / "banks")
