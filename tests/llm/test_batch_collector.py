"""Batch mode inside the LLM client: queueing, job submission, resume by job id, resubmission of
expired requests, online stragglers, rejected requests and unreachable providers.

The provider side is an in-memory `BatchAPI` (the wire protocols have their own tests against the
fake server in test_batch_apis.py); the cache and the ledger are a real DuckDB file."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from factory.llm import client as client_module
from factory.llm.batch.base import BatchAPI, BatchItem, BatchOutcome, JobStatus
from factory.llm.client import LLMClient
from factory.llm.config import BatchSettings, EndpointConfig
from factory.llm.errors import FatalProviderError, ProviderOutage, RetryableProviderError
from factory.llm.pricing import Price, PriceTable
from factory.llm.types import GenParams, LLMRequest, Message, RawCompletion, Usage
from factory.store.db import Store

PRICES = PriceTable({"m": Price(input=1.0, output=2.0)})


def answer_for(messages: list[dict[str, Any]]) -> str:
    return "answer to " + messages[-1]["content"]


class MemoryBatchAPI(BatchAPI):
    """Jobs finish after `polls_to_finish` status calls; faults are set per test."""

    name = "memory"

    def __init__(self, config: EndpointConfig) -> None:
        super().__init__(config)
        self.jobs: dict[str, dict[str, Any]] = {}
        self.polls_to_finish = 1
        self.expire_next: int = 0  # the next job expires with this many requests unprocessed
        self.reject: set[str] = set()  # message contents rejected as invalid requests
        self.submit_failures = 0  # the next submissions fail as if the provider were unreachable

    async def submit(self, items: list[BatchItem]) -> str:
        if self.submit_failures:
            self.submit_failures -= 1
            raise RetryableProviderError("connection failed: refused", provider="openai", model="m")
        job_id = f"job-{len(self.jobs) + 1}"
        self.jobs[job_id] = {"items": items, "polls": 0, "expire": self.expire_next}
        self.expire_next = 0
        return job_id

    async def status(self, job_id: str) -> JobStatus:
        job = self.jobs[job_id]
        job["polls"] += 1
        total = len(job["items"])
        if job["polls"] < self.polls_to_finish:
            return JobStatus("running", total=total)
        return JobStatus("expired" if job["expire"] else "ended", total=total, done=total - job["expire"])

    async def results(self, job_id: str) -> list[BatchOutcome]:
        job = self.jobs[job_id]
        out = []
        for item in job["items"][: len(job["items"]) - job["expire"]]:
            content = item.messages[-1]["content"]
            if content in self.reject:
                out.append(BatchOutcome(item.custom_id, error="HTTP 400: invalid", retryable=False))
                continue
            out.append(
                BatchOutcome(
                    item.custom_id,
                    RawCompletion(
                        text=answer_for(item.messages), usage=Usage(input_tokens=1000, output_tokens=500)
                    ),
                )
            )
        return out

    @property
    def submitted(self) -> list[str]:
        return [i.messages[-1]["content"] for job in self.jobs.values() for i in job["items"]]


class OnlineDouble:
    """Stands in for the online provider: records what went out online."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send(
        self, messages: list[dict[str, Any]], params: GenParams, schema: Any
    ) -> tuple[RawCompletion, Mapping[str, str]]:
        self.sent.append(messages[-1]["content"])
        return RawCompletion(text="online " + answer_for(messages), usage=Usage(input_tokens=1000)), {}

    async def aclose(self) -> None:
        return None


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> MemoryBatchAPI:
    """One in-memory provider for the whole test (it outlives clients, as a real provider does)."""
    holder: dict[str, MemoryBatchAPI] = {}

    def make(config: EndpointConfig) -> MemoryBatchAPI:
        if "api" not in holder:
            holder["api"] = MemoryBatchAPI(config)
        return holder["api"]

    monkeypatch.setattr(client_module, "make_batch_api", make)
    return make(EndpointConfig(provider="openai", model="m"))


def endpoint(**settings: Any) -> EndpointConfig:
    base = {"quiet_s": 0.05, "max_wait_s": 5.0, "poll_s": 0.02}
    base.update(settings)
    return EndpointConfig(
        provider="openai",
        model="m",
        base_url="http://127.0.0.1:9/v1",
        outage_patience_s=0.5,
        batch=BatchSettings(**base),
    )


def req(i: int | str) -> LLMRequest:
    return LLMRequest(messages=[Message(role="user", content=f"q{i}")], stage="label", slot=0)


def client_on(db: Path) -> tuple[LLMClient, Store]:
    store = Store(db)
    return LLMClient(cache=store.cache, prices=PRICES), store


async def close(client: LLMClient, store: Store) -> None:
    await client.aclose(flush_cache=False)
    store.flush()
    store.close()


async def test_concurrent_requests_go_out_as_one_job_at_half_price(
    tmp_path: Path, api: MemoryBatchAPI
) -> None:
    client, store = client_on(tmp_path / "b.duckdb")
    cfg = endpoint()
    answers = await asyncio.gather(*(client.complete(cfg, req(i)) for i in range(20)))
    assert [a.text for a in answers] == [f"answer to q{i}" for i in range(20)]
    assert len(api.jobs) == 1 and len(api.submitted) == 20
    total = client.accounting.total()
    assert total.network_calls == 20 and total.batched_calls == 20
    online_cost = PRICES.cost("m", Usage(input_tokens=1000, output_tokens=500))
    assert total.cost_usd == pytest.approx(20 * online_cost / 2)
    await close(client, store)
    rows = Store(tmp_path / "b.duckdb")
    try:
        assert rows.query("SELECT count(*), sum(cost_usd) FROM llm_calls")[0] == (
            20,
            pytest.approx(total.cost_usd),
        )
        assert rows.query("SELECT job_id, requests, state FROM batch_jobs") == [("job-1", 20, "ended")]
        assert rows.query("SELECT count(DISTINCT key) FROM batch_requests")[0][0] == 20
    finally:
        rows.close()


