"""What an annotator sees and what the LLM suggested, built from stored samples (no Argilla here).

A sample row here is a dict with the `samples` columns used below. Rules are numbered 1..k as in
`samples.rules`; agent turns are numbered 1..t in the order they appear (as the labeller numbers
them in `violated_turns`).
"""

from __future__ import annotations

import hashlib
import math
import random
from collections import defaultdict
from typing import Any

import orjson

SAMPLE_COLUMNS = (
    "slot, sample_id, policy_id, label, rules, rule_ids, turns_json, rule_labels_json, industry, dynamic, "
    "num_rules, num_turns, max_ambiguity, models_json, split"
)
STRATEGIES = ("random", "hard", "stratified")


def split_of(policy_id: str, seed: int = 0, val_frac: float = 0.05, test_frac: float = 0.05) -> str:
    """The split `factory export` gives a sample with the same seed and fractions (same hash)."""
    u = int.from_bytes(hashlib.sha256(f"{seed}:{policy_id}".encode()).digest()[:8], "big") / 2**64
    if u < test_frac:
        return "test"
    if u < test_frac + val_frac:
        return "validation"
    return "train"


def rule_labels(row: dict[str, Any]) -> list[dict[str, Any]]:
    return orjson.loads(row["rule_labels_json"]) if row.get("rule_labels_json") else []


def policy_text(row: dict[str, Any]) -> str:
    return "\n".join(f"{i}. {rule}" for i, rule in enumerate(row["rules"] or [], start=1))


def transcript_text(row: dict[str, Any]) -> str:
    """Markdown transcript; each agent turn carries its number, the one annotators cite."""
    lines, agent_turn = [], 0
    for turn in orjson.loads(row["turns_json"]) if row.get("turns_json") else []:
        if turn["role"] == "agent":
            agent_turn += 1
            lines.append(f"**Agent (turn {agent_turn}):** {turn['content']}")
        else:
            lines.append(f"**User:** {turn['content']}")
    return "\n\n".join(lines)


def llm_rationale_text(row: dict[str, Any]) -> str:
    """The labeller's per-rule verdicts and explanations, violated rules first."""
    labs = sorted(rule_labels(row), key=lambda r: (r["label"] != "VIOLATED", r["rule_index"]))
    out = []
    for r in labs:
        turns = ", ".join(str(t) for t in r.get("violated_turns") or [])
        where = f" in agent turn(s) {turns}" if turns else ""
        out.append(
            f"- Rule {r['rule_index']}: {r['label']}{where} (ambiguity {r.get('ambiguity', 0)}/10). "
            f"{r.get('explanation') or ''}".rstrip()
        )
    return "\n".join(out)


def violated_rules(row: dict[str, Any]) -> list[int]:
    return [r["rule_index"] for r in rule_labels(row) if r["label"] == "VIOLATED"]


def turns_text(by_rule: dict[int, list[int]]) -> str:
    """`3: 1,2; 5: 4` (rule: agent turns), the format of the violated-turns question."""
    return "; ".join(f"{rule}: {','.join(str(t) for t in turns)}" for rule, turns in sorted(by_rule.items()))


def parse_turns(text: str | None) -> dict[int, list[int]]:
    """Parse `3: 1,2; 5: 4` leniently (spaces, `rule 3: turn 1 and 2`, newlines as separators)."""
    out: dict[int, list[int]] = {}
    for part in (text or "").replace("\n", ";").split(";"):
        if ":" not in part:
            continue
        left, right = part.split(":", 1)
        rule = [int(x) for x in _ints(left)]
        if len(rule) != 1:
            continue
        out.setdefault(rule[0], [])
        out[rule[0]].extend(t for t in _ints(right) if t not in out[rule[0]])
    return out


def _ints(text: str) -> list[int]:
    import re

    return [int(x) for x in re.findall(r"\d+", text)]


def labelling_model(row: dict[str, Any]) -> str:
    models = orjson.loads(row["models_json"]) if row.get("models_json") else {}
    if isinstance(models, dict):
        return str(models.get("label") or models.get("labels") or next(iter(models.values()), "llm"))
    return "llm"


def confidence(row: dict[str, Any]) -> float:
    """The suggestion score: 1 for an unambiguous judgement, 0 for the most ambiguous (10)."""
    return round(1.0 - min(max(int(row.get("max_ambiguity") or 0), 0), 10) / 10, 2)


def select(rows: list[dict[str, Any]], n: int, strategy: str, seed: int = 0) -> list[dict[str, Any]]:
    """Choose n samples. random: uniform. hard: weighted by policy size x dialogue length (the
    paper's human set leaned to long policies and dialogues). stratified: round robin over the
    (label, dynamic) cells, so PASS/FAIL and the four dynamics are balanced as far as the data allow."""
    if strategy not in STRATEGIES:
        raise ValueError(f"--strategy {strategy!r}: expected one of {', '.join(STRATEGIES)}")
    rng = random.Random(seed)
    rows = sorted(rows, key=lambda r: r["slot"])
    if n >= len(rows):
        return rows
    if strategy == "random":
        return sorted(rng.sample(rows, n), key=lambda r: r["slot"])
    if strategy == "hard":
        # Efraimidis-Spirakis weighted sampling without replacement: key u^(1/w), keep the n largest.
        def key(r: dict[str, Any]) -> float:
            w = max(1, r.get("num_rules") or 1) * max(1, r.get("num_turns") or 1)
            return math.log(rng.random() or 1e-300) / w

        keyed = [(key(r), r) for r in rows]
        keyed.sort(key=lambda kr: kr[0], reverse=True)
        return sorted((r for _, r in keyed[:n]), key=lambda r: r["slot"])
    # Two levels: labels take turns (PASS, FAIL, ...), and within a label its dynamics take turns.
    cells: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        cells[r.get("label") or ""][r.get("dynamic") or ""].append(r)
    for by_dynamic in cells.values():
        for cell in by_dynamic.values():
            rng.shuffle(cell)
    turn = {label: 0 for label in cells}

    def take(label: str) -> dict[str, Any] | None:
        dyns = [d for d in sorted(cells[label]) if cells[label][d]]
        if not dyns:
            return None
        d = dyns[turn[label] % len(dyns)]
        turn[label] += 1
        return cells[label][d].pop()

    chosen: list[dict[str, Any]] = []
    while len(chosen) < n:
        for label in sorted(cells):
            if len(chosen) < n and (r := take(label)) is not None:
                chosen.append(r)
    return sorted(chosen, key=lambda r: r["slot"])
