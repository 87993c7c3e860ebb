"""Rule curation in Argilla: `factory banks expand` candidates go to a curation dataset where people
accept, edit or reject them; `merge_decisions` turns the submitted decisions into bank lines.

A candidate's bank is `industry/<slug>` or `misc/<slug>` (the file banks/rules/<bank>.txt).
Several annotators: the majority decision wins, a tie rejects; an edit takes the first edited text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from annotation import backend
from annotation.backend import AnnotationError


def bank_of(candidate: dict[str, Any]) -> str:
    if candidate.get("industry"):
        return f"industry/{candidate['industry']}"
    if candidate.get("category"):
        return f"misc/{candidate['category']}"
    raise AnnotationError(
        f"candidate {candidate.get('text', '')[:60]!r} names neither an industry nor a category"
    )


def push_candidates(candidates_file: Path, dataset: str, *, client: Any = None) -> int:
    path = Path(candidates_file)
    if not path.exists():
        raise AnnotationError(f"{path} does not exist; write it with `factory banks expand`")
    candidates = [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
    if not candidates:
        raise AnnotationError(f"{path} holds no candidates")
    client = client or backend.connect()
    ds = backend.ensure_curation_dataset(client, dataset)
    backend.log_records(ds, [backend.curation_record(c, bank_of(c)) for c in candidates])
    return len(candidates)


def decide(responses: list[dict[str, Any]]) -> tuple[str, str | None]:
    """(decision, edited text) from the submitted responses of one record; no response: pending."""
    if not responses:
        return "pending", None
    votes: dict[str, int] = {}
    for r in responses:
        d = "edit" if r.get("decision") == "edit" else r.get("decision")
        votes[d] = votes.get(d, 0) + 1
    keep = votes.get("accept", 0) + votes.get("edit", 0)
    if keep <= votes.get("reject", 0):
        return "reject", None
    edits = [
        r.get("edited") for r in responses if r.get("decision") == "edit" and (r.get("edited") or "").strip()
    ]
    if votes.get("edit", 0) >= votes.get("accept", 0) and edits:
        return "edit", " ".join(edits[0].split())
    return "accept", None


def accepted_rules(dataset: str, *, client: Any = None) -> tuple[dict[str, list[str]], dict[str, int]]:
    """{bank: [rule texts to add]} and counts per decision."""
    client = client or backend.connect()
    ds = backend.get_dataset(client, dataset)
    out: dict[str, list[str]] = {}
    counts = {"accept": 0, "edit": 0, "reject": 0, "pending": 0}
    for rec in backend.fetch_curation(client, ds):
        decision, edited = decide(rec["responses"])
        counts[decision] += 1
        if decision in ("accept", "edit"):
            out.setdefault(rec["bank"], []).append(edited or rec["text"])
    return out, counts
