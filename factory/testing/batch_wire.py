"""The provider batch APIs of the fake LLM server: OpenAI Batch, Anthropic Message Batches and Gemini
batch mode, each as the official SDK (``openai``, ``anthropic``, ``google-genai``) calls it.

* OpenAI: ``POST /v1/files`` (multipart, ``purpose=batch``, a JSONL file of
  ``{"custom_id", "method": "POST", "url": "/v1/chat/completions", "body"}`` lines), ``GET /v1/files/{id}``,
  ``GET /v1/files/{id}/content``, ``DELETE /v1/files/{id}``, ``POST /v1/batches``
  (``input_file_id``, ``endpoint``, ``completion_window``), ``GET /v1/batches/{id}`` and
  ``POST /v1/batches/{id}/cancel``. Status ``in_progress`` -> ``completed`` / ``expired`` /
  ``failed`` (with ``errors``) / ``cancelling`` -> ``cancelled``; ``request_counts``; the output file
  holds the HTTP-200 answers (``{"id", "custom_id", "response": {"status_code", "request_id", "body"},
  "error": null}``), the error file the other answers and, with ``response`` null and ``error.code``
  ``batch_expired`` / ``batch_cancelled``, the requests that were never processed.
* Anthropic: ``POST /v1/messages/batches`` (``requests: [{custom_id, params}]``),
  ``GET /v1/messages/batches/{id}`` (``processing_status`` ``in_progress`` / ``canceling`` / ``ended``,
  ``request_counts``, ``results_url`` once ended), ``GET /v1/messages/batches/{id}/results`` (JSONL of
  ``{"custom_id", "result": {"type": "succeeded", "message"} | {"type": "errored", "error"} |
  {"type": "expired"} | {"type": "canceled"}}``) and ``POST /v1/messages/batches/{id}/cancel``.
* Gemini: ``POST /{version}/models/{model}:batchGenerateContent`` with inlined requests
  (``batch.inputConfig.requests.requests: [{"request", "metadata"}]``), ``GET /{version}/batches/{id}``,
  ``POST /{version}/batches/{id}:cancel`` and ``DELETE /{version}/batches/{id}``. The batch is a
  long-running operation: ``metadata.state`` ``BATCH_STATE_RUNNING`` -> ``BATCH_STATE_SUCCEEDED`` /
  ``_EXPIRED`` / ``_FAILED`` (with ``error``) / ``_CANCELLED``, ``done``, and the answers in
  ``metadata.output.inlinedResponses.inlinedResponses`` (``{"response" | "error", "metadata"}``, in
  request order, each echoing its request's ``metadata``, so a ``key`` there matches them).

Every request of a job is answered by the online endpoint's own handler for the same body (same
answer, usage, structured output, reasoning and prompt-cache accounting), in request order, once the
job has been in progress for ``batch_delay_s`` seconds (it is processed when it is next looked at).
A job's requests count in ``batch_requests`` when it is created, jobs in ``batch_jobs``. A request's
body counts in ``unique_bodies`` / ``repeated_bodies``, in one space with online bodies (a Gemini
item's ``model`` taken as the online path's model), when the job processes it: the requests an
expired, cancelled or failed job never ran are not counted, so resending them is no repeat, while a
body answered online and again in a batch (or in two jobs) is.

Faults (``/_fake/script``) for batches: ``batch_fail`` (the next job fails as a whole; Anthropic
validates at creation, so there the create call is refused with a 400), ``batch_expire`` (the next job
expires with its last ``unprocessed`` requests, or ``share`` of them (default 0.5, at least one), never
processed), ``batch_item_error`` (the request whose body matches gets an errored result with
``status``: 500 by default (retryable), 400 for an invalid request). The content faults
(``malformed``, ``truncated``, ``wrong_schema``, ``empty``) apply to batch requests as to online ones;
the error-status faults and ``hang`` apply to online requests only, and online requests never take a
``batch_*`` fault. ``require_key`` applies to every batch route.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from factory.testing.anthropic_wire import _rfc3339
from factory.testing.faults import CONTENT_FAULTS, Fault
from factory.testing.profiles import Profile, use_profile

JOB_FAULTS = frozenset({"batch_expire", "batch_fail"})
ITEM_FAULTS = CONTENT_FAULTS | {"batch_item_error"}
_ANTHROPIC_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_OPENAI_ENDPOINT = "/v1/chat/completions"
_GEMINI_VERSIONS = ("v1beta", "v1", "v1alpha")
_GEMINI_STATE = {
    "running": "BATCH_STATE_RUNNING",
    "cancelling": "BATCH_STATE_RUNNING",
    "ended": "BATCH_STATE_SUCCEEDED",
    "expired": "BATCH_STATE_EXPIRED",
    "failed": "BATCH_STATE_FAILED",
    "cancelled": "BATCH_STATE_CANCELLED",
}
_OPENAI_STATUS = {
    "running": "in_progress",
    "cancelling": "cancelling",
    "ended": "completed",
    "expired": "expired",
    "failed": "failed",
    "cancelled": "cancelled",
}
_NEVER_RUN = {
    "expired": ("batch_expired", "This request could not be executed before the completion window expired."),
    "cancelled": ("batch_cancelled", "This request was not executed because the batch was cancelled."),
}


@dataclass
class BatchRequest:
    """One request of a job: its body as the online endpoint would receive it, and its outcome."""

    custom_id: str
    body: dict[str, Any]
    path_model: str | None
    raw: bytes  # what faults match against
    metadata: Any = None  # Gemini: echoed in the inlined response
    fault: Fault | None = None
    fate: str = "pending"  # pending | answered | expired | cancelled
    status: int = 0
    payload: Any = None


@dataclass
class BatchJob:
    id: str
    provider: str  # openai | anthropic | gemini
    endpoint: str  # the online endpoint its requests are answered as (the key space of repeated_bodies)
    requests: list[BatchRequest]
    created: float
    ready_at: float
    profile: Profile | None
    unprocessed: int = 0
    fail: str | None = None
    state: str = "running"  # running | cancelling | ended | expired | failed | cancelled
    ended: float | None = None
    cancelled_at: float | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.state in ("ended", "expired", "failed", "cancelled")

    def count(self, fate: str, ok: bool | None = None) -> int:
        return sum(1 for r in self.requests if r.fate == fate and (ok is None or (r.status == 200) == ok))


class BatchWire:
    """The batch routes of the three protocols and the job store they share.

    Mixed into :class:`~factory.testing.fake_llm_server.FakeLLMServer`, whose ``_answer``,
    ``_note_body``, ``_error``, ``_reply``, ``_next_id``, ``_key_ok``, ``_faults``, ``profile``,
    ``url`` and ``batch_delay_s`` it uses.
    """

    # provided by FakeLLMServer
    batch_delay_s: float
    profile: Profile | None
    require_key: str | None
    url: str
    _faults: Any
    _faults_applied: int
    _by_fault: dict[str, int]
    _auth_failures: int
    _answer: Callable[[str, dict, str | None, str | None], Any]
    _note_body: Callable[[str, str | None, dict], None]
    _error: Callable[..., Any]
    _reply: Callable[..., Any]
    _next_id: Callable[[], str]
    _key_ok: Callable[[str, Any, str], bool]

    def _batch_reset(self) -> None:
        if not hasattr(self, "_jobs"):  # jobs and files outlive /_fake/reset; counters do not
            self._jobs: dict[str, BatchJob] = {}
            self._files: dict[str, tuple[dict[str, Any], bytes]] = {}
        self._batch_jobs = 0
        self._batch_requests = 0

    def _batch_stats(self) -> dict[str, int]:
        return {"batch_jobs": self._batch_jobs, "batch_requests": self._batch_requests}

    # -- routing -------------------------------------------------------------------------------
    async def _batch_handle(self, request: Any, method: str, path: str, query: str) -> Any:
        """The answer of a batch route, or None when `path` is none."""
        parts = path.split("/")
        if self._is_gemini_batch(parts):
            return await self._gemini_batch_route(request, method, parts, query)
        p = path[3:] if path.startswith("/v1/") else path
        if p.startswith("/messages/batches"):
            return await self._anthropic_batch_route(request, method, p[len("/messages/batches") :], query)
        if p == "/files" or p.startswith("/files/") or p == "/batches" or p.startswith("/batches/"):
            return await self._openai_batch_route(request, method, p, query)
        return None

    def _is_gemini_batch(self, parts: list[str]) -> bool:
        """A Gemini batch route: `{version}/models/{model}:batchGenerateContent` or `{version}/batches/{id}`
        (under `/v1/` only a Gemini job's id or a `:verb` tells it from an OpenAI batch)."""
        if parts[-1].endswith(":batchGenerateContent"):
            return True
        if len(parts) != 4 or parts[1] not in _GEMINI_VERSIONS or parts[2] != "batches":
            return False
        if parts[1] != "v1" or ":" in parts[3]:
            return True
        job = self._jobs.get(parts[3])
        return job is not None and job.provider == "gemini"

    def _refused(self, provider: str, request: Any, query: str) -> Any:
        """The 401 answer when the server requires a key the request lacks, else None."""
        if self.require_key is not None and not self._key_ok(provider, request, query):
            self._auth_failures += 1
            return self._error(provider, 401, "fake server: invalid or missing API key")
        return None

    # -- jobs, shared by the three protocols ---------------------------------------------------
    def _pop_fault(self, kinds: frozenset[str], provider: str, raw: bytes) -> Fault | None:
        faults = self._faults
        for i, f in enumerate(faults):
            if f.kind in kinds and f.applies(provider, raw):
                del faults[i]
                self._faults_applied += 1
                by = self._by_fault
                by[f.kind] = by.get(f.kind, 0) + 1
                return f
        return None

    def _open_job(
        self,
        provider: str,
        endpoint: str,
        requests: list[BatchRequest],
        fault: Fault | None,
        prefix: str,
        invalid: str | None = None,
    ) -> BatchJob:
        """Register a job (failed when `invalid` says why its input is, or by a `batch_fail` fault)
        and take its requests' faults (none for a job that will fail)."""
        now = time.time()
        job = BatchJob(
            id=prefix + self._next_id()[:24],
            provider=provider,
            endpoint=endpoint,
            requests=requests,
            created=now,
            ready_at=now + self.batch_delay_s,
            profile=self.profile,
        )
        self._batch_jobs += 1
        self._batch_requests += len(requests)
        if invalid is not None:
            job.fail = invalid
        elif fault is not None and fault.kind == "batch_fail":
            job.fail = str(fault.spec.get("message") or "fake server: scripted batch_fail fault")
        if job.fail is None:
            for r in requests:
                r.fault = self._pop_fault(ITEM_FAULTS, provider, r.raw)
        if fault is not None and fault.kind == "batch_expire":
            n = len(requests)
            if "unprocessed" in fault.spec:
                job.unprocessed = max(0, min(n, int(fault.spec["unprocessed"])))
            else:
                share = float(fault.spec.get("share", 0.5))
                job.unprocessed = min(n, max(1, int(n * share))) if share > 0 else 0
        self._jobs[job.id] = job
        return job

    def _advance(self, job: BatchJob) -> None:
        """Move a job on: a cancel takes effect; a job past its delay is processed."""
        now = time.time()
        if job.state == "cancelling":
            for r in job.requests:
                if r.fate == "pending":
                    r.fate = "cancelled"
            job.state, job.ended = "cancelled", now
            return
        if job.state != "running" or now < job.ready_at:
            return
        if job.fail is not None:
            job.state, job.ended = "failed", now
            return
        cut = len(job.requests) - job.unprocessed
        with use_profile(job.profile):
            for i, r in enumerate(job.requests):
                if i >= cut:
                    r.fate = "expired"
                    continue
                self._note_body(job.endpoint, r.path_model, r.body)
                resp = self._answer_item(job.provider, r)
                r.status, r.payload, r.fate = resp.status, orjson.loads(resp.body), "answered"
        job.state, job.ended = ("expired" if job.unprocessed else "ended"), now

    def _answer_item(self, provider: str, r: BatchRequest) -> Any:
        f = r.fault
        if f is not None and f.kind == "batch_item_error":
            status = int(f.spec.get("status", 500))
            message = f.spec.get("message") or f"fake server: scripted batch_item_error ({status})"
            return self._error(provider, status, message)
        return self._answer(provider, r.body, r.path_model, f.kind if f is not None else None)

    def _cancel(self, job: BatchJob) -> None:
        self._advance(job)
        if job.state == "running":
            job.state, job.cancelled_at = "cancelling", time.time()

    def _job_route(self, job: BatchJob, method: str, tail: str, render: Callable[[BatchJob], Any]) -> Any:
        """`GET <job>` and `POST <job>/cancel`, answered with the job as `render` shapes it (None:
        another route)."""
        if method == "POST" and tail == "cancel":
            self._cancel(job)
            return self._reply(200, render(job))
        if method == "GET" and not tail:
            self._advance(job)
            return self._reply(200, render(job))
        return None

    def _job(self, job_id: str, provider: str) -> BatchJob | None:
        job = self._jobs.get(job_id)
        return job if job is not None and job.provider == provider else None

    @staticmethod
    def _raw_reply(body: bytes, content_type: str = "application/octet-stream") -> Any:
        return web.Response(status=200, body=body, headers={"Content-Type": content_type})

    @staticmethod
    def _json_body(raw: bytes) -> Any:
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None

    # -- OpenAI Batch --------------------------------------------------------------------------
    async def _openai_batch_route(self, request: Any, method: str, p: str, query: str) -> Any:
        refused = self._refused("openai", request, query)
        if refused is not None:
            return refused
        if p == "/files" and method == "POST":
            return await self._openai_upload(request)
        if p.startswith("/files/"):
            file_id, _, tail = p[len("/files/") :].partition("/")
            stored = self._files.get(file_id)
            if stored is None:
                return self._error("openai", 404, f"No such File object: {file_id}")
            if method == "GET" and tail == "content":
                return self._raw_reply(stored[1])
            if method == "GET" and not tail:
                return self._reply(200, stored[0])
            if method == "DELETE" and not tail:
                del self._files[file_id]
                return self._reply(200, {"id": file_id, "object": "file", "deleted": True})
        if p == "/batches" and method == "POST":
            return await self._openai_create(request)
        if p.startswith("/batches/"):
            batch_id, _, tail = p[len("/batches/") :].partition("/")
            job = self._job(batch_id, "openai")
            if job is None:
                return self._error("openai", 404, f"No batch found with id '{batch_id}'.")
            answer = self._job_route(job, method, tail, self._openai_batch)
            if answer is not None:
                return answer
        return self._error("openai", 404, f"fake server: no route for {method} /v1{p}")

    def _store_file(self, content: bytes, filename: str, purpose: str) -> str:
        file_id = "file-" + self._next_id()[:24]
        meta = {
            "id": file_id,
            "object": "file",
            "bytes": len(content),
            "created_at": int(time.time()),
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
        }
        self._files[file_id] = (meta, content)
        return file_id

    async def _openai_upload(self, request: Any) -> Any:
        try:
            form = await request.post()
        except ValueError as exc:
            return self._error("openai", 400, f"fake server: unreadable multipart body: {exc}")
        upload, purpose = form.get("file"), form.get("purpose")
        if upload is None or not purpose:
            return self._error("openai", 400, "fake server: 'file' and 'purpose' are required")
        if isinstance(upload, str):
            content, filename = upload.encode(), "upload.jsonl"
        else:
            content, filename = upload.file.read(), upload.filename or "upload.jsonl"
        file_id = self._store_file(content, filename, str(purpose))
        return self._reply(200, self._files[file_id][0])

    async def _openai_create(self, request: Any) -> Any:
        body = self._json_body(await request.read())
        if not isinstance(body, dict):
            return self._error("openai", 400, "fake server: request body is not a JSON object")
        file_id = body.get("input_file_id")
        stored = self._files.get(file_id) if isinstance(file_id, str) else None
        if stored is None:
            return self._error("openai", 404, f"No such File object: {file_id}")
        endpoint = body.get("endpoint")
        if endpoint != _OPENAI_ENDPOINT:
            return self._error("openai", 400, f"fake server: only {_OPENAI_ENDPOINT} batches are served")
        if body.get("completion_window") != "24h":
            return self._error("openai", 400, "completion_window must be '24h'")
        content = stored[1]
        requests: list[BatchRequest] = []
        problems: list[dict[str, Any]] = []
        seen: set[str] = set()
        for lineno, line in enumerate(content.splitlines(), 1):
            if not line.strip():
                continue
            item = self._json_body(line)
            why = None
            if not isinstance(item, dict) or not isinstance(item.get("body"), dict):
                why = "the line is not a JSON object with a 'body' object"
            elif not isinstance(item.get("custom_id"), str) or item["custom_id"] in seen:
                why = "every request needs a unique 'custom_id' string"
            elif item.get("method") != "POST" or item.get("url") != endpoint:
                why = f"'method' must be POST and 'url' {endpoint}"
            if why is not None:
                problems.append({"code": "invalid_request", "message": why, "line": lineno, "param": None})
                continue
            seen.add(item["custom_id"])
            requests.append(BatchRequest(item["custom_id"], item["body"], None, bytes(line)))
        fault = self._pop_fault(JOB_FAULTS, "openai", content)
        invalid = problems[0]["message"] if problems else None
        job = self._open_job("openai", "openai.chat_completions", requests, fault, "batch_", invalid)
        if problems:
            job.info["errors"] = problems
        elif job.fail is not None:
            job.info["errors"] = [
                {"code": "invalid_request", "message": job.fail, "line": None, "param": None}
            ]
        job.info.update(input_file_id=file_id, metadata=body.get("metadata"))
        return self._reply(200, self._openai_batch(job))

    def _openai_files(self, job: BatchJob) -> None:
        """Write a finished job's output and error files (once)."""
        if "output_file_id" in job.info or not job.finished or job.state == "failed":
            return
        out: list[bytes] = []
        err: list[bytes] = []
        for r in job.requests:
            line: dict[str, Any] = {"id": "batch_req_" + self._next_id()[:24], "custom_id": r.custom_id}
            if r.fate == "answered":
                line["response"] = {
                    "status_code": r.status,
                    "request_id": "req_" + self._next_id()[:24],
                    "body": r.payload,
                }
                line["error"] = None
            else:
                code, message = _NEVER_RUN[r.fate]
                line["response"], line["error"] = None, {"code": code, "message": message}
            (out if r.fate == "answered" and r.status == 200 else err).append(orjson.dumps(line))
        name = job.id
        job.info["output_file_id"] = (
            self._store_file(b"\n".join(out) + b"\n", f"{name}_output.jsonl", "batch_output") if out else None
        )
        job.info["error_file_id"] = (
            self._store_file(b"\n".join(err) + b"\n", f"{name}_error.jsonl", "batch_output") if err else None
        )

    def _openai_batch(self, job: BatchJob) -> dict[str, Any]:
        self._openai_files(job)
        created = int(job.created)
        ended = int(job.ended) if job.ended is not None else None
        failed = job.state == "failed"
        total = 0 if failed else len(job.requests)
        completed = job.count("answered", ok=True)
        return {
            "id": job.id,
            "object": "batch",
            "endpoint": _OPENAI_ENDPOINT,
            "model": job.requests[0].body.get("model") if job.requests else None,
            "errors": {"object": "list", "data": job.info.get("errors", [])} if failed else None,
            "input_file_id": job.info.get("input_file_id", ""),
            "completion_window": "24h",
            "status": _OPENAI_STATUS[job.state],
            "output_file_id": job.info.get("output_file_id"),
            "error_file_id": job.info.get("error_file_id"),
            "created_at": created,
            "in_progress_at": None if failed else created,
            "expires_at": created + 86_400,
            "finalizing_at": ended if job.state in ("ended", "expired") else None,
            "completed_at": ended if job.state == "ended" else None,
            "failed_at": ended if failed else None,
            "expired_at": ended if job.state == "expired" else None,
            "cancelling_at": int(job.cancelled_at) if job.cancelled_at is not None else None,
            "cancelled_at": ended if job.state == "cancelled" else None,
            "request_counts": {
                "total": total,
                "completed": completed,
                "failed": 0 if failed else total - completed - job.count("pending"),
            },
            "metadata": job.info.get("metadata"),
        }

    # -- Anthropic Message Batches -------------------------------------------------------------
    async def _anthropic_batch_route(self, request: Any, method: str, rest: str, query: str) -> Any:
        refused = self._refused("anthropic", request, query)
        if refused is not None:
            return refused
        if not rest and method == "POST":
            return await self._anthropic_create(request)
        batch_id, _, tail = rest.lstrip("/").partition("/")
        job = self._job(batch_id, "anthropic")
        if job is None:
            return self._error("anthropic", 404, f"fake server: no message batch {batch_id!r}")
        answer = self._job_route(job, method, tail, self._anthropic_batch)
        if answer is not None:
            return answer
        if method == "GET" and tail == "results":
            self._advance(job)
            if not job.finished:
                return self._error("anthropic", 400, f"Message Batch {batch_id} has not yet ended.")
            return self._raw_reply(self._anthropic_results(job), "application/x-jsonl")
        return self._error("anthropic", 404, f"fake server: no route for {method} /v1/messages/batches{rest}")

    async def _anthropic_create(self, request: Any) -> Any:
        raw = await request.read()
        body = self._json_body(raw)
        items = body.get("requests") if isinstance(body, dict) else None
        if not isinstance(items, list) or not items:
            return self._error("anthropic", 400, "requests: a non-empty list is required")
        requests: list[BatchRequest] = []
        seen: set[str] = set()
        for i, item in enumerate(items):
            cid = item.get("custom_id") if isinstance(item, dict) else None
            params = item.get("params") if isinstance(item, dict) else None
            if not isinstance(cid, str) or not _ANTHROPIC_ID.match(cid) or cid in seen:
                return self._error(
                    "anthropic", 400, f"requests.{i}.custom_id: a unique id of 1-64 [a-zA-Z0-9_-]"
                )
            if not isinstance(params, dict):
                return self._error("anthropic", 400, f"requests.{i}.params: an object is required")
            seen.add(cid)
            requests.append(BatchRequest(cid, params, None, orjson.dumps(item)))
        fault = self._pop_fault(JOB_FAULTS, "anthropic", raw)
        if fault is not None and fault.kind == "batch_fail":  # Anthropic validates a batch when it is created
            return self._error(
                "anthropic", 400, fault.spec.get("message") or "fake server: scripted batch_fail fault"
            )
        job = self._open_job("anthropic", "anthropic.messages", requests, fault, "msgbatch_")
        return self._reply(200, self._anthropic_batch(job))

    def _anthropic_batch(self, job: BatchJob) -> dict[str, Any]:
        status = {"running": "in_progress", "cancelling": "canceling"}.get(job.state, "ended")
        ended = status == "ended"
        return {
            "id": job.id,
            "type": "message_batch",
            "processing_status": status,
            "request_counts": {
                "processing": job.count("pending"),
                "succeeded": job.count("answered", ok=True),
                "errored": job.count("answered", ok=False),
                "canceled": job.count("cancelled"),
                "expired": job.count("expired"),
            },
            "created_at": _rfc3339(job.created),
            "expires_at": _rfc3339(job.created + 86_400),
            "ended_at": _rfc3339(job.ended) if job.ended is not None else None,
            "cancel_initiated_at": _rfc3339(job.cancelled_at) if job.cancelled_at is not None else None,
            "archived_at": None,
            "results_url": f"{self.url}/v1/messages/batches/{job.id}/results" if ended else None,
        }

    @staticmethod
    def _anthropic_results(job: BatchJob) -> bytes:
        lines = []
        for r in job.requests:
            if r.fate == "answered" and r.status == 200:
                result: dict[str, Any] = {"type": "succeeded", "message": r.payload}
            elif r.fate == "answered":
                result = {"type": "errored", "error": r.payload}
            else:
                result = {"type": "canceled" if r.fate == "cancelled" else "expired"}
            lines.append(orjson.dumps({"custom_id": r.custom_id, "result": result}))
        return b"\n".join(lines) + b"\n"

    # -- Gemini batch mode ---------------------------------------------------------------------
    async def _gemini_batch_route(self, request: Any, method: str, parts: list[str], query: str) -> Any:
        refused = self._refused("gemini", request, query)
        if refused is not None:
            return refused
        if method == "POST" and parts[-1].endswith(":batchGenerateContent") and len(parts) == 4:
            model = parts[3][: -len(":batchGenerateContent")]
            return await self._gemini_create(request, model.removeprefix("models/"))
        if len(parts) == 4 and parts[2] == "batches":
            batch_id, _, verb = parts[3].partition(":")
            job = self._job(batch_id, "gemini")
            if job is None:
                return self._error("gemini", 404, f"fake server: no batch batches/{batch_id}")
            if method == "GET" and not verb:
                self._advance(job)
                return self._reply(200, self._gemini_operation(job))
            if method == "POST" and verb == "cancel":
                self._cancel(job)
                return self._reply(200, {})
            if method == "DELETE" and not verb:
                del self._jobs[batch_id]
                return self._reply(200, {})
        return None

    async def _gemini_create(self, request: Any, path_model: str) -> Any:
        raw = await request.read()
        body = self._json_body(raw)
        batch = body.get("batch") if isinstance(body, dict) else None
        source = batch.get("inputConfig") if isinstance(batch, dict) else None
        items = ((source or {}).get("requests") or {}).get("requests") if isinstance(source, dict) else None
        if not isinstance(items, list) or not items:
            return self._error(
                "gemini", 400, "fake server: batch.inputConfig.requests.requests must hold inlined requests"
            )
        requests: list[BatchRequest] = []
        for i, item in enumerate(items):
            req = item.get("request") if isinstance(item, dict) else None
            if not isinstance(req, dict):
                return self._error(
                    "gemini", 400, f"batch.inputConfig.requests.requests[{i}].request is required"
                )
            online = {
                k: v for k, v in req.items() if k != "model"
            }  # the online body names its model in the path
            model = str(req.get("model") or path_model).removeprefix("models/")
            metadata = item.get("metadata")
            key = metadata.get("key") if isinstance(metadata, dict) else None
            requests.append(BatchRequest(str(key or i), online, model, orjson.dumps(item), metadata=metadata))
        fault = self._pop_fault(JOB_FAULTS, "gemini", raw)
        job = self._open_job("gemini", "gemini.generate_content", requests, fault, "fake")
        job.info.update(
            model=path_model, display_name=batch.get("displayName") if isinstance(batch, dict) else None
        )
        return self._reply(200, self._gemini_operation(job))

    def _gemini_operation(self, job: BatchJob) -> dict[str, Any]:
        name = f"batches/{job.id}"
        n = len(job.requests)
        ok = job.count("answered", ok=True)
        meta: dict[str, Any] = {
            "@type": "type.googleapis.com/google.ai.generativelanguage.v1beta.GenerateContentBatch",
            "name": name,
            "model": f"models/{job.info.get('model')}",
            "createTime": _rfc3339(job.created),
            "updateTime": _rfc3339(job.ended or job.created),
            "state": _GEMINI_STATE[job.state],
            "batchStats": {
                "requestCount": str(n),
                "successfulRequestCount": str(ok),
                "failedRequestCount": str(job.count("answered", ok=False)),
                "pendingRequestCount": str(job.count("pending")),
            },
        }
        if job.info.get("display_name"):
            meta["displayName"] = job.info["display_name"]
        op: dict[str, Any] = {"name": name, "metadata": meta, "done": job.finished}
        if job.state == "failed":
            op["error"] = {"code": 400, "message": job.fail}
        elif job.finished:
            inlined = []
            for r in job.requests:
                if r.fate != "answered":
                    continue
                entry: dict[str, Any] = (
                    {"response": r.payload} if r.status == 200 else {"error": r.payload.get("error")}
                )
                if r.metadata is not None:
                    entry["metadata"] = r.metadata
                inlined.append(entry)
            output = {"inlinedResponses": {"inlinedResponses": inlined}}
            meta["output"] = output
            meta["endTime"] = _rfc3339(job.ended or job.created)
            op["response"] = {
                "@type": "type.googleapis.com/google.ai.generativelanguage.v1beta.GenerateContentBatchOutput",
                **output,
            }
        return op


__all__ = ["BatchJob", "BatchRequest", "BatchWire"]
