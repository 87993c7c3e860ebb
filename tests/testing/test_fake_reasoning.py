"""The fake server's synthetic "native reasoning", read with the raw openai / anthropic / google-genai
SDKs: OpenAI-compatible ``reasoning_content``, Anthropic thinking blocks (and the API's rules for
them), Gemini thought parts."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import openai
import pytest
from google import genai
from google.genai import types as genai_types

from factory.testing.server_process import FakeServerProcess

USER = [{"role": "user", "content": "decide this case"}]
FAKE_REASONING = "This is fake reasoning."
VERDICT = {
    "type": "object",
    "properties": {"label": {"type": "string", "enum": ["a", "b"]}},
    "required": ["label"],
}
TOOL = {"name": "emit", "description": "emit the result", "input_schema": VERDICT}
THINKING = {"type": "enabled", "budget_tokens": 1024}


@pytest.fixture(scope="module")
def server() -> Iterator[FakeServerProcess]:
    with FakeServerProcess() as srv:
        yield srv


@pytest.fixture()
def srv(server: FakeServerProcess) -> FakeServerProcess:
    server.reset()
    return server


def oai(srv: FakeServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=srv.url + "/v1", api_key="test-key", max_retries=0)


def ant(srv: FakeServerProcess) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=srv.url, api_key="test-key", max_retries=0)


def gem(srv: FakeServerProcess) -> genai.Client:
    return genai.Client(api_key="test-key", http_options=genai_types.HttpOptions(base_url=srv.url))


def _openai_reasoning(resp: openai.types.chat.ChatCompletion) -> str | None:
    return (resp.choices[0].message.model_extra or {}).get("reasoning_content")


# ------------------------------------------------------------------------------------------------
# OpenAI-compatible
# ------------------------------------------------------------------------------------------------


def test_openai_reasoning_content_when_asked(srv):
    client = oai(srv)
    plain = client.chat.completions.create(model="gpt-fake", messages=USER)
    assert _openai_reasoning(plain) is None
    asked = client.chat.completions.create(model="gpt-fake", messages=USER, reasoning_effort="low")
    extra = client.chat.completions.create(
        model="gpt-fake", messages=USER, extra_body={"include_reasoning": True}
    )
    none = client.chat.completions.create(model="gpt-fake", messages=USER, reasoning_effort="none")
    assert _openai_reasoning(none) is None
    thought = _openai_reasoning(asked)
    assert thought and thought.startswith(FAKE_REASONING) and thought == _openai_reasoning(extra)
    assert asked.choices[0].message.content == plain.choices[0].message.content  # same answer
    assert asked.usage.completion_tokens > plain.usage.completion_tokens
    st = srv.stats()
    assert (st["reasoning_requests"], st["reasoning_answers"]) == (2, 2)


def test_openai_reasoning_server_always_reasons():
    with FakeServerProcess(reasoning=True) as srv:
        client = oai(srv)
        a = client.chat.completions.create(model="gpt-fake", messages=USER)
        b = client.chat.completions.create(model="gpt-fake", messages=USER)
        c = client.chat.completions.create(model="gpt-fake", messages=[{"role": "user", "content": "other"}])
        assert _openai_reasoning(a) and _openai_reasoning(a) == _openai_reasoning(b)
        assert _openai_reasoning(c) != _openai_reasoning(a)
        assert (srv.stats()["reasoning_requests"], srv.stats()["reasoning_answers"]) == (0, 3)


# ------------------------------------------------------------------------------------------------
# Anthropic extended thinking
# ------------------------------------------------------------------------------------------------


def test_anthropic_thinking_block_before_the_tool_call(srv):
    msg = ant(srv).messages.create(
        model="claude-fake",
        max_tokens=2048,
        messages=USER,
        tools=[TOOL],
        tool_choice={"type": "auto"},
        thinking=THINKING,
    )
    assert [b.type for b in msg.content] == ["thinking", "tool_use"]
    assert msg.content[0].thinking.startswith(FAKE_REASONING) and msg.content[0].signature
    assert msg.content[1].name == "emit" and msg.content[1].input["label"] in ("a", "b")
    assert msg.stop_reason == "tool_use"
    text = ant(srv).messages.create(model="claude-fake", max_tokens=2048, messages=USER, thinking=THINKING)
    assert [b.type for b in text.content] == ["thinking", "text"]
    assert text.content[0].thinking == msg.content[0].thinking  # seeded by the request
    assert srv.stats()["reasoning_requests"] == 2


def test_anthropic_without_thinking_nothing_changes(srv):
    msg = ant(srv).messages.create(model="claude-fake", max_tokens=512, messages=USER, tools=[TOOL])
    assert [b.type for b in msg.content] == ["text"]  # auto without thinking: no tool call
    assert srv.stats()["reasoning_requests"] == 0


def test_anthropic_omitted_thinking_display(srv):
    msg = ant(srv).messages.create(
        model="claude-fake", max_tokens=2048, messages=USER, thinking={**THINKING, "display": "omitted"}
    )
    assert msg.content[0].type == "thinking" and msg.content[0].thinking == "" and msg.content[0].signature


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tools": [TOOL], "tool_choice": {"type": "tool", "name": "emit"}}, "forces tool use"),
        ({"tools": [TOOL], "tool_choice": {"type": "any"}}, "forces tool use"),
        ({"extra_body": {"temperature": 0.5}}, "temperature"),
        ({"extra_body": {"top_p": 0.5}}, "top_p"),
        ({"extra_body": {"top_k": 5}}, "top_k"),
        ({"thinking": {"type": "enabled", "budget_tokens": 512}}, "budget_tokens"),
        ({"thinking": {"type": "enabled", "budget_tokens": 4096}}, "max_tokens"),
    ],
)
def test_anthropic_refuses_what_the_api_refuses_with_thinking(srv, kwargs, message):
    kwargs = {"thinking": THINKING, **kwargs}
    with pytest.raises(anthropic.BadRequestError, match=message):
        ant(srv).messages.create(model="claude-fake", max_tokens=2048, messages=USER, **kwargs)
    ok = ant(srv).messages.create(
        model="claude-fake", max_tokens=2048, messages=USER, thinking=THINKING, extra_body={"temperature": 1}
    )
    assert ok.content[0].type == "thinking"


# ------------------------------------------------------------------------------------------------
# Gemini thoughts
# ------------------------------------------------------------------------------------------------


def _gemini(srv: FakeServerProcess, thinking: genai_types.ThinkingConfig | None):
    client = gem(srv)  # held: a client collected mid-call closes its HTTP session
    return client.models.generate_content(
        model="gemini-fake",
        contents="decide this case",
        config=genai_types.GenerateContentConfig(
            response_mime_type="application/json", response_json_schema=VERDICT, thinking_config=thinking
        ),
    )


def test_gemini_thought_part_before_the_answer(srv):
    plain = _gemini(srv, None)
    thought = _gemini(srv, genai_types.ThinkingConfig(include_thoughts=True, thinking_budget=2048))
    parts = thought.candidates[0].content.parts
    assert [bool(p.thought) for p in parts] == [True, False]
    assert parts[0].text.startswith(FAKE_REASONING)
    assert parts[1].text == plain.text  # the answer is unchanged
    assert thought.usage_metadata.thoughts_token_count > 0
    assert plain.usage_metadata.thoughts_token_count is None
    total = thought.usage_metadata
    assert total.total_token_count == (
        total.prompt_token_count + total.candidates_token_count + total.thoughts_token_count
    )


@pytest.mark.parametrize(
    "thinking",
    [
        genai_types.ThinkingConfig(include_thoughts=True, thinking_budget=0),  # thinking off
        genai_types.ThinkingConfig(thinking_budget=2048),  # thinks, but shows no thoughts
    ],
)
def test_gemini_no_thought_parts_unless_included(srv, thinking):
    parts = _gemini(srv, thinking).candidates[0].content.parts
    assert [bool(p.thought) for p in parts] == [False]
    assert srv.stats()["reasoning_answers"] == 0
