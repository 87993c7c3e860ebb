"""Stage names and dialogue dynamics: the vocabulary recipes, stages, runner and reports share."""

from __future__ import annotations

from enum import StrEnum


class Stage(StrEnum):
    """Every stage tag that appears in the store (filter_log.stage, llm_calls.stage, recipes)."""

    COMPOSE = "compose"
    PARAPHRASE = "paraphrase"
    PERSONA = "persona"
    DIALOGUE = "dialogue"
    LABEL = "label"
    TRACE = "trace"
    FILTER = "filter"


# The stages that call an LLM, in pipeline order; recipes choose a model for each.
LLM_STAGES: tuple[str, ...] = (Stage.PARAPHRASE, Stage.PERSONA, Stage.DIALOGUE, Stage.LABEL, Stage.TRACE)
# Writers produce the data (a smaller model is enough); judges label it and explain the labels.
WRITER_STAGES = frozenset({Stage.PARAPHRASE, Stage.PERSONA, Stage.DIALOGUE})
JUDGE_STAGES = frozenset({Stage.LABEL, Stage.TRACE})
# Kept as the plain strings the store holds.
STAGES = tuple(str(s) for s in LLM_STAGES)

DYNAMICS = ("normal_comply", "trick_resist", "trick_break", "normal_break")
BREAKS = frozenset({"trick_break", "normal_break"})
