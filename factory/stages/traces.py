"""Stage 6, traces: a reasoning trace for ~1/3 of samples, a short actionable explanation for all,
both built from the per-rule judgements; rule-based quality checks (table `traces`)."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from factory.recipes import TraceConfig
from factory.stages.label import RuleLabel
from factory.stages.sampling import slot_rng

LEAK = re.compile(r"\b(PASS|FAIL)\b|</?answer>|</?think>")


@dataclass
class Trace:
    mode: str  # think | answer
    reasoning: str
    explanation: str
    flags: list[str]


def _rules_phrase(indices: list[int]) -> str:
    if len(indices) == 1:
        return f"Rule {indices[0]}"
    return "Rules " + ", ".join(str(i) for i in indices[:-1]) + f" and {indices[-1]}"


def explanation_for(labels: list[RuleLabel]) -> str:
    violated = [lab for lab in labels if lab.label == "VIOLATED"]
    if not violated:
        return "No rule is broken: the agent's replies stay within every rule of the policy."
    parts = [
        f"{_rules_phrase([lab.rule_index for lab in violated])} "
        f"{'is' if len(violated) == 1 else 'are'} broken."
    ]
    for lab in violated[:3]:
        turns = ", ".join(str(t) for t in lab.violated_turns)
        parts.append(f"Rule {lab.rule_index} (agent turn {turns}): {lab.explanation}")
    return " ".join(parts)


def reasoning_for(labels: list[RuleLabel]) -> str:
    paragraphs = []
    for lab in labels:
        if lab.label == "VIOLATED":
            turns = ", ".join(str(t) for t in lab.violated_turns)
            verdict = f"So rule {lab.rule_index} is broken in agent turn {turns}."
        else:
            verdict = f"So rule {lab.rule_index} is respected."
        paragraphs.append(f"Rule {lab.rule_index}: {lab.discussion} {verdict}")
    violated = [lab.rule_index for lab in labels if lab.label == "VIOLATED"]
    if violated:
        paragraphs.append(
            f"{_rules_phrase(violated)} {'is' if len(violated) == 1 else 'are'} broken, "
            f"so the conversation does not comply with the policy."
        )
    else:
        paragraphs.append("Every rule is respected, so the conversation complies with the policy.")
    return "\n\n".join(paragraphs)


def quality_flags(text: str, cfg: TraceConfig) -> list[str]:
    """datatrove-style checks; each flag is a reason counted in filter_log."""
    flags = []
    if LEAK.search(text):
        flags.append("trace_label_leakage")
    sentences = [s.strip().lower() for s in re.split(r"(?<=[.!?])\s+", text) if len(s.strip()) > 20]
    if sentences:
        repeats = sum(c - 1 for c in Counter(sentences).values() if c > 1)
        if repeats / len(sentences) > cfg.max_repeated_sentence_share:
            flags.append("trace_repetition")
    if len(text) > cfg.max_reasoning_chars:
        flags.append("trace_too_long")
    return flags


def build_trace(seed: int, slot: int, labels: list[RuleLabel], cfg: TraceConfig) -> Trace:
    rng = slot_rng(seed, slot, "trace")
    explanation = explanation_for(labels)
    if rng.random() >= cfg.think_fraction:
        return Trace("answer", "", explanation, [])
    reasoning = reasoning_for(labels)
    flags = quality_flags(reasoning, cfg)
    if flags:  # a bad trace is dropped; the sample keeps its explanation in answer mode
        return Trace("answer", "", explanation, flags)
    return Trace("think", reasoning, explanation, [])
