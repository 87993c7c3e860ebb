"""Command line of the fake LLM server: ``python -m factory.testing.fake_llm_server [options]``.

Serves :class:`~factory.testing.fake_llm_server.FakeLLMServer` until SIGTERM/SIGINT and prints
``READY http://HOST:PORT`` once it listens (what :class:`~factory.testing.server_process.FakeServerProcess`
waits for).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import Any

from factory.testing.profiles import PRESETS, Profile, parse_profile

__all__ = ["main"]


def _profile_arg(value: str) -> Profile | None:
    try:
        return parse_profile(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m factory.testing.fake_llm_server",
        description="Fake OpenAI/Anthropic/Gemini server for tests and benchmarks (a test double).",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 = pick a free port (default)")
    p.add_argument("--latency", type=float, default=0.0, help="seconds to wait before each answer")
    p.add_argument("--rate-limit", type=float, default=0.0, help="requests/s before 429s (0 = off)")
    p.add_argument("--fail-rate", type=float, default=0.0, help="probability of a random 500")
    p.add_argument("--fail-seed", type=int, default=0, help="seed of the --fail-rate coin")
    p.add_argument("--require-key", default=None, help="API key every request must carry")
    p.add_argument(
        "--profile",
        type=_profile_arg,
        default=None,
        help=f"field profile of structured answers: a preset ({', '.join(sorted(PRESETS))}) or a JSON "
        'mapping such as \'{"ambiguity": {"weights": [5, 3, 1]}, "label": {"choices": {"VIOLATED": 0.1, '
        '"NOT VIOLATED": 0.9}}}\'',
    )
    p.add_argument(
        "--reasoning",
        action="store_true",
        help="every OpenAI answer carries reasoning_content (like a vLLM reasoning parser)",
    )
    p.add_argument(
        "--batch-delay",
        type=float,
        default=0.2,
        help="seconds a batch job stays in progress before it is processed (default 0.2)",
    )
    p.add_argument("--no-uvloop", action="store_true", help="use the default asyncio event loop")
    return p.parse_args(argv)


async def _serve(args: argparse.Namespace) -> None:
    # imported here, not at the top: fake_llm_server imports this module to re-export main
    from factory.testing.fake_llm_server import FakeLLMServer

    server = FakeLLMServer(
        args.host,
        args.port,
        latency=args.latency,
        rate_limit=args.rate_limit,
        fail_rate=args.fail_rate,
        fail_seed=args.fail_seed,
        require_key=args.require_key,
        profile=args.profile,
        reasoning=args.reasoning,
        batch_delay_s=args.batch_delay,
    )
    await serve_until_signalled(server)


async def serve_until_signalled(server: Any) -> None:
    """Start a server, print `READY <url>` for the parent process, and serve until SIGTERM/SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - non-POSIX
            signal.signal(sig, lambda *_: loop.call_soon_threadsafe(stop.set))
    url = await server.start()
    sys.stdout.write(f"READY {url}\n")
    sys.stdout.flush()
    try:
        await stop.wait()
    finally:
        await server.stop()


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    loop_factory = None
    if not args.no_uvloop:
        try:
            import uvloop

            loop_factory = uvloop.new_event_loop
        except ImportError:
            pass
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(_serve(args))
    return 0
