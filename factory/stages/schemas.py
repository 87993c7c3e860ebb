"""Structured-output schemas of the LLM stages. Free-text fields carry maxLength so that
grammar-constrained decoders (llama.cpp, vLLM) cannot loop forever."""

from __future__ import annotations

import functools
from typing import Annotated, Literal

from pydantic import BaseModel, Field, StringConstraints, create_model

Short = Annotated[str, StringConstraints(min_length=1, max_length=400)]
Medium = Annotated[str, StringConstraints(min_length=1, max_length=900)]
Long = Annotated[str, StringConstraints(min_length=1, max_length=1500)]


class AgentPersona(BaseModel):
    agent_name: Annotated[str, StringConstraints(min_length=1, max_length=60)]
    company: Annotated[str, StringConstraints(min_length=1, max_length=80)]
    persona: Medium


class Exchange(BaseModel):
    user: Long
    agent: Long


class TurnJudgement(BaseModel):
    turn: int = Field(ge=1, le=60)
    discussion: Medium
    explanation: Short
    label: Literal["VIOLATED", "NOT VIOLATED"]
    ambiguity: int = Field(ge=0, le=10)


@functools.lru_cache(maxsize=128)
def paraphrase_schema(n_rules: int) -> type[BaseModel]:
    """{"rules": [exactly n_rules strings]}"""
    return create_model(
        f"ParaphrasedPolicy{n_rules}",
        rules=(
            list[Annotated[str, StringConstraints(min_length=10, max_length=450)]],
            Field(min_length=n_rules, max_length=n_rules),
        ),
    )


@functools.lru_cache(maxsize=64)
def dialogue_schema(n_turns: int) -> type[BaseModel]:
    """{"scenario": str, "exchanges": [exactly n_turns {user, agent}]}"""
    return create_model(
        f"Dialogue{n_turns}",
        scenario=(Short, ...),
        exchanges=(list[Exchange], Field(min_length=n_turns, max_length=n_turns)),
    )


@functools.lru_cache(maxsize=64)
def judgement_schema(n_turns: int) -> type[BaseModel]:
    """{"judgements": [one per agent turn]}"""
    return create_model(
        f"RuleJudgement{n_turns}",
        judgements=(list[TurnJudgement], Field(min_length=n_turns, max_length=n_turns)),
    )
