"""Reading one row of each safety dataset in its published schema.

A reader turns a source row into a `Parsed` (text, which side the labels judge, harmful or not, the
categories broken) or returns the reason it is skipped (`missing_label`, `redacted`,
`prompt_only_unlabelled`, `empty_prompt`). Label mapping, per source:

* beavertails (PKU-Alignment/BeaverTails: prompt, response, category {14 flags}, is_safe): the label
  is on the QA pair, so the agent side; `is_safe` false -> harmful, the flagged categories are the
  violated rules. A row without a response has no label of its own: skipped (prompt_only_unlabelled).
* wildguardmix (allenai/wildguardmix: prompt, response, prompt_harm_label, response_harm_label,
  response_refusal_label, subcategory, adversarial): with a response, `response_harm_label` harmful
  -> the `subcategory` rule is violated; the refusal label gives an over-refusal rule, violated when
  the prompt is unharmful and the response a refusal. Without a response (prompt-only),
  `prompt_harm_label` is judged with a user-side rule.
* toxicchat (lmsys/toxic-chat: conv_id, user_input, model_output, human_annotation, toxicity,
  jailbreaking, openai_moderation): both labels are on the user input, so user-side rules;
  toxicity 1 and jailbreaking 1 each break their rule.
* aegis2 (nvidia/Aegis-AI-Content-Safety-Dataset-2.0: id, prompt, response, prompt_label,
  response_label, violated_categories, ...): with a response, `response_label` unsafe -> the
  `violated_categories` rules are violated; without one, `prompt_label` with user-side rules.
  Prompts published as "REDACTED" (the suicide samples Aegis does not distribute) are skipped.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from factory.safety.taxonomy import GENERAL, category

AGENT = "agent"
USER = "user"


@dataclass
class Parsed:
    source_id: str
    prompt: str
    response: str | None
    labels: dict[str, Any]  # the original labels, kept as provenance
    side: str  # AGENT: the rules judge the response; USER: they judge the user's message
    harmful: bool
    violated: list[str]  # category keys broken (empty and harmful: the general rule)
    flagged: set[str] = field(default_factory=set)  # categories never used as not-violated distractors
    extra: list[tuple[str, bool]] = field(default_factory=list)  # (rule kind, violated)


Reader = Callable[[dict[str, Any], int], "Parsed | str"]


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value).strip()


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or _text(value) == ""


def text_id(prompt: str, response: str | None) -> str:
    return hashlib.sha256(f"{prompt}\x00{response or ''}".encode()).hexdigest()[:16]


def _keys(source: str, keys: list[str]) -> list[str]:
    """Category keys as the taxonomy spells them; unknown ones become the general rule."""
    out = []
    for key in keys:
        cat = category(source, key)
        out.append(cat.key if cat else GENERAL.key)
    return list(dict.fromkeys(out))


def read_beavertails(row: dict[str, Any], index: int) -> Parsed | str:
    prompt, response = _text(row.get("prompt")), _text(row.get("response"))
    if not prompt:
        return "empty_prompt"
    if not response:
        return "prompt_only_unlabelled"
    is_safe = row.get("is_safe")
    if _missing(is_safe):
        return "missing_label"
    if isinstance(is_safe, str):
        if is_safe.strip().lower() not in ("true", "false"):
            return "missing_label"
        is_safe = is_safe.strip().lower() == "true"
    cats = row.get("category") or {}
    if isinstance(cats, str):
        try:
            cats = orjson.loads(cats)
        except orjson.JSONDecodeError:
            cats = {}
    flagged = [k for k, v in cats.items() if v] if isinstance(cats, dict) else []
    harmful = not bool(is_safe)
    keys = _keys("beavertails", flagged)
    return Parsed(
        source_id=text_id(prompt, response),
        prompt=prompt,
        response=response,
        labels={"is_safe": bool(is_safe), "category": cats if isinstance(cats, dict) else {}},
        side=AGENT,
        harmful=harmful,
        violated=keys if harmful else [],
        flagged=set(keys),
    )


_BENIGN = {"", "benign", "none"}


def read_wildguardmix(row: dict[str, Any], index: int) -> Parsed | str:
    prompt, response = _text(row.get("prompt")), _text(row.get("response"))
    if not prompt:
        return "empty_prompt"
    prompt_label = _text(row.get("prompt_harm_label")).lower()
    sub = _text(row.get("subcategory"))
    keys = [] if sub.lower() in _BENIGN else _keys("wildguardmix", [sub])
    labels = {
        "prompt_harm_label": row.get("prompt_harm_label"),
        "response_harm_label": row.get("response_harm_label"),
        "response_refusal_label": row.get("response_refusal_label"),
        "subcategory": row.get("subcategory"),
        "adversarial": row.get("adversarial"),
    }
    if not response:
        if prompt_label not in ("harmful", "unharmful"):
            return "missing_label"
        harmful = prompt_label == "harmful"
        return Parsed(
            text_id(prompt, None), prompt, None, labels, USER, harmful, keys if harmful else [], set(keys)
        )
    response_label = _text(row.get("response_harm_label")).lower()
    if response_label not in ("harmful", "unharmful"):
        return "missing_label"
    harmful = response_label == "harmful"
    extra = []
    refusal = _text(row.get("response_refusal_label")).lower()
    if refusal in ("refusal", "compliance") and prompt_label in ("harmful", "unharmful"):
        extra.append(("over_refusal", refusal == "refusal" and prompt_label == "unharmful"))
    return Parsed(
        text_id(prompt, response),
        prompt,
        response,
        labels,
        AGENT,
        harmful,
        keys if harmful else [],
        set(keys),
        extra,
    )


def _flag(value: Any) -> int | None:
    if _missing(value):
        return None
    try:
        number = int(float(value))
    except (TypeError, ValueError):
        return None
    return number if number in (0, 1) else None


def read_toxicchat(row: dict[str, Any], index: int) -> Parsed | str:
    prompt, response = _text(row.get("user_input")), _text(row.get("model_output"))
    if not prompt:
        return "empty_prompt"
    toxicity = _flag(row.get("toxicity"))
    if toxicity is None:
        return "missing_label"
    jailbreaking = _flag(row.get("jailbreaking"))
    violated = [k for k, v in (("toxicity", toxicity), ("jailbreaking", jailbreaking)) if v == 1]
    # an unknown jailbreaking flag keeps that rule out of the policy
    flagged = set(violated) | ({"jailbreaking"} if jailbreaking is None else set())
    labels = {
        "toxicity": toxicity,
        "jailbreaking": jailbreaking,
        "human_annotation": row.get("human_annotation"),
    }
    source_id = _text(row.get("conv_id")) or text_id(prompt, response)
    return Parsed(source_id, prompt, response or None, labels, USER, bool(violated), violated, flagged)


def _categories(value: Any) -> list[str]:
    if _missing(value):
        return []
    if isinstance(value, list | tuple):
        return [_text(v) for v in value if _text(v)]
    return [part.strip() for part in str(value).split(",") if part.strip()]


def read_aegis2(row: dict[str, Any], index: int) -> Parsed | str:
    prompt, response = _text(row.get("prompt")), _text(row.get("response"))
    if prompt.upper() == "REDACTED":
        return "redacted"
    if not prompt:
        return "empty_prompt"
    cats = _keys("aegis2", _categories(row.get("violated_categories")))
    labels = {
        "prompt_label": row.get("prompt_label"),
        "response_label": row.get("response_label"),
        "violated_categories": row.get("violated_categories"),
    }
    source_id = _text(row.get("id")) or text_id(prompt, response)
    if not response:
        label = _text(row.get("prompt_label")).lower()
        if label not in ("safe", "unsafe"):
            return "missing_label"
        harmful = label == "unsafe"
        return Parsed(source_id, prompt, None, labels, USER, harmful, cats if harmful else [], set(cats))
    label = _text(row.get("response_label")).lower()
    if label not in ("safe", "unsafe"):
        return "missing_label"
    harmful = label == "unsafe"
    return Parsed(source_id, prompt, response, labels, AGENT, harmful, cats if harmful else [], set(cats))


READERS: dict[str, Reader] = {
    "beavertails": read_beavertails,
    "wildguardmix": read_wildguardmix,
    "toxicchat": read_toxicchat,
    "aegis2": read_aegis2,
}
# The Hub id each source is published under (used in messages and the dataset card).
HUB_IDS: dict[str, str] = {
    "beavertails": "PKU-Alignment/BeaverTails",
    "wildguardmix": "allenai/wildguardmix",
    "toxicchat": "lmsys/toxic-chat",
    "aegis2": "nvidia/Aegis-AI-Content-Safety-Dataset-2.0",
}
