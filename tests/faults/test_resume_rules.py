"""What a rerun on an existing db may do: refuse other settings (naming the change), say there is
nothing to do, extend without paying again; and a build that ends keeps every answer it paid for."""

from __future__ import annotations

import re
from pathlib import Path

from tests.faults.conftest import (
    SMALL,
    assert_one_line_error,
    assert_same_dataset,
    endpoint_defaults,
    recorded_messages,
    traffic,
)
from tests.pipeline.conftest import build_cmd, check_ok, cli_env, flat, query, run_factory, write_recipe


def _paid_cached(stderr: str) -> tuple[int, int]:
    m = re.search(r"LLM: (\d+) calls paid, (\d+) answered from cache", flat(stderr))
    assert m, stderr
    return int(m.group(1)), int(m.group(2))


def test_fingerprint_refusals_and_extension(tmp_path: Path, recipe: Path, reference, logged) -> None:  # noqa: ANN001
    log = tmp_path / "bodies.log"
    server = logged()
    db = tmp_path / "b.duckdb"
    env = cli_env(server.url, tmp=tmp_path)
    check_ok(run_factory(build_cmd(db, recipe, 5), env, tmp_path))
    first = traffic(log)

    stricter = write_recipe(
        tmp_path / "stricter.yaml",
        **{**SMALL, "label": {"ambiguity_threshold": 9}},
        endpoint_defaults=endpoint_defaults(),
    )
    refused = run_factory(build_cmd(db, stricter, 5), env, tmp_path)
    assert refused.returncode == 2, refused.stderr
    line = assert_one_line_error(refused.stderr)
    assert "recipe.label.ambiguity_threshold: 10 -> 9" in line, line

    other_model = run_factory([*build_cmd(db, recipe, 5), "--model", "openai:other-model"], env, tmp_path)
    assert other_model.returncode == 2, other_model.stderr
    line = assert_one_line_error(other_model.stderr)
    assert "model.dialogue: 'openai:fake-model' -> 'openai:other-model'" in line, line

    smaller = check_ok(run_factory(build_cmd(db, recipe, 3), env, tmp_path))
    assert "nothing to do" in flat(smaller.stderr) and "already holds 5 samples" in flat(smaller.stderr)
    assert traffic(log).requests == first.requests  # the refusals and the no-op sent nothing

    n = 10
    extended = check_ok(run_factory(build_cmd(db, recipe, n), env, tmp_path))
    assert f"done: {n} samples" in flat(extended.stderr)
    assert_same_dataset(db, reference(n), n)
    seen = traffic(log)
    new = seen.arrivals[first.requests :]
    assert seen.repeated == 0 and seen.paid_twice == 0  # nothing of the first 5 was asked again
    paid, cached = _paid_cached(extended.stderr)
    assert paid == len(new)  # the extension paid only for new work
    assert query(db, "SELECT count(*) FROM llm_calls")[0][0] == seen.requests
    print(
        f"\n[fingerprint] refusals exit 2; --n 3 nothing to do; --n {n} paid {paid} new requests "
        f"(+{cached} from cache: slots past the 5th paid in the first run), repeated 0"
    )


def test_end_of_build_keeps_every_answer(tmp_path: Path, recipe: Path, reference, logged) -> None:  # noqa: ANN001
    log = tmp_path / "bodies.log"
    server = logged(latency=0.5)  # requests of slots past the N-th are on the wire when N is reached
    db = tmp_path / "b.duckdb"
    env = cli_env(server.url, tmp=tmp_path)
    n = 10
    done = check_ok(run_factory(build_cmd(db, recipe, n), env, tmp_path))
    kept = re.search(r"kept (\d+) answer\(s\) that were on the wire", flat(done.stderr))
    assert kept and int(kept.group(1)) >= 1, done.stderr
    assert "got no answer" not in done.stderr
    first = traffic(log)
    assert first.requests == len(first.answers)
    assert first.answered_messages() <= recorded_messages(db)  # no answer thrown away
    assert query(db, "SELECT count(*) FROM llm_calls")[0][0] == len(first.answers)

    grown = check_ok(run_factory(build_cmd(db, recipe, n + 2), env, tmp_path))
    assert_same_dataset(db, reference(n + 2), n + 2)
    seen = traffic(log)
    assert seen.repeated == 0 and seen.paid_twice == 0
    _, cached = _paid_cached(grown.stderr)
    assert cached >= 1  # the drained answers served the extension
    print(
        f"\n[drain] N={n}: kept {kept.group(1)} answers on the wire at the end, all {len(first.answers)} "
        f"answers in llm_calls; --n {n + 2} used {cached} from cache, repeated bodies 0"
    )
