"""Garbage from the model ends as a re-ask or a counted failure, never a crash or a corrupt row;
a rejected API key stops the build at once with a message naming the provider and the key variable."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import orjson

from factory.banks.loader import load_banks
from factory.llm.client import validate_output
from factory.llm.types import RawCompletion
from factory.stages.dialogue import check_turns
from factory.stages.persona import user_persona
from factory.stages.schemas import dialogue_schema, judgement_schema
from tests.pipeline.conftest import (
    build_cmd,
    check_ok,
    cli_env,
    fake_server,
    flat,
    query,
    run_factory,
    write_recipe,
)

N = 40
REASK = "Your previous reply could not be used"
DIALOGUE = "You write realistic transcripts"
LABEL = "You check ONE rule against a conversation"
PARAPHRASE = "You rewrite business policies"
PERSONA = "You invent short, realistic profiles"
SCHEMA_FAIL_SLOT, HTTP_FAIL_SLOT = 3, 5


def _user_persona(seed: int, slot: int) -> str:
    """The templated user persona of a slot: it appears only in that slot's dialogue request."""
    banks, _ = load_banks()
    return user_persona(SimpleNamespace(seed=seed, banks=banks), slot)[0]  # type: ignore[arg-type]


def check_rows(db: Path) -> None:
    """No corrupt row: non-empty transcript, label in the enum, rules and labels consistent."""
    rows = query(
        db,
        "SELECT slot, transcript, label, rules, num_rules, rule_labels_json, violated_rules, "
        "turns_json, num_turns, policy FROM samples",
    )
    for slot, transcript, label, rules, num_rules, rule_labels, violated, turns, num_turns, policy in rows:
        assert transcript and transcript.strip(), slot
        assert policy and policy.strip(), slot
        assert label in ("PASS", "FAIL"), slot
        assert len(rules) == num_rules >= 1, slot
        assert all(r.strip() for r in rules), slot
        per_rule = orjson.loads(rule_labels)
        assert [r["rule_index"] for r in per_rule] == list(range(1, num_rules + 1)), slot
        assert all(r["label"] in ("VIOLATED", "NOT VIOLATED") and 0 <= r["ambiguity"] <= 10 for r in per_rule)
        assert (label == "FAIL") == bool(violated), slot
        turn_list = orjson.loads(turns)
        assert len(turn_list) == 2 * num_turns and all(t["content"].strip() for t in turn_list), slot
        assert query(db, "SELECT count(*) FROM rule_labels WHERE slot = ?", [slot])[0][0] == num_rules


