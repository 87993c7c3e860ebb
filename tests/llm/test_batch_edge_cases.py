"""Edge cases of batch mode found in review: a request held by two open jobs on resume, a client
closed while a submission is on the wire, requests queued when new requests stop, a job over the
provider's size limit, and Gemini's item errors (google.rpc.Status codes, not HTTP statuses).

The provider side is the in-memory `BatchAPI` of test_batch_collector.py, with the variations each
case needs; the cache and the ledger are a real DuckDB file."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest
from google.genai import types

from factory.llm import client as client_module
from factory.llm.batch.anthropic_batch import AnthropicBatchAPI
from factory.llm.batch.base import BatchItem, JobStatus
from factory.llm.batch.common import check_size
from factory.llm.batch.google_batch import GoogleBatchAPI
from factory.llm.batch.ledger import BatchLedger
from factory.llm.config import EndpointConfig
from factory.llm.errors import ClientClosing, FatalProviderError, RetryableProviderError
from factory.llm.types import LLMRequest, Message
from tests.llm.test_batch_collector import MemoryBatchAPI, OnlineDouble, client_on, close, endpoint, req


def install(monkeypatch: pytest.MonkeyPatch, cls: type[MemoryBatchAPI]) -> MemoryBatchAPI:
    """One provider of class `cls` for the whole test (it outlives clients, as a real one does)."""
    api = cls(EndpointConfig(provider="openai", model="m"))
    monkeypatch.setattr(client_module, "make_batch_api", lambda config: api)
    return api


class HeldBatchAPI(MemoryBatchAPI):
    """Jobs named in `hold` stay running."""

    def __init__(self, config: EndpointConfig) -> None:
        super().__init__(config)
        self.hold: set[str] = set()

    async def status(self, job_id: str) -> JobStatus:
        if job_id in self.hold:
            return JobStatus("running", total=len(self.jobs[job_id]["items"]))
        return await super().status(job_id)


async def wait_for(cond: Any, timeout_s: float = 5.0) -> None:
    for _ in range(int(timeout_s / 0.01)):
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in time")


async def test_a_request_in_an_expired_job_and_its_resubmission_waits_for_the_resubmission(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run 1: job-1 expires without running the request, which goes into job-2; the run is killed
    while job-2 runs. Run 2 resumes both jobs (job-1 is not collected: that answer is not in the
    cache): job-1 finishing again must not take the request's waiter and submit it a third time."""
    api = install(monkeypatch, HeldBatchAPI)
    db = tmp_path / "b.duckdb"
    cfg = endpoint()
    api.expire_next = 1
    api.hold = {"job-2"}
    client, store = client_on(db)
    task = asyncio.ensure_future(client.complete(cfg, req(0)))
    await wait_for(lambda: len(api.jobs) == 2)
    await close(client, store)  # the "kill": job-2 still runs at the provider
    await asyncio.gather(task, return_exceptions=True)
    assert api.submitted == ["q0", "q0"]

    api.hold = set()
    client, store = client_on(db)
    answer = await asyncio.wait_for(client.complete(cfg, req(0)), 10)
    assert answer.text == "answer to q0"
    assert api.submitted == ["q0", "q0"], "the request was submitted a third time"
    await close(client, store)


class SlowReplyBatchAPI(MemoryBatchAPI):
    """The provider creates the job at once, but its reply takes `reply_s` to come back."""

    reply_s = 0.5

    async def submit(self, items: list[BatchItem]) -> str:
        job_id = await super().submit(items)
        await asyncio.sleep(self.reply_s)
        return job_id


