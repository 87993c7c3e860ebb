"""A model's own ("native") reasoning through the real openai / anthropic / google-genai SDKs against
the fake server: asked for with GenParams.reasoning_budget, returned in LLMResponse.reasoning next to
the parsed answer, and kept by the request cache (pending buffer, DuckDB, crash journal).

The OpenAI-compatible path gets its reasoning from a fake started with ``reasoning=True`` (a vLLM
reasoning parser): the provider sends no reasoning field, the server reasons anyway.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import duckdb
import orjson
import pytest

from factory.llm.cache import _COLUMNS, RequestCache
from factory.llm.config import EndpointConfig
from factory.llm.errors import FatalProviderError
from factory.llm.providers.anthropic_provider import _read_blocks
from factory.llm.providers.openai_provider import message_reasoning
from factory.llm.types import GenParams, RawCompletion, Usage
from factory.store.db import Store
from factory.testing.server_process import FakeServerProcess
from tests.llm.helpers import MODELS, PROVIDERS, Verdict, request

THINK = GenParams(reasoning_budget=2048)

# What the request of each provider would carry if it asked for reasoning (a substring of the raw body).
ASK_MARKER = {"openai": '"reasoning_effort"', "anthropic": '"thinking"', "google": '"thinkingConfig"'}
FAKE_REASONING = "This is fake reasoning."


@pytest.fixture(scope="module")
def reasoning_server_proc() -> Iterator[FakeServerProcess]:
    """A fake whose OpenAI answers always carry reasoning_content (like vLLM with a reasoning parser)."""
    with FakeServerProcess(reasoning=True) as srv:
        yield srv


@pytest.fixture
def reasoning_server(reasoning_server_proc: FakeServerProcess) -> FakeServerProcess:
    reasoning_server_proc.reset()
    return reasoning_server_proc


@pytest.fixture
def thinking_cfg(
    make_cfg: Callable[..., EndpointConfig], server: FakeServerProcess, reasoning_server: FakeServerProcess
) -> Callable[[str], tuple[EndpointConfig, FakeServerProcess]]:
    """(config, the server it points at) of a provider whose answers come with reasoning when asked."""

    def make(provider: str) -> tuple[EndpointConfig, FakeServerProcess]:
        if provider == "openai":
            cfg = EndpointConfig(
                provider="openai",
                model=MODELS["openai"],
                base_url=reasoning_server.url + "/v1",
                max_retries=3,
                timeout_s=5.0,
            )
            return cfg, reasoning_server
        return make_cfg(provider), server

    return make


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[Callable[[Path], Store]]:
    """Open Stores, closed at teardown (a test may close some itself)."""
    opened: list[Store] = []

    def open_store(path: Path) -> Store:
        store = Store(path)
        opened.append(store)
        return store

    yield open_store
    for store in opened:
        try:
            store.close()
        except Exception:  # already closed by the test
            pass


def _journal(db: Path) -> Path:
    return db.with_suffix(db.suffix + ".journal")


def _copy_crashed(src: Path, dst_dir: Path) -> Path:
    """Copy a live database as a crash would leave it: the DB file, its WAL and the journal."""
    dst_dir.mkdir()
    dst = dst_dir / src.name
    for suffix in ("", ".wal", ".journal"):
        p = Path(str(src) + suffix)
        if p.exists():
            shutil.copyfile(p, Path(str(dst) + suffix))
    return dst


def _put(cache: RequestCache, key: str, text: str, reasoning: str) -> None:
    cache.put(
        key,
        provider="anthropic",
        model="m",
        stage="s",
        prompt_hash="ph",
        request_json="[]",
        completion=RawCompletion(
            text=text, model="m-2025", usage=Usage(input_tokens=3, output_tokens=4), reasoning=reasoning
        ),
        cost_usd=0.5,
        latency_s=0.1,
    )


# ------------------------------------------------------------------------------------------------
# through the client and the real SDKs
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_structured_call_returns_the_answer_and_the_reasoning(provider, thinking_cfg, make_client):
    cfg, srv = thinking_cfg(provider)
    resp = await make_client().complete(cfg, request(params=THINK))
    assert isinstance(resp.parsed, Verdict) and resp.attempts == 1
    assert resp.reasoning.startswith(FAKE_REASONING) and len(resp.reasoning) > 60
    assert FAKE_REASONING not in resp.text  # the reasoning is not part of the answer
    assert Verdict.model_validate_json(resp.text) == resp.parsed
    st = srv.stats()
    assert st["requests"] == 1 and st["reasoning_answers"] == 1
    # OpenAI-compatible servers reason unasked: nothing in the request asks for it
    assert st["reasoning_requests"] == (0 if provider == "openai" else 1)


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_same_request_same_reasoning_and_reasoning_counts_as_output(
    provider, thinking_cfg, make_cfg, make_client
):
    cfg, _ = thinking_cfg(provider)
    a = await make_client().complete(cfg, request(params=THINK))
    b = await make_client().complete(cfg, request(params=THINK))
    other = await make_client().complete(cfg, request("another message", params=THINK))
    assert not b.cached and (a.reasoning, a.text) == (b.reasoning, b.text)  # deterministic fake
    assert other.reasoning != a.reasoning
    plain = await make_client().complete(make_cfg(provider), request())  # a server that does not reason
    assert plain.reasoning == ""
    assert a.usage.output_tokens > plain.usage.output_tokens + 20  # thinking is billed as output


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_without_a_budget_nothing_is_asked_and_no_reasoning_comes_back(
    provider, server, make_cfg, make_client
):
    # a request that asked for reasoning would trip this fault (a 400, not retried)
    server.script([{"kind": "bad_request", "match": ASK_MARKER[provider]}])
    resp = await make_client().complete(make_cfg(provider), request())
    assert isinstance(resp.parsed, Verdict) and resp.reasoning == ""
    st = server.stats()
    assert st["faults_applied"] == 0 and st["faults_pending"] == 1
    assert (st["reasoning_requests"], st["reasoning_answers"]) == (0, 0)


async def test_openai_sends_no_reasoning_field_with_a_budget(server, make_cfg, make_client):
    """vLLM / DeepSeek take no budget field; OpenAI's own API would refuse unknown ones."""
    server.script(
        [{"kind": "bad_request", "match": '"reasoning'}, {"kind": "bad_request", "match": "thinking"}]
    )
    resp = await make_client().complete(make_cfg("openai"), request(params=THINK))
    assert isinstance(resp.parsed, Verdict) and resp.reasoning == ""  # this server does not reason
    assert server.stats()["faults_pending"] == 2
    # the budget is added to max_tokens (1024 + 2048): such servers count reasoning against it
    server.reset()
    server.script([{"kind": "bad_request", "match": '"max_tokens":3072'}])
    with pytest.raises(FatalProviderError):
        await make_client().complete(make_cfg("openai"), request("a second message", params=THINK))


