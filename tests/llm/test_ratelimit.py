"""Client-side rate limiting (sliding window, token buckets, header feedback) and the per-endpoint concurrency bound."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from factory.llm.ratelimit import RateLimiter, SlidingWindow, TokenBucket, _parse_duration
from factory.testing.server_process import FakeServerProcess
from tests.llm.helpers import PROVIDERS, Verdict, request

LATENCY = 0.2


@pytest.fixture(scope="module")
def fake_server_proc() -> Iterator[FakeServerProcess]:
    """This module's server answers every request after LATENCY seconds."""
    with FakeServerProcess(latency=LATENCY) as srv:
        yield srv


async def _timed(coro) -> float:
    t0 = time.perf_counter()
    await coro
    return time.perf_counter() - t0


# ------------------------------------------------------------------------------------------------
# TokenBucket
# ------------------------------------------------------------------------------------------------


async def test_bucket_paces_sequential_acquisitions():
    bucket = TokenBucket(rate=10.0, capacity=1.0)

    async def run() -> None:
        for _ in range(20):
            await bucket.acquire()

    elapsed = await _timed(run())
    assert 1.8 <= elapsed < 2.3  # the first is free, then 19 x 0.1 s


async def test_bucket_serves_concurrent_waiters_in_arrival_order():
    bucket = TokenBucket(rate=20.0, capacity=1.0)
    done: list[int] = []

    async def one(i: int) -> None:
        await bucket.acquire()
        done.append(i)

    elapsed = await _timed(asyncio.gather(*(one(i) for i in range(8))))
    assert 0.33 <= elapsed < 0.6  # 7 x 0.05 s
    assert done == list(range(8))


async def test_bucket_burst_up_to_capacity():
    bucket = TokenBucket(rate=10.0, capacity=5.0)
    assert await _timed(asyncio.gather(*(bucket.acquire() for _ in range(5)))) < 0.05
    assert 0.08 <= await _timed(bucket.acquire()) < 0.2


async def test_bucket_default_capacity_and_validation():
    assert TokenBucket(rate=0.5).capacity == 1.0
    assert TokenBucket(rate=50.0).capacity == 50.0
    with pytest.raises(ValueError):
        TokenBucket(rate=0)


async def test_refund_returns_over_reserved_units():
    bucket = TokenBucket(rate=10.0, capacity=10.0)
    assert await _timed(bucket.acquire(10)) < 0.05
    bucket.refund(10)
    assert await _timed(bucket.acquire(10)) < 0.05  # without the refund this would wait 1 s
    bucket.refund(1000)  # capped at capacity
    assert 0.08 <= await _timed(bucket.acquire(11)) < 0.25


async def test_block_for_holds_the_bucket():
    bucket = TokenBucket(rate=100.0, capacity=100.0)
    bucket.block_for(0.3)
    bucket.block_for(0.1)  # a shorter block does not shorten the longer one
    assert 0.27 <= await _timed(bucket.acquire()) < 0.5


# ------------------------------------------------------------------------------------------------
# SlidingWindow (requests per minute)
# ------------------------------------------------------------------------------------------------


async def _grant_times(window: SlidingWindow, n: int) -> list[float]:
    times: list[float] = []

    async def one() -> None:
        await window.acquire()
        times.append(time.monotonic())

    await asyncio.gather(*(one() for _ in range(n)))
    return times


def test_window_schedule_a_seconds_worth_early_then_the_window():
    """The schedule itself (the grant times `_reserve` hands out), on a synthetic clock."""
    window = SlidingWindow(rate=20.0)  # 20 in any 1.01 s, at most 80/s (12.5 ms apart)
    assert window.limit == 20 and window.gap == pytest.approx(0.0125)
    grants = [window._reserve(0.0) for _ in range(45)]  # 45 callers arriving at once
    assert grants[:20] == pytest.approx([i * 0.0125 for i in range(20)])  # within the first quarter
    assert grants[20] == pytest.approx(1.01)  # the 21st when the first leaves the window
    assert all(b - a >= 0.0125 - 1e-9 for a, b in zip(grants, grants[1:], strict=False))
    for i, start in enumerate(grants):  # never more than the limit in any window, wherever it starts
        assert sum(1 for t in grants[i:] if t < start + 1.0) <= 20
    # a caller arriving later, after a quiet spell, is granted at once
    assert window._reserve(10.0) == 10.0