async def test_a_job_created_while_the_client_closes_is_recorded_and_collected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Closing the client (end of a build, Ctrl-C) while a submission is on the wire must not lose
    the job the provider created: it is in the ledger, and a rerun collects it instead of paying
    for its requests again."""
    api = install(monkeypatch, SlowReplyBatchAPI)
    db = tmp_path / "b.duckdb"
    cfg = endpoint()
    client, store = client_on(db)
    tasks = [asyncio.ensure_future(client.complete(cfg, req(i))) for i in range(3)]
    await wait_for(lambda: len(api.jobs) == 1)  # created at the provider, the reply not back yet
    await close(client, store)
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, BaseException) for r in results)

    client, store = client_on(db)
    assert store.query("SELECT job_id FROM batch_jobs") == [("job-1",)], (
        "the created job is not in the ledger"
    )
    answers = await asyncio.wait_for(asyncio.gather(*(client.complete(cfg, req(i)) for i in range(3))), 10)
    assert [a.text for a in answers] == [f"answer to q{i}" for i in range(3)]
    assert len(api.jobs) == 1 and len(api.submitted) == 3  # nothing paid twice
    await close(client, store)


async def test_stop_new_requests_submits_nothing_more(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Requests still queued when the client stops new requests (a build draining) are not
    submitted: they raise ClientClosing, as online requests not yet sent do."""
    api = install(monkeypatch, MemoryBatchAPI)
    client, store = client_on(tmp_path / "b.duckdb")
    cfg = endpoint(quiet_s=0.3)
    tasks = [asyncio.ensure_future(client.complete(cfg, req(i))) for i in range(3)]
    await asyncio.sleep(0.05)  # queued, quiet period not over
    client.stop_new_requests()
    done, pending = await asyncio.wait(tasks, timeout=2.0)
    assert not api.jobs, "a job was submitted after stop_new_requests"
    assert not pending and all(isinstance(t.exception(), ClientClosing) for t in done)
    await close(client, store)


class SizedBatchAPI(MemoryBatchAPI):
    """A provider whose request lines are much larger than their messages (a big schema)."""

    max_bytes = 10_000
    overhead = 1_000

    async def submit(self, items: list[BatchItem]) -> str:
        size = sum(len(orjson.dumps(i.messages)) + self.overhead for i in items)
        check_size(self.name, items, size, self.max_requests, self.max_bytes)
        return await super().submit(items)


async def test_a_job_over_the_size_limit_is_split_not_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The collector's size estimate of a request (its messages + 512 bytes) can be short of the
    real line (schema, parameters): a job the adapter refuses as too large is split."""
    api = install(monkeypatch, SizedBatchAPI)
    client, store = client_on(tmp_path / "b.duckdb")
    cfg = endpoint()

    def big(i: int) -> LLMRequest:
        return LLMRequest(
            messages=[Message(role="user", content=f"q{i} " + "x" * 1000)], stage="label", slot=i
        )

    answers = await asyncio.wait_for(asyncio.gather(*(client.complete(cfg, big(i)) for i in range(12))), 10)
    assert [a.text.split()[2] for a in answers] == [f"q{i}" for i in range(12)]
    assert len(api.submitted) == 12  # each request in exactly one job
    await close(client, store)


def test_gemini_item_errors_carry_rpc_codes(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Gemini inlined response's error is a google.rpc.Status: its code is a gRPC code (3 invalid
    argument, 8 resource exhausted, 13 internal, 14 unavailable), not an HTTP status. An overload
    or internal error is worth resending; an invalid argument is not."""
    monkeypatch.setenv("GEMINI_API_KEY", "k")
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    api = GoogleBatchAPI(EndpointConfig(provider="google", model="gemini-fake"))
    codes = {"a": 3, "b": 8, "c": 13, "d": 14, "e": 4, "f": 500, "g": 400}
    job = types.BatchJob(
        name="batches/1",
        state=types.JobState.JOB_STATE_SUCCEEDED,
        dest=types.BatchJobDestination(
            inlined_responses=[
                types.InlinedResponse(metadata={"key": k}, error=types.JobError(code=c, message=f"boom {k}"))
                for k, c in codes.items()
            ]
        ),
    )

    async def get(name: str) -> types.BatchJob:
        return job

    monkeypatch.setattr(api.client.aio.batches, "get", get)
    outcomes = {o.custom_id: o for o in asyncio.run(api.results("batches/1"))}
    assert {k: o.retryable for k, o in outcomes.items()} == {
        "a": False,
        "b": True,
        "c": True,
        "d": True,
        "e": True,
        "f": True,
        "g": False,
    }
    assert outcomes["c"].error == "HTTP 500: boom c"


