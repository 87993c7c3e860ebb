"""A fake LLM provider server: a TEST DOUBLE, not a model.

Nothing here calls or imitates a real language model. The server speaks just enough of the wire
protocols of three hosted LLM APIs for the real ``openai``, ``anthropic`` and ``google-genai`` SDK
clients to talk to it, so that client code, data-generation pipelines and throughput benchmarks can
be tested offline, deterministically and fast:

* OpenAI Chat Completions: ``POST /v1/chat/completions`` (and ``/chat/completions``), ``GET /v1/models``.
* Anthropic Messages: ``POST /v1/messages`` (``GET /v1/models`` answers in Anthropic's shape when
  the request carries an ``anthropic-version`` header).
* Google Gemini: ``POST /{v1beta|v1|v1alpha}/models/{model}:generateContent``.
* The providers' batch APIs (module ``batch_wire``): OpenAI Batch (``POST /v1/files`` with a JSONL
  file of ``/v1/chat/completions`` requests, ``POST /v1/batches``, ``GET /v1/batches/{id}``,
  ``POST /v1/batches/{id}/cancel``, ``GET /v1/files/{id}/content`` for the output and error files),
  Anthropic Message Batches (``POST /v1/messages/batches``, ``GET /v1/messages/batches/{id}``, its
  ``/results`` JSONL and ``/cancel``) and Gemini batch mode (``POST .../models/{model}:batchGenerateContent``
  with inlined requests, ``GET /{version}/batches/{id}`` as a long-running operation whose
  ``metadata.output`` holds the inlined responses, ``:cancel``). Every request of a job is answered by
  the online endpoint's own handler for the same body, so a batched answer equals the online one
  (text, usage, structured output, reasoning, prompt-cache accounting). A job stays in progress for
  ``batch_delay_s`` seconds (default 0.2, CLI ``--batch-delay``) and is processed when next looked at.

Answers are synthetic. When the request asks for structured output (OpenAI ``response_format``
``json_schema``, a forced Anthropic tool or ``output_format``/``output_config``, Gemini
``responseSchema``/``responseJsonSchema``) the answer is a JSON document that is a valid instance of
the requested schema, generated deterministically from a seed derived from the conversation and the
model name (same request => same answer). Otherwise the answer is a short deterministic sentence.

A request that asks for the model's own reasoning gets deterministic synthetic reasoning (a few
sentences of filler, seeded like the answer) in its protocol's shape: OpenAI
``choices[i].message.reasoning_content`` (OpenAI-compatible reasoning servers such as vLLM and
DeepSeek; sent when the server runs with ``reasoning=True``, or the request has ``reasoning_effort``
or ``include_reasoning: true``), an Anthropic ``{"type": "thinking", "thinking": ..., "signature": ...}``
block before the tool_use/text block (``thinking`` enabled; the API's thinking rules are enforced with
400s: budget >= 1024 and < ``max_tokens``, no forced ``tool_choice``, ``temperature`` 1 or unset,
``top_p`` >= 0.95 or unset; tools under ``auto`` are then called), a Gemini part
``{"text": ..., "thought": true}`` before the answer part (``thinkingConfig.includeThoughts``).

Failures are injected through a control API that is not part of any provider protocol:

* ``POST /_fake/script`` with ``{"faults": [...]}`` appends faults to a FIFO queue; every new
  provider request pops the first queued fault that applies to it. Fault kinds: ``rate_limit``
  (429 + ``Retry-After``), ``server_error`` (500), ``overloaded`` (529 Anthropic / 503 others),
  ``hang`` (send nothing for ``seconds``, then answer normally), ``malformed`` (200, non-JSON
  content), ``truncated`` (200, JSON cut in the middle, length/max_tokens finish reason),
  ``wrong_schema`` (200, valid JSON that violates the schema), ``empty`` (200, empty content),
  ``bad_request`` (400), ``unauthorized`` (401). Optional fault keys: ``match`` (substring the raw
  request body must contain), ``provider`` (``openai``/``anthropic``/``gemini``), ``times``
  (enqueue that many copies), ``retry_after`` (rate_limit), ``seconds`` (hang), ``message``.
  Batch faults, taken by batch jobs only (online requests never take them): ``batch_fail`` (the next
  job fails as a whole: OpenAI status ``failed`` with ``errors``, Gemini ``BATCH_STATE_FAILED`` with
  ``error``; Anthropic validates at creation, so there the create call gets a 400), ``batch_expire``
  (the next job expires with its last ``unprocessed`` requests, or ``share`` of them (default 0.5, at
  least one), never run), ``batch_item_error`` (the request of a job whose body contains ``match``
  gets an errored result of HTTP ``status``: 500 by default, retryable; 400 for an invalid request).
  The content faults apply to a batch's requests as to online ones; the error-status faults and
  ``hang`` to online requests only.
* ``GET /_fake/stats`` returns counters; ``POST /_fake/reset`` clears counters and the queue.
  ``requests`` counts generation requests only (not ``GET /v1/models`` nor ``/_fake/``);
  ``repeated_bodies`` counts requests whose canonical JSON body (endpoint, model, messages, params)
  had been seen before; ``reasoning_requests`` counts answered requests that asked for reasoning and
  ``reasoning_answers`` those whose answer carried it; ``cached_tokens`` the prompt tokens reported as
  read from the prompt cache; ``batch_jobs`` the batch jobs created and ``batch_requests`` their
  requests (batch requests are not in ``requests``). The requests a batch job processes count in
  ``unique_bodies``/``repeated_bodies`` in one space with online bodies (a body answered online and
  again in a batch is a repeat; a request an expired or cancelled job never ran is not counted, so
  resending it is none). ``require_key`` applies to every batch route too.
* Prompt caching, deterministic: a request whose prefix (OpenAI: the leading system messages; Anthropic:
  the system blocks, when one carries ``cache_control``; Gemini: the system instruction) was sent
  before on the same wire reports that prefix's tokens as cached (``prompt_tokens_details.cached_tokens``,
  ``cache_read_input_tokens`` with ``cache_creation_input_tokens`` on the first, and
  ``cachedContentTokenCount``).

Per request the server decides, in this order: a missing/wrong key (``require_key``) => 401; the
server-side limiter (``rate_limit``) => 429; the next applicable scripted fault (popped only by
requests that got past the first two); the ``fail_rate`` coin => 500. It then sleeps ``latency``
and answers. OpenAI function tools forced through ``tool_choice`` (a named function or
``"required"``) get a ``tool_calls`` answer whose arguments fit the function's ``parameters``.

Server-wide options (constructor arguments of :class:`FakeLLMServer` and CLI flags): ``latency``,
``rate_limit`` (requests/s, 0 = off), ``fail_rate`` + ``fail_seed`` (random 500s), ``require_key``,
``profile`` (below), ``reasoning`` (every OpenAI answer carries ``reasoning_content``, like a vLLM
reasoning parser), ``batch_delay_s`` (how long a batch job stays in progress).

Field profiles (``profile``, CLI ``--profile NAME|JSON``; module ``profiles``) make structured answers
skewed like a real model's instead of uniform: a mapping from a property NAME to a distribution,
applied wherever an object property of that name is generated and its schema allows the values.
``{"weights": [w0, w1, ...]}`` (integer properties) gives relative weights of the values
``minimum``, ``minimum + 1``, ... (missing weights are 0, values outside the schema are never
produced); ``{"choices": {"VIOLATED": 0.08, "NOT VIOLATED": 0.92}}`` (enum/string properties) gives
relative weights of values. The draws come from the per-request RNG, so the same request still gets
the same answer, across restarts too. The preset ``labeller`` is a labeller double: per-turn
``ambiguity`` 0..10 with weights ``[30, 22, 15, 11, 7, 5, 3, 3, 2, 1, 1]`` (10% of draws >= 6, 7% > 6)
and 8% ``"VIOLATED"`` labels. ``POST /_fake/profile`` with ``{"profile": NAME | {...} | null}`` sets
it at run time (for the requests that arrive afterwards; ``/_fake/reset`` keeps it), and
``GET /_fake/profile`` returns it. Without a profile the answers are exactly the plain generator's.

Run it as ``python -m factory.testing.fake_llm_server --port 0`` (prints ``READY http://127.0.0.1:PORT``)
or from tests through :class:`FakeServerProcess`, a context manager that owns the subprocess.

Where the parts live (all in ``factory/testing``): this module holds :class:`FakeLLMServer` (routing,
control API, auth/limiter/fault decision, accounting), which composes the three wire protocols
``openai_wire``, ``anthropic_wire`` and ``google_wire`` (route handler, key check, error envelope
and rate-limit headers of each) and ``batch_wire`` (the three batch APIs and their job store); ``answers`` builds the reply content and applies content faults;
``faults`` holds the fault kinds, scripted faults and the token bucket; ``schema_instances`` (over
``schema_compiler`` and ``vocabulary``) generates schema instances; ``profiles`` parses field profiles
and holds the presets; ``server_cli`` is the command line and ``server_process`` holds
:class:`FakeServerProcess`. The public names are re-exported here.
"""

