"""The batch adapters (OpenAI Batch, Anthropic Message Batches, Gemini batch mode) through the real
SDKs against the fake server's batch endpoints on 127.0.0.1: submit, poll, results; a batched answer
equals the online answer of the same request; expired, errored, failed and cancelled jobs; bad keys.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from factory.llm.batch.base import FINISHED, BatchAPI, BatchItem, JobStatus, make_batch_api
from factory.llm.config import EndpointConfig
from factory.llm.errors import FatalProviderError
from factory.llm.providers.anthropic_provider import AnthropicProvider
from factory.llm.providers.base import Provider
from factory.llm.providers.google_provider import GoogleProvider
from factory.llm.providers.openai_provider import OpenAIProvider
from factory.llm.types import GenParams
from factory.testing.server_process import FakeServerProcess
from tests.llm.helpers import KEY_ENV, MODELS, PROVIDERS, Verdict

pytestmark = pytest.mark.parametrize("provider", PROVIDERS)

KEY = "batch-test-key"
DELAY_S = 0.5  # how long a job stays in progress on the fake server
SYSTEM = "You are a careful classifier of customer messages. Answer briefly."
ONLINE = {"openai": OpenAIProvider, "anthropic": AnthropicProvider, "google": GoogleProvider}
WIRE = {"openai": "openai", "anthropic": "anthropic", "google": "gemini"}  # the fake's provider names


@pytest.fixture(scope="module")
def fake_server_proc() -> Iterator[FakeServerProcess]:
    """One fake server for the module, with a required key and a visible in-progress phase."""
    with FakeServerProcess(require_key=KEY, batch_delay_s=DELAY_S) as srv:
        yield srv


@pytest.fixture
def make_cfg(monkeypatch: pytest.MonkeyPatch, server: FakeServerProcess) -> Callable[..., EndpointConfig]:
    def make(provider: str, key: str = KEY) -> EndpointConfig:
        monkeypatch.setenv(KEY_ENV[provider], key)
        base = server.url + "/v1" if provider == "openai" else server.url
        return EndpointConfig(provider=provider, model=MODELS[provider], base_url=base, timeout_s=10.0)  # type: ignore[arg-type]

    return make


@pytest.fixture
async def closing() -> AsyncIterator[Callable[[Any], Any]]:
    """Registers adapters and providers to close at teardown."""
    opened: list[Any] = []

    def keep(thing: Any) -> Any:
        opened.append(thing)
        return thing

    yield keep
    for thing in opened:
        await thing.aclose()


@pytest.fixture
def api(provider: str, make_cfg: Callable[..., EndpointConfig], closing: Callable[[Any], Any]) -> BatchAPI:
    return closing(make_batch_api(make_cfg(provider)))


@pytest.fixture
def online(provider: str, make_cfg: Callable[..., EndpointConfig], closing: Callable[[Any], Any]) -> Provider:
    return closing(ONLINE[provider](make_cfg(provider)))


def item(n: int, text: str = "", schema: bool = True, **params: Any) -> BatchItem:
    return BatchItem(
        custom_id=f"{n:032x}",
        messages=[
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": text or f"message number {n}: is this safe?"},
        ],
        params=GenParams(**params),
        schema=Verdict if schema else None,
    )


async def finish(api: BatchAPI, job_id: str, timeout_s: float = 15.0) -> tuple[list[str], JobStatus]:
    """Poll a job until it is finished: (the states seen, the final status)."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout_s
    while True:
        status = await api.status(job_id)
        seen.append(status.state)
        if status.state in FINISHED:
            return seen, status
        assert time.monotonic() < deadline, f"job {job_id} still {status.state} after {timeout_s}s"
        await asyncio.sleep(0.1)


async def prime_cache(online: Provider, items: list[BatchItem]) -> None:
    """Online calls with each item's system prompt (Anthropic's holds the tool instruction when
    thinking is on) and another user message, so every later call reads its prompt from the cache,
    online and batched alike, and their usage can be compared."""
    for it in items:
        warm = [it.messages[0], {"role": "user", "content": f"warm the cache for {it.custom_id}"}]
        await online.send(warm, it.params, it.schema)