class CancellingBatchAPI(MemoryBatchAPI):
    def __init__(self, config: EndpointConfig) -> None:
        super().__init__(config)
        self.cancelled: list[str] = []

    async def cancel(self, job_id: str) -> None:
        self.cancelled.append(job_id)


async def test_a_job_the_ledger_cannot_record_is_cancelled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job submitted but not in the ledger (the database refused the write) would run, be paid,
    and be paid again by the rerun: it is cancelled, and the callers get the error."""
    api = install(monkeypatch, CancellingBatchAPI)

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise duckdb.IOException("could not write: No space left on device")

    monkeypatch.setattr(BatchLedger, "record_job", refuse)
    client, store = client_on(tmp_path / "b.duckdb")
    with pytest.raises(duckdb.IOException):
        await asyncio.wait_for(client.complete(endpoint(), req(0)), 10)
    assert api.cancelled == ["job-1"]
    await close(client, store)


class ForgetfulBatchAPI(HeldBatchAPI):
    """Jobs named in `gone` are unknown to the provider (deleted, or another project's)."""

    def __init__(self, config: EndpointConfig) -> None:
        super().__init__(config)
        self.gone: set[str] = set()

    async def status(self, job_id: str) -> JobStatus:
        if job_id in self.gone:
            raise FatalProviderError(
                "HTTP 404: not found (no such batch)", provider="openai", model="m", status=404
            )
        return await super().status(job_id)


async def test_a_job_of_an_earlier_run_the_provider_no_longer_has_is_resubmitted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job in the ledger that the provider answers 404 for cannot be collected: its requests go
    into a new job, instead of every rerun stopping on the same error."""
    api = install(monkeypatch, ForgetfulBatchAPI)
    db = tmp_path / "b.duckdb"
    cfg = endpoint()
    api.hold = {"job-1"}
    client, store = client_on(db)
    task = asyncio.ensure_future(client.complete(cfg, req(0)))
    await wait_for(lambda: len(api.jobs) == 1)
    await close(client, store)
    await asyncio.gather(task, return_exceptions=True)

    api.gone = {"job-1"}
    client, store = client_on(db)
    answer = await asyncio.wait_for(client.complete(cfg, req(0)), 10)
    assert answer.text == "answer to q0" and len(api.jobs) == 2
    assert store.query("SELECT job_id, state FROM batch_jobs ORDER BY submitted_at") == [
        ("job-1", "failed"),
        ("job-2", "ended"),
    ]
    await close(client, store)


async def test_a_fatal_error_polling_a_job_names_the_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = install(monkeypatch, ForgetfulBatchAPI)
    api.gone = {"job-1"}  # a job of this run: not resubmitted (the 404 may be the provider's lag)
    client, store = client_on(tmp_path / "b.duckdb")
    with pytest.raises(FatalProviderError, match=r"^\[openai:m\] batch job job-1: HTTP 404") as caught:
        await asyncio.wait_for(client.complete(endpoint(), req(0)), 10)
    assert caught.value.status == 404 and len(api.jobs) == 1
    await close(client, store)


def test_an_anthropic_results_stream_cut_mid_way_is_retryable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Anthropic's results are a streamed JSONL download; a connection that drops while it is read
    raises the HTTP library's own error (the SDK maps only the request's): it must come out as
    RetryableProviderError, so the collector reads the results again instead of failing every
    request of the job."""
    httpx2 = pytest.importorskip("httpx2")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "k")
    api = AnthropicBatchAPI(EndpointConfig(provider="anthropic", model="claude-fake"))

    class Entry:
        custom_id = "a" * 32

        class result:  # noqa: N801 - stands in for the SDK's result model
            @staticmethod
            def to_dict() -> dict[str, Any]:
                return {"type": "expired"}

    class Cut:
        def __aiter__(self) -> Cut:
            self.n = 0
            return self

        async def __anext__(self) -> Entry:
            self.n += 1
            if self.n > 1:
                raise httpx2.ReadError("connection reset by peer")
            return Entry()

    async def results(job_id: str) -> Cut:
        return Cut()

    monkeypatch.setattr(api.client.messages.batches, "results", results)
    with pytest.raises(RetryableProviderError, match="connection"):
        asyncio.run(api.results("msgbatch_1"))


