"""The fake LLM server with a body log, for counting repeats across server restarts.

`python -m tests.faults.logged_server --body-log PATH [fake server options]` serves
`factory.testing.fake_llm_server.FakeLLMServer` and appends one line per provider request to PATH
when it arrives (`R <body> <messages> <time>`) and one when it is answered (`<status> <body>
<messages> <time>`). `<body>` is a digest of the canonical request body (the one the fake's own
`repeated_bodies` counter uses), `<messages>` a digest of the `messages` array as the client
serialised it (equal to a digest of `llm_calls.request_json`). Each line is one `os.write` on an
O_APPEND descriptor: a SIGKILLed server loses nothing it logged, and several server processes
(the provider going away and coming back on the same port) share one log.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import sys
import time
from typing import Any

import orjson

from factory.testing.fake_llm_server import FakeLLMServer
from factory.testing.server_cli import serve_until_signalled


def digest(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()[:16]


class LoggedFakeServer(FakeLLMServer):
    def __init__(self, *args: Any, body_log: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._log_fd = os.open(body_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def _log(self, kind: str, body: str, messages: str) -> None:
        os.write(self._log_fd, f"{kind} {body} {messages} {time.time():.6f}\n".encode())

    async def _provider(
        self, request: Any, provider: str, endpoint: str, path_model: str | None, query: str
    ) -> Any:
        raw = await request.read()  # aiohttp keeps the bytes: the fake reads them again
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        if isinstance(body, dict):
            canon = orjson.dumps([endpoint, path_model, body], option=orjson.OPT_SORT_KEYS)
            b, m = digest(canon), digest(orjson.dumps(body.get("messages")))
        else:
            b = m = "-"
        self._log("R", b, m)
        response = await super()._provider(request, provider, endpoint, path_model, query)
        self._log(str(response.status), b, m)
        return response


async def _serve(args: argparse.Namespace) -> None:
    server = LoggedFakeServer(
        args.host, args.port, latency=args.latency, rate_limit=args.rate_limit, body_log=args.body_log
    )
    await serve_until_signalled(server)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.faults.logged_server")
    p.add_argument("--body-log", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--latency", type=float, default=0.0)
    p.add_argument("--rate-limit", type=float, default=0.0)
    args = p.parse_args(argv)
    asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
