"""OpenAI Batch through the official SDK: the requests go up as one JSONL file (`files.create`,
purpose `batch`), a batch runs them against `/v1/chat/completions` (`batches.create`), and the
answers come back as the batch's output and error files (`files.content`).

Each line's `body` is built by `OpenAIProvider.request_body` and each answer parsed by
`OpenAIProvider.parse_completion`, the code of the online call. Requests that a batch never ran
(error codes `batch_expired` / `batch_cancelled` in the error file) have no outcome.
"""

from __future__ import annotations

from typing import Any

import openai
import orjson

from factory.llm.batch.base import BatchItem, BatchOutcome, JobState, JobStatus
from factory.llm.batch.common import ProviderBatchAPI, check_size, item_error, parsed
from factory.llm.providers.base import body_message
from factory.llm.providers.openai_provider import OpenAIProvider

ENDPOINT = "/v1/chat/completions"
NEVER_RUN = frozenset({"batch_expired", "batch_cancelled"})
_STATE: dict[str, JobState] = {
    "validating": "running",
    "in_progress": "running",
    "finalizing": "running",
    "cancelling": "running",
    "completed": "ended",
    "expired": "expired",
    "failed": "failed",
    "cancelled": "cancelled",
}


class OpenAIBatchAPI(ProviderBatchAPI):
    name = "openai"
    max_requests = 50_000
    max_bytes = 200 * 1024 * 1024

    provider_class = OpenAIProvider
    provider: OpenAIProvider

    def _error(self, exc: Exception) -> Exception:
        return self.provider.sdk_error(exc, openai)

    def input_file(self, items: list[BatchItem]) -> bytes:
        """The JSONL input file of a job: one chat-completion request a line."""
        body = self.provider.request_body
        lines = [
            orjson.dumps(
                {
                    "custom_id": item.custom_id,
                    "method": "POST",
                    "url": ENDPOINT,
                    "body": body(item.messages, item.params, item.schema),
                }
            )
            for item in items
        ]
        return b"\n".join(lines) + b"\n"

    async def submit(self, items: list[BatchItem]) -> str:
        data = self.input_file(items)
        check_size(self.name, items, len(data), self.max_requests, self.max_bytes)
        try:
            uploaded = await self.client.files.create(
                file=("batch.jsonl", data, "application/jsonl"), purpose="batch"
            )
            batch = await self.client.batches.create(
                input_file_id=uploaded.id, endpoint=ENDPOINT, completion_window="24h"
            )
        except (openai.APIStatusError, openai.APIConnectionError) as exc:
            raise self._error(exc) from exc
        return batch.id

    async def _batch(self, job_id: str) -> Any:
        try:
            return await self.client.batches.retrieve(job_id)
        except (openai.APIStatusError, openai.APIConnectionError) as exc:
            raise self._error(exc) from exc

    async def status(self, job_id: str) -> JobStatus:
        batch = await self._batch(job_id)
        counts = batch.request_counts
        detail = ""
        if batch.errors is not None and batch.errors.data:
            detail = "; ".join(
                f"line {e.line}: {e.message}" if e.line is not None else str(e.message)
                for e in batch.errors.data
            )
        return JobStatus(
            state=_STATE.get(batch.status, "running"),
            total=counts.total if counts else 0,
            done=(counts.completed + counts.failed) if counts else 0,
            failed=counts.failed if counts else 0,
            detail=detail or (batch.status if batch.status == "failed" else ""),
        )

    async def results(self, job_id: str) -> list[BatchOutcome]:
        batch = await self._batch(job_id)
        outcomes: list[BatchOutcome] = []
        for file_id in (batch.output_file_id, batch.error_file_id):
            if not file_id:
                continue
            try:
                content = (await self.client.files.content(file_id)).content
            except (openai.APIStatusError, openai.APIConnectionError) as exc:
                raise self._error(exc) from exc
            for line in content.splitlines():
                if line.strip():
                    outcome = self._outcome(orjson.loads(line))
                    if outcome is not None:
                        outcomes.append(outcome)
        return outcomes

    def _outcome(self, line: dict[str, Any]) -> BatchOutcome | None:
        """One line of an output or error file (None: a request the batch never ran)."""
        custom_id = str(line.get("custom_id", ""))
        response = line.get("response")
        if not isinstance(response, dict):
            error = line.get("error") or {}
            if error.get("code") in NEVER_RUN:
                return None
            return item_error(custom_id, None, str(error.get("message") or error), code=error.get("code"))
        status = response.get("status_code")
        body = response.get("body")
        request_id = response.get("request_id", "")
        if status == 200:
            return parsed(custom_id, self.provider.parse_completion, body, request_id=request_id)
        detail = body_message(body) or str(body)[:300]
        return item_error(
            custom_id, status if isinstance(status, int) else None, detail, request_id=request_id
        )

    async def cancel(self, job_id: str) -> None:
        try:
            await self.client.batches.cancel(job_id)
        except (openai.APIStatusError, openai.APIConnectionError) as exc:
            raise self._error(exc) from exc
