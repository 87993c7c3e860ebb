"""Tests of the fake LLM server (a test double) through the real openai, anthropic and google-genai SDKs."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Literal

import anthropic
import openai
import pydantic
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types
from pydantic import BaseModel, Field

from factory.testing.answers import MALFORMED_TEXT
from factory.testing.fake_llm_server import FakeLLMServer
from factory.testing.schema_instances import instance_for_schema, violating_instance
from factory.testing.server_process import FakeServerProcess

# ------------------------------------------------------------------------------------------------
# models and helpers
# ------------------------------------------------------------------------------------------------


class Turn(BaseModel):
    role: Literal["user", "assistant"]
    text: str = Field(min_length=3, max_length=40)


class Dialogue(BaseModel):
    title: str
    turns: list[Turn] = Field(min_length=2, max_length=4)
    score: float = Field(ge=0, le=1)
    rating: int = Field(ge=1, le=5)
    note: str | None = None


class Node(BaseModel):  # recursive: pydantic emits $defs/$ref
    name: str = Field(max_length=12)
    children: list[Node] = Field(default_factory=list, max_length=3)


class Cat(BaseModel):
    kind: Literal["cat"]
    lives: int = Field(ge=0, le=9)


class Dog(BaseModel):
    kind: Literal["dog"]
    good: bool


class Zoo(BaseModel):
    animals: list[Cat | Dog] = Field(min_length=1)
    keeper: Node
    opened: bool | None
    label: Literal["a", "b", "c"]
    ratio: float = Field(gt=0, lt=0.5)
    code: str = Field(min_length=8, max_length=8)
    ids: list[int] = Field(min_length=5, max_length=5)
    tup: tuple[int, str]
    # additionalProperties: google-genai refuses it in response_schema (but not in response_json_schema)
    tags: dict[str, int]


USER = [{"role": "user", "content": "write a dialogue"}]


@pytest.fixture(scope="module")
def server():
    with FakeServerProcess() as srv:
        yield srv


@pytest.fixture()
def srv(server):
    server.reset()
    yield server
    server.reset()


def oai(srv: FakeServerProcess, **kw) -> openai.OpenAI:
    kw.setdefault("max_retries", 0)
    return openai.OpenAI(base_url=srv.url + "/v1", api_key=kw.pop("api_key", "test-key"), **kw)


def ant(srv: FakeServerProcess, **kw) -> anthropic.Anthropic:
    kw.setdefault("max_retries", 0)
    return anthropic.Anthropic(base_url=srv.url, api_key=kw.pop("api_key", "test-key"), **kw)


def gem(srv: FakeServerProcess, api_key: str = "test-key", **http) -> genai.Client:
    return genai.Client(api_key=api_key, http_options=genai_types.HttpOptions(base_url=srv.url, **http))


def tool_call(client: anthropic.Anthropic, schema: dict, content: str = "go"):
    return client.messages.create(
        model="claude-fake",
        max_tokens=512,
        messages=[{"role": "user", "content": content}],
        tools=[{"name": "emit", "description": "emit the result", "input_schema": schema}],
        tool_choice={"type": "tool", "name": "emit"},
    )


def gemini_json(client: genai.Client, schema=Dialogue, content: str = "go"):
    return client.models.generate_content(
        model="gemini-fake",
        contents=content,
        config=genai_types.GenerateContentConfig(
            response_mime_type="application/json", response_schema=schema
        ),
    )


def post_raw(url: str, body: dict, headers: dict | None = None) -> tuple[int, dict, dict]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    req.add_header("Content-Type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read())


# ------------------------------------------------------------------------------------------------
# schema-instance generator
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", [Dialogue, Node, Zoo])
def test_generator_instances_validate(model):
    schema = model.model_json_schema()
    for seed in range(300):
        model.model_validate(instance_for_schema(schema, seed))


def test_generator_is_deterministic_and_varied():
    schema = Dialogue.model_json_schema()
    assert instance_for_schema(schema, 7) == instance_for_schema(schema, 7)
    assert len({json.dumps(instance_for_schema(schema, s), sort_keys=True) for s in range(20)}) > 15


def test_generator_gemini_dialect_and_nullable():
    schema = {
        "type": "OBJECT",
        "properties": {
            "name": {"type": "STRING", "max_length": 10},
            "items": {
                "type": "ARRAY",
                "items": {"type": "INTEGER", "minimum": 3, "maximum": 4},
                "min_items": "2",
            },
            "maybe": {"type": "STRING", "nullable": True},
            "mood": {"type": "STRING", "format": "enum", "enum": ["glad", "sad"]},
        },
        "required": ["name", "items", "maybe", "mood"],
        "property_ordering": ["mood", "name", "items", "maybe"],
    }
    for seed in range(100):
        v = instance_for_schema(schema, seed)
        assert list(v) == ["mood", "name", "items", "maybe"]
        assert isinstance(v["name"], str) and len(v["name"]) <= 10
        assert len(v["items"]) >= 2 and all(x in (3, 4) for x in v["items"])
        assert v["maybe"] is None or isinstance(v["maybe"], str)
        assert v["mood"] in ("glad", "sad")


def test_generator_honours_anthropic_description_hints():
    schema = {
        "type": "object",
        "properties": {
            "xs": {
                "type": "array",
                "items": {"type": "string"},
                "description": "stuff\n\n{maxItems: 5, minItems: 4}",
            },
            "n": {"type": "integer", "description": "{maximum: 3, minimum: 2}"},
        },
        "required": ["xs", "n"],
        "additionalProperties": False,
    }
    for seed in range(50):
        v = instance_for_schema(schema, seed)
        assert 4 <= len(v["xs"]) <= 5 and v["n"] in (2, 3)


def test_violating_instance_does_not_validate():
    schema = Dialogue.model_json_schema()
    bad = violating_instance(schema, instance_for_schema(schema, 1))
    with pytest.raises(pydantic.ValidationError):
        Dialogue.model_validate(bad)


# ------------------------------------------------------------------------------------------------
# structured output through each SDK
# ------------------------------------------------------------------------------------------------


def test_openai_structured_output(srv):
    client = oai(srv)
    raw = client.chat.completions.with_raw_response.parse(
        model="gpt-fake", messages=USER, response_format=Dialogue
    )
    for h in (
        "x-ratelimit-limit-requests",
        "x-ratelimit-remaining-requests",
        "x-ratelimit-limit-tokens",
        "x-ratelimit-remaining-tokens",
    ):
        assert int(raw.headers[h]) >= 0
    completion = raw.parse()
    assert completion.object == "chat.completion" and completion.model == "gpt-fake"
    choice = completion.choices[0]
    assert choice.finish_reason == "stop" and choice.message.role == "assistant"
    assert isinstance(choice.message.parsed, Dialogue)
    assert Dialogue.model_validate_json(choice.message.content) == choice.message.parsed
    u = completion.usage
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens > 0
    # the same request gives the same answer
    again = client.chat.completions.parse(model="gpt-fake", messages=USER, response_format=Dialogue)
    assert again.choices[0].message.content == choice.message.content


def test_openai_plain_text_json_object_and_models(srv):
    client = oai(srv)
    text = client.chat.completions.create(model="gpt-fake", messages=USER).choices[0].message.content
    assert isinstance(text, str) and text and not text.startswith("{")
    doc = (
        client.chat.completions.create(
            model="gpt-fake", messages=USER, response_format={"type": "json_object"}
        )
        .choices[0]
        .message.content
    )
    assert isinstance(json.loads(doc), dict)
    assert [m.id for m in client.models.list()]
    # /chat/completions without /v1 is accepted too
    status, _, body = post_raw(srv.url + "/chat/completions", {"model": "m", "messages": USER})
    assert status == 200 and body["object"] == "chat.completion"


def test_anthropic_structured_output(srv):
    client = ant(srv)
    raw = client.messages.with_raw_response.create(
        model="claude-fake",
        max_tokens=512,
        messages=[{"role": "user", "content": "go"}],
        tools=[{"name": "emit", "description": "emit", "input_schema": Dialogue.model_json_schema()}],
        tool_choice={"type": "tool", "name": "emit"},
    )
    assert raw.headers["request-id"]
    assert int(raw.headers["anthropic-ratelimit-requests-remaining"]) >= 0
    msg = raw.parse()
    assert msg.type == "message" and msg.role == "assistant" and msg.stop_reason == "tool_use"
    assert msg.stop_sequence is None and msg.usage.input_tokens > 0 and msg.usage.output_tokens > 0
    (block,) = msg.content
    assert block.type == "tool_use" and block.name == "emit" and block.id.startswith("toolu_")
    Dialogue.model_validate(block.input)
    # the SDK's own structured-output helper (output_config.format) works too
    parsed = client.messages.parse(
        model="claude-fake",
        max_tokens=512,
        messages=[{"role": "user", "content": "go"}],
        output_format=Dialogue,
    )
    assert isinstance(parsed.parsed_output, Dialogue) and parsed.stop_reason == "end_turn"
    # without a forced tool: text, end_turn
    text = client.messages.create(
        model="claude-fake", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
    )
    assert text.content[0].type == "text" and text.content[0].text and text.stop_reason == "end_turn"


def test_gemini_structured_output(srv):
    client = gem(srv)
    resp = gemini_json(client)
    assert isinstance(resp.parsed, Dialogue)
    assert resp.candidates[0].finish_reason == genai_types.FinishReason.STOP
    assert resp.candidates[0].content.role == "model"
    um = resp.usage_metadata
    assert um.total_token_count == um.prompt_token_count + um.candidates_token_count
    assert resp.model_version == "gemini-fake"
    # standard JSON Schema through response_json_schema
    resp2 = client.models.generate_content(
        model="gemini-fake",
        contents="go",
        config=genai_types.GenerateContentConfig(
            response_mime_type="application/json", response_json_schema=Zoo.model_json_schema()
        ),
    )
    Zoo.model_validate_json(resp2.text)
    plain = client.models.generate_content(model="gemini-fake", contents="hello")
    assert plain.text and not plain.text.startswith("{")


async def test_async_openai_concurrent(srv):
    client = openai.AsyncOpenAI(base_url=srv.url + "/v1", api_key="k", max_retries=0)
    async with client:
        results = await asyncio.gather(
            *(
                client.chat.completions.parse(
                    model="gpt-fake",
                    messages=[{"role": "user", "content": f"item {i % 50}"}],
                    response_format=Turn,
                )
                for i in range(200)
            )
        )
    assert all(isinstance(r.choices[0].message.parsed, Turn) for r in results)
    st = srv.stats()
    assert st["requests"] == 200 and st["unique_bodies"] == 50 and st["repeated_bodies"] == 150


# ------------------------------------------------------------------------------------------------
# faults: documented wire outcomes
# ------------------------------------------------------------------------------------------------

ERRORS = [
    # kind, openai exc, status, anthropic exc, anthropic status, anthropic error type, gemini exc, gemini status
    ("rate_limit", openai.RateLimitError, 429, anthropic.RateLimitError, 429, "rate_limit_error",
     genai_errors.ClientError, "RESOURCE_EXHAUSTED"),
    ("server_error", openai.InternalServerError, 500, anthropic.InternalServerError, 500, "api_error",
     genai_errors.ServerError, "INTERNAL"),
    ("overloaded", openai.InternalServerError, 503, anthropic.OverloadedError, 529, "overloaded_error",
     genai_errors.ServerError, "UNAVAILABLE"),
    ("bad_request", openai.BadRequestError, 400, anthropic.BadRequestError, 400, "invalid_request_error",
     genai_errors.ClientError, "INVALID_ARGUMENT"),
    ("unauthorized", openai.AuthenticationError, 401, anthropic.AuthenticationError, 401, "authentication_error",
     genai_errors.ClientError, "UNAUTHENTICATED"),
]  # fmt: skip


@pytest.mark.parametrize("kind,oexc,ostatus,aexc,astatus,atype,gexc,gstatus", ERRORS)
def test_error_faults(srv, kind, oexc, ostatus, aexc, astatus, atype, gexc, gstatus):
    srv.script([{"kind": kind, "retry_after": 1.5}] * 3)
    with pytest.raises(oexc) as oe:
        oai(srv).chat.completions.create(model="gpt-fake", messages=USER)
    assert oe.value.status_code == ostatus
    assert oe.value.body["message"] and "type" in oe.value.body  # the SDK unwraps {"error": {...}}
    with pytest.raises(aexc) as ae:
        tool_call(ant(srv), Dialogue.model_json_schema())
    assert ae.value.status_code == astatus
    assert ae.value.body["type"] == "error" and ae.value.body["error"]["type"] == atype
    assert ae.value.response.headers["request-id"]
    with pytest.raises(gexc) as ge:
        gemini_json(gem(srv))
    assert ge.value.code == ostatus and ge.value.status == gstatus
    if kind == "rate_limit":
        assert oe.value.response.headers["retry-after"] == "1.5"
        assert ae.value.response.headers["retry-after"] == "1.5"
    st = srv.stats()
    assert st["faults_applied"] == 3 and st["faults_by_kind"] == {kind: 3} and st["faults_pending"] == 0


def test_openai_sdk_retries_after_rate_limit(srv):
    srv.script([{"kind": "rate_limit", "retry_after": 0.2}, {"kind": "server_error"}])
    t0 = time.monotonic()
    r = oai(srv, max_retries=2).chat.completions.parse(model="gpt-fake", messages=USER, response_format=Turn)
    assert isinstance(r.choices[0].message.parsed, Turn)
    assert time.monotonic() - t0 >= 0.2
    assert srv.stats()["requests"] == 3


def test_malformed(srv):
    srv.script([{"kind": "malformed"}] * 3)
    r = oai(srv).chat.completions.create(
        model="gpt-fake",
        messages=USER,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "d", "schema": Dialogue.model_json_schema()},
        },
    )
    assert r.choices[0].finish_reason == "stop" and r.choices[0].message.content == MALFORMED_TEXT
    with pytest.raises(json.JSONDecodeError):
        json.loads(r.choices[0].message.content)
    block = tool_call(ant(srv), Dialogue.model_json_schema()).content[0]
    assert block.type == "tool_use" and block.input == MALFORMED_TEXT
    resp = gemini_json(gem(srv))
    assert resp.text == MALFORMED_TEXT and resp.parsed is None


def test_truncated(srv):
    srv.script([{"kind": "truncated"}] * 4)
    client = oai(srv)
    r = client.chat.completions.create(
        model="gpt-fake",
        messages=USER,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "d", "schema": Dialogue.model_json_schema()},
        },
    )
    assert r.choices[0].finish_reason == "length"
    assert r.choices[0].message.content.startswith("{")
    with pytest.raises(json.JSONDecodeError):
        json.loads(r.choices[0].message.content)
    with pytest.raises(openai.LengthFinishReasonError):
        client.chat.completions.parse(model="gpt-fake", messages=USER, response_format=Dialogue)
    msg = tool_call(ant(srv), Dialogue.model_json_schema())
    assert msg.stop_reason == "max_tokens"
    with pytest.raises(pydantic.ValidationError):
        Dialogue.model_validate(msg.content[0].input)
    resp = gemini_json(gem(srv))
    assert resp.candidates[0].finish_reason == genai_types.FinishReason.MAX_TOKENS
    with pytest.raises(json.JSONDecodeError):
        json.loads(resp.text)


def test_wrong_schema(srv):
    srv.script([{"kind": "wrong_schema"}] * 3)
    with pytest.raises(pydantic.ValidationError):
        oai(srv).chat.completions.parse(model="gpt-fake", messages=USER, response_format=Dialogue)
    block = tool_call(ant(srv), Dialogue.model_json_schema()).content[0]
    assert isinstance(block.input, dict)
    with pytest.raises(pydantic.ValidationError):
        Dialogue.model_validate(block.input)
    resp = gemini_json(gem(srv))
    json.loads(resp.text)
    with pytest.raises(pydantic.ValidationError):
        Dialogue.model_validate_json(resp.text)


def test_empty(srv):
    srv.script([{"kind": "empty"}] * 4)
    r = oai(srv).chat.completions.create(model="gpt-fake", messages=USER)
    assert r.choices[0].message.content == "" and r.choices[0].finish_reason == "stop"
    text = ant(srv).messages.create(model="c", max_tokens=16, messages=[{"role": "user", "content": "x"}])
    assert text.content == [] and text.stop_reason == "end_turn"
    assert tool_call(ant(srv), Dialogue.model_json_schema()).content[0].input == {}
    resp = gemini_json(gem(srv))
    assert resp.text is None and resp.parsed is None


def test_hang_times_out_client(srv):
    srv.script([{"kind": "hang", "seconds": 30}] * 3)
    t0 = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        oai(srv, timeout=1.0).chat.completions.create(model="gpt-fake", messages=USER)
    with pytest.raises(anthropic.APITimeoutError):
        ant(srv, timeout=1.0).messages.create(
            model="c", max_tokens=8, messages=[{"role": "user", "content": "x"}]
        )
    gclient = gem(srv, timeout=1000)  # keep a reference: a dropped genai.Client closes its transport
    with pytest.raises(Exception) as ge:  # google-genai lets the transport's timeout through
        gclient.models.generate_content(model="gemini-fake", contents="x")
    assert "timeout" in type(ge.value).__name__.lower() or "timed out" in str(ge.value).lower()
    assert time.monotonic() - t0 < 8
    # the server is still responsive
    assert oai(srv).chat.completions.create(model="gpt-fake", messages=USER).choices[0].message.content


def test_short_hang_then_answers(srv):
    srv.script([{"kind": "hang", "seconds": 0.3}])
    t0 = time.monotonic()
    r = oai(srv).chat.completions.create(model="gpt-fake", messages=USER)
    assert time.monotonic() - t0 >= 0.3 and r.choices[0].message.content


def test_fault_match_provider_and_fifo(srv):
    srv.script(
        [
            {"kind": "server_error", "match": "poison"},
            {"kind": "bad_request", "provider": "anthropic"},
            {"kind": "rate_limit"},
            {"kind": "unauthorized"},
        ]
    )
    client = oai(srv)
    # the match-fault skips this request; the first generic fault applies (FIFO among applicable)
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "clean"}])
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "a poison pill"}])
    with pytest.raises(anthropic.BadRequestError):
        ant(srv).messages.create(model="c", max_tokens=8, messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="m", messages=USER)
    assert client.chat.completions.create(model="m", messages=USER).choices[0].message.content
    assert srv.stats()["faults_applied"] == 4


def test_script_rejects_unknown_kind(srv):
    with pytest.raises(ValueError):
        srv.script([{"kind": "explode"}])
    assert srv.stats()["faults_pending"] == 0


# ------------------------------------------------------------------------------------------------
# stats and server-wide options
# ------------------------------------------------------------------------------------------------


def test_stats_count_requests_and_repeats(srv):
    client = oai(srv)
    for content in ["a", "b", "a", "a"]:
        client.chat.completions.create(model="gpt-fake", messages=[{"role": "user", "content": content}])
    client.chat.completions.create(
        model="gpt-fake", messages=[{"role": "user", "content": "a"}], temperature=0.5
    )
    gemini_json(gem(srv))
    gemini_json(gem(srv))
    st = srv.stats()
    assert st["requests"] == 7
    assert st["by_endpoint"] == {"openai.chat_completions": 5, "gemini.generate_content": 2}
    assert st["unique_bodies"] == 4 and st["repeated_bodies"] == 3
    srv.reset()
    st = srv.stats()
    assert st["requests"] == 0 and st["unique_bodies"] == 0 and st["repeated_bodies"] == 0


def test_require_key():
    with FakeServerProcess(require_key="sekrit") as s:
        with pytest.raises(openai.AuthenticationError) as oe:
            oai(s, api_key="wrong").chat.completions.create(model="m", messages=USER)
        assert oe.value.body["code"] == "invalid_api_key"
        assert (
            oai(s, api_key="sekrit")
            .chat.completions.create(model="m", messages=USER)
            .choices[0]
            .message.content
        )
        with pytest.raises(anthropic.AuthenticationError):
            ant(s, api_key="wrong").messages.create(model="c", max_tokens=8, messages=USER)
        assert ant(s, api_key="sekrit").messages.create(model="c", max_tokens=8, messages=USER).content
        status, _, body = post_raw(
            s.url + "/v1/messages", {"model": "c", "max_tokens": 8, "messages": USER}, {"x-api-key": "sekrit"}
        )
        assert status == 200 and body["type"] == "message"
        bad, good = gem(s, api_key="wrong"), gem(s, api_key="sekrit")
        with pytest.raises(genai_errors.ClientError) as ge:
            bad.models.generate_content(model="g", contents="x")
        assert ge.value.code == 401 and ge.value.status == "UNAUTHENTICATED"
        assert good.models.generate_content(model="g", contents="x").text
        gurl = s.url + "/v1beta/models/g:generateContent"
        gbody = {"contents": [{"role": "user", "parts": [{"text": "x"}]}]}
        assert post_raw(gurl + "?key=sekrit", gbody)[0] == 200
        assert post_raw(gurl, gbody)[0] == 401
        assert s.stats()["auth_failures"] == 4


def test_rate_limit_latency_and_fail_rate_options():
    with FakeServerProcess(rate_limit=2, latency=0.05) as s:
        statuses = []
        t0 = time.monotonic()
        for _ in range(8):
            status, headers, body = post_raw(s.url + "/v1/chat/completions", {"model": "m", "messages": USER})
            statuses.append(status)
            if status == 429:
                assert float(headers["Retry-After"]) > 0 and body["error"]["code"] == "rate_limit_exceeded"
        assert time.monotonic() - t0 >= 8 * 0.05
        assert statuses.count(200) >= 2 and 429 in statuses
        assert s.stats()["rate_limited"] == statuses.count(429)
    with FakeServerProcess(fail_rate=0.5, fail_seed=3) as s:
        client = oai(s)
        outcomes = []
        for _ in range(40):
            try:
                client.chat.completions.create(model="m", messages=USER)
                outcomes.append(200)
            except openai.InternalServerError as exc:
                outcomes.append(exc.status_code)
        assert set(outcomes) == {200, 500}
        assert s.stats()["random_failures"] == outcomes.count(500)


def test_cli_ready_line_and_sigterm_with_hanging_request():
    proc = subprocess.Popen(
        [sys.executable, "-m", "factory.testing.fake_llm_server", "--port", "0"],
        cwd=str(Path(__file__).resolve().parents[2]),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("READY http://127.0.0.1:")
        url = line.split()[1]
        req = urllib.request.Request(
            url + "/_fake/script", data=b'{"faults": [{"kind": "hang", "seconds": 60}]}', method="POST"
        )
        urllib.request.urlopen(req, timeout=5).read()

        def hang():
            try:
                post_raw(url + "/v1/chat/completions", {"model": "m", "messages": USER})
            except Exception:
                pass

        t = threading.Thread(target=hang, daemon=True)
        t.start()
        time.sleep(0.3)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
        assert time.monotonic() - t0 < 3
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()


def test_process_helper_never_leaks():
    s = FakeServerProcess()
    with s:
        pid = s.pid
        assert s.stats()["requests"] == 0
    assert s.proc is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_seed_is_per_conversation_and_model(srv):
    client = oai(srv)

    def ask(model, content):
        return (
            client.chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": content}],
                response_format={"type": "json_object"},
            )
            .choices[0]
            .message.content
        )

    assert ask("m1", "x") == ask("m1", "x")
    answers = {ask(m, c) for m in ("m1", "m2") for c in ("x", "y", str(random.random()))}
    assert len(answers) == 6


async def test_in_process_server_and_control_methods():
    async with FakeLLMServer(latency=0.01) as server:
        server.script([{"kind": "rate_limit", "retry_after": 2}])
        client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="k", max_retries=0)
        async with client:
            with pytest.raises(openai.RateLimitError) as exc:
                await client.chat.completions.create(model="m", messages=USER)
            assert exc.value.response.headers["retry-after"] == "2"
            r = await client.chat.completions.parse(model="m", messages=USER, response_format=Zoo)
        assert isinstance(r.choices[0].message.parsed, Zoo)
        st = server.stats()
        assert st["requests"] == 2 and st["faults_applied"] == 1


def test_process_helper_reports_startup_failure(server):
    port = int(server.url.rsplit(":", 1)[1])
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match="exited early"):
        FakeServerProcess(port=port).start()
    assert time.monotonic() - t0 < 10


def test_openai_forced_function_tool(srv):
    client = oai(srv)
    r = client.chat.completions.parse(
        model="gpt-fake",
        messages=USER,
        tools=[openai.pydantic_function_tool(Turn)],
        tool_choice={"type": "function", "function": {"name": "Turn"}},
    )
    call = r.choices[0].message.tool_calls[0]
    assert call.function.name == "Turn" and isinstance(call.function.parsed_arguments, Turn)