async def test_batched_answers_equal_online_answers(
    provider: str, api: BatchAPI, online: Provider, server: FakeServerProcess
) -> None:
    items = [
        item(1),
        item(2, schema=False),
        item(3, "explain your verdict", reasoning_budget=1024),
        item(4, temperature=0.2, max_tokens=300),
    ]
    await prime_cache(online, items)
    job_id = await api.submit(items)
    seen, status = await finish(api, job_id)
    assert seen[0] == "running" and status.state == "ended"
    assert (status.total, status.done, status.failed) == (4, 4, 0)
    outcomes = {o.custom_id: o for o in await api.results(job_id)}
    assert sorted(outcomes) == [i.custom_id for i in items]

    for it in items:
        batched = outcomes[it.custom_id]
        assert batched.error == "" and batched.completion is not None
        answer, _ = await online.send(it.messages, it.params, it.schema)
        got = batched.completion
        assert (got.text, got.finish_reason, got.reasoning, got.model) == (
            answer.text,
            answer.finish_reason,
            answer.reasoning,
            answer.model,
        )
        assert got.usage == answer.usage
        assert got.usage.input_tokens > 0 and got.usage.output_tokens > 0
        assert got.usage.cached_input_tokens > 0  # the primed system prompt
        if it.schema is not None:
            Verdict.model_validate_json(got.text)
        else:
            assert got.text and not got.text.startswith("{")
    if provider != "openai":  # OpenAI's own API returns no reasoning text on Chat Completions
        assert outcomes[items[2].custom_id].completion.reasoning  # type: ignore[union-attr]

    stats = server.stats()
    assert stats["batch_jobs"] == 1 and stats["batch_requests"] == 4
    # every online body above was byte-for-byte a batched body: the adapters build them alike
    assert stats["repeated_bodies"] == 4


async def test_an_expired_job_returns_only_the_processed_requests(
    provider: str, api: BatchAPI, server: FakeServerProcess
) -> None:
    items = [item(n) for n in range(5)]
    server.script({"kind": "batch_expire", "unprocessed": 2, "provider": WIRE[provider]})
    job_id = await api.submit(items)
    _, status = await finish(api, job_id)
    assert status.state == "expired"
    assert status.total == 5
    outcomes = await api.results(job_id)
    assert sorted(o.custom_id for o in outcomes) == [i.custom_id for i in items[:3]]
    assert all(o.completion is not None and not o.error for o in outcomes)

    # the caller resends the two that never ran: no request reaches the server twice
    again = await api.submit(items[3:])
    _, status = await finish(api, again)
    assert status.state == "ended"
    assert sorted(o.custom_id for o in await api.results(again)) == [i.custom_id for i in items[3:]]
    stats = server.stats()
    assert stats["batch_requests"] == 7 and stats["repeated_bodies"] == 0
    assert stats["faults_by_kind"] == {"batch_expire": 1}


async def test_item_errors_are_reported_per_item_with_their_retryability(
    provider: str, api: BatchAPI, server: FakeServerProcess
) -> None:
    items = [item(0), item(1, "poison-invalid request"), item(2, "poison-overloaded request"), item(3)]
    server.script(
        [
            {"kind": "batch_item_error", "match": "poison-invalid", "status": 400, "message": "bad params"},
            {"kind": "batch_item_error", "match": "poison-overloaded", "status": 500},
        ]
    )
    job_id = await api.submit(items)
    _, status = await finish(api, job_id)
    assert status.state == "ended"
    assert (status.done, status.failed) == (4, 2)
    outcomes = {o.custom_id: o for o in await api.results(job_id)}
    assert sorted(outcomes) == [i.custom_id for i in items]
    invalid, overloaded = outcomes[items[1].custom_id], outcomes[items[2].custom_id]
    assert invalid.completion is None and "bad params" in invalid.error and invalid.retryable is False
    assert overloaded.completion is None and overloaded.error and overloaded.retryable is True
    for ok in (items[0], items[3]):
        assert outcomes[ok.custom_id].completion is not None and outcomes[ok.custom_id].error == ""


