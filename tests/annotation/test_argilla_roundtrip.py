"""Push to the real Argilla server, submit responses as two annotators (their own API keys, the
UI's endpoint), pull, report: the figures equal the ones computed by hand in the comments."""

from __future__ import annotations

import uuid

import duckdb
import httpx
import pytest

from annotation import backend, service
from annotation.backend import AnnotationError

from .conftest import SAMPLES


def _submit(stack, username: str, record_server_id: str, values: dict) -> None:
    user = next(u for u in stack["users"] if u["username"] == username)
    body = {"values": {k: {"value": v} for k, v in values.items()}, "status": "submitted"}
    r = httpx.post(
        f"{stack['api_url']}/api/v1/records/{record_server_id}/responses",
        json=body,
        headers={"X-Argilla-Api-Key": user["api_key"]},
        timeout=30,
    )
    assert r.status_code in (200, 201), r.text


def _answers_like_llm(label: str, violated: dict[int, list[int]]) -> dict:
    out = {"label": label, "ambiguity": 1}
    if violated:
        out["violated_rules"] = [str(i) for i in violated]
        out["violated_turns"] = "; ".join(f"{k}: {','.join(map(str, v))}" for k, v in violated.items())
    return out


def test_push_submit_pull_report(argilla_env, sample_db):
    name = f"t-{uuid.uuid4().hex[:8]}"
    out = service.push(sample_db, name, 4, overlap=2)
    assert out["pushed"] == 4
    service.push(sample_db, name, 4, overlap=2)  # a second push updates, never duplicates
    client = backend.connect()
    ds = backend.get_dataset(client, name)
    records = {r.id: r for r in ds.records(with_suggestions=True)}
    assert sorted(records) == ["s-0000", "s-0001", "s-0002", "s-0003"]
    sugg = {s.question_name: s for s in records["s-0000"].suggestions}
    assert sugg["label"].value == "FAIL" and sugg["label"].agent == "fake:labeller"
    assert sugg["label"].score == pytest.approx(0.8)
    assert sugg["violated_rules"].value == ["2"]
    assert records["s-0000"].metadata["industry"] == "banking"
    assert "**Agent (turn 2):** Second answer." in records["s-0000"].fields["transcript"]

    # annotator1 agrees with the LLM everywhere; annotator2 flips s-0000 to PASS and s-0003 to FAIL (rule 3).
    for (label, _dyn, violated), sid in zip(SAMPLES, sorted(records), strict=True):
        _submit(argilla_env, "annotator1", str(records[sid]._server_id), _answers_like_llm(label, violated))
    ann2 = {
        "s-0000": {"label": "PASS", "ambiguity": 4},
        "s-0001": {"label": "PASS", "ambiguity": 0},
        "s-0002": {"label": "FAIL", "violated_rules": ["1"], "violated_turns": "1: 2", "ambiguity": 1},
        "s-0003": {"label": "FAIL", "violated_rules": ["3"], "violated_turns": "3: 1,2", "comment": "x"},
    }
    for sid, values in ann2.items():
        _submit(argilla_env, "annotator2", str(records[sid]._server_id), values)

    # The responses reached the search index (osmem has no scripts: the launcher's read-modify-write
    # updates did it), and with overlap 2 every record is completed.
    import argilla as rg

    found = list(ds.records(query=rg.Query(filter=rg.Filter(("response.status", "==", "submitted")))))
    assert len(found) == 4
    assert [r.status for r in ds.records()] == ["completed"] * 4

    first = service.pull(sample_db, name)
    second = service.pull(sample_db, name)  # idempotent
    assert first == second
    assert first["judgements"] == 8 and first["rule_judgements"] == 24
    assert first["annotators"] == ["annotator1", "annotator2"]
    con = duckdb.connect(str(sample_db), read_only=True)
    assert con.execute("SELECT count(*) FROM human_judgements").fetchone()[0] == 8
    assert con.execute(
        "SELECT violated_turns FROM human_rule_judgements WHERE sample_id='s-0003' AND annotator='annotator2' "
        "AND rule_index=3"
    ).fetchone()[0] == [1, 2]
    con.close()

    rep = service.report(sample_db, name)
    # Sample level, 8 (sample, annotator) pairs: 6 agree -> 0.75. LLM F/P 4/4, human F/P 4/4:
    # p_e = .5*.5 + .5*.5 = .5 -> kappa = (.75 - .5) / .5 = 0.5
    assert rep["sample_level"]["agreement"] == pytest.approx(0.75)
    assert rep["sample_level"]["cohen_kappa"] == pytest.approx(0.5)
    assert rep["sample_level"]["confusion"] == {
        "PASS": {"PASS": 3, "FAIL": 1},
        "FAIL": {"PASS": 1, "FAIL": 3},
    }
    # Rule level, 24 judgements, 2 disagree -> 22/24; violated 4/24 on both sides:
    # p_e = (4/24)^2 + (20/24)^2 = 416/576 -> kappa = (528 - 416) / (576 - 416) = 0.7
    assert rep["rule_level"]["agreement"] == pytest.approx(22 / 24)
    assert rep["rule_level"]["cohen_kappa"] == pytest.approx(0.7)
    # Inter-annotator on the 4 doubly-annotated samples: [F,P] [P,P] [F,F] [P,F] -> pairwise 0.5;
    # P_i = 0, 1, 1, 0 -> P_bar = .5; totals F 4 / P 4 of 8: P_e = .5 -> Fleiss = (.5 - .5) / .5 = 0
    assert rep["inter_annotator"]["samples"] == 4
    assert rep["inter_annotator"]["pairwise_agreement"] == pytest.approx(0.5)
    assert rep["inter_annotator"]["fleiss_kappa"] == pytest.approx(0.0)
    assert rep["gate"]["passed"] is False
    assert service.report(sample_db, name, gate=0.75)["gate"]["passed"] is True
    assert rep["worst"]["dynamics"][0]["agreement"] == pytest.approx(0.5)
    text = service.format_report(rep)
    assert "gate: FAIL (sample agreement 75.0%, threshold 90.0%)" in text


