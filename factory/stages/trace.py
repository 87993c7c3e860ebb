"""Stage 6, trace: an LLM (by default the labelling model) distils a reasoning trace and a short
actionable explanation from the policy, the transcript, the per-rule judgements and the final label
(table `traces`).

About a third of the samples (recipe `traces.think_fraction`) are in reasoning mode and keep the
reasoning; the rest are in answer mode (explanation only, a cheaper call). The verifier is part
of the output schema, so a failing trace is re-asked with the reason by the LLM layer, and a trace
still failing after the re-asks drops the slot with that reason: `trace_verdict_mismatch` (the
verdict the trace reaches is not the label), `trace_label_leakage` (the verdict word, or a
<think>/<answer> tag, in the first half of the reasoning), `trace_repetition` and `trace_too_long`.
With `traces.native_reasoning`, the model's own reasoning (reasoning_content, extended thinking,
Gemini thoughts) is the trace, verified by the same checks.

>>> verify_reasoning("The agent shared the card number in turn 2, so the verdict is FAIL.", "FAIL", 2400, 0.3)
[]
>>> verify_reasoning("FAIL. The agent shared the card number in turn 2.", "FAIL", 2400, 0.3)
['trace_label_leakage']
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, StringConstraints, model_validator

from factory.recipes.names import Stage
from factory.stages.compose import numbered
from factory.stages.context import BuildContext, SlotDropped
from factory.stages.dialogue import Dialogue, numbered_transcript
from factory.stages.label import RuleLabel
from factory.stages.llm_call import stage_call
from factory.stages.sampling import slot_rng

VERDICT_WORD = re.compile(r"\b(PASS|FAIL)\b")
TAGS = re.compile(r"</?(think|answer|explanation)>", re.I)
REASONS = ("trace_verdict_mismatch", "trace_label_leakage", "trace_repetition", "trace_too_long")
MODE_TEXT = {
    "think": "Mode: reasoning. Write `reasoning` (the chain of thought, verdict at the end), then "
    "`explanation`, then `verdict`.",
    "answer": "Mode: answer only. Leave out `reasoning`: write `explanation` and `verdict` only.",
}
Explanation = Annotated[str, StringConstraints(min_length=10, max_length=600)]


def verify_reasoning(text: str, label: str, max_chars: int, max_repeat_share: float) -> list[str]:
    """The trace quality checks (datatrove-style: each failure is a counted reason)."""
    problems = []
    if len(text) > max_chars:
        problems.append("trace_too_long")
    head = text[: len(text) // 2]
    if TAGS.search(text) or VERDICT_WORD.search(head):
        problems.append("trace_label_leakage")
    sentences = [s.strip().lower() for s in re.split(r"(?<=[.!?])\s+", text) if len(s.strip()) > 20]
    if sentences:
        repeats = sum(c - 1 for c in Counter(sentences).values() if c > 1)
        if repeats / len(sentences) > max_repeat_share:
            problems.append("trace_repetition")
    return problems


@functools.lru_cache(maxsize=32)
def trace_schema(mode: str, label: str, max_chars: int, max_repeat_share: float) -> type[BaseModel]:
    """The trace's output schema with the verifier built in: a violation is a validation error
    whose message starts with the reason, so the LLM layer re-asks with it."""
    if mode == "think":

        class ReasonedTrace(BaseModel):
            reasoning: Annotated[str, StringConstraints(min_length=40, max_length=max_chars + 400)]
            explanation: Explanation
            verdict: Literal["PASS", "FAIL"]

            @model_validator(mode="after")
            def _verify(self) -> ReasonedTrace:
                _check_verdict(self.verdict, label)
                problems = verify_reasoning(self.reasoning, label, max_chars, max_repeat_share)
                if problems:
                    raise ValueError(f"{problems[0]}: {_HINTS[problems[0]].format(max_chars=max_chars)}")
                return self

        return ReasonedTrace

    class AnswerTrace(BaseModel):
        explanation: Explanation
        verdict: Literal["PASS", "FAIL"]

        @model_validator(mode="after")
        def _verify(self) -> AnswerTrace:
            _check_verdict(self.verdict, label)
            if TAGS.search(self.explanation):
                raise ValueError(f"trace_label_leakage: {_HINTS['trace_label_leakage']}")
            return self

    return AnswerTrace


_HINTS = {
    "trace_verdict_mismatch": "the verdict must follow from the judgements",
    "trace_label_leakage": "do not state PASS or FAIL in the first half of the reasoning, and use no tags",
    "trace_repetition": "do not repeat sentences",
    "trace_too_long": "keep the reasoning under {max_chars} characters; discuss only the rules that matter",
}


def _check_verdict(verdict: str, label: str) -> None:
    if verdict != label:
        raise ValueError(f"trace_verdict_mismatch: the judgements give {label}, not {verdict}")


@dataclass
class Trace:
    mode: str  # think | answer
    reasoning: str
    explanation: str
    verdict: str
    source: str  # llm (written in the structured answer) | native (the model's own reasoning)


def relevant_judgements(labels: list[RuleLabel], dialogue: Dialogue, core_targets: list[int]) -> str:
    """The judgements that matter for the verdict: violated rules, the rules the scenario tested,
    and the most ambiguous of the rest (at most 8), so long policies keep short traces."""
    chosen = [lab for lab in labels if lab.label == "VIOLATED"]
    chosen += [lab for lab in labels if lab.rule_index in core_targets and lab not in chosen]
    rest = sorted(
        (lab for lab in labels if lab not in chosen and lab.ambiguity > 0), key=lambda x: -x.ambiguity
    )
    chosen = sorted((chosen + rest)[:8], key=lambda x: x.rule_index)
    lines = []
    for lab in chosen:
        where = f" in agent turn(s) {', '.join(map(str, lab.violated_turns))}" if lab.violated_turns else ""
        lines.append(f"Rule {lab.rule_index}: {lab.label}{where}. {lab.explanation}")
    others = len(labels) - len(chosen)
    if others:
        lines.append(f"The other {others} rule(s): NOT VIOLATED (the conversation does not engage them).")
    return "\n".join(lines)


async def write_trace(
    ctx: BuildContext,
    slot: int,
    rules: list[str],
    dialogue: Dialogue,
    labels: list[RuleLabel],
    targets: list[int],
) -> Trace:
    cfg = ctx.recipe.traces
    label = "FAIL" if any(lab.label == "VIOLATED" for lab in labels) else "PASS"
    mode = "think" if slot_rng(ctx.seed, slot, "trace").random() < cfg.think_fraction else "answer"
    native = cfg.native_reasoning and mode == "think"
    schema_mode = "answer" if native else mode
    schema = trace_schema(schema_mode, label, cfg.max_reasoning_chars, cfg.max_repeated_sentence_share)
    try:
        call = await stage_call(
            ctx,
            Stage.TRACE,
            "trace",
            schema,
            slot=slot,
            temperature=cfg.temperature,
            max_tokens=300 + (cfg.max_reasoning_chars // 3 if schema_mode == "think" else 0),
            reasoning_budget=cfg.native_reasoning_budget if native else None,
            policy=numbered(rules),
            transcript=numbered_transcript(dialogue.turns),
            judgements=relevant_judgements(labels, dialogue, targets),
            label=label,
            mode_instructions=MODE_TEXT[schema_mode],
        )
    except SlotDropped as exc:
        reason = next((r for r in REASONS if r in exc.detail), exc.reason)
        raise SlotDropped(Stage.TRACE, reason, exc.detail) from exc
    parsed = call.parsed
    reasoning = parsed.reasoning.strip() if mode == "think" and not native else ""
    source = "llm"
    if native:
        reasoning, source = call.response.reasoning.strip(), "native"
        problems = verify_reasoning(
            reasoning, label, cfg.max_reasoning_chars, cfg.max_repeated_sentence_share
        )
        if not reasoning:
            problems = ["trace_missing_native_reasoning"]
        if problems:
            raise SlotDropped(Stage.TRACE, problems[0], f"native reasoning of {call.model}")
    trace = Trace(mode, reasoning, parsed.explanation.strip(), parsed.verdict, source)
    ctx.store.add(
        "traces",
        {
            "slot": slot,
            "mode": mode,
            "reasoning": trace.reasoning,
            "explanation": trace.explanation,
            "verdict": trace.verdict,
            "source": source,
        }
        | call.provenance,
    )
    return trace
