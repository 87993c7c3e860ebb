"""`factory build --mode batch` through the real CLI against the fake server's batch endpoints
(OpenAI Batch, Anthropic Message Batches, Gemini batch mode, driven by the official SDKs).

Checked: a batch build has exactly the samples of an online build with the same seed and answers;
it runs stage by stage; batched calls cost half; a build killed between submitting a job and
reading its results resumes by job id without sending any request twice; an expired job's requests
go into a new job."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.pipeline.conftest import (
    build_cmd,
    check_ok,
    cli_env,
    fake_server,
    query,
    run_factory,
    samples,
    settled_stats,
    write_recipe,
)

N = 24
PRICING = {"fake-model": {"input": 1.0, "output": 2.0}}
# quick grouping for a local server: a job per stage as soon as the slots have all asked
BATCH = {"quiet_s": 0.3, "max_wait_s": 5.0, "poll_s": 0.2}


@pytest.fixture(scope="module")
def recipe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_recipe(tmp_path_factory.mktemp("batch") / "batch.yaml", pricing=PRICING, batch=BATCH)


def provider_env(provider: str, url: str, tmp: Path) -> dict[str, str]:
    env = cli_env(url, tmp=tmp)
    if provider == "anthropic":
        env.update(ANTHROPIC_BASE_URL=url, ANTHROPIC_API_KEY="test")
    elif provider == "google":
        env.update(GOOGLE_GEMINI_BASE_URL=url, GEMINI_API_KEY="test")
    return env


def build(
    tmp: Path, recipe: Path, name: str, mode: str, provider: str = "openai", n: int = N, **server: Any
) -> tuple[Path, dict[str, Any]]:
    db = tmp / f"{name}.duckdb"
    cmd = build_cmd(db, recipe, n) + ["--mode", mode, "--model", f"{provider}:fake-model"]
    with fake_server(**server) as srv:
        check_ok(run_factory(cmd, provider_env(provider, srv.url, tmp), tmp))
        stats = settled_stats(srv)
    return db, stats


def kill_after_first_job(cmd: list[str], env: dict[str, str], cwd: Path, srv: Any) -> None:
    """Start a batch build and SIGKILL it once the fake server holds its first job."""
    proc = subprocess.Popen(
        cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 60
        while srv.stats().get("batch_jobs", 0) < 1 and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        time.sleep(0.3)  # the job id is in DuckDB right after the provider returned it
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.communicate()


@pytest.fixture(scope="module")
def online(tmp_path_factory: pytest.TempPathFactory, recipe: Path) -> tuple[Path, dict[str, Any]]:
    return build(tmp_path_factory.mktemp("online"), recipe, "online", "online")


def test_batch_build_equals_online_build_stage_by_stage_at_half_price(
    tmp_path: Path, recipe: Path, online: tuple[Path, dict[str, Any]]
) -> None:
    online_db, _ = online
    db, stats = build(tmp_path, recipe, "batch", "batch")
    assert len(samples(db)) == N
    assert samples(db) == samples(online_db)
    # every request went through batch jobs (`requests` counts online ones), each paid once
    assert stats["requests"] == 0 and stats["repeated_bodies"] == 0
    assert stats["batch_requests"] == query(db, "SELECT count(*) FROM llm_calls")[0][0] > 0
    jobs = query(db, "SELECT job_id, requests, state FROM batch_jobs ORDER BY submitted_at")
    assert jobs and all(state == "ended" for _, _, state in jobs)
    assert sum(r for _, r, _ in jobs) == stats["batch_requests"]
    # stage by stage: the first job holds the paraphrase request of every slot of the first
    # window (slots 0..window-1, window = 1.2 N + 2 for a small build) and nothing else
    first = query(
        db,
        "SELECT stage, count(*), min(slot), max(slot) FROM batch_requests WHERE job_id = ? GROUP BY 1",
        [jobs[0][0]],
    )
    window = math.ceil(N * 1.2) + 2
    assert first == [("paraphrase", window, 0, window - 1)]
    second = query(db, "SELECT DISTINCT stage FROM batch_requests WHERE job_id = ?", [jobs[1][0]])
    assert second == [("persona",)]
    # half the recipe's price (input $1, output $2 per M tokens) on every call
    paid, list_price = query(
        db, "SELECT sum(cost_usd), sum(input_tokens * 1.0 + output_tokens * 2.0) / 1e6 FROM llm_calls"
    )[0]
    assert list_price > 0 and paid == pytest.approx(list_price / 2)
    online_paid, online_list = query(
        online_db, "SELECT sum(cost_usd), sum(input_tokens * 1.0 + output_tokens * 2.0) / 1e6 FROM llm_calls"
    )[0]
    assert online_paid == pytest.approx(online_list)


@pytest.mark.parametrize("provider", ["anthropic", "google"])
def test_batch_build_equals_online_build_for_each_provider(
    tmp_path: Path, recipe: Path, provider: str
) -> None:
    online_db, _ = build(tmp_path, recipe, "online", "online", provider, n=8)
    db, stats = build(tmp_path, recipe, "batch", "batch", provider, n=8)
    assert samples(db) == samples(online_db) and len(samples(db)) == 8
    assert stats["requests"] == 0 and stats["batch_requests"] > 0 and stats["repeated_bodies"] == 0
    assert query(db, "SELECT count(*) FROM batch_jobs WHERE state <> 'ended'")[0][0] == 0


def test_killed_between_submit_and_results_resumes_by_job_id(
    tmp_path: Path, recipe: Path, online: tuple[Path, dict[str, Any]]
) -> None:
    online_db, _ = online
    db = tmp_path / "killed.duckdb"
    cmd = build_cmd(db, recipe, N) + ["--mode", "batch", "--model", "openai:fake-model"]
    with fake_server(batch_delay_s=3.0) as srv:
        env = provider_env("openai", srv.url, tmp_path)
        kill_after_first_job(cmd, env, tmp_path, srv)
        jobs_at_kill = srv.stats()["batch_jobs"]
        assert jobs_at_kill == 1
        check_ok(run_factory(cmd, env, tmp_path))
        stats = settled_stats(srv)
    assert samples(db) == samples(online_db)
    assert stats["repeated_bodies"] == 0  # the first job's requests were never submitted again
    first = query(db, "SELECT job_id, state FROM batch_jobs ORDER BY submitted_at LIMIT 1")[0]
    assert first[1] == "ended"
    paraphrases = query(db, "SELECT count(*) FROM batch_requests WHERE stage = 'paraphrase'")[0][0]
    assert paraphrases == query(db, "SELECT count(*) FROM policies")[0][0]


def test_an_expired_job_is_resubmitted_and_the_dataset_is_unchanged(
    tmp_path: Path, recipe: Path, online: tuple[Path, dict[str, Any]]
) -> None:
    online_db, _ = online
    db = tmp_path / "expired.duckdb"
    cmd = build_cmd(db, recipe, N) + ["--mode", "batch", "--model", "openai:fake-model"]
    with fake_server() as srv:
        srv.script([{"kind": "batch_expire", "unprocessed": 5}])
        check_ok(run_factory(cmd, provider_env("openai", srv.url, tmp_path), tmp_path))
        stats = settled_stats(srv)
    assert samples(db) == samples(online_db)
    states = [s for (s,) in query(db, "SELECT state FROM batch_jobs ORDER BY submitted_at")]
    assert states[0] == "expired" and states[1:] and set(states[1:]) == {"ended"}
    resent = query(
        db,
        "SELECT count(*) FROM batch_requests r JOIN batch_jobs j USING (job_id) WHERE j.state = 'ended' "
        "AND r.key IN (SELECT key FROM batch_requests WHERE job_id = ?)",
        [query(db, "SELECT job_id FROM batch_jobs ORDER BY submitted_at LIMIT 1")[0][0]],
    )[0][0]
    assert resent == 5  # exactly the expired ones went into a later job
    assert stats["repeated_bodies"] == 0  # and none was answered twice


def test_local_model_has_no_batch_mode(tmp_path: Path, recipe: Path) -> None:
    res = run_factory(
        build_cmd(tmp_path / "x.duckdb", recipe, 2) + ["--mode", "batch", "--model", "local:smollm2-135m"],
        cli_env(None, tmp=tmp_path),
        tmp_path,
    )
    assert res.returncode == 2 and "has no batch API" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_batch_mode_is_refused_on_the_ray_executor(tmp_path: Path, recipe: Path) -> None:
    pytest.importorskip("ray")
    cmd = build_cmd(tmp_path / "x.duckdb", recipe, 2) + [
        "--mode",
        "batch",
        "--executor",
        "ray",
        "--model",
        "openai:fake-model",
    ]
    res = run_factory(cmd, cli_env("http://127.0.0.1:9", tmp=tmp_path), tmp_path)
    assert res.returncode == 2 and "runs on the local executor" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_an_online_rerun_warns_about_open_batch_jobs(tmp_path: Path, recipe: Path) -> None:
    db = tmp_path / "switch.duckdb"
    cmd = build_cmd(db, recipe, 6) + ["--model", "openai:fake-model"]
    with fake_server(batch_delay_s=60.0) as srv:
        env = provider_env("openai", srv.url, tmp_path)
        kill_after_first_job(cmd + ["--mode", "batch"], env, tmp_path, srv)
        res = check_ok(run_factory(cmd + ["--mode", "online"], env, tmp_path))
    assert "1 batch job(s) of an earlier --mode batch run are still open" in " ".join(res.stderr.split())
    assert len(samples(db)) == 6