async def test_openai_keeps_reasoning_a_server_sends_unasked(thinking_cfg, make_client):
    cfg, srv = thinking_cfg("openai")
    resp = await make_client().complete(cfg, request())
    assert isinstance(resp.parsed, Verdict) and resp.reasoning.startswith(FAKE_REASONING)
    assert srv.stats()["reasoning_requests"] == 0


@pytest.mark.parametrize(
    "params",
    [
        GenParams(reasoning_budget=10),  # below the API's minimum of 1024
        GenParams(reasoning_budget=2048, max_tokens=256),  # budget above the answer's max_tokens
        GenParams(reasoning_budget=2048, temperature=0.2, top_p=0.5),  # both refused with thinking
        GenParams(reasoning_budget=2048, temperature=0.0, top_p=0.97),
    ],
)
async def test_anthropic_request_obeys_the_thinking_rules(params, server, make_cfg, make_client):
    """The fake refuses what the API refuses with thinking on (budget < 1024 or >= max_tokens, a
    forced tool_choice, temperature != 1, top_p < 0.95): every call here must still succeed."""
    resp = await make_client().complete(make_cfg("anthropic"), request(params=params))
    assert isinstance(resp.parsed, Verdict) and resp.reasoning.startswith(FAKE_REASONING)
    assert server.stats()["requests"] == 1


async def test_anthropic_without_structured_output_returns_text_and_thinking(server, make_cfg, make_client):
    resp = await make_client().complete(make_cfg("anthropic"), request(schema=None, params=THINK))
    assert resp.text.startswith("This is a fake reply") and resp.reasoning.startswith(FAKE_REASONING)


async def test_a_budget_is_part_of_the_cache_key(server, make_cfg, make_client, stores, tmp_path):
    client = make_client(cache=stores(tmp_path / "k.duckdb").cache)
    plain = await client.complete(make_cfg("anthropic"), request())
    thought = await client.complete(make_cfg("anthropic"), request(params=THINK))
    assert plain.key != thought.key and not thought.cached and thought.reasoning
    assert server.stats()["requests"] == 2


# ------------------------------------------------------------------------------------------------
# the cache keeps the reasoning
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_cache_hit_returns_the_same_reasoning(provider, thinking_cfg, make_client, stores, tmp_path):
    cfg, srv = thinking_cfg(provider)
    db = tmp_path / "live" / "c.duckdb"
    store = stores(db)
    first = await make_client(cache=store.cache).complete(cfg, request(params=THINK))
    assert not first.cached and first.reasoning
    journal_line = orjson.loads(_journal(db).read_bytes().splitlines()[0])
    assert journal_line["reasoning"] == first.reasoning

    # from the pending buffer
    hit = await make_client(cache=store.cache).complete(cfg, request(params=THINK))
    assert hit.cached and (hit.reasoning, hit.parsed) == (first.reasoning, first.parsed)

    # from the journal, after a crash (a copy of the files taken before any flush)
    crashed = _copy_crashed(db, tmp_path / "crashed")
    recovered = stores(crashed)
    replayed = await make_client(cache=recovered.cache).complete(cfg, request(params=THINK))
    assert replayed.cached and (replayed.reasoning, replayed.parsed) == (first.reasoning, first.parsed)

    # from DuckDB, after a flush
    store.flush()
    assert _journal(db).stat().st_size == 0
    assert store.query("SELECT reasoning FROM llm_calls WHERE key = ?", [first.key]) == [(first.reasoning,)]
    flushed = await make_client(cache=store.cache).complete(cfg, request(params=THINK))
    assert flushed.cached and flushed.reasoning == first.reasoning
    store.close()
    reopened = stores(db)
    again = await make_client(cache=reopened.cache).complete(cfg, request(params=THINK))
    assert again.cached and (again.reasoning, again.text) == (first.reasoning, first.text)
    assert srv.stats()["requests"] == 1


