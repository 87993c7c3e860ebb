"""The run fingerprint: everything that shapes the data of a build, recorded at its first run.

A resume whose fingerprint differs would mix samples made under different rules into one
dataset, so it is refused with the list of what changed. Client-side limits (concurrency, rpm,
timeouts, patience), online or batch mode, prices, the budget and estimate rates (`cost`), the oversample cap and `--n` do not shape the data and are left out.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from factory.llm.config import EndpointConfig
from factory.paths import banks_dir
from factory.prompt_templates import load_prompt
from factory.recipes import Recipe

# The prompt templates the build's stages render.
BUILD_PROMPTS = ("paraphrase", "agent_persona", "dialogue", "label", "trace")
# Recipe keys that do not change what a slot produces.
NOT_DATA = (
    "name",
    "description",
    "endpoint_defaults",
    "endpoints",
    "pricing",
    "oversample_cap",
    "cost",
    "batch",  # online or batch, the same requests get the same answers
)


def banks_hash(root: Path | None = None) -> str:
    root = root or banks_dir()
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): value}


def run_fingerprint(
    recipe: Recipe, endpoints: dict[str, EndpointConfig], seed: int, banks_root: Path | None = None
) -> dict[str, Any]:
    """A flat {key: value} of every data-shaping input (compared key by key on resume)."""
    data = recipe.model_dump(mode="json", exclude=set(NOT_DATA))
    fp: dict[str, Any] = {"seed": seed}
    fp.update({f"recipe.{k}": v for k, v in _flatten(data).items()})
    fp.update({f"model.{stage}": ep.spec for stage, ep in endpoints.items()})
    fp.update({f"prompt.{name}": load_prompt(name).hash for name in BUILD_PROMPTS})
    fp["banks"] = banks_hash(banks_root)
    return fp


def describe_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    changes = []
    for key in sorted(old.keys() | new.keys()):
        a, b = old.get(key, "(unset)"), new.get(key, "(unset)")
        if a != b:
            if key.startswith("prompt."):
                changes.append(f"prompts/{key[7:]}.txt changed")
            elif key == "banks":
                changes.append("the banks changed")
            else:
                changes.append(f"{key}: {a!r} -> {b!r}")
    return changes
