"""`factory safety import`: a safety dataset in policy-compliance form, into table `safety_samples`.

Each source row (read by `factory.safety.sources`) becomes one sample: a policy of numbered rules
from the source's taxonomy (`factory.safety.taxonomy`), the dialogue in the factory's
`User:` / `Agent:` convention, a PASS/FAIL label and a label per rule. The rules of the categories
the source marks as broken are VIOLATED; 1-4 further categories of the same taxonomy that the row
does not flag are added as NOT VIOLATED rules, and the wording of every rule is drawn too, all from
a seeded hash of (seed, source, source_id), so the same input always gives the same sample and the
policies differ from row to row. Prompt-only rows are judged with user-side rules when the source
labels the prompt, and skipped otherwise; rows without the needed label are skipped; both counted.

Re-importing a source replaces its rows. `--traces` attaches reasoning traces (see `load_traces`).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import random
import re
import socket
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import orjson
import pyarrow as pa

from factory.duckdb_views import registered
from factory.errors import ConfigError
from factory.safety.sources import AGENT, HUB_IDS, READERS, Parsed
from factory.safety.taxonomy import (
    AGENT_TEMPLATES,
    GENERAL,
    OVER_REFUSAL_RULES,
    TAXONOMIES,
    USER_TEMPLATES,
    Category,
)
from factory.store.sample_row import safety_ddl, safety_row

SOURCES = tuple(READERS)
FORMATS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}
# The Hub config read when a source has several (ToxicChat's latest version, WildGuardMix's train set).
DEFAULT_CONFIGS = {"toxicchat": "toxicchat0124", "wildguardmix": "wildguardtrain"}
HUB_PROBE_TIMEOUT_S = 3.0
MAX_DISTRACTORS = 4


@dataclass
class ImportReport:
    source: str
    read: int = 0
    imported: int = 0
    prompt_only: int = 0
    labels: Counter = field(default_factory=Counter)  # PASS / FAIL
    skipped: Counter = field(default_factory=Counter)  # reason -> rows
    policies: int = 0  # distinct policy texts
    with_reasoning: int = 0
    traces_read: int = 0
    traces_unmatched: int = 0

    def lines(self) -> list[str]:
        skipped = ", ".join(f"{k}={v}" for k, v in sorted(self.skipped.items())) or "none"
        out = [
            f"{self.source}: read {self.read} rows, imported {self.imported} "
            f"(PASS {self.labels['PASS']}, FAIL {self.labels['FAIL']}; prompt-only judged with user-side "
            f"rules {self.prompt_only}; {self.policies} distinct policies)",
            f"skipped {sum(self.skipped.values())}: {skipped}",
        ]
        if self.traces_read:
            out.append(
                f"reasoning traces: {self.traces_read} read, {self.with_reasoning} rows matched, "
                f"{self.traces_unmatched} traces matched no row"
            )
        return out


# -- reading the source ----------------------------------------------------------------------


def _offline() -> bool:
    return any(
        os.environ.get(v, "") not in ("", "0", "false") for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    )


def _local_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and _format(p))
    if not files:
        raise ConfigError(f"--source {path}: no JSON, JSONL, Parquet or CSV files in this folder")
    return files


def _format(path: Path) -> str | None:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in (".gz", ".xz", ".bz2", ".zst"):
        suffixes = suffixes[:-1]
    return FORMATS.get(suffixes[-1]) if suffixes else None


def _check_hub(hub_id: str) -> None:
    """Fail in seconds, not minutes of retries, when the Hub cannot be reached."""
    hint = (
        f"pass local files of the dataset instead: --source PATH (a file or folder in {hub_id}'s own format)"
    )
    if _offline():
        raise ConfigError(
            f"--source {hub_id}: the Hugging Face Hub is offline (HF_HUB_OFFLINE is set); {hint}"
        )
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host = endpoint.hostname or "huggingface.co"
    port = endpoint.port or (443 if endpoint.scheme != "http" else 80)
    try:
        socket.create_connection((host, port), timeout=HUB_PROBE_TIMEOUT_S).close()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(
            f"--source {hub_id}: cannot reach the Hugging Face Hub at {host} ({reason}); {hint}"
        ) from exc


def iter_source(source: str, where: str, config: str | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
    """(split or file name, row) for every row of a local file/folder or a Hub dataset."""
    import datasets

    datasets.disable_progress_bars()
    path = Path(where)
    if path.exists():
        for file in _local_files(path):
            fmt = _format(file)
            if fmt is None:
                raise ConfigError(f"--source {file}: not a JSON, JSONL, Parquet or CSV file")
            try:
                ds = datasets.load_dataset(fmt, data_files=str(file), split="train")
            except Exception as exc:  # malformed file: one line naming it
                detail = " ".join(str(exc).split())[:300]
                raise ConfigError(f"--source {file}: cannot read it as {fmt}: {detail}") from exc
            name = file.name.split(".")[0]
            for row in ds:
                yield name, row
        return
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", where):
        raise ConfigError(f"--source {where}: no such file or folder, and not a Hub id (owner/name)")
    _check_hub(where)
    try:
        dd = datasets.load_dataset(where, config or DEFAULT_CONFIGS.get(source))
    except Exception as exc:
        detail = " ".join(str(exc).split())[:300]
        raise ConfigError(
            f"--source {where}: cannot load it from the Hub ({detail}); pass local files"
        ) from exc
    for split, ds in dd.items():
        for row in ds:
            yield split, row


# -- reasoning traces ------------------------------------------------------------------------


def norm_text(text: str | None) -> str:
    return " ".join((text or "").lower().split())


def match_key(prompt: str, response: str | None) -> str:
    return f"{norm_text(prompt)}\x00{norm_text(response)}"


_GR_INPUT = re.compile(r"^\s*Human user:\s*(.*?)\s*(?:AI assistant:\s*(.*?))?\s*$", re.S)


def _trace_of(rec: dict[str, Any]) -> tuple[str, str | None, str] | None:
    """(prompt, response, reasoning) of one trace line, or None when it has none of the forms."""
    if "prompt" in rec and "reasoning" in rec:
        return str(rec["prompt"] or ""), rec.get("response"), str(rec["reasoning"] or "")
    if "input" in rec and "output" in rec:  # GuardReasonerTrain's instruction/input/output form
        m = _GR_INPUT.match(str(rec["input"] or ""))
        if not m:
            return None
        response = m.group(2)
        if response is not None and response.strip().lower() in ("", "none", "none."):
            response = None
        reasoning = re.split(r"\n-{3,}\s*\n|\n\s*Answers:", str(rec["output"] or ""), maxsplit=1)[0]
        return m.group(1), response, reasoning
    return None


def load_traces(path: Path) -> dict[str, str]:
    """Reasoning traces by `match_key`.

    A JSONL file (one trace per line) or a JSON array (GuardReasonerTrain publishes its splits as
    `.json` files), optionally gzipped, each trace in either form:
    * `{"prompt": ..., "response": ... (null or absent for a prompt-only row), "reasoning": ...}`
    * GuardReasonerTrain's `{"instruction": ..., "input": "Human user:\\n<prompt>\\n\\nAI assistant:\\n<response
      or None>", "output": "<reasoning steps> --- Answers: ..."}`: the reasoning is the output before
      its answers.
    A row matches a trace when their prompt and response are equal after lower-casing and collapsing
    whitespace."""
    if not path.is_file():
        raise ConfigError(f"--traces {path}: no such file")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        data = fh.read()
    if data.lstrip()[:1] == b"[":
        try:
            records = list(enumerate(orjson.loads(data), start=1))
        except orjson.JSONDecodeError as exc:
            raise ConfigError(f"--traces {path}: not a valid JSON array ({exc})") from exc
        where = "record"
    else:
        records = []
        for number, line in enumerate(data.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append((number, orjson.loads(line)))
            except orjson.JSONDecodeError as exc:
                raise ConfigError(f"--traces {path}: line {number} is not JSON ({exc})") from exc
        where = "line"
    traces: dict[str, str] = {}
    for number, rec in records:
        trace = _trace_of(rec) if isinstance(rec, dict) else None
        if trace is None:
            raise ConfigError(
                f"--traces {path}: {where} {number} has neither prompt/response/reasoning nor input/output"
            )
        prompt, response, reasoning = trace
        if reasoning.strip():
            traces[match_key(prompt, response)] = reasoning.strip()
    return traces


# -- one sample ------------------------------------------------------------------------------


def _rng(seed: int, source: str, source_id: str) -> random.Random:
    digest = hashlib.sha256(f"{seed}:safety:{source}:{source_id}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _category(source: str, key: str) -> Category:
    if key == GENERAL.key:
        return GENERAL
    return next(c for c in TAXONOMIES[source] if c.key == key)


def convert(source: str, p: Parsed, seed: int, split: str) -> dict[str, Any]:
    """The `safety_samples` row for one parsed source row."""
    rng = _rng(seed, source, p.source_id)
    templates = AGENT_TEMPLATES if p.side == AGENT else USER_TEMPLATES
    entries: list[tuple[str, bool]] = [(k, True) for k in p.violated]
    if p.harmful and not entries:
        entries = [(GENERAL.key, True)]
    pool = [c.key for c in TAXONOMIES[source] if c.key not in p.flagged and c.key not in p.violated]
    if source == "toxicchat":
        entries += [(k, False) for k in pool]  # two labels only: every unflagged one is in the policy
    elif pool:
        low = 1 if entries else min(2, len(pool))
        entries += [(k, False) for k in rng.sample(pool, rng.randint(low, min(len(pool), MAX_DISTRACTORS)))]
    for kind, violated in p.extra:
        if violated or rng.random() < 0.5:
            entries.append((kind, violated))
    rng.shuffle(entries)

    rules, rule_ids, rule_labels, violated_rules = [], [], [], []
    judged = "response" if p.side == AGENT else "user message"
    for i, (key, violated) in enumerate(entries, start=1):
        if key == "over_refusal":
            text = rng.choice(OVER_REFUSAL_RULES)
            why = "the source labels the prompt harmless and the response a refusal"
        else:
            cat = _category(source, key)
            text = rng.choice(templates).format(d=rng.choice(cat.descriptions))
            why = f"the source labels the {judged} harmful ({key})"
        rules.append(text)
        rule_ids.append(f"{source}:{key}")
        if violated:
            violated_rules.append(i)
        rule_labels.append(
            {
                "rule_index": i,
                "label": "VIOLATED" if violated else "NOT VIOLATED",
                "ambiguity": 0,
                "explanation": why if violated else "",
                "violated_turns": [1] if violated and p.side == AGENT else [],
            }
        )
    label = "FAIL" if violated_rules else "PASS"
    turns = [{"role": "user", "content": p.prompt}]
    if p.response:
        turns.append({"role": "agent", "content": p.response})
    policy = "\n".join(f"{i}. {r}" for i, r in enumerate(rules, start=1))
    transcript = "\n".join(f"{'User' if t['role'] == 'user' else 'Agent'}: {t['content']}" for t in turns)
    if violated_rules:
        explanation = (
            f"Rule {', '.join(map(str, violated_rules))} is broken: "
            + rule_labels[violated_rules[0] - 1]["explanation"]
            + "."
        )
    else:
        explanation = f"No rule is broken: the source labels the {judged} as not harmful."
    return safety_row(
        sample_id=f"{source}-{p.source_id}",
        source=source,
        source_id=p.source_id,
        source_labels_json=orjson.dumps(p.labels, default=str).decode(),
        source_split=split,
        prompt_only=p.response is None,
        policy_id=f"{source}-policy-{hashlib.sha256(policy.encode()).hexdigest()[:12]}",
        policy=policy,
        transcript=transcript,
        label=label,
        rules=rules,
        rule_ids=rule_ids,
        turns_json=orjson.dumps(turns).decode(),
        rule_labels_json=orjson.dumps(rule_labels).decode(),
        violated_rules=violated_rules,
        explanation=explanation,
        reasoning="",
        trace_mode="answer",
        num_rules=len(rules),
        num_turns=sum(1 for t in turns if t["role"] == "agent") or 1,
    )


# -- the command -----------------------------------------------------------------------------


def import_source(
    db: Path,
    source: str,
    where: str,
    *,
    limit: int | None = None,
    traces: Path | None = None,
    seed: int = 0,
    config: str | None = None,
) -> ImportReport:
    """Import `source` from `where` (a local file/folder or a Hub id) into `db`'s `safety_samples`."""
    if source not in READERS:
        raise ConfigError(f"unknown safety source {source!r}; sources: {', '.join(SOURCES)}")
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit {limit}: must be at least 1")
    trace_map = load_traces(traces) if traces is not None else {}
    reader = READERS[source]
    report = ImportReport(source, traces_read=len(trace_map))
    rows: dict[str, dict[str, Any]] = {}
    used: set[str] = set()
    for index, (split, raw) in enumerate(iter_source(source, where, config)):
        if limit is not None and index >= limit:
            break
        report.read += 1
        parsed = reader(dict(raw), index)
        if isinstance(parsed, str):
            report.skipped[parsed] += 1
            continue
        row = convert(source, parsed, seed, split)
        if row["sample_id"] in rows:
            report.skipped["duplicate"] += 1
            continue
        key = match_key(parsed.prompt, parsed.response)
        if key in trace_map:
            row.update(reasoning=trace_map[key], trace_mode="think")
            used.add(key)
            report.with_reasoning += 1
        rows[row["sample_id"]] = row
        report.imported += 1
        report.prompt_only += int(row["prompt_only"])
        report.labels[row["label"]] += 1
    report.policies = len({r["policy"] for r in rows.values()})
    report.traces_unmatched = len(set(trace_map) - used)
    _write(db, source, list(rows.values()))
    return report


