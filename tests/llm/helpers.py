"""Constants, models and small helpers shared by the LLM-layer tests."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from factory.llm.cache import CACHE_DDL
from factory.llm.types import GenParams, LLMRequest, Message

PROVIDERS = ("openai", "anthropic", "google")
MODELS = {"openai": "gpt-fake", "anthropic": "claude-fake", "google": "gemini-fake"}
KEY_ENV = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY", "google": "GEMINI_API_KEY"}


class Verdict(BaseModel):
    """The structured output most tests ask for."""

    label: Literal["safe", "unsafe"]
    score: float = Field(ge=0, le=1)
    reasons: list[str] = Field(min_length=1, max_length=3)


def request(
    content: str = "classify this message",
    schema: type[BaseModel] | None = Verdict,
    stage: str = "t",
    system: str | None = None,
    **kw: Any,
) -> LLMRequest:
    params = kw.pop("params", None) or GenParams()
    messages = [Message(role="system", content=system)] if system else []
    messages.append(Message(role="user", content=content))
    return LLMRequest(messages=messages, output_schema=schema, stage=stage, params=params, **kw)


def expected_tokens(n_chars: int) -> int:
    """The fake server's token count for n characters."""
    return n_chars // 4 + 1


def old_cache_ddl() -> str:
    """llm_calls as files from before `key_id` have it: the PRIMARY KEY on the 32-character key."""
    ddl = CACHE_DDL.replace(",\n    key_id UHUGEINT PRIMARY KEY", "").replace(
        "key VARCHAR,", "key VARCHAR PRIMARY KEY,"
    )
    assert "key_id" not in ddl and "key VARCHAR PRIMARY KEY" in ddl
    return ddl