def test_reasoning_round_trips_through_journal_and_duckdb(stores, tmp_path):
    db = tmp_path / "live" / "r.duckdb"
    store = stores(db)
    _put(store.cache, "with", '{"a": 1}', "step one\nstep two")
    _put(store.cache, "without", '{"a": 2}', "")
    crashed = _copy_crashed(db, tmp_path / "crashed")
    rcache = stores(crashed).cache
    assert rcache.get("with").reasoning == "step one\nstep two"
    assert rcache.get("without").reasoning == ""
    store.flush()
    assert store.cache.get("with").reasoning == "step one\nstep two"  # read back from DuckDB


def test_journal_lines_from_before_the_reasoning_column_still_replay(stores, tmp_path):
    db = tmp_path / "old" / "j.duckdb"
    db.parent.mkdir()
    old = {c: None for c in _COLUMNS if c != "reasoning"}
    old.update(key="old-key", provider="openai", model="m", text="old answer", finish_reason="stop")
    old.update(input_tokens=1, output_tokens=2, cost_usd=0.0, latency_s=0.0, response_model="m")
    old.update(stage="label", prompt_hash="h", request_json="[]", created_at=1.0)  # a well-typed old line
    _journal(db).write_bytes(orjson.dumps(old) + b"\n")
    store = stores(db)
    raw = store.cache.get("old-key")
    assert raw is not None and (raw.text, raw.reasoning) == ("old answer", "")
    assert store.query("SELECT reasoning FROM llm_calls WHERE key = 'old-key'") == [("",)]


def test_a_file_from_before_the_reasoning_column_is_migrated(stores, tmp_path):
    db = tmp_path / "old.duckdb"
    con = duckdb.connect(str(db))
    old_columns = [c for c in _COLUMNS if c not in ("reasoning", "cached_input_tokens", "slot", "system_ref")]
    con.execute(
        "CREATE TABLE llm_calls (key VARCHAR PRIMARY KEY, provider VARCHAR, model VARCHAR, stage VARCHAR, "
        "prompt_hash VARCHAR, request_json VARCHAR, text VARCHAR, finish_reason VARCHAR, "
        "input_tokens BIGINT, output_tokens BIGINT, cost_usd DOUBLE, latency_s DOUBLE, "
        "response_model VARCHAR, created_at DOUBLE)"
    )
    con.execute(
        f"INSERT INTO llm_calls ({', '.join(old_columns)}) VALUES "
        "('k0', 'openai', 'm', 's', 'ph', '[]', 'old', 'stop', 1, 2, 0.0, 0.0, 'm', 0.0)"
    )
    con.close()
    store = stores(db)
    assert store.cache.get("k0").reasoning == ""  # NULL in the added column
    _put(store.cache, "k1", "new", "thought")
    store.flush()
    assert store.query("SELECT key, reasoning FROM llm_calls ORDER BY key") == [
        ("k0", None),
        ("k1", "thought"),
    ]
    assert store.cache.get("k1").reasoning == "thought"


# ------------------------------------------------------------------------------------------------
# reading the reasoning out of a reply
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ({"content": "{}", "reasoning_content": "because"}, "because"),  # DeepSeek, llama.cpp, older vLLM
        ({"content": "{}", "reasoning": "because"}, "because"),  # newer vLLM, OpenRouter
        ({"content": "{}", "reasoning_content": None, "reasoning": "because"}, "because"),
        ({"content": "{}", "reasoning": {"effort": "high"}}, ""),  # not text: ignored
        ({"content": "{}"}, ""),
        (None, ""),
    ],
)
def test_openai_compatible_reasoning_fields(message, expected):
    assert message_reasoning(message) == expected


def test_anthropic_blocks_answer_and_thinking():
    blocks = [
        {"type": "thinking", "thinking": "first", "signature": "s1"},
        {"type": "redacted_thinking", "data": "encrypted"},
        {"type": "text", "text": "I will call the tool."},
        {"type": "thinking", "thinking": "second", "signature": "s2"},
        {"type": "tool_use", "id": "t", "name": "Verdict", "input": {"label": "safe"}},
    ]
    assert _read_blocks(blocks, structured=True) == ('{"label":"safe"}', "first\n\nsecond")
    assert _read_blocks(blocks, structured=False) == ("I will call the tool.", "first\n\nsecond")
    # a structured answer written as text when the model did not call the tool
    assert _read_blocks([blocks[0], {"type": "text", "text": '{"a": 1}'}], structured=True) == (
        '{"a": 1}',
        "first",
    )
