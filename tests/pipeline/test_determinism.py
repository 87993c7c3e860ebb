"""Same seed twice into two DuckDB files (fresh servers) gives identical samples; another seed does not."""

from __future__ import annotations

from pathlib import Path

from tests.pipeline.conftest import (
    Built,
    build_cmd,
    check_ok,
    cli_env,
    fake_server,
    query,
    run_factory,
    samples,
)

N = 40


def _build(tmp_path: Path, recipe: Path, name: str, seed: int) -> Path:
    db = tmp_path / f"{name}.duckdb"
    with fake_server() as server:
        check_ok(run_factory(build_cmd(db, recipe, N, seed), cli_env(server.url, tmp=tmp_path), tmp_path))
    return db


def test_same_seed_same_samples_other_seed_differs(
    tmp_path: Path, permissive_recipe: Path, reference150: Built
) -> None:
    a = _build(tmp_path, permissive_recipe, "a", seed=0)
    b = _build(tmp_path, permissive_recipe, "b", seed=0)
    c = _build(tmp_path, permissive_recipe, "c", seed=1)
    rows_a, rows_b, rows_c = samples(a), samples(b), samples(c)
    assert len(rows_a) == len(rows_b) == len(rows_c) == N
    assert rows_a == rows_b
    # the accepted set is the first N surviving slots: a smaller build is a prefix of a larger one
    assert rows_a == samples(reference150.db)[:N]

    def core(db: Path) -> list[tuple]:
        return query(db, "SELECT sample_id, policy_id, policy, transcript, label FROM samples ORDER BY slot")

    ca, cc = core(a), core(c)
    assert ca != cc
    assert not {r[0] for r in ca} & {r[0] for r in cc}, "sample ids must depend on the seed"
    assert not {r[2] for r in ca} & {r[2] for r in cc}
    # a DB holding a seed-0 build refuses to be resumed with another seed instead of mixing datasets
    with fake_server() as server:
        res = run_factory(
            build_cmd(a, permissive_recipe, N, seed=1), cli_env(server.url, tmp=tmp_path), tmp_path
        )
        assert server.stats()["requests"] == 0
    assert res.returncode != 0 and "seed" in res.stderr
    assert samples(a) == rows_a
