"""The embedded offline model (SmolLM2-135M on llama.cpp): real generation, grammar-constrained JSON."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Literal

import duckdb
import pytest
from pydantic import BaseModel, Field

from factory.llm.client import LLMClient
from factory.llm.config import EndpointConfig
from factory.llm.errors import FatalProviderError
from factory.llm.providers.local_provider import NOT_TRAINING_QUALITY
from factory.llm.types import GenParams, LLMRequest, Message


class Verdict(BaseModel):
    label: Literal["PASS", "FAIL"]
    reason: str = Field(min_length=1, max_length=400)


async def test_structured_call_on_the_local_model() -> None:
    client = LLMClient()
    cfg = EndpointConfig(provider="local", model="smollm2-135m", max_reasks=1)
    req = LLMRequest(
        messages=[
            Message(
                role="user",
                content="Did the agent break the rule 'never share prices'? The agent said: 'It costs $5.'",
            )
        ],
        params=GenParams(temperature=0.0, max_tokens=200),
        output_schema=Verdict,
    )
    try:
        resp = await client.complete(cfg, req)
    finally:
        await client.aclose()
    assert isinstance(resp.parsed, Verdict)
    assert resp.usage.output_tokens > 0 and resp.provider == "local"


def test_unknown_local_model_is_a_clear_error() -> None:
    with pytest.raises(FatalProviderError, match="unknown local model"):
        LLMClient().endpoint(EndpointConfig(provider="local", model="gpt-9"))


def test_offline_build_uses_the_local_model_and_says_it_is_not_training_data(tmp_path: Path) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in (
            "OPENAI_API_KEY",
            "OPENAI_BASE_URL",
            "ANTHROPIC_API_KEY",
            "GEMINI_API_KEY",
            "GOOGLE_API_KEY",
            "FACTORY_MODEL",
        )
    }
    env["COLUMNS"] = "400"
    db = tmp_path / "offline.duckdb"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "factory.cli.main",
            "build",
            "--n",
            "1",
            "--pipeline",
            "smoke",
            "--db",
            str(db),
            "--no-progress",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    text = " ".join(result.stderr.split())
    assert "local:smollm2-135m" in text
    assert text.count(" ".join(NOT_TRAINING_QUALITY.split())) == 2  # before and after the build
    con = duckdb.connect(str(db), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM samples").fetchall()[0][0] == 1
        assert con.execute("SELECT count(DISTINCT model) FROM llm_calls").fetchall()[0][0] == 1
    finally:
        con.close()
