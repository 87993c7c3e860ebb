"""Secrets come from the environment and never land in the store, the journal, logs or exports."""

from __future__ import annotations

from pathlib import Path

from tests.pipeline.conftest import build_cmd, check_ok, cli_env, factory_cmd, fake_server, run_factory

SECRET = "sk-test-DO-NOT-STORE-4f9a1c77e2"
HF_SECRET = "hf_DO_NOT_STORE_8b1d22c0"


def test_api_and_hub_tokens_are_never_written(tmp_path: Path, permissive_recipe: Path) -> None:
    db = tmp_path / "secret.duckdb"
    out = tmp_path / "export"
    with fake_server(require_key=SECRET) as server:
        env = cli_env(server.url, key=SECRET, tmp=tmp_path, HF_TOKEN=HF_SECRET)
        build = check_ok(run_factory(build_cmd(db, permissive_recipe, 12), env, tmp_path))
        status = check_ok(run_factory(factory_cmd("status", "--db", db), env, tmp_path))
        stats = check_ok(run_factory(factory_cmd("stats", "--db", db), env, tmp_path))
        check_ok(run_factory(factory_cmd("export", "--db", db, "--out", out), env, tmp_path))
    logs = "".join(r.stdout + r.stderr for r in (build, status, stats))
    assert SECRET not in logs and HF_SECRET not in logs
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "secret.duckdb" for p in files) and any(p.suffix == ".parquet" for p in files)
    for path in files:
        data = path.read_bytes()
        assert SECRET.encode() not in data, f"API key found in {path}"
        assert HF_SECRET.encode() not in data, f"Hub token found in {path}"
