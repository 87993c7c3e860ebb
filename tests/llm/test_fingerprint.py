"""Cache keys: everything that changes the answer changes the key, bookkeeping does not."""

from __future__ import annotations

from typing import Literal

import pytest
from pydantic import BaseModel, Field

from factory.llm.fingerprint import request_key
from factory.llm.types import GenParams, LLMRequest, Message
from tests.llm.helpers import Verdict, request


class OtherVerdict(BaseModel):
    label: Literal["safe", "unsafe"]
    score: float = Field(ge=0, le=1)


class VerdictWiderScore(BaseModel):
    label: Literal["safe", "unsafe"]
    score: float = Field(ge=0, le=10)
    reasons: list[str] = Field(min_length=1, max_length=3)


def key(provider: str = "openai", model: str = "gpt-x", **kw) -> str:
    return request_key(provider, model, request(**kw))


def test_same_inputs_same_key():
    a, b = key(), key()
    assert a == b
    assert len(a) == 32 and int(a, 16) >= 0
    # built independently, field by field
    req = LLMRequest(
        messages=[Message(role="user", content="classify this message")],
        output_schema=Verdict,
        params=GenParams(temperature=0.7),
    )
    assert request_key("openai", "gpt-x", req) == a


def test_bookkeeping_fields_are_not_part_of_the_key():
    assert key(stage="a", prompt_hash="p1") == key(stage="b", prompt_hash="p2")


@pytest.mark.parametrize(
    "params",
    [
        GenParams(temperature=0.0),
        GenParams(temperature=0.71),
        GenParams(max_tokens=1025),
        GenParams(top_p=0.9),
        GenParams(seed=1),
        GenParams(stop=("\n",)),
    ],
)
def test_each_generation_parameter_changes_the_key(params):
    assert key(params=params) != key()


def test_parameters_are_distinguished_from_each_other():
    keys = {key(params=GenParams(temperature=t)) for t in (0.0, 0.1, 0.2, 0.7, 1.0)}
    assert len(keys) == 5
    assert key(params=GenParams(seed=1)) != key(params=GenParams(seed=2))


def test_schema_changes_the_key():
    base = key(schema=Verdict)
    assert key(schema=None) != base
    assert key(schema=OtherVerdict) != base
    assert key(schema=VerdictWiderScore) != base  # only a constraint differs


def test_model_provider_variant_and_messages_change_the_key():
    base = key()
    assert key(model="gpt-y") != base
    assert key(provider="anthropic") != base
    assert key(variant="1") != base and key(variant="1") != key(variant="2")
    assert key(content="classify this message!") != base
    assert key(system="be brief") != base
    # the provider/model boundary is unambiguous
    assert request_key("openai", "ab", request()) != request_key("openaia", "b", request())


def test_messages_override_is_used_for_reasks():
    req = request()
    msgs = [m.model_dump() for m in req.messages]
    assert request_key("openai", "m", req, msgs) == request_key("openai", "m", req)
    longer = msgs + [{"role": "assistant", "content": "{}"}, {"role": "user", "content": "again"}]
    assert request_key("openai", "m", req, longer) != request_key("openai", "m", req)
