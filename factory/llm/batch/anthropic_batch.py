"""Anthropic Message Batches through the official SDK (`messages.batches.create/retrieve/results/
cancel`).

Each request's `params` is the body `AnthropicProvider.request_body` builds for the online call, and
each succeeded result's message is parsed by `AnthropicProvider.parse_message`. A batch ends with
every request succeeded, errored, expired or canceled; the job's state is `expired` (or `cancelled`)
when some requests were never processed, and those requests have no outcome.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import anthropic
import orjson

from factory.llm.batch.base import BatchItem, BatchOutcome, JobStatus
from factory.llm.batch.common import ProviderBatchAPI, check_size, item_error, parsed
from factory.llm.providers.anthropic_provider import AnthropicProvider
from factory.llm.providers.base import body_message

# the HTTP status behind each error type of the Messages API
ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


class AnthropicBatchAPI(ProviderBatchAPI):
    name = "anthropic"
    max_requests = 100_000
    max_bytes = 256 * 1024 * 1024

    provider_class = AnthropicProvider
    provider: AnthropicProvider

    def _error(self, exc: Exception) -> Exception:
        return self.provider.sdk_error(exc, anthropic)

    def batch_requests(self, items: list[BatchItem]) -> list[dict[str, Any]]:
        """The `requests` of a job: each request's online body as its `params`."""
        body = self.provider.request_body
        return [
            {"custom_id": item.custom_id, "params": body(item.messages, item.params, item.schema)}
            for item in items
        ]

    async def submit(self, items: list[BatchItem]) -> str:
        requests = self.batch_requests(items)
        check_size(self.name, items, len(orjson.dumps(requests)), self.max_requests, self.max_bytes)
        try:
            batch = await self.client.messages.batches.create(requests=requests)  # type: ignore[arg-type]
        except (anthropic.APIStatusError, anthropic.APIConnectionError) as exc:
            raise self._error(exc) from exc
        return batch.id

    async def status(self, job_id: str) -> JobStatus:
        try:
            batch = await self.client.messages.batches.retrieve(job_id)
        except (anthropic.APIStatusError, anthropic.APIConnectionError) as exc:
            raise self._error(exc) from exc
        c = batch.request_counts
        total = c.processing + c.succeeded + c.errored + c.canceled + c.expired
        status = JobStatus(state="running", total=total, done=c.succeeded + c.errored, failed=c.errored)
        if batch.processing_status == "ended":
            status.state = "expired" if c.expired else "cancelled" if c.canceled else "ended"
        return status

    async def results(self, job_id: str) -> list[BatchOutcome]:
        outcomes: list[BatchOutcome] = []
        try:
            async for entry in await self.client.messages.batches.results(job_id):
                outcome = self._outcome(entry.custom_id, entry.result.to_dict())
                if outcome is not None:
                    outcomes.append(outcome)
        except (anthropic.APIStatusError, anthropic.APIConnectionError) as exc:
            raise self._error(exc) from exc
        except Exception as exc:
            # the results are streamed: a connection that breaks while they are read raises the
            # HTTP library's own error, which the SDK does not map (a connection error, retried)
            if not type(exc).__module__.startswith(("httpx", "aiohttp", "anyio")):
                raise
            raise self._error(exc) from exc
        return outcomes

    def _outcome(self, custom_id: str, result: dict[str, Any]) -> BatchOutcome | None:
        """One result (None: a request that was never processed, expired or canceled)."""
        kind = result.get("type")
        if kind == "succeeded":
            message = result.get("message")
            # structured=True: a reply holds a tool_use block only when the request offered the
            # answer tool, so this reads plain answers exactly as structured=False would
            return parsed(custom_id, partial(self.provider.parse_message, structured=True), message)
        if kind == "errored":
            body = result.get("error") or {}
            inner = body.get("error") if isinstance(body.get("error"), dict) else body
            status = ERROR_STATUS.get(str(inner.get("type")), None)
            return item_error(custom_id, status, body_message(body) or str(body), type=inner.get("type"))
        return None

    async def cancel(self, job_id: str) -> None:
        try:
            await self.client.messages.batches.cancel(job_id)
        except (anthropic.APIStatusError, anthropic.APIConnectionError) as exc:
            raise self._error(exc) from exc
