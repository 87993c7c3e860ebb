"""Gemini batch mode through google-genai (`aio.batches.create/get/cancel`) with inlined requests.

Each request is the contents and generate config `GoogleProvider.request_parts` builds for the online
call, sent as an `InlinedRequest` whose `metadata` carries the request key (`{"key": custom_id}`); the
API echoes the metadata in each inlined response, so results are matched by key (by position only
when a response lacks it and this adapter submitted the job). Responses are parsed by
`GoogleProvider.parse_response`.

The SDK's `BatchJob` carries no request counts and (in Gemini Developer API mode) drops the error of
a failed job: `JobStatus.total` is the number of requests this adapter submitted (for a job submitted
by an earlier process, the responses so far), `done`/`failed` count the inlined responses, and a
failed job's detail is read from the batch resource itself through the SDK's API client.
"""

from __future__ import annotations

from typing import Any

import orjson
from google.genai import types

from factory.llm.batch.base import BatchItem, BatchOutcome, JobState, JobStatus
from factory.llm.batch.common import ProviderBatchAPI, check_size, item_error, parsed
from factory.llm.config import EndpointConfig
from factory.llm.providers.google_provider import GoogleProvider

_STATE: dict[str, JobState] = {
    "JOB_STATE_SUCCEEDED": "ended",
    "JOB_STATE_PARTIALLY_SUCCEEDED": "ended",
    "JOB_STATE_FAILED": "failed",
    "JOB_STATE_CANCELLED": "cancelled",
    "JOB_STATE_EXPIRED": "expired",
}  # any other state (pending, queued, running, cancelling, paused, updating): running

# An inlined response's error is a google.rpc.Status, whose code is a google.rpc.Code (gRPC), not an
# HTTP status: the HTTP status of each (https://cloud.google.com/apis/design/errors), so that an
# overload or internal error is resent and an invalid request is not. Codes of 100 and up are taken
# as HTTP statuses already.
_RPC_HTTP = {
    1: 499,  # CANCELLED
    2: 500,  # UNKNOWN
    3: 400,  # INVALID_ARGUMENT
    4: 504,  # DEADLINE_EXCEEDED
    5: 404,  # NOT_FOUND
    6: 409,  # ALREADY_EXISTS
    7: 403,  # PERMISSION_DENIED
    8: 429,  # RESOURCE_EXHAUSTED
    9: 400,  # FAILED_PRECONDITION
    10: 409,  # ABORTED
    11: 400,  # OUT_OF_RANGE
    12: 501,  # UNIMPLEMENTED
    13: 500,  # INTERNAL
    14: 503,  # UNAVAILABLE
    15: 500,  # DATA_LOSS
    16: 401,  # UNAUTHENTICATED
}


def _http_status(code: int | None) -> int | None:
    if code is None or code >= 100:
        return code
    return _RPC_HTTP.get(code)


class GoogleBatchAPI(ProviderBatchAPI):
    name = "google"
    # inlined requests travel in the create call, which the API caps at 20 MB: stay well below
    max_requests = 10_000
    max_bytes = 10 * 1024 * 1024

    provider_class = GoogleProvider
    provider: GoogleProvider

    def __init__(self, config: EndpointConfig) -> None:
        super().__init__(config)
        self._submitted: dict[str, list[str]] = {}  # job name -> custom ids in request order

    async def _call(self, coro: Any) -> Any:
        try:
            return await coro
        except Exception as exc:
            mapped = self.provider.api_error(exc)
            if mapped is None:
                raise
            raise mapped from exc

    def inlined_requests(self, items: list[BatchItem]) -> list[types.InlinedRequest]:
        requests = []
        for item in items:
            contents, config = self.provider.request_parts(item.messages, item.params, item.schema)
            requests.append(
                types.InlinedRequest(contents=contents, config=config, metadata={"key": item.custom_id})
            )
        return requests

    async def submit(self, items: list[BatchItem]) -> str:
        requests = self.inlined_requests(items)
        size = sum(len(orjson.dumps(r.model_dump(mode="json", exclude_none=True))) for r in requests)
        check_size(self.name, items, size, self.max_requests, self.max_bytes)
        job = await self._call(
            self.client.aio.batches.create(
                model=self.config.model,
                src=requests,  # type: ignore[arg-type]
                config=types.CreateBatchJobConfig(
                    display_name=f"factory-{items[0].custom_id[:8]}-{len(items)}"
                ),
            )
        )
        name = str(job.name)
        self._submitted[name] = [item.custom_id for item in items]
        return name

    async def status(self, job_id: str) -> JobStatus:
        job = await self._call(self.client.aio.batches.get(name=job_id))
        state_name = job.state.name if job.state is not None else "JOB_STATE_UNSPECIFIED"
        state = _STATE.get(state_name, "running")
        responses = (job.dest.inlined_responses or []) if job.dest is not None else []
        total = len(self._submitted.get(job_id, ())) or len(responses)
        status = JobStatus(
            state=state,
            total=total,
            done=len(responses),
            failed=sum(1 for r in responses if r.error is not None),
        )
        if state == "failed":
            status.detail = await self._failure(job_id) or state_name
        return status

    async def _failure(self, job_id: str) -> str:
        """The error message of a failed batch, read from the resource (the SDK's BatchJob drops it)."""
        try:
            raw = await self.client.aio._api_client.async_request("get", job_id, {})
            error = (orjson.loads(raw.body or "{}") or {}).get("error") or {}
        except Exception:  # the detail is a courtesy; the state is known already
            return ""
        return str(error.get("message") or "") if isinstance(error, dict) else str(error)

    async def results(self, job_id: str) -> list[BatchOutcome]:
        job = await self._call(self.client.aio.batches.get(name=job_id))
        responses = (job.dest.inlined_responses or []) if job.dest is not None else []
        order = self._submitted.get(job_id, [])
        outcomes: list[BatchOutcome] = []
        for i, r in enumerate(responses):
            key = (r.metadata or {}).get("key") or (order[i] if len(order) == len(responses) else "")
            if not key:
                continue  # a response that cannot be matched to its request
            if r.error is not None:
                outcomes.append(item_error(key, _http_status(r.error.code), str(r.error.message or r.error)))
            elif r.response is not None:
                outcomes.append(parsed(key, self.provider.parse_response, r.response))
        return outcomes

    async def cancel(self, job_id: str) -> None:
        await self._call(self.client.aio.batches.cancel(name=job_id))
