"""Field profiles of the fake LLM server (the labeller double): skewed, schema-bounded, deterministic."""

from __future__ import annotations

import enum
import json
import random
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Literal

import openai
import pytest
from pydantic import BaseModel, Field

from factory.testing.fake_llm_server import FakeLLMServer
from factory.testing.profiles import (
    LABELLER_AMBIGUITY_WEIGHTS,
    LABELLER_VIOLATED_SHARE,
    PRESETS,
    parse_profile,
    use_profile,
)
from factory.testing.schema_compiler import SchemaCompiler
from factory.testing.schema_instances import compile_schema, instance_for_schema
from factory.testing.server_process import FakeServerProcess

REPO_ROOT = Path(__file__).resolve().parents[2]

# ------------------------------------------------------------------------------------------------
# the judgement an LLM labeller answers per agent turn (as factory.stages.schemas.TurnJudgement)
# ------------------------------------------------------------------------------------------------


class TurnJudgement(BaseModel):
    turn: int = Field(ge=1, le=60)
    discussion: str = Field(min_length=1, max_length=900)
    explanation: str = Field(min_length=1, max_length=400)
    label: Literal["VIOLATED", "NOT VIOLATED"]
    ambiguity: int = Field(ge=0, le=10)


class Judgements(BaseModel):
    judgements: list[TurnJudgement] = Field(min_length=5, max_length=5)


class Label(enum.StrEnum):  # pydantic emits a $ref into $defs for an Enum class
    violated = "VIOLATED"
    not_violated = "NOT VIOLATED"


class EnumJudgement(BaseModel):
    label: Label
    ambiguity: int = Field(ge=0, le=10)


GEMINI_JUDGEMENT = {
    "type": "OBJECT",
    "properties": {
        "turn": {"type": "INTEGER", "minimum": "1", "maximum": "60"},
        "explanation": {"type": "STRING", "max_length": 400},
        "label": {"type": "STRING", "format": "enum", "enum": ["VIOLATED", "NOT VIOLATED"]},
        "ambiguity": {"type": "INTEGER", "minimum": "0", "maximum": "10"},
    },
    "required": ["turn", "explanation", "label", "ambiguity"],
}

ANTHROPIC_HINTED_JUDGEMENT = {  # the anthropic SDK moves bounds into the description
    "type": "object",
    "properties": {
        "label": {"type": "string", "enum": ["VIOLATED", "NOT VIOLATED"]},
        "ambiguity": {"type": "integer", "description": "how unclear\n\n{maximum: 10, minimum: 0}"},
    },
    "required": ["label", "ambiguity"],
    "additionalProperties": False,
}

#: exact shares of the labeller preset, from its weights
TOTAL = sum(LABELLER_AMBIGUITY_WEIGHTS)
SHARE_GE6 = sum(LABELLER_AMBIGUITY_WEIGHTS[6:]) / TOTAL
SHARE_GT6 = sum(LABELLER_AMBIGUITY_WEIGHTS[7:]) / TOTAL


def judgements_of(doc: dict) -> list[dict]:
    return doc["judgements"] if "judgements" in doc else [doc]


def shares(docs: list[dict]) -> tuple[float, float, int]:
    js = [j for d in docs for j in judgements_of(d)]
    ge6 = sum(j["ambiguity"] >= 6 for j in js) / len(js)
    violated = sum(j["label"] == "VIOLATED" for j in js) / len(js)
    return ge6, violated, len(js)


# ------------------------------------------------------------------------------------------------
# the preset and the generator
# ------------------------------------------------------------------------------------------------


def test_labeller_preset_weights_and_exact_shares():
    assert LABELLER_AMBIGUITY_WEIGHTS == (30, 22, 15, 11, 7, 5, 3, 3, 2, 1, 1)
    assert TOTAL == 100 and len(LABELLER_AMBIGUITY_WEIGHTS) == 11  # ambiguity 0..10
    assert SHARE_GE6 == pytest.approx(0.10) and SHARE_GT6 == pytest.approx(0.07)
    assert list(LABELLER_AMBIGUITY_WEIGHTS) == sorted(LABELLER_AMBIGUITY_WEIGHTS, reverse=True)
    assert LABELLER_VIOLATED_SHARE == 0.08
    choices = PRESETS["labeller"]["label"]["choices"]
    assert choices["VIOLATED"] / sum(choices.values()) == pytest.approx(0.08)
    p = parse_profile("labeller")
    assert p is not None and p.name == "labeller" and p.spec == PRESETS["labeller"]