def test_garbage_is_reasked_or_counted(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path / "garbage.yaml", endpoint_defaults={"max_retries": 2, "max_reasks": 2})
    db = tmp_path / "garbage.duckdb"
    faults = [
        # one slot's dialogue is garbage on every attempt (first ask and both re-asks): a counted failure
        {"kind": "wrong_schema", "match": _user_persona(0, SCHEMA_FAIL_SLOT), "times": 3},
        # another slot's dialogue request fails with HTTP 500 on every try: a counted transport failure
        {"kind": "server_error", "match": _user_persona(0, HTTP_FAIL_SLOT), "times": 3},
        # garbage once here and there in every stage: re-asked
        {"kind": "malformed", "match": DIALOGUE, "times": 3},
        {"kind": "truncated", "match": DIALOGUE, "times": 2},
        {"kind": "truncated", "match": LABEL, "times": 3},
        {"kind": "wrong_schema", "match": LABEL, "times": 3},
        {"kind": "empty", "match": LABEL, "times": 2},
        {"kind": "empty", "match": PARAPHRASE, "times": 3},
        {"kind": "wrong_schema", "match": PARAPHRASE, "times": 2},
        {"kind": "wrong_schema", "match": PERSONA, "times": 2},
        {"kind": "malformed", "match": PERSONA, "times": 1},
        {"kind": "server_error", "times": 3},
    ]
    with fake_server() as server:
        queued = server.script(faults)
        result = check_ok(run_factory(build_cmd(db, recipe, N), cli_env(server.url, tmp=tmp_path), tmp_path))
        stats = server.stats()
    assert queued == sum(f["times"] for f in faults)
    assert stats["faults_pending"] == 0 and stats["faults_applied"] == queued
    assert set(stats["faults_by_kind"]) == {"wrong_schema", "server_error", "malformed", "truncated", "empty"}

    assert query(db, "SELECT count(*) FROM samples")[0][0] == N
    check_rows(db)
    # re-asks happened (their answers are in the ledger like any other call)
    assert query(db, "SELECT count(*) FROM llm_calls WHERE request_json LIKE ?", [f"%{REASK}%"])[0][0] >= 5
    # the slot whose every answer was garbage is a counted failure, not a sample
    slot, needle = SCHEMA_FAIL_SLOT, "no valid Dialogue"
    assert query(db, "SELECT status, reason FROM slot_status WHERE slot = ?", [slot]) == [
        ("dropped", "llm_failure")
    ]
    log = query(db, "SELECT stage, reason, dropped FROM filter_log WHERE slot = ?", [slot])
    assert log == [("dialogue", "llm_failure", True)]
    fails = query(db, "SELECT stage, provider, model, error FROM llm_failures WHERE slot = ?", [slot])
    assert len(fails) == 1 and fails[0][:3] == ("dialogue", "openai", "fake-model") and needle in fails[0][3]
    assert query(db, "SELECT count(*) FROM samples WHERE slot = ?", [slot])[0][0] == 0
    # the slot whose request failed with HTTP 500 on every try is NOT data: the failure is logged,
    # the slot ran again and became a sample like any other
    slot = HTTP_FAIL_SLOT
    # the slot went on past its dialogue (it was labelled); the fake's random trace verdict may still
    # drop it at the trace stage, but never for the transport failure
    assert query(db, "SELECT count(*) FROM dialogues WHERE slot = ?", [slot])[0][0] == 1
    assert query(db, "SELECT count(*) FROM rule_labels WHERE slot = ?", [slot])[0][0] >= 1
    status = query(db, "SELECT status, reason FROM slot_status WHERE slot = ?", [slot])
    assert status == [("accepted", "")] or status[0][1].startswith("trace_"), status
    assert (
        query(
            db,
            "SELECT count(*) FROM filter_log WHERE slot = ? AND dropped AND reason = 'llm_failure'",
            [slot],
        )[0][0]
        == 0
    )
    fails = query(
        db,
        "SELECT stage, provider, model, error, key, failed_at FROM llm_failures WHERE slot = ? AND stage = 'dialogue'",
        [slot],
    )
    assert (
        len(fails) == 1 and fails[0][:3] == ("dialogue", "openai", "fake-model") and "HTTP 500" in fails[0][3]
    )
    assert fails[0][4] and fails[0][5] > 0  # every column of llm_failures is filled
    assert query(db, "SELECT count(*) FROM samples WHERE slot = ?", [slot])[0][0] == (
        status[0][0] == "accepted"
    )
    attempts = query(db, "SELECT attempts, raw_text FROM llm_failures WHERE slot = ?", [SCHEMA_FAIL_SLOT])[0]
    assert attempts[0] == 3 and attempts[1]
    # every drop is an llm_failure here, and their count matches the failure table and the summary
    drops = dict(query(db, "SELECT reason, count(*) FROM slot_status WHERE status = 'dropped' GROUP BY 1"))
    # (the fake's trace verdicts are random: a trace that disagrees with the label after the re-asks
    # is dropped too, and is an llm failure of the trace stage)
    assert set(drops) <= {"llm_failure", "trace_verdict_mismatch"} and drops["llm_failure"] >= 1
    assert query(
        db,
        "SELECT count(DISTINCT slot) FROM llm_failures WHERE error NOT LIKE '%HTTP 500%' "
        "AND slot IN (SELECT slot FROM slot_status)",
    )[0][0] == sum(drops.values())
    assert f"llm_failure={drops['llm_failure']}" in flat(result.stderr)
    assert "Traceback" not in result.stderr