from __future__ import annotations

import asyncio
import collections
import os
import random
import socket
import sys
import time
import traceback
from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from aiohttp import web

from factory.testing.answers import MALFORMED_TEXT, ntokens
from factory.testing.anthropic_wire import AnthropicWire
from factory.testing.batch_wire import BatchWire
from factory.testing.faults import BATCH_FAULTS, ERROR_STATUS, FAULT_KINDS, Fault, TokenBucket, parse_faults
from factory.testing.google_wire import GoogleWire
from factory.testing.openai_wire import OpenAIWire
from factory.testing.profiles import PRESETS, Profile, ProfileLike, parse_profile, use_profile
from factory.testing.schema_instances import (
    SchemaError,
    compile_schema,
    instance_for_schema,
    seed_for,
    violating_instance,
)
from factory.testing.server_cli import main
from factory.testing.server_process import FakeServerProcess

__all__ = [
    "FAULT_KINDS",
    "MALFORMED_TEXT",
    "PRESETS",
    "FakeLLMServer",
    "FakeServerProcess",
    "Profile",
    "SchemaError",
    "compile_schema",
    "instance_for_schema",
    "main",
    "parse_profile",
    "seed_for",
    "violating_instance",
]

_JSON = "application/json"
_MAX_BODY = 64 * 1024 * 1024


