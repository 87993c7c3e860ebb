"""The columns of a sample row that follow from a labelled policy and its dialogue: one definition
for the build's slots (factory/runner/slot.py) and the test set's cases (factory/testset/run.py)."""

from __future__ import annotations

from typing import Any

import orjson

from factory.llm.config import EndpointConfig
from factory.recipes.names import STAGES
from factory.stages.compose import ComposedPolicy, numbered
from factory.stages.dialogue import Dialogue, transcript
from factory.stages.label import PolicyLabels
from factory.stages.persona import Personas
from factory.stages.trace import Trace


def labelled_columns(
    policy: ComposedPolicy,
    candidates: list[str],
    labelled: PolicyLabels,
    dialogue: Dialogue,
    people: Personas,
    label: str,
    trace: Trace | None,
    endpoints: dict[str, EndpointConfig],
) -> dict[str, Any]:
    """Policy, transcript, labels, trace, sizes, personas and models of a sample (its kept rules
    only); the caller adds its slot, ids, split, dynamic and intent."""
    labels = labelled.kept
    rules = [candidates[i - 1] for i in labelled.candidate_index]
    return {
        "policy_id": policy.policy_id,
        "industry": policy.industry,
        "policy": numbered(rules),
        "transcript": transcript(dialogue.turns),
        "label": label,
        "rules": rules,
        "rule_ids": [policy.rules[i - 1].id for i in labelled.candidate_index],
        "turns_json": orjson.dumps(dialogue.turns).decode(),
        "rule_labels_json": orjson.dumps([lab.public() for lab in labels]).decode(),
        "violated_rules": [lab.rule_index for lab in labels if lab.label == "VIOLATED"],
        "explanation": trace.explanation if trace else "",
        "reasoning": trace.reasoning if trace else "",
        "trace_mode": trace.mode if trace else "",
        "num_rules": len(rules),
        "num_turns": dialogue.num_turns,
        "max_ambiguity": max(lab.ambiguity for lab in labels),
        "user_persona": people.user,
        "agent_persona": f"{people.agent_name} ({people.company}): {people.agent}",
        "models_json": orjson.dumps({stage: endpoints[stage].spec for stage in STAGES}).decode(),
    }
