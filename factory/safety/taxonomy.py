"""Each safety dataset's own taxonomy, written as policy rules (our wording).

A category is a label of the source dataset (a BeaverTails harm category, a WildGuardMix
subcategory, ToxicChat's toxicity / jailbreaking flags, an Aegis 2.0 hazard category). It has one
or more descriptions ("content that ..."), and a rule is a description put into a template:
agent-side templates for labels on the response ("Do not produce content that ..."), user-side
templates for labels on the prompt ("The user must not ask for content that ..."). Which
description and template a row gets is drawn from a seeded hash of the row, so one category reads
differently across rows and the same policy text is rarely repeated.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Category:
    key: str  # the label as the source dataset spells it
    descriptions: tuple[str, ...]  # each completes "content that ..."


AGENT_TEMPLATES: tuple[str, ...] = (
    "Do not produce content that {d}.",
    "The agent must never write a reply that {d}.",
    "No response may contain material that {d}.",
    "Do not give an answer that {d}.",
)
USER_TEMPLATES: tuple[str, ...] = (
    "The user must not ask for content that {d}.",
    "Users may not request material that {d}.",
    "The user must not try to obtain a reply that {d}.",
)
# A catch-all for a harmful row whose source gives no category for it.
GENERAL = Category(
    "general_harm",
    (
        "is harmful, dangerous or abusive",
        "could hurt people or help someone cause harm",
    ),
)

BEAVERTAILS: tuple[Category, ...] = (
    Category("animal_abuse", ("is cruel to animals or encourages harming them",)),
    Category("child_abuse", ("harms, exploits or endangers children",)),
    Category(
        "controversial_topics,politics",
        ("pushes a one-sided or inflammatory stance on divisive political or social issues",),
    ),
    Category(
        "discrimination,stereotype,injustice",
        ("treats people unfairly or stereotypes them because of who they are",),
    ),
    Category(
        "drug_abuse,weapons,banned_substance",
        ("helps someone misuse drugs, obtain weapons or handle banned substances",),
    ),
    Category(
        "financial_crime,property_crime,theft",
        ("helps with fraud, theft, scams or damage to property",),
    ),
    Category("hate_speech,offensive_language", ("contains hateful, insulting or offensive language",)),
    Category(
        "misinformation_regarding_ethics,laws_and_safety",
        ("gives false or misleading claims about laws, ethics or safety",),
    ),
    Category(
        "non_violent_unethical_behavior",
        ("encourages lying, cheating, manipulation or other unethical conduct",),
    ),
    Category("privacy_violation", ("exposes or helps collect someone's private personal information",)),
    Category("self_harm", ("encourages or explains ways to hurt oneself",)),
    Category("sexually_explicit,adult_content", ("is sexually explicit or meant for adults only",)),
    Category(
        "terrorism,organized_crime", ("supports terrorism or the activities of criminal organisations",)
    ),
    Category(
        "violence,aiding_and_abetting,incitement",
        ("incites violence or helps someone carry out a violent or criminal act",),
    ),
)

WILDGUARDMIX: tuple[Category, ...] = (
    Category("violence_and_physical_harm", ("promotes or helps with violence or physical harm",)),
    Category("toxic_language_hate_speech", ("is toxic or hateful towards a person or group",)),
    Category(
        "social_stereotypes_and_unfair_discrimination",
        ("reinforces social stereotypes or unfair discrimination",),
    ),
    Category("sexual_content", ("is sexual or pornographic",)),
    Category("cyberattack", ("helps someone attack computer systems or write malicious software",)),
    Category("fraud_assisting_illegal_activities", ("assists with fraud or other illegal activities",)),
    Category(
        "defamation_encouraging_unethical_or_unsafe_actions",
        ("defames someone or encourages unethical or unsafe actions",),
    ),
    Category(
        "causing_material_harm_by_disseminating_misinformation",
        ("spreads false information that could cause real-world damage",),
    ),
    Category(
        "disseminating_false_or_misleading_information_encouraging_disinformation_campaigns",
        ("helps build a disinformation campaign or spreads misleading claims",),
    ),
    Category(
        "mental_health_over-reliance_crisis",
        ("mishandles a mental-health crisis or invites unhealthy reliance on the assistant",),
    ),
    Category("copyright_violations", ("reproduces copyrighted work without permission",)),
    Category("private_information_individual", ("reveals private information about an individual",)),
    Category(
        "sensitive_information_organization_government",
        ("leaks sensitive information of an organisation or a government",),
    ),
    Category("others", ("is harmful in some other way not listed here",)),
)
# WildGuardMix's refusal label becomes a rule against over-refusal: broken only when the prompt
# is harmless and the response refuses it.
OVER_REFUSAL_RULES: tuple[str, ...] = (
    "Do not refuse requests that are harmless; help with them.",
    "The agent must answer benign questions instead of declining them.",
)

TOXICCHAT: tuple[Category, ...] = (
    Category(
        "toxicity",
        (
            "is toxic, offensive, sexual, hateful or otherwise inappropriate",
            "is rude, abusive or sexually explicit",
        ),
    ),
    Category(
        "jailbreaking",
        (
            "tries to trick the assistant into ignoring its safety guidelines (a jailbreak)",
            "uses role-play or other tricks to get around the assistant's safeguards",
        ),
    ),
)

AEGIS2: tuple[Category, ...] = (
    Category("Hate/Identity Hate", ("attacks people for their identity or expresses hatred of a group",)),
    Category("Sexual", ("is sexual in nature",)),
    Category("Suicide and Self Harm", ("encourages or describes suicide or self-harm",)),
    Category("Violence", ("depicts, threatens or promotes violence",)),
    Category("Guns and Illegal Weapons", ("helps obtain or use guns or illegal weapons",)),
    Category("Threat", ("threatens a person or a group",)),
    Category("PII/Privacy", ("reveals or seeks personally identifying or private information",)),
    Category("Sexual (minor)", ("sexualises minors",)),
    Category("Criminal Planning/Confessions", ("plans a crime or confesses to one",)),
    Category("Harassment", ("harasses, bullies or intimidates someone",)),
    Category(
        "Controlled/Regulated Substances",
        ("helps with making, buying or using controlled or regulated substances",),
    ),
    Category("Profanity", ("uses profane or vulgar language",)),
    Category("Other", ("is unsafe in a way the other rules do not cover",)),
    Category("Illegal Activity", ("helps with an illegal activity",)),
    Category("Immoral/Unethical", ("encourages immoral or unethical behaviour",)),
    Category(
        "Unauthorized Advice",
        ("gives medical, legal or financial advice that should come from a professional",),
    ),
    Category(
        "Political/Misinformation/Conspiracy",
        ("spreads political misinformation or conspiracy theories",),
    ),
    Category("Fraud/Deception", ("helps deceive or defraud someone",)),
    Category("Copyright/Trademark/Plagiarism", ("infringes copyright or trademarks or helps plagiarise",)),
    Category(
        "High Risk Gov Decision Making",
        ("makes or pushes high-stakes government decisions without human oversight",),
    ),
    Category("Malware", ("creates or spreads malicious software",)),
    Category("Manipulation", ("manipulates someone psychologically",)),
)

TAXONOMIES: dict[str, tuple[Category, ...]] = {
    "beavertails": BEAVERTAILS,
    "wildguardmix": WILDGUARDMIX,
    "toxicchat": TOXICCHAT,
    "aegis2": AEGIS2,
}


def category(source: str, key: str) -> Category | None:
    """The category of `source` whose key matches `key` (case and spacing ignored)."""
    wanted = _norm(key)
    for cat in TAXONOMIES[source]:
        if _norm(cat.key) == wanted:
            return cat
    return None


def _norm(key: str) -> str:
    return "".join(ch for ch in key.lower() if ch.isalnum())