class FakeLLMServer(OpenAIWire, AnthropicWire, GoogleWire, BatchWire):
    """In-process fake LLM server (a test double). Use :class:`FakeServerProcess` from sync tests.

    The wire protocols are mixins (:class:`OpenAIWire`, :class:`AnthropicWire`, :class:`GoogleWire`);
    this class routes requests to them and owns the state they share.

    ``await server.start()`` binds ``host:port`` (port 0 = any free port) and returns the base URL;
    ``await server.stop()`` closes it. The control methods ``script``/``stats``/``reset``/
    ``set_profile`` mirror the ``/_fake/`` HTTP API.

    ``profile``: a field profile for structured answers (a preset name such as ``"labeller"``, a
    mapping ``{property: {"weights": [...]} | {"choices": {...}}}``, its JSON text, or None = plain
    uniform answers); see the module docstring. Raises ValueError on a bad profile.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        latency: float = 0.0,
        rate_limit: float = 0.0,
        fail_rate: float = 0.0,
        fail_seed: int = 0,
        require_key: str | None = None,
        reasoning: bool = False,
        requests_limit: int = 10_000,
        tokens_limit: int = 2_000_000,
        profile: ProfileLike | None = None,
        batch_delay_s: float = 0.2,
    ) -> None:
        if not 0.0 <= fail_rate <= 1.0:
            raise ValueError("fail_rate must be within [0, 1]")
        self.profile: Profile | None = parse_profile(profile)
        self.host = host
        self.port = port
        self.latency = float(latency)
        self.rate_limit = float(rate_limit)
        self.fail_rate = float(fail_rate)
        self.fail_seed = int(fail_seed)
        self.require_key = require_key or None
        self.reasoning = bool(reasoning)
        self.batch_delay_s = max(0.0, float(batch_delay_s))
        self.requests_limit = int(rate_limit * 60) if rate_limit else int(requests_limit)
        self.tokens_limit = int(tokens_limit)
        self._limiter = TokenBucket(rate_limit) if rate_limit > 0 else None
        self._fail_rng = random.Random(self.fail_seed)
        self._runner: Any = None
        self._closing: asyncio.Event | None = None
        self._counter = 0
        self.reset()

    # -- control -------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget all counters, seen bodies and queued faults."""
        self._faults: collections.deque[Fault] = collections.deque()
        self._requests = 0
        self._by_endpoint: dict[str, int] = {}
        self._seen: set[int] = set()
        self._repeated = 0
        self._faults_applied = 0
        self._by_fault: dict[str, int] = {}
        self._rate_limited = 0
        self._random_failures = 0
        self._auth_failures = 0
        self._reasoning_requests = 0
        self._reasoning_answers = 0
        self._prefixes: set[str] = set()
        self._cached_tokens = 0
        self._win = int(time.time() // 60)
        self._win_reqs = 0
        self._win_tokens = 0
        self._fail_rng = random.Random(self.fail_seed)
        self._batch_reset()

    def script(self, faults: Iterable[Mapping[str, Any]]) -> int:
        """Append faults to the FIFO queue; returns the queue length. Raises ValueError on a bad fault."""
        self._faults.extend(parse_faults(faults))
        return len(self._faults)

    def set_profile(self, profile: ProfileLike | None) -> dict[str, Any]:
        """Replace the field profile (None = none) for the requests that arrive from now on.

        Returns what ``GET /_fake/profile`` answers. Raises ValueError on a bad profile.
        """
        self.profile = parse_profile(profile)
        return self.profile_info()

    def profile_info(self) -> dict[str, Any]:
        """``{"profile": spec or None, "name": preset name or None}``."""
        p = self.profile
        return {"profile": dict(p.spec) if p is not None else None, "name": p.name if p is not None else None}

    def stats(self) -> dict[str, Any]:
        return {
            "requests": self._requests,
            "by_endpoint": dict(self._by_endpoint),
            "unique_bodies": len(self._seen),
            "repeated_bodies": self._repeated,
            "faults_applied": self._faults_applied,
            "faults_by_kind": dict(self._by_fault),
            "faults_pending": len(self._faults),
            "rate_limited": self._rate_limited,
            "random_failures": self._random_failures,
            "auth_failures": self._auth_failures,
            "reasoning_requests": self._reasoning_requests,
            "reasoning_answers": self._reasoning_answers,
            "cached_tokens": self._cached_tokens,
            **self._batch_stats(),
        }

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> str:
        self._closing = asyncio.Event()
        loop = asyncio.get_running_loop()

        def make_request(message: Any, payload: Any, protocol: Any, writer: Any, task: Any) -> Any:
            return web.BaseRequest(message, payload, protocol, writer, task, loop, client_max_size=_MAX_BODY)

        server = web.Server(
            self._handle, request_factory=make_request, handler_cancellation=True, access_log=None
        )
        self._runner = web.ServerRunner(server, shutdown_timeout=0.5)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        site = web.SockSite(self._runner, sock, backlog=2048)
        await site.start()
        return self.url

    async def stop(self) -> None:
        if self._closing is not None:
            self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeLLMServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- HTTP plumbing -------------------------------------------------------------------------
    def _next_id(self) -> str:
        self._counter += 1
        return f"{self._counter:08x}{os.urandom(8).hex()}"

    @staticmethod
    def _reply(status: int, payload: Any, headers: dict[str, str] | None = None) -> Any:
        h = {"Content-Type": _JSON}
        if headers:
            h.update(headers)
        body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        return web.Response(status=status, body=body, headers=h)

    async def _handle(self, request: Any) -> Any:
        raw_path = request.raw_path
        path, _, query = raw_path.partition("?")
        method = request.method
        try:
            if method == "POST":
                if path == "/v1/chat/completions" or path == "/chat/completions":
                    return await self._provider(request, "openai", "openai.chat_completions", None, query)
                if path == "/v1/messages":
                    return await self._provider(request, "anthropic", "anthropic.messages", None, query)
                if path.endswith(":generateContent"):
                    parts = path.split("/", 3)  # ['', 'v1beta', 'models', 'gemini-x:generateContent']
                    if len(parts) == 4 and parts[1] in ("v1beta", "v1", "v1alpha"):
                        model = parts[3][: -len(":generateContent")]
                        if model.startswith("models/"):
                            model = model[len("models/") :]
                        return await self._provider(
                            request, "gemini", "gemini.generate_content", model, query
                        )
                if path == "/_fake/script":
                    return await self._control_script(request)
                if path == "/_fake/reset":
                    self.reset()
                    return self._reply(200, {"ok": True})
                if path == "/_fake/profile":
                    return await self._control_profile(request)
            elif method == "GET":
                if path == "/v1/models" or path == "/models":
                    return self._models(request)
                if path == "/_fake/stats":
                    return self._reply(200, self.stats())
                if path == "/_fake/profile":
                    return self._reply(200, self.profile_info())
                if path == "/_fake/health" or path == "/healthz":
                    return self._reply(200, {"ok": True, "fake": True})
            batch = await self._batch_handle(request, method, path, query)
            if batch is not None:
                return batch
            return self._reply(404, {"error": {"message": f"fake server: no route for {method} {path}"}})
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug in the fake must not look like a hang
            traceback.print_exc(file=sys.stderr)
            return self._reply(500, {"error": {"message": f"fake server internal error: {exc!r}"}})

    async def _control_script(self, request: Any) -> Any:
        try:
            body = orjson.loads(await request.read())
            faults = body.get("faults") if isinstance(body, dict) else body
            if isinstance(faults, dict):
                faults = [faults]
            if not isinstance(faults, list):
                raise ValueError('expected {"faults": [...]}')
            n = self.script(faults)
        except (ValueError, orjson.JSONDecodeError) as exc:
            return self._reply(400, {"error": {"message": str(exc)}})
        return self._reply(200, {"ok": True, "queued": n})

    async def _control_profile(self, request: Any) -> Any:
        try:
            body = orjson.loads(await request.read())
            if isinstance(body, str) or body is None:
                profile = body
            elif isinstance(body, dict) and set(body) == {"profile"}:
                profile = body["profile"]
            else:
                raise ValueError('expected {"profile": PRESET_NAME | {...} | null}')
            info = self.set_profile(profile)
        except (ValueError, orjson.JSONDecodeError) as exc:
            return self._reply(400, {"error": {"message": str(exc)}})
        return self._reply(200, {"ok": True, **info})

    def _models(self, request: Any) -> Any:
        if "anthropic-version" in request.headers:
            return self._reply(200, self._anthropic_models())
        return self._reply(200, self._openai_models())

    # -- auth ----------------------------------------------------------------------------------
    def _key_ok(self, provider: str, request: Any, query: str) -> bool:
        key = self.require_key
        h = request.headers
        if provider == "openai":
            return self._openai_key_ok(h, key)
        if provider == "anthropic":
            return self._anthropic_key_ok(h, key)
        return self._gemini_key_ok(h, key, query)

    # -- per-provider errors -------------------------------------------------------------------
    def _error(self, provider: str, status: int, message: str, retry_after: float | None = None) -> Any:
        rid = self._next_id()
        rem_req, rem_tok = self._account(0)
        if status == 429:
            rem_req = rem_tok = 0
        headers = self._ratelimit_headers(provider, rem_req, rem_tok)
        if retry_after is not None:
            ra = f"{retry_after:g}" if retry_after < 1e6 else str(int(retry_after))
            headers["Retry-After"] = ra
        if provider == "openai":
            status, payload = self._openai_error_body(status, message, rid, headers)
        elif provider == "anthropic":
            status, payload = self._anthropic_error_body(status, message, rid, headers)
        else:
            status, payload = self._gemini_error_body(status, message, retry_after)
        return self._reply(status, payload, headers)

    # -- the provider request path -------------------------------------------------------------
    async def _provider(
        self, request: Any, provider: str, endpoint: str, path_model: str | None, query: str
    ) -> Any:
        # every answer of this request is generated under the profile set when it arrived
        with use_profile(self.profile):
            return await self._provider_request(request, provider, endpoint, path_model, query)

    async def _provider_request(
        self, request: Any, provider: str, endpoint: str, path_model: str | None, query: str
    ) -> Any:
        raw = await request.read()
        self._requests += 1
        self._by_endpoint[endpoint] = self._by_endpoint.get(endpoint, 0) + 1
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            return self._error(provider, 400, "fake server: request body is not a JSON object")
        self._note_body(endpoint, path_model, body)

        # decide the outcome at arrival; answer after the configured latency
        outcome: tuple[int, str, float | None] | None = None
        fault: Fault | None = None
        if self.require_key is not None and not self._key_ok(provider, request, query):
            self._auth_failures += 1
            outcome = (401, "fake server: invalid or missing API key", None)
        elif self._limiter is not None:
            wait = self._limiter.take()
            if wait > 0.0:
                self._rate_limited += 1
                outcome = (429, "fake server: rate limit exceeded", max(0.001, round(wait, 3)))
        if outcome is None and self._faults:
            for i, f in enumerate(self._faults):
                if f.kind not in BATCH_FAULTS and f.applies(provider, raw):
                    del self._faults[i]
                    fault = f
                    break
            if fault is not None:
                self._faults_applied += 1
                self._by_fault[fault.kind] = self._by_fault.get(fault.kind, 0) + 1
        if (
            outcome is None
            and fault is None
            and self.fail_rate > 0.0
            and self._fail_rng.random() < self.fail_rate
        ):
            self._random_failures += 1
            outcome = (500, "fake server: random failure (--fail-rate)", None)

        if self.latency > 0.0:
            await asyncio.sleep(self.latency)
        if outcome is not None:
            return self._error(provider, *outcome)

        content_fault: str | None = None
        if fault is not None:
            kind = fault.kind
            if kind in ERROR_STATUS:
                status = ERROR_STATUS[kind]
                msg = fault.spec.get("message") or f"fake server: scripted {kind} fault"
                ra = None
                if kind == "rate_limit":
                    ra = float(fault.spec.get("retry_after", 1.0))
                return self._error(provider, status, msg, ra)
            if kind == "hang":
                seconds = float(fault.spec.get("seconds", 30.0))
                assert self._closing is not None
                try:
                    await asyncio.wait_for(self._closing.wait(), seconds)
                except TimeoutError:
                    pass
            else:
                content_fault = kind
        return self._answer(provider, body, path_model, content_fault)

    def _note_body(self, endpoint: str, path_model: str | None, body: dict) -> None:
        """Count a request body as seen (``unique_bodies``) or seen before (``repeated_bodies``); online
        requests and the requests of batch jobs share this one space."""
        canon = orjson.dumps([endpoint, path_model, body], option=orjson.OPT_SORT_KEYS)
        digest = hash(canon)  # 64-bit SipHash: enough to tell bodies apart within one process
        if digest in self._seen:
            self._repeated += 1
        else:
            self._seen.add(digest)

    def _answer(self, provider: str, body: dict, path_model: str | None, content_fault: str | None) -> Any:
        """The provider's answer to a generation request body (online, or one request of a batch job)."""
        if provider == "openai":
            return self._openai(body, content_fault)
        if provider == "anthropic":
            return self._anthropic(body, content_fault)
        return self._gemini(body, path_model or "gemini-fake", content_fault)

    def _count_reasoning(self, asked: bool, answered: bool) -> None:
        """Count an answered request that asked for reasoning / whose answer carries it."""
        self._reasoning_requests += asked
        self._reasoning_answers += answered

    def _cached_prefix(self, provider: str, prefix: str) -> tuple[int, bool]:
        """Prompt caching, deterministically: (tokens of `prefix`, whether a previous request to this
        provider's wire sent the same prefix, i.e. a cache hit). The first request writes it."""
        if not prefix:
            return 0, False
        key = f"{provider}\0{prefix}"
        n = ntokens(len(prefix))
        if key in self._prefixes:
            self._cached_tokens += n
            return n, True
        self._prefixes.add(key)
        return n, False

    def _account(self, tokens: int) -> tuple[int, int]:
        win = int(time.time() // 60)
        if win != self._win:
            self._win, self._win_reqs, self._win_tokens = win, 0, 0
        self._win_reqs += 1
        self._win_tokens += tokens
        return (
            max(0, self.requests_limit - self._win_reqs),
            max(0, self.tokens_limit - self._win_tokens),
        )

    def _ratelimit_headers(self, provider: str, rem_req: int, rem_tok: int) -> dict[str, str]:
        if provider == "openai":
            return self._openai_ratelimit_headers(rem_req, rem_tok)
        if provider == "anthropic":
            return self._anthropic_ratelimit_headers(rem_req, rem_tok)
        return {}


if __name__ == "__main__":
    sys.exit(main())