async def test_window_paces_real_callers():
    window = SlidingWindow(rate=20.0)
    t0 = time.monotonic()
    times = await _grant_times(window, 25)
    assert 1.0 <= times[-1] - t0 < 2.0  # the 21st to 25th wait for the window
    assert times[19] - t0 >= 19 * 0.0125 * 0.95  # the first 20 are spread out, not all at once


async def test_window_serves_waiters_in_arrival_order():
    window = SlidingWindow(rate=4.0)
    done: list[int] = []

    async def one(i: int) -> None:
        await window.acquire()
        done.append(i)

    elapsed = await _timed(asyncio.gather(*(one(i) for i in range(9))))
    assert 2.0 <= elapsed < 2.6  # 4 in the first window, 4 after one window, 1 after two
    assert done == list(range(9))


async def test_window_below_one_request_a_second():
    window = SlidingWindow(rate=0.5)  # 30 rpm: one request in any 2 s
    assert window.limit == 1 and window.window == pytest.approx(2.01) and window.gap == 0.5
    assert await _timed(window.acquire()) < 0.05
    assert 1.95 <= await _timed(window.acquire()) < 2.5


async def test_window_block_for_and_validation():
    window = SlidingWindow(rate=100.0)
    window.block_for(0.3)
    window.block_for(0.1)  # a shorter block does not shorten the longer one
    assert 0.27 <= await _timed(window.acquire()) < 0.5
    with pytest.raises(ValueError):
        SlidingWindow(rate=0)


def test_parse_duration():
    assert _parse_duration("1s") == 1.0
    assert _parse_duration("0.5") == 0.5
    assert _parse_duration("250ms") == pytest.approx(0.25)
    assert _parse_duration("6m0s") == 360.0
    assert _parse_duration("1h2m3s") == 3723.0
    assert _parse_duration("1m30.5s") == 90.5
    assert _parse_duration("soon") is None
    assert _parse_duration("5") == 5.0
    assert _parse_duration("5x") is None


# ------------------------------------------------------------------------------------------------
# RateLimiter
# ------------------------------------------------------------------------------------------------


async def test_unlimited_limiter_never_waits():
    limiter = RateLimiter()
    limiter.observe_headers({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "5s"})
    assert await _timed(asyncio.gather(*(limiter.acquire(10_000) for _ in range(100)))) < 0.05


async def test_rpm_limit():
    limiter = RateLimiter(rpm=600)  # at most 10 in any second, 25 ms apart
    t0 = time.perf_counter()
    assert await _timed(asyncio.gather(*(limiter.acquire(1) for _ in range(10)))) < 0.6
    await limiter.acquire(1)  # the 11th waits for the first to leave the window
    assert 1.0 <= time.perf_counter() - t0 < 1.5


async def test_tpm_limit_and_settle_refund():
    limiter = RateLimiter(tpm=600)  # 10 tokens/s, burst 10
    assert await _timed(limiter.acquire(10)) < 0.05
    limiter.settle(10, 2)  # only 2 were used: 8 come back
    assert await _timed(limiter.acquire(8)) < 0.05
    limiter.settle(8, 20)  # using more than estimated takes nothing back
    assert 0.15 <= await _timed(limiter.acquire(2)) < 0.35


async def test_exhausted_request_budget_header_pauses():
    limiter = RateLimiter(rpm=6000)
    limiter.observe_headers({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "300ms"})
    assert 0.27 <= await _timed(limiter.acquire(1)) < 0.5


