"""LLMClient: the one async entry point every stage uses.

cache lookup -> (concurrency slot -> rate limiter -> provider call, retried with backoff that honours
Retry-After) -> cache write -> schema validation -> bounded re-ask -> LLMResponse or a typed error.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential_jitter

from factory.llm.accounting import Accounting
from factory.llm.batch.base import make_batch_api
from factory.llm.batch.collector import BatchCollector, SendOnline
from factory.llm.batch.ledger import BatchLedger
from factory.llm.breaker import CircuitBreaker
from factory.llm.cache import DetachedCache, RequestCache
from factory.llm.config import EndpointConfig
from factory.llm.errors import ClientClosing, RetryableProviderError, StructuredOutputError
from factory.llm.fingerprint import request_key
from factory.llm.pricing import PriceTable
from factory.llm.providers.base import Provider
from factory.llm.ratelimit import RateLimiter
from factory.llm.types import LLMRequest, LLMResponse, RawCompletion, Usage

REASK_TEMPLATE = (
    "Your previous reply could not be used: {error}. Reply again with a single JSON object that "
    "matches the required schema exactly, with no other text."
)

FailureSink = Callable[[dict[str, Any]], None]
# Makes an endpoint's rate limiter (acquire/settle/observe_headers, like RateLimiter): the Ray
# executor's workers share one global limiter instead of each holding its own.
LimiterFactory = Callable[[EndpointConfig], RateLimiter]


def make_provider(config: EndpointConfig) -> Provider:
    if config.provider == "openai":
        from factory.llm.providers.openai_provider import OpenAIProvider

        return OpenAIProvider(config)
    if config.provider == "anthropic":
        from factory.llm.providers.anthropic_provider import AnthropicProvider

        return AnthropicProvider(config)
    if config.provider == "google":
        from factory.llm.providers.google_provider import GoogleProvider

        return GoogleProvider(config)
    from factory.llm.providers.local_provider import LocalProvider

    return LocalProvider(config)


class Endpoint:
    """A provider instance with its concurrency bound, rate limiter and pause gate (and, in batch
    mode, the collector that sends its requests as provider batch jobs)."""

    def __init__(
        self,
        config: EndpointConfig,
        cache: RequestCache | DetachedCache | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.config = config
        self.provider = make_provider(config)
        self.batch: BatchCollector | None = None
        if config.batch is not None:
            self.batch = BatchCollector(
                config,
                make_batch_api(config),
                BatchLedger(cache.con, cache.lock) if isinstance(cache, RequestCache) else None,
                config.batch,
                in_cache=(lambda key: key in cache) if cache is not None else None,
            )
        concurrency = 1 if config.provider == "local" else config.concurrency
        self.semaphore = asyncio.Semaphore(concurrency)
        self.limiter = limiter if limiter is not None else RateLimiter(config.rpm, config.tpm)
        self.paused_until = 0.0
        self.breaker: CircuitBreaker | None = None
        if config.outage_patience_s is not None:
            self.breaker = CircuitBreaker(
                config.spec, patience_s=config.outage_patience_s, startup_patience_s=config.startup_patience_s
            )

    async def wait_if_paused(self) -> None:
        delay = self.paused_until - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay + random.uniform(0, 0.1 * delay))

    def pause(self, seconds: float) -> None:
        """The server said 'slow down' (429 + Retry-After): hold every caller of this endpoint."""
        self.paused_until = max(self.paused_until, time.monotonic() + seconds)


def _estimate_tokens(messages: list[dict[str, Any]], max_tokens: int) -> int:
    return sum(len(m["content"]) for m in messages) // 4 + max_tokens


def validate_output(raw: RawCompletion, schema: type[BaseModel]) -> tuple[BaseModel | None, str]:
    """Return (parsed, "") or (None, reason)."""
    if raw.finish_reason == "length":
        return None, "the output was cut off at the token limit (truncated JSON); keep it shorter"
    text = raw.text.strip()
    if not text:
        return None, "the reply was empty"
    if text.startswith("```"):
        text = text.strip("`")
        text = text[text.find("{") :] if "{" in text else text
    try:
        return schema.model_validate_json(text), ""
    except ValidationError as exc:
        errs = exc.errors(include_url=False)[:3]
        if errs and errs[0].get("type") == "json_invalid":
            return None, f"it was not valid JSON ({errs[0].get('msg')})"
        detail = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errs)
        return None, f"it did not match the schema ({detail})"


class LLMClient:
    def __init__(
        self,
        cache: RequestCache | DetachedCache | None = None,
        prices: PriceTable | None = None,
        failure_sink: FailureSink | None = None,
        limiter_factory: LimiterFactory | None = None,
    ) -> None:
        self.cache = cache
        self.limiter_factory = limiter_factory
        self.prices = prices or PriceTable()
        self.accounting = Accounting()
        self.failure_sink = failure_sink
        self._endpoints: dict[str, Endpoint] = {}
        self._inflight: dict[str, asyncio.Future[RawCompletion]] = {}
        self._closing = False
        self._on_wire = 0
        # dollars paid in this process per request slot (LLMRequest.slot), for budget control; the
        # runner takes a slot's entry out when the slot finishes (take_slot_cost), so this holds the
        # slots in flight, not every slot of the build
        self.slot_cost: dict[int, float] = {}
        # set when an answer could not be written to the cache: no request is sent after it
        self.journal_error: OSError | None = None

    def take_slot_cost(self, slot: int) -> float:
        """What requests of `slot` cost so far, forgetting the slot (it has finished)."""
        return self.slot_cost.pop(slot, 0.0)

    def stop_new_requests(self) -> None:
        """From now on no request goes out (they raise ClientClosing); requests already on the wire
        finish, and their answers are journaled as usual. Used to drain a build before exit.
        Batch jobs already submitted keep running at the provider; a rerun collects them."""
        self._closing = True
        for ep in self._endpoints.values():
            if ep.batch is not None:
                ep.batch.stop_new_requests()

    def requests_on_the_wire(self) -> int:
        """Provider requests sent and not yet answered."""
        return self._on_wire

    @property
    def endpoints(self) -> list[Endpoint]:
        return list(self._endpoints.values())

    def endpoint(self, config: EndpointConfig) -> Endpoint:
        """One Endpoint (SDK client, semaphore, limiter) per distinct configuration."""
        key = f"{config.model_dump_json()}|{config.resolved_base_url()}"
        ep = self._endpoints.get(key)
        if ep is None:
            limiter = self.limiter_factory(config) if self.limiter_factory is not None else None
            ep = self._endpoints[key] = Endpoint(config, self.cache, limiter)
        return ep

    async def aclose(self, flush_cache: bool = True) -> None:
        """Close the provider clients and flush the cache (flush_cache=False: its owner flushes it,
        or cannot because its database is not writable; the journal keeps the entries)."""
        for ep in self._endpoints.values():
            if ep.batch is not None:
                await ep.batch.aclose()
                await ep.batch.api.aclose()
            await ep.provider.aclose()
        if self.cache is not None and flush_cache:
            self.cache.flush()

    # -- the one public call ---------------------------------------------------------------
    async def complete(self, config: EndpointConfig, request: LLMRequest) -> LLMResponse:
        ep = self.endpoint(config)
        counter = self.accounting.counter(request.stage, config.spec)
        messages = [m.model_dump() for m in request.messages]
        schema = request.output_schema
        usage = Usage()
        cost = 0.0
        latency = 0.0
        all_cached = True
        raw: RawCompletion | None = None
        key = ""
        attempts = 0
        for attempt in range(config.max_reasks + 1):
            attempts = attempt + 1
            key = request_key(config.provider, config.model, request, messages)
            raw = self.cache.get(key) if self.cache is not None else None
            if raw is None and key in self._inflight:
                raw = await self._join_inflight(key)  # an identical request is on the wire already
            price_cost: float
            if raw is not None:
                counter.cache_hits += 1
                price_cost = self.prices.cost(config.model, raw.usage)
                counter.cost_cached_usd += price_cost
            else:
                all_cached = False
                t0 = time.perf_counter()
                raw = await self._send_coalesced(key, ep, messages, request, counter)
                elapsed = time.perf_counter() - t0
                latency += elapsed
                price_cost = self.prices.cost(config.model, raw.usage, batch=bool(raw.batch_job))
                counter.network_calls += 1
                counter.batched_calls += bool(raw.batch_job)
                counter.cost_usd += price_cost
                if request.slot is not None:
                    self.slot_cost[request.slot] = self.slot_cost.get(request.slot, 0.0) + price_cost
                counter.input_tokens += raw.usage.input_tokens
                counter.output_tokens += raw.usage.output_tokens
                counter.cached_input_tokens += raw.usage.cached_input_tokens
                if not self.prices.is_priced(config.model):
                    counter.unpriced = True
                if self.cache is not None:
                    try:
                        self.cache.put(
                            key,
                            provider=config.provider,
                            model=config.model,
                            stage=request.stage,
                            prompt_hash=request.prompt_hash,
                            request_json=orjson.dumps(messages).decode(),
                            completion=raw,
                            cost_usd=price_cost,
                            latency_s=elapsed,
                            slot=request.slot,
                        )
                    except OSError as exc:  # the journal cannot be written (disk full): every
                        self.journal_error = exc  # further answer would be paid for and lost
                        self.stop_new_requests()
                        raise
            usage = Usage(
                input_tokens=usage.input_tokens + raw.usage.input_tokens,
                output_tokens=usage.output_tokens + raw.usage.output_tokens,
                cached_input_tokens=usage.cached_input_tokens + raw.usage.cached_input_tokens,
            )
            cost += price_cost
            parsed, error = (None, "") if schema is None else validate_output(raw, schema)
            if schema is None or parsed is not None:
                counter.calls += 1
                return LLMResponse(
                    text=raw.text,
                    parsed=parsed,
                    provider=config.provider,
                    model=config.model,
                    usage=usage,
                    cost_usd=cost,
                    latency_s=latency,
                    finish_reason=raw.finish_reason,
                    cached=all_cached,
                    attempts=attempts,
                    key=key,
                    reasoning=raw.reasoning,
                )
            if attempt < config.max_reasks:
                counter.reasks += 1
                messages = messages + [
                    {"role": "assistant", "content": raw.text},
                    {"role": "user", "content": REASK_TEMPLATE.format(error=error)},
                ]
        counter.failures += 1
        assert raw is not None
        err = StructuredOutputError(
            f"no valid {schema.__name__} after {attempts} attempt(s): {error}",
            provider=config.provider,
            model=config.model,
            raw_text=raw.text,
            attempts=attempts,
        )
        err.key = key
        self._report_failure(key, request, config, str(err), raw.text, attempts)
        raise err

    # -- identical requests in flight share one network call ----------------------------------
    async def _send_coalesced(
        self, key: str, ep: Endpoint, messages: list[dict[str, Any]], request: LLMRequest, counter: Any
    ) -> RawCompletion:
        future: asyncio.Future[RawCompletion] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            raw = await self._send_batched(key, ep, messages, request) if ep.batch is not None else None
            if raw is None:
                raw = await self._send(key, ep, messages, request, counter)
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                future.cancel()  # followers send the request themselves
            else:
                future.set_exception(exc)
                future.exception()  # mark retrieved: followers may be none
            raise
        finally:
            del self._inflight[key]
        future.set_result(raw)
        return raw

    async def _send_batched(
        self, key: str, ep: Endpoint, messages: list[dict[str, Any]], request: LLMRequest
    ) -> RawCompletion | None:
        """The answer through a batch job; None when the collector says to send it online."""
        assert ep.batch is not None
        if self._closing:
            raise ClientClosing("the client is closing: no new requests")
        answer = await ep.batch.send(key, messages, request)
        return None if isinstance(answer, SendOnline) else answer

    async def _join_inflight(self, key: str) -> RawCompletion | None:
        """The leader's answer, or None if the leader was cancelled (then we send it ourselves)."""
        future = self._inflight[key]
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if future.cancelled() and task is not None and not task.cancelling():
                return None
            raise

    # -- transport with retries -------------------------------------------------------------
    async def _send_once(
        self, ep: Endpoint, messages: list[dict[str, Any]], request: LLMRequest
    ) -> RawCompletion:
        if self._closing:
            raise ClientClosing("the client is closing: no new requests")
        await ep.wait_if_paused()
        probe = await ep.breaker.admit() if ep.breaker is not None else False
        if self._closing:
            if ep.breaker is not None:
                ep.breaker.release(probe)
            raise ClientClosing("the client is closing: no new requests")
        estimate = _estimate_tokens(messages, request.params.max_tokens)
        try:
            async with ep.semaphore:
                if self._closing:
                    raise ClientClosing("the client is closing: no new requests")
                await ep.limiter.acquire(estimate)
                self._on_wire += 1
                try:
                    completion, headers = await ep.provider.send(
                        messages, request.params, request.output_schema
                    )
                except RetryableProviderError as exc:
                    if exc.retry_after:
                        ep.pause(min(exc.retry_after, 300.0))
                    if ep.breaker is not None:
                        exc.during_outage = probe or ep.breaker.is_open
                        ep.breaker.failure(exc, probe)
                        probe = False
                    raise
                finally:
                    self._on_wire -= 1
        finally:
            if ep.breaker is not None:
                ep.breaker.release(probe)
        if ep.breaker is not None:
            ep.breaker.success(probe)
        ep.limiter.settle(estimate, completion.usage.total_tokens)
        if headers:
            ep.limiter.observe_headers(headers)
        return completion

    async def _send(
        self, key: str, ep: Endpoint, messages: list[dict[str, Any]], request: LLMRequest, counter: Any
    ) -> RawCompletion:
        try:  # fast path: no retry machinery unless something goes wrong
            return await self._send_once(ep, messages, request)
        except RetryableProviderError as exc:
            first = exc
            if ep.config.max_retries == 0 and ep.breaker is None:
                self._report_failure(key, request, ep.config, str(first), "", 1)
                raise
            counter.retries += 1
            first_wait = first.retry_after
            counted = 0 if first.during_outage else 1
        backoff = wait_exponential_jitter(initial=0.5, max=60.0)

        def wait(state: Any) -> float:
            exc = state.outcome.exception() if state.outcome else None
            if isinstance(exc, RetryableProviderError) and exc.retry_after is not None:
                return min(exc.retry_after, 300.0)
            if isinstance(exc, RetryableProviderError) and exc.during_outage:
                return 0.0  # the breaker paces calls during an outage
            return backoff(state)

        def stop(state: Any) -> bool:
            """Attempts made while the endpoint's breaker is open do not count: the breaker
            decides when an outage is over (or gives up); max_retries bounds one request's own
            failures while the endpoint otherwise answers."""
            nonlocal counted
            exc = state.outcome.exception() if state.outcome else None
            if isinstance(exc, RetryableProviderError) and not exc.during_outage:
                counted += 1
            return counted > ep.config.max_retries

        if first_wait is not None:
            await asyncio.sleep(min(first_wait, 300.0))
        elif not first.during_outage:
            await asyncio.sleep(random.uniform(0.25, 0.75))
        if counted > ep.config.max_retries:
            self._report_failure(key, request, ep.config, str(first), "", counted)
            raise first
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type(RetryableProviderError),
                stop=stop,
                wait=wait,
                reraise=True,
            ):
                with attempt:
                    if attempt.retry_state.attempt_number > 1:
                        counter.retries += 1
                    return await self._send_once(ep, messages, request)
        except RetryableProviderError as exc:
            self._report_failure(key, request, ep.config, str(exc), "", counted)
            raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _report_failure(
        self, key: str, request: LLMRequest, config: EndpointConfig, error: str, raw_text: str, attempts: int
    ) -> None:
        """The one path to `llm_failures`: every column filled."""
        if self.failure_sink is not None:
            self.failure_sink(
                {
                    "failed_at": time.time(),
                    "slot": request.slot,
                    "key": key,
                    "stage": request.stage,
                    "provider": config.provider,
                    "model": config.model,
                    "error": error,
                    "raw_text": raw_text,
                    "attempts": attempts,
                }
            )
