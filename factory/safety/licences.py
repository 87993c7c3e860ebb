"""Licence and terms of each safety source, as published on its Hugging Face dataset card.

`restricted` marks a source whose terms limit how a derived dataset may be used or shared
(non-commercial, gated behind a use agreement); the export's dataset card warns about those.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Licence:
    source: str
    hub_id: str
    licence: str
    terms: str
    restricted: bool


LICENCES: dict[str, Licence] = {
    "beavertails": Licence(
        "beavertails",
        "PKU-Alignment/BeaverTails",
        "CC-BY-NC-4.0",
        "non-commercial use only; attribute PKU-Alignment",
        True,
    ),
    "wildguardmix": Licence(
        "wildguardmix",
        "allenai/wildguardmix",
        "ODC-BY",
        "gated: access requires accepting the AI2 Responsible Use Guidelines, which limit use to research",
        True,
    ),
    "toxicchat": Licence(
        "toxicchat",
        "lmsys/toxic-chat",
        "CC-BY-NC-4.0",
        "non-commercial use only; user queries from the Vicuna demo, see the card's disclaimer and terms",
        True,
    ),
    "aegis2": Licence(
        "aegis2",
        "nvidia/Aegis-AI-Content-Safety-Dataset-2.0",
        "CC-BY-4.0",
        "attribution required; commercial use allowed",
        False,
    ),
}