@pytest.mark.parametrize(
    ("schema", "n_docs", "model"),
    [
        pytest.param(TurnJudgement.model_json_schema(), 2000, TurnJudgement, id="turn-judgement"),
        pytest.param(Judgements.model_json_schema(), 400, Judgements, id="nested-list-of-5"),
        pytest.param(EnumJudgement.model_json_schema(), 2000, EnumJudgement, id="enum-ref"),
        pytest.param(GEMINI_JUDGEMENT, 2000, None, id="gemini-dialect"),
        pytest.param(ANTHROPIC_HINTED_JUDGEMENT, 2000, None, id="anthropic-hints"),
    ],
)
def test_labeller_preset_shares_over_2000_judgements(schema, n_docs, model):
    docs = [instance_for_schema(schema, seed, profile="labeller") for seed in range(n_docs)]
    ge6, violated, n = shares(docs)
    assert n == 2000
    assert abs(ge6 - SHARE_GE6) <= 0.03, ge6
    assert abs(violated - LABELLER_VIOLATED_SHARE) <= 0.03, violated
    for d in docs:
        for j in judgements_of(d):
            assert 0 <= j["ambiguity"] <= 10 and j["label"] in ("VIOLATED", "NOT VIOLATED")
    if model is not None:
        for d in docs:
            model.model_validate(d)


def test_without_profile_the_plain_uniform_generator_answers():
    schema = Judgements.model_json_schema()
    plain = SchemaCompiler(schema).compile(schema)  # uncached, profile-free
    for seed in range(50):
        assert instance_for_schema(schema, seed) == plain(random.Random(seed), 0)
        instance_for_schema(schema, seed, profile="labeller")  # does not leak into the plain cache
        assert instance_for_schema(schema, seed) == plain(random.Random(seed), 0)
    ge6, violated, _ = shares([instance_for_schema(schema, s) for s in range(400)])
    assert violated > 0.4 and ge6 > 0.35  # uniform: 50% and 5/11


def test_profile_is_deterministic_and_seed_dependent():
    schema = Judgements.model_json_schema()
    a = [instance_for_schema(schema, s, profile="labeller") for s in range(30)]
    b = [instance_for_schema(schema, random.Random(s), profile=dict(PRESETS["labeller"])) for s in range(30)]
    assert a == b  # preset name, mapping and a seeded Random all give the same draws
    assert len({json.dumps(x, sort_keys=True) for x in a}) == 30
    text = json.dumps(PRESETS["labeller"])
    assert instance_for_schema(schema, 3, profile=text) == a[3]


def test_use_profile_makes_it_the_default():
    schema = TurnJudgement.model_json_schema()
    with use_profile("labeller"):
        inside = [instance_for_schema(schema, s) for s in range(20)]
        assert compile_schema(schema) is compile_schema(schema, "labeller")
    assert inside == [instance_for_schema(schema, s, profile="labeller") for s in range(20)]
    assert inside != [instance_for_schema(schema, s) for s in range(20)]


def test_values_always_satisfy_the_schema_bounds():
    class Max5(BaseModel):
        ambiguity: int = Field(ge=0, le=5)

    class From3(BaseModel):
        ambiguity: int = Field(ge=3, le=10)

    class Exclusive(BaseModel):
        ambiguity: int = Field(gt=0, lt=4)  # 1..3: the weights start at the smallest allowed value

    class Even(BaseModel):
        ambiguity: int = Field(ge=0, le=10, multiple_of=2)

    def draw(model, profile="labeller", n=2000):
        return [
            instance_for_schema(model.model_json_schema(), s, profile=profile)["ambiguity"] for s in range(n)
        ]

    v = draw(Max5)
    assert set(v) <= set(range(6)) and max(v) == 5
    # truncated weights [30, 22, 15, 11, 7, 5] / 90
    assert abs(v.count(0) / len(v) - 30 / 90) <= 0.03 and abs(v.count(5) / len(v) - 5 / 90) <= 0.02
    v = draw(From3)  # weights are relative to the minimum: 3 gets w0
    assert set(v) <= set(range(3, 11)) and abs(v.count(3) / len(v) - 0.30) <= 0.03
    v = draw(Exclusive)
    assert set(v) == {1, 2, 3} and v.count(1) > v.count(2) > v.count(3)
    v = draw(Even)
    assert set(v) <= {0, 2, 4, 6, 8, 10} and 0 in v and 10 in v
    # weights only where the schema allows nothing: the plain generator answers, within bounds
    v = draw(Max5, {"ambiguity": {"weights": [0, 0, 0, 0, 0, 0, 0, 9]}}, 300)
    assert set(v) == set(range(6))
    # missing weights are 0
    v = draw(From3, {"ambiguity": {"weights": [0, 1, 1]}}, 300)
    assert set(v) == {4, 5}


