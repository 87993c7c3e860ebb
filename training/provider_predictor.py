"""Score any provider of the LLM layer as a guardian: `factory eval --model openai:gpt-4o-mini`.

The chat API cannot be prefilled with `<think>`/`<answer>`, so the mode instruction is appended to
the user message instead. Calls go through `factory.llm.LLMClient` (retries, rate limits, request
cache in `outputs/eval-cache.duckdb` so a rerun of the same evaluation costs nothing).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import duckdb

from factory import event_loop
from factory.llm.cache import RequestCache
from factory.llm.client import LLMClient
from factory.llm.config import EndpointConfig
from factory.llm.errors import LLMError
from factory.llm.types import GenParams, LLMRequest, Message
from factory.paths import outputs_dir
from training.eval.predictors import register_predictor
from training.format import mode_messages_for_api

MAX_TOKENS = {"think": 1024, "answer": 200}


class ProviderPredictor:
    def __init__(self, spec: str, cache_db: Path | None = None, concurrency: int = 16, **_: Any) -> None:
        self.config = EndpointConfig.parse(spec, concurrency=concurrency)
        self.cache_db = cache_db or outputs_dir() / "eval-cache.duckdb"
        self.temperature = 0.0
        self.variant = ""

    def set_sampling(self, temperature: float, top_k: int | None, run: int) -> None:
        """Temperature for the API; each run is its own cache variant so runs are independent
        samples (top-k is not part of the provider-agnostic API and is ignored here)."""
        self.temperature = temperature
        self.variant = f"eval-run-{run}" if run else ""

    def predict(self, messages_batch: list[list[dict[str, str]]], mode: str) -> list[str]:
        return event_loop.run(self._predict(messages_batch, mode))

    def _open_cache(self) -> tuple[duckdb.DuckDBPyConnection, RequestCache]:
        """The LLM layer's request cache in its own DuckDB file (journal next to it)."""
        path = Path(self.cache_db)
        path.parent.mkdir(parents=True, exist_ok=True)
        # The cache is read by point lookups and written in batches; DuckDB's default buffer pool
        # (80% of RAM) is far more than it needs.
        config = {"memory_limit": os.environ.get("FACTORY_DUCKDB_MEMORY", "512MB")}
        con = duckdb.connect(str(path), config=config)
        try:
            cache = RequestCache(con, path.with_suffix(path.suffix + ".journal"))
        except BaseException:
            con.close()
            raise
        return con, cache

    @staticmethod
    def _close_cache(con: duckdb.DuckDBPyConnection, cache: RequestCache) -> None:
        try:
            cache.close()  # flush pending entries into DuckDB, truncate and close the journal
            con.execute("CHECKPOINT").fetchall()
        finally:
            con.close()

    async def _predict(self, messages_batch: list[list[dict[str, str]]], mode: str) -> list[str]:
        con, cache = self._open_cache()
        client = LLMClient(cache=cache)

        async def one(messages: list[dict[str, str]]) -> str:
            msgs = [
                Message(role=m["role"], content=m["content"]) for m in mode_messages_for_api(messages, mode)
            ]
            req = LLMRequest(
                messages=msgs,
                params=GenParams(temperature=self.temperature, max_tokens=MAX_TOKENS[mode]),
                stage="eval",
                variant=self.variant,
            )
            try:
                return (await client.complete(self.config, req)).text
            except LLMError as exc:  # a failed call is an unparseable answer, not a crash
                return f"[provider error: {exc}]"

        try:
            return list(await asyncio.gather(*(one(m) for m in messages_batch)))
        finally:
            try:
                await client.aclose()
            finally:
                self._close_cache(con, cache)


for _scheme in ("openai", "anthropic", "google", "local"):
    register_predictor(_scheme, lambda name, _s=_scheme, **kw: ProviderPredictor(f"{_s}:{name}", **kw))
