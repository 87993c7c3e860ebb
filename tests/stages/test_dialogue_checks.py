"""Dialogue structure checks and transcript rendering."""

from __future__ import annotations

from factory.stages.dialogue import check_turns, numbered_transcript, transcript


def _t(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"role": r, "content": c} for r, c in pairs]


def test_check_turns() -> None:
    assert check_turns([]) == "empty dialogue"
    assert check_turns(_t(("user", "hi there"), ("agent", " "))) == "empty agent message at position 2"
    assert check_turns(_t(("agent", "hello"), ("user", "hi"))) == (
        "dialogue must start with the user and end with the agent"
    )
    assert check_turns(_t(("user", "hi there"), ("agent", "hello"))) is None


def test_transcripts() -> None:
    turns = _t(("user", "a1"), ("agent", "b1"), ("user", "a2"), ("agent", "b2"))
    assert transcript(turns) == "User: a1\nAgent: b1\nUser: a2\nAgent: b2"
    assert numbered_transcript(turns) == "User: a1\nAgent (turn 1): b1\nUser: a2\nAgent (turn 2): b2"
