"""The fake server's batch endpoints at the wire, through the plain (sync) SDK clients: what the
adapters' tests do not look at (the error file of an expired OpenAI batch, Anthropic's expired and
canceled results, Gemini's job states), routing errors, the key check and content faults."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

from factory.testing.server_process import FakeServerProcess

KEY = "wire-key"


@pytest.fixture(scope="module")
def server() -> Iterator[FakeServerProcess]:
    with FakeServerProcess(require_key=KEY, batch_delay_s=0.2) as srv:
        yield srv


@pytest.fixture()
def srv(server: FakeServerProcess) -> FakeServerProcess:
    server.reset()
    return server


def oai(srv: FakeServerProcess, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=srv.url + "/v1", api_key=key, max_retries=0)


def ant(srv: FakeServerProcess) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=srv.url, api_key=KEY, max_retries=0)


def wait(get: Any, done: Any, timeout_s: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        obj = get()
        if done(obj):
            return obj
        assert time.monotonic() < deadline
        time.sleep(0.05)


def chat_line(custom_id: str, text: str) -> bytes:
    body = {"model": "gpt-fake", "messages": [{"role": "user", "content": text}]}
    line = {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}
    return orjson.dumps(line)


def openai_batch(client: openai.OpenAI, lines: list[bytes]) -> Any:
    uploaded = client.files.create(file=("in.jsonl", b"\n".join(lines)), purpose="batch")
    assert uploaded.purpose == "batch" and uploaded.bytes == len(b"\n".join(lines))
    return client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )


def test_openai_expired_batch_lists_the_requests_it_never_ran_in_its_error_file(srv):
    client = oai(srv)
    srv.script({"kind": "batch_expire", "share": 0.5})
    batch = openai_batch(client, [chat_line(f"r{i}", f"question {i}") for i in range(4)])
    assert batch.status == "in_progress"
    batch = wait(lambda: client.batches.retrieve(batch.id), lambda b: b.status != "in_progress")
    assert batch.status == "expired"
    assert batch.request_counts.total == 4 and batch.request_counts.completed == 2
    out = [orjson.loads(x) for x in client.files.content(batch.output_file_id).content.splitlines()]
    err = [orjson.loads(x) for x in client.files.content(batch.error_file_id).content.splitlines()]
    assert [x["custom_id"] for x in out] == ["r0", "r1"]
    assert all(x["response"]["status_code"] == 200 and x["error"] is None for x in out)
    assert out[0]["response"]["body"]["object"] == "chat.completion"
    assert [(x["custom_id"], x["response"], x["error"]["code"]) for x in err] == [
        ("r2", None, "batch_expired"),
        ("r3", None, "batch_expired"),
    ]


def test_openai_batch_validation_failure_and_routing_errors(srv):
    client = oai(srv)
    bad = orjson.dumps({"custom_id": "x", "method": "GET", "url": "/v1/chat/completions", "body": {}})
    batch = openai_batch(client, [chat_line("a", "hi"), bad])
    batch = wait(lambda: client.batches.retrieve(batch.id), lambda b: b.status != "in_progress")
    assert batch.status == "failed"
    assert batch.errors is not None and batch.errors.data[0].line == 2
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_nope")
    with pytest.raises(openai.NotFoundError):
        client.batches.create(
            input_file_id="file-nope", endpoint="/v1/chat/completions", completion_window="24h"
        )
    with pytest.raises(openai.AuthenticationError):
        oai(srv, key="wrong").files.create(file=("in.jsonl", chat_line("a", "hi")), purpose="batch")
    assert srv.stats()["auth_failures"] == 1


def test_anthropic_results_of_expired_and_canceled_requests(srv):
    client = ant(srv)
    reqs = [
        {
            "custom_id": f"r{i}",
            "params": {
                "model": "claude-fake",
                "max_tokens": 50,
                "messages": [{"role": "user", "content": f"q{i}"}],
            },
        }
        for i in range(3)
    ]
    srv.script({"kind": "batch_expire", "unprocessed": 1})
    batch = client.messages.batches.create(requests=reqs)  # type: ignore[arg-type]
    assert batch.processing_status == "in_progress" and batch.request_counts.processing == 3
    early = httpx.get(f"{srv.url}/v1/messages/batches/{batch.id}/results", headers={"x-api-key": KEY})
    assert early.status_code == 400  # no results before the batch has ended
    batch = wait(lambda: client.messages.batches.retrieve(batch.id), lambda b: b.processing_status == "ended")
    counts = batch.request_counts
    assert (counts.succeeded, counts.expired, counts.processing) == (2, 1, 0)
    results = {r.custom_id: r.result for r in client.messages.batches.results(batch.id)}
    assert [results[f"r{i}"].type for i in range(3)] == ["succeeded", "succeeded", "expired"]

    second = client.messages.batches.create(requests=reqs)  # type: ignore[arg-type]
    assert client.messages.batches.cancel(second.id).processing_status == "canceling"
    second = wait(
        lambda: client.messages.batches.retrieve(second.id), lambda b: b.processing_status == "ended"
    )
    assert second.request_counts.canceled == 3
    assert {r.result.type for r in client.messages.batches.results(second.id)} == {"canceled"}
    # the canceled requests never ran, nor the expired one: r0 and r1 were answered once each
    assert srv.stats()["repeated_bodies"] == 0


def test_gemini_job_states_and_a_content_fault_in_a_batch(srv):
    client = genai.Client(api_key=KEY, http_options=genai_types.HttpOptions(base_url=srv.url))
    srv.script({"kind": "malformed", "match": "second question"})
    job = client.batches.create(
        model="gemini-fake",
        src=[
            genai_types.InlinedRequest(contents="first question", metadata={"key": "a"}),
            genai_types.InlinedRequest(contents="second question", metadata={"key": "b"}),
        ],
    )
    assert job.state is not None and job.state.name == "JOB_STATE_RUNNING"
    job = wait(lambda: client.batches.get(name=job.name), lambda j: j.state.name != "JOB_STATE_RUNNING")
    assert job.state.name == "JOB_STATE_SUCCEEDED"
    responses = job.dest.inlined_responses
    assert [r.metadata for r in responses] == [{"key": "a"}, {"key": "b"}]
    assert responses[0].response.text.startswith("This is a fake reply")
    assert responses[1].response.text != responses[0].response.text
    assert srv.stats()["faults_by_kind"] == {"malformed": 1}

    srv.script({"kind": "batch_fail", "message": "nope"})
    failed = client.batches.create(model="gemini-fake", src=[genai_types.InlinedRequest(contents="x")])
    failed = wait(lambda: client.batches.get(name=failed.name), lambda j: j.state.name != "JOB_STATE_RUNNING")
    assert failed.state.name == "JOB_STATE_FAILED"
    wrong = genai.Client(api_key="wrong", http_options=genai_types.HttpOptions(base_url=srv.url))
    with pytest.raises(genai_errors.ClientError) as info:
        wrong.batches.get(name=job.name)
    assert info.value.code == 401