async def test_requests_that_come_later_form_a_second_job(tmp_path: Path, api: MemoryBatchAPI) -> None:
    client, store = client_on(tmp_path / "b.duckdb")
    cfg = endpoint()

    async def chain(i: int) -> str:
        first = await client.complete(cfg, req(f"{i}-a"))
        second = await client.complete(cfg, req(f"{i}-b from {first.text}"))
        return second.text

    texts = await asyncio.gather(*(chain(i) for i in range(5)))
    assert texts == [f"answer to q{i}-b from answer to q{i}-a" for i in range(5)]
    # stage by stage: every first request in job 1, every second one in job 2
    assert [len(j["items"]) for j in api.jobs.values()] == [5, 5]
    await close(client, store)


async def test_a_killed_run_resumes_by_job_id_without_resubmitting(
    tmp_path: Path, api: MemoryBatchAPI
) -> None:
    db = tmp_path / "b.duckdb"
    api.polls_to_finish = 10**9  # the job never finishes while the first client runs
    client, store = client_on(db)
    cfg = endpoint()
    tasks = [asyncio.ensure_future(client.complete(cfg, req(i))) for i in range(6)]
    for _ in range(200):
        await asyncio.sleep(0.01)
        if api.jobs:
            break
    assert len(api.jobs) == 1
    await close(client, store)  # the "kill": the job is still running at the provider
    await asyncio.gather(*tasks, return_exceptions=True)

    api.polls_to_finish = 0
    client, store = client_on(db)
    answers = await asyncio.gather(*(client.complete(cfg, req(i)) for i in range(6)))
    assert [a.text for a in answers] == [f"answer to q{i}" for i in range(6)]
    assert len(api.jobs) == 1 and len(api.submitted) == 6  # nothing sent twice
    assert client.accounting.total().batched_calls == 6
    await close(client, store)

    # a third run finds every answer in the cache and marks the job collected
    client, store = client_on(db)
    again = await asyncio.gather(*(client.complete(cfg, req(i)) for i in range(6)))
    assert all(a.cached for a in again) and len(api.jobs) == 1
    await close(client, store)
    client, store = client_on(db)
    await client.complete(cfg, req("new"))  # starts the collector, which looks at the ledger
    assert store.query("SELECT state FROM batch_jobs WHERE job_id = 'job-1'")[0][0] == "collected"
    await close(client, store)


async def test_expired_requests_go_into_a_new_job(tmp_path: Path, api: MemoryBatchAPI) -> None:
    api.expire_next = 3
    client, store = client_on(tmp_path / "b.duckdb")
    answers = await asyncio.gather(*(client.complete(endpoint(), req(i)) for i in range(8)))
    assert [a.text for a in answers] == [f"answer to q{i}" for i in range(8)]
    assert [len(j["items"]) for j in api.jobs.values()] == [8, 3]
    assert store.query("SELECT state FROM batch_jobs ORDER BY submitted_at") == [("expired",), ("ended",)]
    await close(client, store)


async def test_requests_out_of_batch_attempts_and_stragglers_go_online(
    tmp_path: Path, api: MemoryBatchAPI
) -> None:
    client, store = client_on(tmp_path / "b.duckdb")
    cfg = endpoint(max_resubmits=0)
    online = OnlineDouble()
    client.endpoint(cfg).provider = online  # type: ignore[assignment]
    api.expire_next = 2
    answers = await asyncio.gather(*(client.complete(cfg, req(i)) for i in range(5)))
    assert sorted(online.sent) == ["q3", "q4"]  # the two the expired job never processed
    assert [a.text.startswith("online") for a in answers] == [False, False, False, True, True]
    assert client.accounting.total().batched_calls == 3

    few = endpoint(online_below=3)
    client.endpoint(few).provider = online  # type: ignore[assignment]
    await asyncio.gather(*(client.complete(few, req(f"s{i}")) for i in range(2)))
    assert online.sent[-2:] == ["qs0", "qs1"] and len(api.jobs) == 1
    await close(client, store)


async def test_a_rejected_request_is_a_fatal_error(tmp_path: Path, api: MemoryBatchAPI) -> None:
    api.reject = {"q1"}
    client, store = client_on(tmp_path / "b.duckdb")
    results = await asyncio.gather(
        *(client.complete(endpoint(), req(i)) for i in range(3)), return_exceptions=True
    )
    assert isinstance(results[1], FatalProviderError) and "rejected request" in str(results[1])
    assert results[0].text == "answer to q0" and results[2].text == "answer to q2"  # type: ignore[union-attr]
    await close(client, store)


async def test_an_unreachable_provider_is_an_outage_after_patience(
    tmp_path: Path, api: MemoryBatchAPI
) -> None:
    api.submit_failures = 10**6
    client, store = client_on(tmp_path / "b.duckdb")
    with pytest.raises(ProviderOutage, match="could not submit a batch job"):
        await client.complete(endpoint(), req(0))
    assert store.query("SELECT count(*) FROM batch_jobs")[0][0] == 0
    await close(client, store)

    api.submit_failures = 2  # a short blip is waited out
    client, store = client_on(tmp_path / "b.duckdb")
    cfg = endpoint().model_copy(update={"outage_patience_s": 30.0})
    assert (await client.complete(cfg, req(0))).text == "answer to q0"
    await close(client, store)
