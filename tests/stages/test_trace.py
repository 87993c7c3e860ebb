"""The trace verifier: checks, the schema that carries them (so the LLM layer re-asks), and the
judgements block that keeps long policies' traces short."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from factory.llm.client import validate_output
from factory.llm.types import RawCompletion
from factory.stages.dialogue import Dialogue
from factory.stages.label import RuleLabel
from factory.stages.trace import relevant_judgements, trace_schema, verify_reasoning

GOOD = (
    "The user asks for the full card number. The agent reads it out in its second reply, which is "
    "exactly what the rule forbids. So the conversation breaks the policy: FAIL."
)


def test_checks() -> None:
    assert verify_reasoning(GOOD, "FAIL", 2400, 0.3) == []
    assert verify_reasoning("FAIL because " + GOOD, "FAIL", 2400, 0.3) == ["trace_label_leakage"]
    assert verify_reasoning("<think>" + GOOD, "FAIL", 2400, 0.3) == ["trace_label_leakage"]
    assert verify_reasoning(GOOD, "FAIL", 50, 0.3) == ["trace_too_long"]
    repeated = "The agent gave the card number away here. " * 6 + "So it is FAIL."
    assert "trace_repetition" in verify_reasoning(repeated, "FAIL", 2400, 0.3)


def test_schema_rejects_a_verdict_that_contradicts_the_label() -> None:
    schema = trace_schema("think", "FAIL", 2400, 0.3)
    ok = schema.model_validate(
        {"reasoning": GOOD, "explanation": "Rule 1 broken in turn 2.", "verdict": "FAIL"}
    )
    assert ok.verdict == "FAIL"
    with pytest.raises(ValidationError, match="trace_verdict_mismatch"):
        schema.model_validate(
            {"reasoning": GOOD, "explanation": "Rule 1 broken in turn 2.", "verdict": "PASS"}
        )
    # through the LLM layer's validation: the reason reaches the re-ask message
    raw = RawCompletion(text='{"explanation": "The agent kept every rule here.", "verdict": "FAIL"}')
    parsed, why = validate_output(raw, trace_schema("answer", "PASS", 2400, 0.3))
    assert parsed is None and "trace_verdict_mismatch" in why


def test_answer_mode_has_no_reasoning_field() -> None:
    assert "reasoning" not in trace_schema("answer", "PASS", 2400, 0.3).model_json_schema()["properties"]


def test_judgements_block_names_what_matters_only() -> None:
    labels = [RuleLabel(i, "NOT VIOLATED", 0, [], "d", f"fine {i}", []) for i in range(1, 41)]
    labels[6] = RuleLabel(7, "VIOLATED", 1, [2], "d", "gave the number", [])
    labels[20] = RuleLabel(21, "NOT VIOLATED", 4, [], "d", "close call", [])
    d = Dialogue("s", "trick_break", False, [7, 12], "sc", [])
    text = relevant_judgements(labels, d, [7, 12])
    lines = text.splitlines()
    assert lines[0] == "Rule 7: VIOLATED in agent turn(s) 2. gave the number"
    assert [ln.split(":")[0] for ln in lines[:-1]] == ["Rule 7", "Rule 12", "Rule 21"]
    assert lines[-1].startswith("The other 37 rule(s): NOT VIOLATED")