def test_choices_only_within_the_schema_and_nullable_fields():
    class Other(BaseModel):
        label: Literal["yes", "no"]  # none of the profiled values: uniform as before
        ambiguity: int | None = Field(ge=0, le=10)
        note: str = Field(max_length=8)

    schema = Other.model_json_schema()
    profile = {
        "label": {"choices": {"VIOLATED": 1.0}},
        "ambiguity": {"weights": [0, 0, 1]},
        "note": {"choices": {"short": 3, "much too long for it": 100}},
    }
    docs = [instance_for_schema(schema, s, profile=profile) for s in range(400)]
    for d in docs:
        Other.model_validate(d)
    assert {d["label"] for d in docs} == {"yes", "no"}
    amb = [d["ambiguity"] for d in docs]
    assert set(amb) == {2, None} and 10 <= amb.count(None) <= 80
    assert {d["note"] for d in docs} == {"short"}


def test_parse_profile_rejects_bad_profiles():
    assert parse_profile(None) is None and parse_profile("") is None and parse_profile({}) is None
    assert parse_profile('{"x": {"weights": [1]}}').spec == {"x": {"weights": [1]}}
    for bad in (
        "no-such-preset",
        "{not json",
        '["a"]',
        {"x": [1, 2]},
        {"x": {}},
        {"x": {"weights": [1], "extra": 1}},
        {"x": {"weights": [-1, 2]}},
        {"x": {"weights": [0, 0]}},
        {"x": {"weights": "123"}},
        {"x": {"weights": [True]}},
        {"x": {"choices": ["a"]}},
        {"x": {"choices": {"a": 0}}},
        {"x": {"choices": {1: 1.0}}},
        42,
    ):
        with pytest.raises(ValueError):
            parse_profile(bad)


def test_in_process_server_profile_api():
    with pytest.raises(ValueError):
        FakeLLMServer(profile="bogus")
    s = FakeLLMServer(profile="labeller")
    assert s.profile_info() == {"profile": PRESETS["labeller"], "name": "labeller"}
    s.reset()
    assert s.profile is not None and s.profile.name == "labeller"  # reset keeps the profile
    assert s.set_profile({"label": {"choices": {"VIOLATED": 1}}})["name"] is None
    assert s.set_profile(None) == {"profile": None, "name": None}


# ------------------------------------------------------------------------------------------------
# through the server
# ------------------------------------------------------------------------------------------------

ALWAYS_VIOLATED = {
    "label": {"choices": {"VIOLATED": 1, "NOT VIOLATED": 0}},
    "ambiguity": {"weights": [0] * 10 + [1]},
}