def test_schema_rejects_garbage_shapes() -> None:
    """The shapes the fake cannot produce on its own: a label outside the enum, an empty dialogue."""
    judgement = {"turn": 1, "discussion": "d", "explanation": "e", "label": "MAYBE", "ambiguity": 3}
    parsed, why = validate_output(
        RawCompletion(text=orjson.dumps({"judgements": [judgement]}).decode()), judgement_schema(1)
    )
    assert parsed is None and "schema" in why
    judgement["ambiguity"] = 11
    judgement["label"] = "VIOLATED"
    assert (
        validate_output(
            RawCompletion(text=orjson.dumps({"judgements": [judgement]}).decode()), judgement_schema(1)
        )[0]
        is None
    )
    empty = orjson.dumps({"scenario": "s", "exchanges": []}).decode()
    assert validate_output(RawCompletion(text=empty), dialogue_schema(2))[0] is None
    assert validate_output(RawCompletion(text=empty), dialogue_schema(1))[0] is None
    assert validate_output(RawCompletion(text='{"scenario": "s", "exch'), dialogue_schema(1))[0] is None
    assert check_turns([]) == "empty dialogue"
    assert check_turns([{"role": "user", "content": "hi there"}, {"role": "agent", "content": "  "}])


def test_rejected_key_stops_build_then_correct_run_completes(tmp_path: Path) -> None:
    n = 20
    recipe = write_recipe(tmp_path / "auth.yaml")
    db = tmp_path / "auth.duckdb"
    cmd = build_cmd(db, recipe, n)
    with fake_server(require_key="the-right-key") as server:
        t0 = time.monotonic()
        bad = run_factory(cmd, cli_env(server.url, key="a-wrong-key", tmp=tmp_path), tmp_path, timeout=60)
        elapsed = time.monotonic() - t0
        assert bad.returncode != 0
        assert elapsed < 30, f"a rejected key must stop the build at once, took {elapsed:.1f}s"
        message = flat(bad.stderr)
        assert "openai" in message and "OPENAI_API_KEY" in message, bad.stderr
        assert "401" in message and "Traceback" not in bad.stderr
        assert server.stats()["auth_failures"] >= 1
        assert query(db, "SELECT count(*) FROM samples")[0][0] == 0
        assert query(db, "SELECT status FROM runs") == [("interrupted",)]

        good = check_ok(run_factory(cmd, cli_env(server.url, key="the-right-key", tmp=tmp_path), tmp_path))
    assert f"done: {n} samples" in flat(good.stderr)
    assert query(db, "SELECT count(*) FROM samples")[0][0] == n
    assert query(db, "SELECT status FROM runs ORDER BY started_at") == [("interrupted",), ("finished",)]
    check_rows(db)


def test_nothing_but_garbage_stops_the_build_early(tmp_path: Path) -> None:
    """A model that never returns usable output stops the build with exit 4 and one line, long
    before the oversample budget is spent."""
    recipe = write_recipe(
        tmp_path / "junk.yaml", endpoint_defaults={"max_retries": 0, "max_reasks": 1}, oversample_cap=50
    )
    db = tmp_path / "junk.duckdb"
    with fake_server() as server:
        server.script({"kind": "wrong_schema", "times": 5000})
        result = run_factory(build_cmd(db, recipe, 200), cli_env(server.url, tmp=tmp_path), tmp_path)
        requests = server.stats()["requests"]
    assert result.returncode == 4, result.stderr
    message = flat(result.stderr)
    assert (
        "keeps returning unusable output for the paraphrase stage" in message and "Traceback" not in message
    )
    assert requests < 300  # 25 failed calls in a row (2 attempts each) and those already in flight
    assert query(db, "SELECT count(*) FROM samples")[0][0] == 0
