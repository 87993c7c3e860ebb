"""Batch mode for one endpoint: requests that missed the cache wait in a queue, go out together as a
provider batch job, and each caller gets its answer when the job has finished.

Callers do not change: `LLMClient` hands a request to `BatchCollector.send` instead of the provider
and awaits a `RawCompletion` as it would online; the client then journals and caches the answer,
validates it and re-asks as usual. With many slots in flight every slot soon waits on the same stage,
so the queue fills with one stage's requests (all paraphrases, then all personas, ...): the build runs
stage by stage without the pipeline knowing.

- When: the queue is submitted once no request joined it for `quiet_s`, or `max_wait_s` after its
  first request, whichever is first (or as soon as it holds the provider's limit of requests).
- Where it is written down: the job id and its request keys go to DuckDB (`ledger.py`) as soon as
  the provider returns the id, before the job is polled.
- Resume: jobs of earlier runs whose answers are not all in the cache are polled again (never
  resubmitted); a request held by such a job waits for it; answers nobody asked for yet are kept
  until asked. A resumed job the provider answers 404 for (deleted, or another project's) counts
  as failed.
- Failures: requests of an expired, cancelled or failed job and retryable item errors go into a
  new job, at most `max_resubmits` times, then online; a request the provider rejected (HTTP 4xx)
  raises FatalProviderError as it would online. A submission or poll that cannot reach the provider
  is retried with backoff for the endpoint's `outage_patience_s`, then the callers get
  ProviderOutage (the build stops; a rerun resumes).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson

from factory.llm.batch.base import FINISHED, BatchAPI, BatchItem, BatchOutcome, JobStatus
from factory.llm.batch.ledger import BatchLedger, RequestMeta
from factory.llm.config import BatchSettings, EndpointConfig
from factory.llm.errors import ClientClosing, FatalProviderError, ProviderOutage, RetryableProviderError
from factory.llm.types import LLMRequest, RawCompletion

T = TypeVar("T")


class SendOnline:
    """The answer of `send` for a request that should go out online instead (a straggler, or one
    whose batch attempts ran out)."""


SEND_ONLINE = SendOnline()


def _fail(waiter: _Waiter, exc: BaseException) -> None:
    if not waiter.future.done():
        waiter.future.set_exception(exc)
        waiter.future.exception()  # retrieved: the caller may be gone


@dataclass
class _Waiter:
    messages: list[dict[str, Any]]
    request: LLMRequest
    future: asyncio.Future
    size: int = 0  # bytes of its request line, for the provider's job size limit


@dataclass
class _Job:
    job_id: str
    keys: tuple[str, ...]
    resumed: bool = False
    status: JobStatus | None = None
    task: asyncio.Task | None = field(default=None, repr=False)


class BatchCollector:
    def __init__(
        self,
        config: EndpointConfig,
        api: BatchAPI,
        ledger: BatchLedger | None,
        settings: BatchSettings,
        in_cache: Callable[[str], bool] | None = None,
    ) -> None:
        self.config = config
        self.api = api
        self.ledger = ledger
        self.settings = settings
        self.in_cache = in_cache or (lambda key: False)
        self.base_url = config.resolved_base_url() or ""
        self._queue: dict[str, _Waiter] = {}  # not submitted yet, in arrival order
        self._waiting: dict[str, _Waiter] = {}  # held by a job that has not finished
        self._job_of: dict[str, str] = {}  # request key -> open job id (resumed jobs included)
        self._ready: dict[str, RawCompletion] = {}  # answers of resumed jobs nobody asked for yet
        self._resubmits: dict[str, int] = {}
        self._jobs: dict[str, _Job] = {}
        self._first_queued = 0.0
        self._last_queued = 0.0
        self._wake: asyncio.Event | None = None
        self._flusher: asyncio.Task | None = None
        self._submissions: set[asyncio.Task] = set()  # submissions on the wire (see _submit_once)
        self._closing = False
        self._started = False
        self._start_error: Exception | None = None  # the open jobs could not be read
        # figures for progress and tests
        self.jobs_submitted = 0
        self.requests_submitted = 0
        self.resubmitted = 0
        self.sent_online = 0

    # -- the caller's side ------------------------------------------------------------------
    async def send(
        self, key: str, messages: list[dict[str, Any]], request: LLMRequest
    ) -> RawCompletion | SendOnline:
        if self._closing:
            raise ClientClosing("the client is closing: no new requests")
        self._start()
        if key in self._ready:
            return self._ready.pop(key)
        waiter = self._queue.get(key) or self._waiting.get(key)
        if waiter is None:
            waiter = _Waiter(messages, request, asyncio.get_running_loop().create_future())
            if key in self._job_of:  # an open job (of this run or an earlier one) holds the request
                self._waiting[key] = waiter
            else:
                self._enqueue(key, waiter)
        return await asyncio.shield(waiter.future)

    def _enqueue(self, key: str, waiter: _Waiter) -> None:
        if self._closing:  # a resubmission after stop_new_requests
            _fail(waiter, ClientClosing("the client is closing: no new requests"))
            return
        now = time.monotonic()
        if not self._queue:
            self._first_queued = now
        self._last_queued = now
        self._queue[key] = waiter
        assert self._wake is not None
        self._wake.set()

    def summary(self) -> str:
        """One line for the progress screen ('' when there is nothing to say)."""
        running = [j for j in self._jobs.values() if j.status is None or j.status.state not in FINISHED]
        if not running and not self._queue:
            return ""
        total = sum(j.status.total if j.status else len(j.keys) for j in running)
        done = sum(j.status.done if j.status else 0 for j in running)
        return (
            f"{self.config.spec} batch: {len(running)} job(s) running ({done:,}/{total:,} answered), "
            f"{len(self._queue):,} request(s) queued"
        )

    def stop_new_requests(self) -> None:
        """Nothing more is submitted: queued requests raise ClientClosing (as online requests not
        yet sent do); jobs already submitted keep running, and a rerun collects them."""
        self._closing = True
        queued = list(self._queue.values())
        self._queue.clear()
        for w in queued:
            _fail(w, ClientClosing("the client is closing: no new requests"))

    async def aclose(self) -> None:
        """Stop submitting and polling. Jobs still running stay in the ledger; a rerun collects them."""
        self._closing = True
        if self._submissions:  # a job the provider may be creating right now goes into the ledger
            await asyncio.gather(*self._submissions, return_exceptions=True)
        tasks = [t for t in [self._flusher, *(j.task for j in self._jobs.values())] if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for w in [*self._queue.values(), *self._waiting.values()]:
            if not w.future.done():
                w.future.set_exception(ClientClosing("the client is closing: batch requests are kept"))
                w.future.exception()
        self._queue.clear()
        self._waiting.clear()

    # -- start: resume the jobs of earlier runs ----------------------------------------------
    def _start(self) -> None:
        if self._started:
            if self._start_error is not None:  # without the ledger, a request may be in an open job
                raise self._start_error
            return
        self._started = True
        self._wake = asyncio.Event()
        if self.ledger is not None:
            try:
                for rec in self.ledger.open_jobs(self.config.spec, self.base_url):
                    if all(self.in_cache(k) for k in rec.keys):
                        self.ledger.set_state(rec.job_id, "collected")
                        continue
                    job = _Job(rec.job_id, rec.keys, resumed=True)
                    for k in rec.keys:
                        self._job_of[k] = rec.job_id
                    self._track(job)
            except Exception as exc:
                self._start_error = exc
                raise
        self._flusher = asyncio.ensure_future(self._flush_loop())

    # -- submission ----------------------------------------------------------------------
    async def _flush_loop(self) -> None:
        assert self._wake is not None
        while not self._closing:
            await self._wake.wait()
            self._wake.clear()
            while self._queue and len(self._queue) < self.api.max_requests:
                due = min(
                    self._last_queued + self.settings.quiet_s, self._first_queued + self.settings.max_wait_s
                )
                wait = due - time.monotonic()
                if wait <= 0:
                    break
                await asyncio.sleep(min(wait, 0.25))
            if not self._queue:
                continue
            if self._closing:
                break
            queued = list(self._queue.items())
            self._queue.clear()
            if len(queued) < self.settings.online_below:
                for _, w in queued:
                    self.sent_online += 1
                    w.future.set_result(SEND_ONLINE)
                continue
            chunks = self._chunks(queued)
            try:
                for chunk in chunks:
                    await self._submit(chunk)
            except asyncio.CancelledError:  # aclose: the callers of chunks not submitted get an error too
                for chunk in chunks:
                    for k, w in chunk:
                        if self._waiting.get(k) is not w:
                            _fail(w, ClientClosing("the client is closing: batch requests are kept"))
                raise

    def _chunks(self, queued: list[tuple[str, _Waiter]]) -> list[list[tuple[str, _Waiter]]]:
        """Split into jobs within the provider's request-count and size limits."""
        chunks: list[list[tuple[str, _Waiter]]] = [[]]
        size = 0
        budget = int(self.api.max_bytes * 0.9)  # room for the provider's envelope of each line
        for key, w in queued:
            w.size = w.size or len(orjson.dumps(w.messages)) + 512
            if chunks[-1] and (len(chunks[-1]) >= self.api.max_requests or size + w.size > budget):
                chunks.append([])
                size = 0
            chunks[-1].append((key, w))
            size += w.size
        return [c for c in chunks if c]

    async def _submit(self, chunk: list[tuple[str, _Waiter]]) -> None:
        if self._closing:  # stop_new_requests while earlier chunks were being submitted
            for _, w in chunk:
                _fail(w, ClientClosing("the client is closing: no new requests"))
            return
        items = [BatchItem(k, w.messages, w.request.params, w.request.output_schema) for k, w in chunk]
        try:
            job_id = await self._patiently("submit a batch job", lambda: self._submit_once(items, chunk))
        except ValueError as exc:
            # the adapter's size check, before anything is sent: the estimate of `_chunks` (messages
            # + 512 bytes a request) fell short of the real lines (schema, parameters): split
            if len(chunk) > 1:
                half = len(chunk) // 2
                await self._submit(chunk[:half])
                await self._submit(chunk[half:])
                return
            _fail(chunk[0][1], exc)
            return
        except BaseException as exc:
            cancelled = isinstance(exc, asyncio.CancelledError)
            for _, w in chunk:  # cancelled: the client is closing (aclose)
                _fail(
                    w, ClientClosing("the client is closing: batch requests are kept") if cancelled else exc
                )
            if cancelled:
                raise
            return
        self.jobs_submitted += 1
        self.requests_submitted += len(chunk)
        for k, w in chunk:
            self._waiting[k] = w
            self._job_of[k] = job_id
        self._track(_Job(job_id, tuple(k for k, _ in chunk)))

    def _submit_once(self, items: list[BatchItem], chunk: list[tuple[str, _Waiter]]) -> Awaitable[str]:
        """One submission and its ledger row, as a task of its own: closing the client while it is on
        the wire does not cancel it (the provider may be creating the job) and `aclose` waits for it,
        so a job the provider created is in the ledger and a rerun collects it."""
        if self._closing:  # stop_new_requests while this submission waited out an unreachable provider
            raise ClientClosing("the client is closing: no new requests")
        task = asyncio.ensure_future(self._create_job(items, chunk))
        self._submissions.add(task)
        task.add_done_callback(self._submissions.discard)
        return asyncio.shield(task)

    async def _create_job(self, items: list[BatchItem], chunk: list[tuple[str, _Waiter]]) -> str:
        job_id = await self.api.submit(items)
        if self.ledger is not None:
            try:
                self.ledger.record_job(
                    job_id,
                    self.config.spec,
                    self.base_url,
                    [
                        RequestMeta(k, w.request.stage, w.request.prompt_hash, w.request.slot)
                        for k, w in chunk
                    ],
                )
            except BaseException:
                # a job the ledger does not hold would be paid for again by a rerun: stop it
                with contextlib.suppress(Exception):
                    await self.api.cancel(job_id)
                raise
        return job_id

    # -- polling and results ------------------------------------------------------------
    def _track(self, job: _Job) -> None:
        self._jobs[job.job_id] = job
        job.task = asyncio.ensure_future(self._follow(job))

    async def _follow(self, job: _Job) -> None:
        try:
            await self._collect(job)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # the provider could not be reached, or refused the job
            for k in job.keys:
                if self._job_of.get(k) != job.job_id:
                    continue  # another open job holds the request (a resubmission): it waits for that one
                del self._job_of[k]
                w = self._waiting.pop(k, None)
                if w is not None and not w.future.done():
                    w.future.set_exception(exc)
                    w.future.exception()

    async def _collect(self, job: _Job) -> None:
        try:
            status, outcomes = await self._finish(job)
        except FatalProviderError as exc:
            if not (job.resumed and exc.status == 404):
                raise FatalProviderError(
                    f"batch job {job.job_id}: {str(exc).removeprefix(f'[{exc.provider}:{exc.model}] ')}",
                    provider=exc.provider or self.config.provider,
                    model=exc.model or self.config.model,
                    status=exc.status,
                ) from exc
            # a job of an earlier run that the provider no longer has (deleted, expired long ago, or
            # another project's): nothing of it can be collected, its requests go into a new job
            status, outcomes = JobStatus("failed", detail=f"not found at the provider: {exc}"), []
        if self.ledger is not None:
            self.ledger.set_state(job.job_id, status.state, status.detail)
        self._deliver(job, outcomes)

    async def _finish(self, job: _Job) -> tuple[JobStatus, list[BatchOutcome]]:
        """Poll the job until it is finished; its status and outcomes."""
        delay = min(1.0, self.settings.poll_s)
        while True:
            status = await self._patiently(
                f"poll batch job {job.job_id}", lambda: self.api.status(job.job_id)
            )
            job.status = status
            if status.state in FINISHED:
                break
            if self.ledger is not None and status.state == "running":
                self.ledger.set_state(job.job_id, "running")
            await asyncio.sleep(delay)
            delay = min(self.settings.poll_s, delay * 1.5)
        outcomes: list[BatchOutcome] = []
        if status.state != "failed":
            outcomes = await self._patiently(
                f"read the results of batch job {job.job_id}", lambda: self.api.results(job.job_id)
            )
        return status, outcomes

    def _deliver(self, job: _Job, outcomes: list[BatchOutcome]) -> None:
        """Each waiter of a finished job gets its answer, its error, a new job or online."""
        by_id = {o.custom_id: o for o in outcomes}
        for key in job.keys:
            mine = self._job_of.get(key) == job.job_id
            if mine:
                del self._job_of[key]
            outcome = by_id.get(key)
            answered = outcome is not None and outcome.completion is not None
            if not mine and not answered:
                continue  # another open job holds the request (a resubmission): it waits for that one
            waiter = self._waiting.pop(key, None)
            if outcome is not None and outcome.completion is not None:
                answer = outcome.completion.model_copy(update={"batch_job": job.job_id})
                if waiter is not None:
                    waiter.future.set_result(answer)
                else:
                    self._ready[key] = answer  # a resumed job's answer: kept until its slot asks
                continue
            if waiter is None:
                continue  # nobody asked yet: when its slot asks, it is queued anew
            if outcome is not None and not outcome.retryable:
                waiter.future.set_exception(
                    FatalProviderError(
                        f"batch job {job.job_id}: the provider rejected request {key}: {outcome.error}",
                        provider=self.config.provider,
                        model=self.config.model,
                    )
                )
                waiter.future.exception()
                continue
            # expired, cancelled, failed job, or a retryable item error: a new job, then online
            tries = self._resubmits[key] = self._resubmits.get(key, 0) + 1
            if tries > self.settings.max_resubmits:
                self.sent_online += 1
                waiter.future.set_result(SEND_ONLINE)
            else:
                self.resubmitted += 1
                self._enqueue(key, waiter)

    async def _patiently(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """A submission or poll, retried with backoff while the provider cannot be reached, for
        the endpoint's outage patience (default 300 s); then ProviderOutage."""
        patience = self.config.outage_patience_s or 300.0
        deadline = time.monotonic() + patience
        delay = 0.5
        while True:
            try:
                return await call()
            except RetryableProviderError as exc:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ProviderOutage(
                        f"could not {what} for {patience:.0f}s (last error: {exc}). Nothing is lost: the "
                        f"jobs already submitted are in the batch_jobs table; rerun the same command to resume",
                        provider=self.config.provider,
                        model=self.config.model,
                    ) from exc
                wait = exc.retry_after if exc.retry_after is not None else delay * random.uniform(0.8, 1.2)
                await asyncio.sleep(min(wait, left, 60.0))
                delay = min(delay * 2, 30.0)