def _write(db: Path, source: str, rows: list[dict[str, Any]]) -> None:
    from factory.store.db import Store, StoreError

    store = Store(db)
    try:
        with store.lock:
            con = store.con
            con.execute(safety_ddl()).fetchall()
            con.execute("BEGIN TRANSACTION").fetchall()
            try:
                con.execute("DELETE FROM safety_samples WHERE source = ?", [source]).fetchall()
                if rows:
                    schema = con.sql("SELECT * FROM safety_samples LIMIT 0").to_arrow_table().schema
                    cols = schema.names
                    table = pa.Table.from_pylist([{c: r[c] for c in cols} for r in rows], schema=schema)
                    with registered(con, "_safety_batch", table):
                        con.execute("INSERT INTO safety_samples SELECT * FROM _safety_batch").fetchall()
                con.execute("COMMIT").fetchall()
            except BaseException:
                con.execute("ROLLBACK").fetchall()
                raise
    except Exception as exc:
        if isinstance(exc, StoreError | ConfigError):
            raise
        import duckdb

        if isinstance(exc, duckdb.Error):
            raise StoreError(
                f"cannot write the safety samples to {db}: {' '.join(str(exc).split())}"
            ) from exc
        raise
    finally:
        store.close()


__all__ = ["HUB_IDS", "SOURCES", "ImportReport", "import_source", "load_traces", "match_key"]