async def test_stop_new_requests_during_a_submission_backoff_submits_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A submission waiting out an unreachable provider does not try again once new requests
    have stopped."""
    api = install(monkeypatch, MemoryBatchAPI)
    api.submit_failures = 1
    client, store = client_on(tmp_path / "b.duckdb")
    cfg = endpoint().model_copy(update={"outage_patience_s": 30.0})
    task = asyncio.ensure_future(client.complete(cfg, req(0)))
    await wait_for(lambda: api.submit_failures == 0)  # the first attempt failed: backing off
    client.stop_new_requests()
    done, _ = await asyncio.wait([task], timeout=3.0)
    assert not api.jobs, "a job was submitted after stop_new_requests"
    assert done and isinstance(task.exception(), ClientClosing)
    await close(client, store)


async def test_requests_on_the_wire_counts_online_sends(tmp_path: Path) -> None:
    """The build's drain waits only when requests are on the wire (batch waiters are not: their
    jobs run on at the provider). The count went down for every answer and never up, so it was
    negative after the first online answer and the drain always waited out its grace period."""
    client, store = client_on(tmp_path / "b.duckdb")
    cfg = EndpointConfig(provider="openai", model="m", base_url="http://127.0.0.1:9/v1")
    release = asyncio.Event()

    class Gated(OnlineDouble):
        async def send(self, messages: Any, params: Any, schema: Any) -> Any:
            await release.wait()
            return await super().send(messages, params, schema)

    client.endpoint(cfg).provider = Gated()  # type: ignore[assignment]
    task = asyncio.ensure_future(client.complete(cfg, req(0)))
    await wait_for(lambda: client.requests_on_the_wire() != 0)
    assert client.requests_on_the_wire() == 1
    release.set()
    await task
    assert client.requests_on_the_wire() == 0
    await close(client, store)


class TwoPerJobAPI(MemoryBatchAPI):
    max_requests = 2


async def test_closing_while_the_first_of_several_jobs_is_submitted_leaves_no_caller_hanging(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The queue is split into two jobs; the client closes while the first submission waits out
    an unreachable provider: the callers of the second (never submitted) must get an error too,
    not wait forever."""
    api = install(monkeypatch, TwoPerJobAPI)
    api.submit_failures = 1
    client, store = client_on(tmp_path / "b.duckdb")
    cfg = endpoint().model_copy(update={"outage_patience_s": 30.0})
    tasks = [asyncio.ensure_future(client.complete(cfg, req(i))) for i in range(4)]
    await wait_for(lambda: api.submit_failures == 0)  # the first job's submission is backing off
    await close(client, store)
    done, pending = await asyncio.wait(tasks, timeout=3.0)
    assert not pending, f"{len(pending)} caller(s) left waiting"
    assert not api.jobs
    assert all(isinstance(t.exception(), ClientClosing) for t in done)


async def test_a_ledger_that_cannot_be_read_fails_every_request_none_waits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The collector reads the open jobs at its first request; when that fails, that request gets
    the error, and so must every later one (not queue forever with no flusher, nor be submitted
    while an open job may hold it)."""
    api = install(monkeypatch, MemoryBatchAPI)

    def broken(*args: Any, **kwargs: Any) -> list[Any]:
        raise duckdb.IOException("could not read the database file")

    monkeypatch.setattr(BatchLedger, "open_jobs", broken)
    client, store = client_on(tmp_path / "b.duckdb")
    for i in range(2):
        with pytest.raises(duckdb.IOException):
            await asyncio.wait_for(client.complete(endpoint(), req(i)), 3)
    assert not api.jobs
    await close(client, store)