async def test_a_failed_job_is_failed_with_the_providers_detail(
    provider: str, api: BatchAPI, server: FakeServerProcess
) -> None:
    server.script({"kind": "batch_fail", "message": "the input was rejected as a whole"})
    if provider == "anthropic":  # Anthropic validates a batch when it is created
        with pytest.raises(FatalProviderError, match="the input was rejected as a whole") as info:
            await api.submit([item(0), item(1)])
        assert info.value.status == 400
        assert server.stats()["batch_jobs"] == 0
        return
    job_id = await api.submit([item(0), item(1)])
    seen, status = await finish(api, job_id)
    assert seen[0] == "running" and status.state == "failed"
    assert "the input was rejected as a whole" in status.detail
    assert await api.results(job_id) == []


async def test_a_cancelled_job_has_no_outcomes(
    provider: str, api: BatchAPI, server: FakeServerProcess
) -> None:
    job_id = await api.submit([item(0), item(1)])
    await api.cancel(job_id)
    _, status = await finish(api, job_id)
    assert status.state == "cancelled"
    assert await api.results(job_id) == []


async def test_a_bad_key_is_fatal(
    provider: str,
    make_cfg: Callable[..., EndpointConfig],
    closing: Callable[[Any], Any],
    server: FakeServerProcess,
) -> None:
    bad = closing(make_batch_api(make_cfg(provider, key="not-the-key")))
    with pytest.raises(FatalProviderError) as info:
        await bad.submit([item(0)])
    assert info.value.status == 401
    stats = server.stats()
    assert stats["auth_failures"] >= 1 and stats["batch_jobs"] == 0 and stats["batch_requests"] == 0


async def test_online_requests_never_take_a_batch_fault(
    provider: str, api: BatchAPI, online: Provider, server: FakeServerProcess
) -> None:
    server.script({"kind": "batch_item_error", "match": "shared text", "status": 400})
    it = item(0, "shared text")
    answer, _ = await online.send(it.messages, it.params, it.schema)  # would raise on an injected 400
    Verdict.model_validate_json(answer.text)
    assert server.stats()["faults_pending"] == 1
    job_id = await api.submit([it])
    await finish(api, job_id)
    (outcome,) = await api.results(job_id)
    assert outcome.retryable is False and outcome.completion is None
    assert server.stats()["faults_pending"] == 0


async def test_the_declared_job_limits(provider: str, api: BatchAPI) -> None:
    limits: dict[str, tuple[int, int]] = {
        "openai": (50_000, 200 * 1024 * 1024),
        "anthropic": (100_000, 256 * 1024 * 1024),
        "google": (10_000, 10 * 1024 * 1024),
    }
    assert (api.max_requests, api.max_bytes) == limits[provider]
    assert api.name == provider


async def test_a_fresh_adapter_reads_a_job_it_did_not_submit(
    provider: str, api: BatchAPI, make_cfg: Callable[..., EndpointConfig], closing: Callable[[Any], Any]
) -> None:
    """A resumed build polls and reads the jobs of the build before it: results are matched by key,
    not by anything the submitting adapter remembers."""
    items = [item(n, f"resumed request {n}") for n in range(3)]
    job_id = await api.submit(items)
    resumed = closing(make_batch_api(make_cfg(provider)))
    _, status = await finish(resumed, job_id)
    assert status.state == "ended" and status.done == 3
    by_key = {o.custom_id: o.completion for o in await resumed.results(job_id)}
    assert by_key == {o.custom_id: o.completion for o in await api.results(job_id)}
    assert sorted(by_key) == [i.custom_id for i in items]
    assert len({c.text for c in by_key.values() if c is not None}) == 3
