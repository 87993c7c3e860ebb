"""Throughput of the LLM layer against a local OpenAI-compatible server (the fake server).

Each scenario starts a fresh server process with a simulated latency and server-side rate limit,
then drives (a) a plain AsyncOpenAI loop with a semaphore and (b) the factory's LLMClient at the
same concurrency, both asking for structured output (json_schema) and validating it with pydantic.
Reported: achieved calls/s, share of the theoretical limit min(concurrency / latency, rate limit),
client CPU time per call (overhead), 429s seen, peak RSS of this process.

    .venv/bin/python bench/llm_throughput.py            # all scenarios
    .venv/bin/python bench/llm_throughput.py --quick    # fewer requests
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import openai
from pydantic import BaseModel, Field

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from factory.llm.client import LLMClient  # noqa: E402
from factory.llm.config import EndpointConfig  # noqa: E402
from factory.llm.schema import json_schema  # noqa: E402
from factory.llm.types import GenParams, LLMRequest, Message  # noqa: E402
from factory.store.db import Store  # noqa: E402
from factory.testing.server_process import FakeServerProcess  # noqa: E402


class Verdict(BaseModel):
    label: str = Field(max_length=20)
    ambiguity: int = Field(ge=0, le=10)
    explanation: str = Field(max_length=200)


# Every implementation makes one untimed call before the timed ones (`await one(-1)`): the first
# call of a process creates the SDK client (and imports its modules lazily), about 0.1 s that a long
# build pays once. The connections for the first wave of requests are still opened inside the timed
# part. The server counts the warm-up call too.
WARM_UP = 1


def _messages(i: int) -> list[dict]:
    return [
        {"role": "system", "content": "You judge one rule."},
        {"role": "user", "content": f"Request number {i}: is rule 3 violated in this dialogue?"},
    ]


async def plain_sdk(url: str, n: int, concurrency: int) -> dict:
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="bench", max_retries=8)
    sem = asyncio.Semaphore(concurrency)
    fmt = {
        "type": "json_schema",
        "json_schema": {"name": "Verdict", "schema": json_schema(Verdict), "strict": True},
    }

    async def one(i: int) -> None:
        async with sem:
            r = await client.chat.completions.create(
                model="bench-model", messages=_messages(i), response_format=fmt, max_tokens=200
            )
            Verdict.model_validate_json(r.choices[0].message.content)

    done: list[float] = []

    async def timed(i: int) -> None:
        await one(i)
        done.append(time.perf_counter())

    await one(-1)  # untimed warm-up: client creation and lazy imports (see WARM_UP)
    t0, c0 = time.perf_counter(), time.process_time()
    await asyncio.gather(*(timed(i) for i in range(n)))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    await client.close()
    return {"wall_s": wall, "cpu_s": cpu, "done": done}


async def raw_aiohttp(url: str, n: int, concurrency: int) -> dict:
    """The floor: one aiohttp session, a semaphore, orjson bodies, pydantic validation; no retries."""
    import aiohttp
    import orjson

    sem = asyncio.Semaphore(concurrency)
    fmt = {
        "type": "json_schema",
        "json_schema": {"name": "Verdict", "schema": json_schema(Verdict), "strict": True},
    }
    headers = {"Authorization": "Bearer bench", "Content-Type": "application/json"}
    done: list[float] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1000)) as session:

        async def one(i: int) -> None:
            body = orjson.dumps(
                {"model": "bench-model", "messages": _messages(i), "response_format": fmt, "max_tokens": 200}
            )
            async with sem:
                while True:  # the server's 429s are retried after its Retry-After
                    async with session.post(url + "/v1/chat/completions", data=body, headers=headers) as r:
                        content = await r.read()
                        if r.status != 429:
                            break
                        await asyncio.sleep(float(r.headers.get("retry-after", "0.1")))
            data = orjson.loads(content)
            Verdict.model_validate_json(data["choices"][0]["message"]["content"])
            done.append(time.perf_counter())

        await one(-1)  # untimed warm-up
        done.clear()
        t0, c0 = time.perf_counter(), time.process_time()
        await asyncio.gather(*(one(i) for i in range(n)))
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"wall_s": wall, "cpu_s": cpu, "done": done}


async def layer(
    url: str, n: int, concurrency: int, rps: float | None, cache: bool, transport: str = "sdk"
) -> dict:
    cfg = EndpointConfig(
        provider="openai",
        model="bench-model",
        base_url=url + "/v1",
        concurrency=concurrency,
        rpm=rps * 60 if rps else None,
        max_retries=8,
        transport=transport,  # type: ignore[arg-type]
    )
    tmp = tempfile.mkdtemp()
    store = Store(Path(tmp) / "bench.duckdb") if cache else None
    client = LLMClient(cache=store.cache if store else None)

    async def one(i: int) -> None:
        req = LLMRequest(
            messages=[Message(**m) for m in _messages(i)],
            output_schema=Verdict,
            params=GenParams(max_tokens=200),
            stage="bench",
        )
        resp = await client.complete(cfg, req)
        assert isinstance(resp.parsed, Verdict)
        done.append(time.perf_counter())

    done: list[float] = []
    await one(-1)  # untimed warm-up
    done.clear()
    t0, c0 = time.perf_counter(), time.process_time()
    await asyncio.gather(*(one(i) for i in range(n)))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    retries = client.accounting.total().retries
    await client.aclose()
    if store:
        store.close()
    return {"wall_s": wall, "cpu_s": cpu, "retries": retries, "done": done}


def steady_rate(done: list[float]) -> float:
    """Calls/s between the 10th and the 90th percentile of completions: without ramp-up and tail."""
    done = sorted(done)
    lo, hi = len(done) // 10, len(done) * 9 // 10
    return (hi - lo) / max(1e-9, done[hi] - done[lo])


IMPLS = (
    "raw aiohttp",
    "plain AsyncOpenAI",
    "factory LLMClient",
    "factory LLMClient + DuckDB cache",
    "factory LLMClient, transport http",
    "factory LLMClient, transport http + DuckDB cache",
)


def run_scenario(
    name: str,
    latency: float,
    rate_limit: float,
    concurrency: int,
    n: int,
    loop: asyncio.AbstractEventLoop,
    impls: tuple[str, ...] = IMPLS,
) -> list[dict]:
    limit = min(concurrency / latency if latency else float("inf"), rate_limit or float("inf"))
    rows = []
    for impl in impls:
        with FakeServerProcess(latency=latency, rate_limit=rate_limit) as srv:
            if impl == "plain AsyncOpenAI":
                res = loop.run_until_complete(plain_sdk(srv.url, n, concurrency))
            elif impl == "raw aiohttp":
                res = loop.run_until_complete(raw_aiohttp(srv.url, n, concurrency))
            else:
                transport = "http" if "transport http" in impl else "sdk"
                res = loop.run_until_complete(
                    layer(srv.url, n, concurrency, rate_limit or None, impl.endswith("cache"), transport)
                )
            stats = srv.stats()
        rate = n / res["wall_s"]
        steady = steady_rate(res["done"])
        rows.append(
            {
                "scenario": name,
                "impl": impl,
                "requests": n,
                "calls_per_s": round(rate, 1),
                "limit_per_s": None if limit == float("inf") else round(limit, 1),
                "share_of_limit": None if limit == float("inf") else round(rate / limit, 3),
                "steady_calls_per_s": round(steady, 1),
                "steady_share_of_limit": None if limit == float("inf") else round(steady / limit, 3),
                # what one call takes beyond the server's latency, as the concurrency bound sees it
                "ms_per_call_beyond_latency": round(1000 * (concurrency / steady - latency), 1)
                if latency
                else None,
                "client_cpu_ms_per_call": round(1000 * res["cpu_s"] / n, 3),
                "server_requests": stats.get("requests"),
                "server_429s": stats.get("requests", 0) - n - WARM_UP,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", choices=("ceiling", "latency", "rate"), default=None, help="one scenario")
    ap.add_argument("--impl", action="append", choices=IMPLS, help="only these implementations")
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = ap.parse_args()
    try:
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:  # pragma: no cover
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    impls = tuple(args.impl or IMPLS)
    scale = 0.3 if args.quick else 1.0
    results = []
    if args.only in (None, "ceiling"):
        results += run_scenario(
            "c=100, zero latency (ceiling)", 0.0, 0.0, 100, int(6000 * scale), loop, impls
        )
    if args.only in (None, "latency"):
        results += run_scenario(
            "c=100, 0.5 s latency, 200 rps limit", 0.5, 200.0, 100, int(2000 * scale), loop, impls
        )
    if args.only in (None, "rate"):
        results += run_scenario(
            "c=256, 1 s latency, 200 rps limit", 1.0, 200.0, 256, int(3000 * scale), loop, impls
        )
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"peak_rss_mb": round(peak_mb, 1)}))
    if args.out:
        args.out.write_text(json.dumps({"results": results, "peak_rss_mb": peak_mb}, indent=2))


if __name__ == "__main__":
    main()