def test_blind_push_has_no_suggestions(argilla_env, sample_db):
    name = f"b-{uuid.uuid4().hex[:8]}"
    service.push(sample_db, name, 2, blind=True, strategy="stratified")
    ds = backend.get_dataset(backend.connect(), name)
    recs = list(ds.records(with_suggestions=True))
    assert len(recs) == 2
    assert all(len(r.suggestions) == 0 and r.fields["llm_rationale"] in ("", None) for r in recs)


def test_deleted_record_and_schema_change(argilla_env, sample_db):
    import argilla as rg

    name = f"d-{uuid.uuid4().hex[:8]}"
    service.push(sample_db, name, 3)
    client = backend.connect()
    ds = backend.get_dataset(client, name)
    victim = next(r for r in ds.records() if r.id == "s-0001")
    ds.records.delete([victim])
    with pytest.raises(AnnotationError, match=r"1 record\(s\) pushed to .* were deleted on the server"):
        service.pull(sample_db, name)

    other = f"o-{uuid.uuid4().hex[:8]}"
    rg.Dataset(
        name=other,
        workspace="default",
        client=client,
        settings=rg.Settings(
            fields=[rg.TextField(name="text")], questions=[rg.LabelQuestion(name="x", labels=["a", "b"])]
        ),
    ).create()
    with pytest.raises(AnnotationError, match="different schema"):
        service.push(sample_db, other, 2)


def test_unreachable_and_wrong_key(argilla_stack, monkeypatch):
    monkeypatch.setenv("ARGILLA_API_URL", argilla_stack["api_url"])
    monkeypatch.setenv("ARGILLA_API_KEY", "owner.wrong")
    with pytest.raises(AnnotationError, match="refused the API key"):
        backend.connect()
    monkeypatch.setenv("ARGILLA_API_URL", "http://127.0.0.1:9")
    with pytest.raises(AnnotationError, match="unreachable"):
        backend.connect()


def test_responses_from_a_user_outside_the_workspace(argilla_env, sample_db):
    import argilla as rg

    client = backend.connect()
    name = f"w-{uuid.uuid4().hex[:8]}"
    service.push(sample_db, name, 1)
    ds = backend.get_dataset(client, name)
    rec = next(iter(ds.records()))
    username = f"temp{uuid.uuid4().hex[:6]}"
    user = rg.User(username=username, password="temp-password-123", role="annotator", client=client).create()
    ws = client.workspaces("default")
    user.add_to_workspace(ws)
    key = httpx.post(
        f"{argilla_env['api_url']}/api/v1/token",
        data={"username": username, "password": "temp-password-123"},
        timeout=30,
    ).json()["access_token"]
    r = httpx.post(
        f"{argilla_env['api_url']}/api/v1/records/{rec._server_id}/responses",
        json={"values": {"label": {"value": "PASS"}}, "status": "submitted"},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )
    assert r.status_code in (200, 201), r.text
    user.remove_from_workspace(ws)
    with pytest.raises(AnnotationError, match=f"responses from {username}, who is not a member of workspace"):
        service.pull(sample_db, name)