async def test_remaining_budget_header_does_not_pause():
    limiter = RateLimiter(rpm=6000, tpm=6_000_000)
    limiter.observe_headers(
        {
            "x-ratelimit-remaining-requests": "5",
            "x-ratelimit-reset-requests": "30s",
            "x-ratelimit-remaining-tokens": "1000",
            "x-ratelimit-reset-tokens": "30s",
            "anthropic-ratelimit-requests-remaining": "garbage",
        }
    )
    assert await _timed(limiter.acquire(1)) < 0.05


async def test_exhausted_token_budget_header_pauses_token_only_limiter():
    limiter = RateLimiter(tpm=6_000_000)
    limiter.observe_headers({"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "0.3"})
    assert 0.27 <= await _timed(limiter.acquire(1)) < 0.5


def test_anthropic_exhausted_header_blocks_for_a_second():
    limiter = RateLimiter(rpm=60)
    before = time.monotonic()
    limiter.observe_headers({"anthropic-ratelimit-requests-remaining": "0"})
    assert limiter.requests is not None
    assert limiter.requests._blocked_until - before == pytest.approx(1.0, abs=0.1)


# ------------------------------------------------------------------------------------------------
# through the client, against a server that takes LATENCY per answer
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_concurrency_bound(provider, server, make_cfg, make_client):
    client = make_client()
    cfg = make_cfg(provider, concurrency=4)
    await client.complete(cfg, request("warm-up"))  # SDK imports and first-call setup are not timed
    server.reset()
    ep = client.endpoint(cfg)
    in_flight = peak = 0
    send = ep.provider.send

    async def counting_send(*args, **kwargs):
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            return await send(*args, **kwargs)
        finally:
            in_flight -= 1

    ep.provider.send = counting_send  # type: ignore[method-assign]
    t0 = time.perf_counter()
    results = await asyncio.gather(*(client.complete(cfg, request(f"item {i}")) for i in range(16)))
    elapsed = time.perf_counter() - t0
    assert all(isinstance(r.parsed, Verdict) for r in results)
    assert server.stats()["requests"] == 16
    assert peak == 4  # never more than 4 requests on the wire, and the bound is used in full
    assert elapsed >= 4 * LATENCY * 0.95  # 16 requests, 4 at a time
    assert elapsed < 16 * LATENCY  # but they do overlap


async def test_rpm_limit_through_the_client(server, make_cfg, make_client):
    client = make_client()
    cfg = make_cfg("openai", rpm=300)  # at most 5 in any second
    elapsed = await _timed(asyncio.gather(*(client.complete(cfg, request(f"r{i}")) for i in range(12))))
    # 5 at once, 5 a second later, the last 2 two seconds in
    assert 2.0 + LATENCY <= elapsed < 2.0 + 3 * LATENCY + 0.5
    assert server.stats()["requests"] == 12


async def test_retry_after_pauses_every_caller_of_the_endpoint(server, make_cfg, make_client):
    server.script([{"kind": "rate_limit", "retry_after": 1.0, "match": "first caller"}])
    client = make_client()
    cfg = make_cfg("openai", max_retries=2)
    ep = client.endpoint(cfg)
    first = asyncio.create_task(client.complete(cfg, request("first caller")))
    deadline = time.monotonic() + 5.0
    while ep.paused_until <= time.monotonic():  # until the 429 has arrived and paused the endpoint
        assert time.monotonic() < deadline, "the endpoint was never paused"
        await asyncio.sleep(0.01)
    pause_left = ep.paused_until - time.monotonic()
    assert pause_left > 0.5
    elapsed = await _timed(client.complete(cfg, request("second caller")))
    await first
    # unpaused it would take LATENCY; paused it first waits out the rest of the pause
    assert elapsed >= pause_left + LATENCY - 0.05
    assert server.stats()["requests"] == 3
    assert client.accounting.counter("t", "openai:gpt-fake").retries == 1
