"""The sample row, defined once: the committer builds it, the DDL is made from it, the export reads it.

Each column has a DuckDB type and, when exported, the name and feature it has in the exported
dataset. Columns stored as JSON text can be exported parsed (`turns_json` -> `turns`).
The export also carries columns derived from the row for the DynaBench / DynaGuard ecosystem
(`DERIVED`, computed in `export_record`): `metadata` (a JSON string), `base_id`,
`formatted_input` / `formatted_output`; and the exported `transcript` uses the published
DynaBench prefixes (`'User': ` / `'Agent': `, factory.guard_format) while the store keeps ours.
Feature descriptors are plain data ("string", "int32", "bool", [item], {field: descriptor}) so
that this module does not import `datasets`; the export turns them into `datasets.Features`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from factory.guard_format import dynabench_transcript, dynaguard_input, dynaguard_output

Feature = str | list | dict


@dataclass(frozen=True)
class Column:
    name: str
    sql: str
    feature: Feature | None = None  # None: kept in the store, not exported
    export_name: str | None = None  # defaults to name
    parse_json: bool = False  # stored as JSON text, exported as the parsed value

    @property
    def exported_as(self) -> str:
        return self.export_name or self.name


RULE_LABEL_FEATURE: Feature = {
    "rule_index": "int32",
    "label": "string",
    "ambiguity": "int32",
    "explanation": "string",
    "violated_turns": ["int32"],
}

SAMPLE_COLUMNS: tuple[Column, ...] = (
    Column("slot", "BIGINT PRIMARY KEY"),
    Column("sample_id", "VARCHAR", "string"),
    Column("policy_id", "VARCHAR", "string"),
    Column("policy", "VARCHAR", "string"),
    Column("transcript", "VARCHAR", "string"),
    Column("label", "VARCHAR", "string"),
    Column("rules", "VARCHAR[]", ["string"]),
    Column("rule_ids", "VARCHAR[]", ["string"]),  # bank ids of the policy's rules, in order
    # train/validation/test from the rule-disjoint pools; '' when the recipe splits by policy
    # (the export then hashes policy ids). Exported as the split itself, not as a column.
    Column("split", "VARCHAR"),
    Column("turns_json", "VARCHAR", [{"role": "string", "content": "string"}], "turns", parse_json=True),
    Column("rule_labels_json", "VARCHAR", [RULE_LABEL_FEATURE], "rule_labels", parse_json=True),
    Column("violated_rules", "INTEGER[]", ["int32"]),
    Column("explanation", "VARCHAR", "string"),
    Column("reasoning", "VARCHAR", "string"),
    Column("trace_mode", "VARCHAR", "string"),
    Column("industry", "VARCHAR", "string"),
    Column("dynamic", "VARCHAR", "string"),
    Column("near_miss", "BOOLEAN", "bool"),
    Column("num_rules", "INTEGER", "int32"),
    Column("num_turns", "INTEGER", "int32"),
    Column("intended_label", "VARCHAR", "string"),
    Column("agrees_with_intent", "BOOLEAN", "bool"),
    Column("max_ambiguity", "INTEGER", "int32"),
    Column("models_json", "VARCHAR", "string", "models"),
    Column("user_persona", "VARCHAR"),
    Column("agent_persona", "VARCHAR"),
)
SAMPLE_FIELDS = frozenset(c.name for c in SAMPLE_COLUMNS)
EXPORTED = tuple(c for c in SAMPLE_COLUMNS if c.feature is not None)
# Export-only columns computed from the row (see the module docstring).
DERIVED: dict[str, Feature] = {
    "metadata": "string",
    "base_id": "string",
    "formatted_input": "string",
    "formatted_output": "string",
}
#: Keys of the `metadata` JSON that the DynaGuard harness reads (-1 / "" when unknown), in order.
METADATA_KEYS = (
    "num_rules",
    "num_turns",
    "num_tokens",
    "num_hops",
    "num_counts",
    "rule_len",
    "failure_mode",
    "business_impact",
)

# Provenance, exported on every row: `source` is "dynabench" for the factory's own samples and the
# dataset name (beavertails, wildguardmix, toxicchat, aegis2) for imported safety samples; a
# factory sample's `source_id` is its sample_id and its `source_labels` is empty.
PROVENANCE_COLUMNS: tuple[Column, ...] = (
    Column("source", "VARCHAR", "string"),
    Column("source_id", "VARCHAR", "string"),
    Column("source_labels_json", "VARCHAR", "string", "source_labels"),
)
OWN_SOURCE = "dynabench"

EXPORTED = tuple(c for c in (*SAMPLE_COLUMNS, *PROVENANCE_COLUMNS) if c.feature is not None)

# Imported safety samples (`factory safety import`): table `safety_samples`. Its columns are a subset
# of the sample row's (same names, types and features) plus the provenance columns and a few of its
# own; an exported safety row gets the missing sample columns as empty values, so both kinds of row
# share one set of exported features (`export_features`).
_SHARED = {c.name: c for c in SAMPLE_COLUMNS}
SAFETY_COLUMNS: tuple[Column, ...] = (
    Column("sample_id", "VARCHAR PRIMARY KEY", "string"),
    *PROVENANCE_COLUMNS,
    Column("source_split", "VARCHAR"),  # the split of the original dataset the row came from
    Column("prompt_only", "BOOLEAN"),  # no response: judged with user-side rules
    *(
        _SHARED[name]
        for name in (
            "policy_id",
            "policy",
            "transcript",
            "label",
            "rules",
            "rule_ids",
            "turns_json",
            "rule_labels_json",
            "violated_rules",
            "explanation",
            "reasoning",
            "trace_mode",
            "num_rules",
            "num_turns",
        )
    ),
)
SAFETY_FIELDS = frozenset(c.name for c in SAFETY_COLUMNS)


# The DynaBench-style test set (`factory testset`, factory/testset): table `testset_samples`, one row
# per (grid case, intended label). Its own columns first, then every sample column but `slot`;
# a dropped case keeps its reason and leaves the sample columns empty. The export reads the
# accepted rows as the `test` split (`DynaBench` config) with `failure_mode` / `business_impact` in
# `metadata`.
TESTSET_OWN_COLUMNS: tuple[Column, ...] = (
    Column("sample_id", "VARCHAR PRIMARY KEY"),
    Column("case_id", "VARCHAR"),  # failure_mode/business_impact/scenario index
    Column("slot", "BIGINT"),  # the random stream of the case (its policy, personas, ...)
    Column("seed", "BIGINT"),
    Column("failure_mode", "VARCHAR"),
    Column("business_impact", "VARCHAR"),
    Column("scenario", "VARCHAR"),  # the grid's hand-written description the dialogue follows
    Column("status", "VARCHAR"),  # accepted | dropped
    Column("reason", "VARCHAR"),  # why a case side was dropped ('' when accepted)
    Column("detail", "VARCHAR"),
    Column("call_keys", "VARCHAR[]"),  # request-cache keys of the LLM calls behind the row
)
TESTSET_COLUMNS: tuple[Column, ...] = (
    *TESTSET_OWN_COLUMNS,
    *(c for c in SAMPLE_COLUMNS if c.name not in {"slot", "sample_id"}),
)
TESTSET_FIELDS = frozenset(c.name for c in TESTSET_COLUMNS)


def testset_ddl() -> str:
    cols = ", ".join(f"{c.name} {c.sql}" for c in TESTSET_COLUMNS)
    return f"CREATE TABLE IF NOT EXISTS testset_samples ({cols})"


def samples_ddl() -> str:
    cols = ", ".join(f"{c.name} {c.sql}" for c in SAMPLE_COLUMNS)
    return f"CREATE TABLE IF NOT EXISTS samples ({cols})"


def safety_ddl() -> str:
    cols = ", ".join(f"{c.name} {c.sql}" for c in SAFETY_COLUMNS)
    return f"CREATE TABLE IF NOT EXISTS safety_samples ({cols})"


def safety_row(**values: Any) -> dict[str, Any]:
    """A row for `safety_samples`; every column must be given, and nothing else."""
    missing = SAFETY_FIELDS - values.keys()
    extra = values.keys() - SAFETY_FIELDS
    if missing or extra:
        raise ValueError(f"safety row: missing {sorted(missing)}, unknown {sorted(extra)}")
    return values


def sample_row(**values: Any) -> dict[str, Any]:
    """A row for `samples`; every column must be given, and nothing else."""
    missing = SAMPLE_FIELDS - values.keys()
    extra = values.keys() - SAMPLE_FIELDS
    if missing or extra:
        raise ValueError(f"sample row: missing {sorted(missing)}, unknown {sorted(extra)}")
    return values


def _plain(value: Any, feature: Feature) -> Any:
    if feature == "string":
        return value or ""
    if feature == "bool":
        return bool(value)
    if isinstance(feature, list):
        return list(value or [])
    return value


def export_record(row: dict[str, Any]) -> dict[str, Any]:
    """A stored row (of `samples` or `safety_samples`) as an exported record (exported columns only,
    JSON parsed). A `samples` row gets the provenance of the factory's own data; a column a
    `safety_samples` row does not have is exported empty."""
    out = {}
    own = "source" not in row
    for c in EXPORTED:
        if own and c.name == "source":
            value = OWN_SOURCE
        elif own and c.name == "source_id":
            value = row["sample_id"]
        else:
            value = row.get(c.name)
        if c.parse_json:
            value = orjson.loads(value) if value else []
        out[c.exported_as] = _plain(value, c.feature)
    out.update(derived(out, row))
    return out


def derived(rec: dict[str, Any], row: dict[str, Any] | None = None) -> dict[str, Any]:
    """The DynaBench-compatible columns of an exported record; `transcript` is rewritten from the
    structured turns with the published prefixes (unchanged when a record has no turns). A
    `testset_samples` row (`row`) gives `failure_mode`, `business_impact` and its scenario."""
    row = row or {}
    transcript = dynabench_transcript(rec["turns"]) if rec["turns"] else rec["transcript"]
    rules = rec["rules"]
    metadata = {
        "num_rules": rec["num_rules"],
        "num_turns": rec["num_turns"],
        # whitespace-separated tokens of policy + transcript (not a model tokenizer's count)
        "num_tokens": len(rec["policy"].split()) + len(transcript.split()),
        "num_hops": -1,
        "num_counts": -1,
        "rule_len": round(sum(len(r) for r in rules) / len(rules), 1) if rules else -1,
        "failure_mode": row.get("failure_mode") or "",
        "business_impact": row.get("business_impact") or "",
        # our extras
        "num_tokens_method": "whitespace",
        "industry": rec["industry"],
        "dynamic": rec["dynamic"],
        "near_miss": rec["near_miss"],
        "max_ambiguity": rec["max_ambiguity"],
        "violated_rules": rec["violated_rules"],
    }
    if row.get("case_id"):
        metadata.update(testset_case=row["case_id"], scenario=row.get("scenario") or "")
    mode = "think" if rec["trace_mode"] == "think" and rec["reasoning"].strip() else "answer"
    return {
        "transcript": transcript,
        "metadata": orjson.dumps(metadata).decode(),
        "base_id": rec["sample_id"],
        "formatted_input": dynaguard_input(rec["policy"], transcript),
        "formatted_output": dynaguard_output(rec["label"], mode, rec["reasoning"], rec["explanation"]),
    }


def export_features() -> dict[str, Feature]:
    return {**{c.exported_as: c.feature for c in EXPORTED}, **DERIVED}