def post(url: str, body: object, headers: dict | None = None) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    req.add_header("Content-Type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def ask(srv: FakeServerProcess, content: str = "label this dialogue") -> str:
    client = openai.OpenAI(base_url=srv.url + "/v1", api_key="k", max_retries=0)
    completion = client.chat.completions.parse(
        model="gpt-fake", messages=[{"role": "user", "content": content}], response_format=Judgements
    )
    assert isinstance(completion.choices[0].message.parsed, Judgements)
    return completion.choices[0].message.content


@pytest.fixture(scope="module")
def labeller():
    with FakeServerProcess(profile="labeller") as srv:
        yield srv


def test_labeller_server_is_skewed_and_deterministic(labeller):
    assert labeller.get_profile() == {"profile": PRESETS["labeller"], "name": "labeller"}
    answers = [ask(labeller, f"dialogue {i}") for i in range(60)]
    ge6, violated, n = shares([json.loads(a) for a in answers])
    assert n == 300 and violated < 0.2 and ge6 < 0.22  # uniform would give 50% and 45%
    assert ask(labeller, "dialogue 7") == answers[7]  # same request, same answer
    with FakeServerProcess(profile=dict(PRESETS["labeller"])) as again:  # restart, same profile
        assert ask(again, "dialogue 7") == answers[7]
    with FakeServerProcess() as plain:
        assert ask(plain, "dialogue 7") != answers[7]


def test_profile_set_at_run_time_applies_to_the_next_request():
    with FakeServerProcess() as srv:
        assert srv.get_profile() == {"profile": None, "name": None}
        before = ask(srv)
        assert srv.set_profile(ALWAYS_VIOLATED) == {"profile": ALWAYS_VIOLATED, "name": None}
        skewed = json.loads(ask(srv))["judgements"]
        assert all(j["label"] == "VIOLATED" and j["ambiguity"] == 10 for j in skewed)
        srv.reset()  # counters and faults only
        assert srv.get_profile()["profile"] == ALWAYS_VIOLATED
        # plain HTTP, a preset name
        assert post(srv.url + "/_fake/profile", {"profile": "labeller"})["name"] == "labeller"
        labelled = ask(srv)
        with FakeServerProcess(profile="labeller") as fresh:
            assert ask(fresh) == labelled
        with pytest.raises(ValueError, match="unknown profile"):
            srv.set_profile("bogus")
        with pytest.raises(ValueError, match="fake server rejected"):
            srv._call("POST", "/_fake/profile", {"profile": {"ambiguity": {"weights": [-1]}}})
        assert srv.get_profile()["name"] == "labeller"  # a rejected profile changes nothing
        srv.set_profile(None)
        assert ask(srv) == before  # byte-identical to the unprofiled answer


def test_profile_applies_on_every_wire(labeller):
    labeller.set_profile(ALWAYS_VIOLATED)
    try:
        schema = TurnJudgement.model_json_schema()
        msgs = [{"role": "user", "content": "judge"}]
        r = post(
            labeller.url + "/v1/messages",
            {
                "model": "claude-fake",
                "max_tokens": 256,
                "messages": msgs,
                "tools": [{"name": "judge", "input_schema": schema}],
                "tool_choice": {"type": "tool", "name": "judge"},
            },
            {"anthropic-version": "2023-06-01"},
        )
        tool_input = next(c["input"] for c in r["content"] if c["type"] == "tool_use")
        r = post(
            labeller.url + "/v1beta/models/gemini-fake:generateContent",
            {
                "contents": [{"role": "user", "parts": [{"text": "judge"}]}],
                "generationConfig": {
                    "responseMimeType": "application/json",
                    "responseSchema": GEMINI_JUDGEMENT,
                },
            },
        )
        gemini = json.loads(r["candidates"][0]["content"]["parts"][0]["text"])
        r = post(
            labeller.url + "/v1/chat/completions",
            {
                "model": "gpt-fake",
                "messages": msgs,
                "tools": [{"type": "function", "function": {"name": "judge", "parameters": schema}}],
                "tool_choice": {"type": "function", "function": {"name": "judge"}},
            },
        )
        args = json.loads(r["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"])
        for j in (tool_input, gemini, args):
            assert j["label"] == "VIOLATED" and j["ambiguity"] == 10
        TurnJudgement.model_validate(tool_input)
        TurnJudgement.model_validate(args)
    finally:
        labeller.set_profile("labeller")


def test_cli_and_process_reject_bad_profiles():
    with pytest.raises(ValueError):
        FakeServerProcess(profile="bogus")
    with pytest.raises(ValueError):
        FakeServerProcess(profile={"ambiguity": {"weights": []}})
    proc = subprocess.run(
        [sys.executable, "-m", "factory.testing.fake_llm_server", "--profile", '{"ambiguity": 3}'],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO_ROOT,
    )
    assert proc.returncode == 2 and "--profile" in proc.stderr
