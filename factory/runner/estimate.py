"""`factory build --dry-run`: what a build of N samples will cost, before any call.

The model: for `SAMPLE_SLOTS` slots the real policies are composed (banks + the recipe's size laws,
the same draws as the build), and every stage's real prompt is rendered with placeholder text of
typical length where an LLM would have written something (a paraphrased rule is as long as its bank
text, a dialogue turn `TYPICAL["user_turn"]`/`TYPICAL["agent_turn"]` characters, ...). Outputs are
the JSON the stage's schema asks for, filled the same way. Tokens are counted as characters / 4
plus 4 per message (tiktoken is not a dependency; the providers' tokenizers give within about 10%
on English text). Per slot that gives the calls, input and output tokens of each stage; the label
stage makes one call per rule of the drawn policy size, plus the spares that replace rules judged
too ambiguous: `size * p / (1 - p)` more calls (bounded by the spares drawn) for an ambiguous-rule
rate p (`cost.expected_ambiguous_rule_rate`, 0 when the threshold is 10).

Scaling to N: slots = N / (1 - drop rate) plus the slots the build starts beyond the last one it
needs (up to its in-flight window: `OVERSHOOT_SHARE` of a window's worth of slots, in work); a
dropped slot is taken to be dropped after labelling (the usual case: ambiguity or intent), so it
pays every stage but the trace; re-asks (`cost.expected_reask_rate` per call) resend the prompt with
the bad answer and the error appended.

`--pilot K` replaces the assumptions by measurements: a real K-sample build into a temporary
database, from which the drop rate, the calls of each stage per slot (spares and drops included),
the re-ask rate, the window overshoot and the ratio of actual to modelled tokens per call are taken;
the model is then evaluated with those factors on the sampled slots.

Prompt caching: each stage's system message (instructions and worked examples) is a static prefix,
and the label prompt puts the conversation before the rule, so the per-rule calls of one sample
share the conversation too; the `with caching` figures price that prefix at the model's
`cached_input` rate on every call where it is at least `CACHE_MIN_PREFIX` tokens (OpenAI's and
Anthropic's minimum cacheable prefix).
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import duckdb
import orjson

from factory.banks.loader import Banks, load_banks
from factory.llm.config import EndpointConfig
from factory.llm.pricing import BATCH_PRICE_FACTOR, PriceTable
from factory.llm.types import Message
from factory.prompt_templates import load_prompt
from factory.recipes import LLM_STAGES, Recipe
from factory.recipes.names import Stage
from factory.runner.window import slot_window
from factory.stages.compose import compose_policy, numbered
from factory.stages.dialogue import DYNAMIC_TEXT, _rule_ref, numbered_transcript, plan
from factory.stages.paraphrase import STYLES
from factory.stages.persona import user_persona
from factory.stages.sampling import slot_rng
from factory.stages.trace import MODE_TEXT

SAMPLE_SLOTS = 200
CHARS_PER_TOKEN = 4
MESSAGE_TOKENS = 4  # role and separators per chat message
CACHE_MIN_PREFIX = 1024
# A build stops with a window of slots in flight past the last one it needs; they get through the
# early stages (measured on local builds: nearly every one paraphrases, few reach the trace). Per
# stage: the share of a window's slots whose call was made.
OVERSHOOT_SHARE = {
    Stage.PARAPHRASE: 0.9,
    Stage.PERSONA: 0.6,
    Stage.DIALOGUE: 0.3,
    Stage.LABEL: 0.1,
    Stage.TRACE: 0.0,
}
REASK_EXTRA_TOKENS = 60  # the re-ask instruction with its error
# Assumed typical lengths (characters) of what the models write (not measured on real models here:
# a --pilot against the real models replaces them by measured token counts).
TYPICAL = {
    "agent_name": 8,
    "company": 22,
    "persona": 420,
    "scenario": 220,
    "user_turn": 260,
    "agent_turn": 480,
    "discussion": 420,
    "explanation": 150,
    "trace_reasoning": 1500,
    "trace_explanation": 260,
}


def ntokens(text: str) -> int:
    return len(text) // CHARS_PER_TOKEN + 1


def filler(n_chars: int) -> str:
    words = "the agent checks the request against the policy and answers the customer politely "
    return (words * (n_chars // len(words) + 1))[:n_chars]


def message_tokens(messages: list[Message]) -> tuple[int, int]:
    """(all input tokens, tokens of the system message: the static, cacheable prefix)."""
    total = sum(ntokens(m.content) + MESSAGE_TOKENS for m in messages)
    system = sum(ntokens(m.content) + MESSAGE_TOKENS for m in messages if m.role == "system")
    return total, system


@dataclass
class StageCalls:
    """Modelled calls of one stage for one slot (logical calls: re-asks come later)."""

    calls: float = 0.0
    input_tokens: float = 0.0
    output_tokens: float = 0.0
    prefix_tokens: float = 0.0  # cacheable system-prefix tokens over those calls

    def add(self, calls: float, messages: list[Message], output: Any, shared: int = 0) -> None:
        """`shared`: tokens after the system message that earlier calls sent too (a shared prefix)."""
        total, system = message_tokens(messages)
        prefix = system + shared
        self.calls += calls
        self.input_tokens += calls * total
        self.output_tokens += calls * ntokens(orjson.dumps(output).decode())
        self.prefix_tokens += calls * (prefix if prefix >= CACHE_MIN_PREFIX else 0)

    def scaled(self, k: float) -> StageCalls:
        return StageCalls(
            self.calls * k, self.input_tokens * k, self.output_tokens * k, self.prefix_tokens * k
        )

    def __iadd__(self, other: StageCalls) -> StageCalls:
        self.calls += other.calls
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.prefix_tokens += other.prefix_tokens
        return self


def _judgement(turn: int) -> dict:
    return {
        "turn": turn,
        "discussion": filler(TYPICAL["discussion"]),
        "explanation": filler(TYPICAL["explanation"]),
        "label": "NOT VIOLATED",
        "ambiguity": 1,
    }


def model_slot(
    recipe: Recipe, banks: Banks, seed: int, slot: int, ambiguous_rate: float
) -> dict[str, StageCalls]:
    """The modelled calls of every LLM stage for one slot, from its real policy and prompts."""
    ctx = SimpleNamespace(recipe=recipe, seed=seed, banks=banks)
    policy = compose_policy(
        banks,
        seed,
        slot,
        recipe.policy.rules_law,
        recipe.policy.industry_share,
        recipe.policy.max_categories,
        recipe.label.spare_share,
        recipe.label.max_spares,
    )
    rules = [r.text for r in policy.rules]
    size = policy.size
    out = {stage: StageCalls() for stage in LLM_STAGES}
    # paraphrase: one call rewriting every candidate rule
    style = slot_rng(seed, slot, "paraphrase").choice(STYLES)
    msgs = load_prompt("paraphrase").render(
        n_rules=len(rules), industry=policy.industry, style=style, rules=numbered(rules)
    )
    out[Stage.PARAPHRASE].add(1, msgs, {"rules": rules})
    # persona: one call
    rng = slot_rng(seed, slot, "agent")
    traits = {
        "industry": policy.industry,
        "role": rng.choice(banks.agent["roles"]),
        "tone": rng.choice(banks.agent["tones"]),
        "location": rng.choice(banks.agent["locations"]),
    }
    persona = {
        "agent_name": filler(TYPICAL["agent_name"]),
        "company": filler(TYPICAL["company"]),
        "persona": filler(TYPICAL["persona"]),
    }
    out[Stage.PERSONA].add(1, load_prompt("agent_persona").render(**traits), persona)
    # dialogue: one call, n_turns exchanges
    dynamic, _near, targets, n_turns = plan(ctx, slot, size)  # type: ignore[arg-type]
    ref, pron = _rule_ref(targets)
    user_text, _ = user_persona(ctx, slot)  # type: ignore[arg-type]
    msgs = load_prompt("dialogue").render(
        agent_name=persona["agent_name"],
        company=persona["company"],
        agent_persona=persona["persona"],
        user_persona=user_text,
        policy=numbered(rules),
        dynamic_instructions=DYNAMIC_TEXT[dynamic].format(targets=ref, them=pron),
        target_instructions="Rules in focus:\n" + "\n".join(f"{i}. {rules[i - 1]}" for i in targets),
        near_miss_instructions="",
        n_turns=n_turns,
    )
    exchanges = [{"user": filler(TYPICAL["user_turn"]), "agent": filler(TYPICAL["agent_turn"])}] * n_turns
    out[Stage.DIALOGUE].add(1, msgs, {"scenario": filler(TYPICAL["scenario"]), "exchanges": exchanges})
    turns: list[dict[str, str]] = []
    for ex in exchanges:
        turns += [{"role": "user", "content": ex["user"]}, {"role": "agent", "content": ex["agent"]}]
    transcript = numbered_transcript(turns)
    # label: one call per rule of the policy, plus the spares replacing ambiguous rules
    spares = len(rules) - size
    extra = min(spares, size * ambiguous_rate / (1 - ambiguous_rate)) if ambiguous_rate > 0 else 0.0
    judgements = {"judgements": [_judgement(k) for k in range(1, n_turns + 1)]}
    label = load_prompt("label")
    per_rule = StageCalls()
    for i in range(size):
        # the conversation precedes the rule: after the first call of a slot it is a cached prefix too
        shared = ntokens(transcript) if i else 0
        per_rule.add(
            1, label.render(rule=rules[i], n_turns=n_turns, transcript=transcript), judgements, shared
        )
    out[Stage.LABEL] += per_rule.scaled((size + extra) / size if size else 0.0)
    # trace: one call, in reasoning or answer mode
    mode = "think" if slot_rng(seed, slot, "trace").random() < recipe.traces.think_fraction else "answer"
    shown = min(size, 8)
    findings = "\n".join(
        f"Rule {i}: NOT VIOLATED. {filler(TYPICAL['explanation'])}" for i in range(1, shown + 1)
    )
    msgs = load_prompt("trace").render(
        policy=numbered(rules[:size]),
        transcript=transcript,
        judgements=findings,
        label="PASS",
        mode_instructions=MODE_TEXT[mode],
    )
    answer: dict[str, str] = {"explanation": filler(TYPICAL["trace_explanation"]), "verdict": "PASS"}
    if mode == "think":
        answer = {"reasoning": filler(TYPICAL["trace_reasoning"])} | answer
    out[Stage.TRACE].add(1, msgs, answer)
    return out


def model_slots(
    recipe: Recipe, banks: Banks, seed: int, slots: range, ambiguous_rate: float
) -> dict[str, StageCalls]:
    """The mean per slot over `slots`."""
    total = {stage: StageCalls() for stage in LLM_STAGES}
    for slot in slots:
        for stage, calls in model_slot(recipe, banks, seed, slot, ambiguous_rate).items():
            total[stage] += calls
    return {stage: c.scaled(1 / max(1, len(slots))) for stage, c in total.items()}


@dataclass
class Factors:
    """What scales the modelled slot to the build: assumed from the recipe, or measured by a pilot."""

    source: str  # recipe | pilot
    accept_rate: float  # accepted samples per committed slot
    # per stage: calls made by the slots started past the last needed one, per slot of the window
    # (recipe: OVERSHOOT_SHARE times the modelled calls of a slot)
    overshoot: dict[str, float] = field(default_factory=dict)
    # per stage: calls per committed slot relative to the model, re-asks per call, token ratios
    calls: dict[str, float] = field(default_factory=dict)
    reask: dict[str, float] = field(default_factory=dict)
    input_ratio: dict[str, float] = field(default_factory=dict)
    output_ratio: dict[str, float] = field(default_factory=dict)
    ambiguous_rule_rate: float = 0.0
    pilot: dict[str, Any] = field(default_factory=dict)


def recipe_factors(recipe: Recipe) -> Factors:
    cost = recipe.cost
    accept = 1 - cost.expected_drop_rate
    return Factors(
        source="recipe",
        accept_rate=accept,
        # a dropped slot is taken to leave after labelling: it never reaches the trace
        calls={stage: (accept if stage == Stage.TRACE else 1.0) for stage in LLM_STAGES},
        reask=dict.fromkeys(LLM_STAGES, cost.expected_reask_rate),
        ambiguous_rule_rate=ambiguous_rate(recipe),
    )


def ambiguous_rate(recipe: Recipe) -> float:
    return 0.0 if recipe.label.ambiguity_threshold >= 10 else recipe.cost.expected_ambiguous_rule_rate


def _money(
    tokens_in: float, cached: float, tokens_out: float, prices: PriceTable, model: str
) -> float | None:
    price = prices.lookup(model)
    if price is None:
        return None
    rate = price.input if price.cached_input is None else price.cached_input
    return ((tokens_in - cached) * price.input + cached * rate + tokens_out * price.output) / 1_000_000


def estimate(
    recipe: Recipe,
    endpoints: dict[str, EndpointConfig],
    n: int,
    seed: int,
    factors: Factors | None = None,
    banks: Banks | None = None,
    sample_slots: int = SAMPLE_SLOTS,
) -> dict[str, Any]:
    """The estimate as one JSON-ready object: per stage and total calls, tokens and dollars."""
    if banks is None:
        banks, _ = load_banks()
    factors = factors or recipe_factors(recipe)
    rate = 0.0 if factors.source == "pilot" else factors.ambiguous_rule_rate
    per_slot = model_slots(recipe, banks, seed, range(sample_slots), rate)
    window = slot_window(endpoints, n, batch_window=recipe.batch.window)
    needed = n / max(factors.accept_rate, 1e-6)
    prices = PriceTable.from_mapping(recipe.pricing)
    stages: dict[str, Any] = {}
    for stage in LLM_STAGES:
        model = endpoints[stage]
        m = per_slot[stage]
        per_call = m.calls * factors.calls.get(stage, 1.0)  # logical calls per needed slot
        q = factors.reask.get(stage, 0.0)
        per_in = (m.input_tokens / m.calls if m.calls else 0.0) * factors.input_ratio.get(stage, 1.0)
        per_out = (m.output_tokens / m.calls if m.calls else 0.0) * factors.output_ratio.get(stage, 1.0)
        per_prefix = m.prefix_tokens / m.calls if m.calls else 0.0
        if factors.source == "pilot":  # measured per network call, re-asks and overshoot included
            calls = needed * per_call * (1 + q) + window * factors.overshoot.get(stage, 0.0)
            tokens_in, tokens_out = calls * per_in, calls * per_out
        else:  # a re-ask resends the prompt with the bad answer and the error
            logical = needed * per_call + window * OVERSHOOT_SHARE[stage] * m.calls
            calls = logical * (1 + q)
            tokens_in = calls * per_in + logical * q * (per_out + REASK_EXTRA_TOKENS)
            tokens_out = calls * per_out
        cached = min(tokens_in, calls * per_prefix)
        stages[str(stage)] = {
            "model": model.spec,
            "calls": round(calls),
            "input_tokens": round(tokens_in),
            "output_tokens": round(tokens_out),
            "cached_input_tokens": round(cached),
            "mode": "batch" if model.batch is not None else "online",
            "cost_usd": _money(tokens_in, 0, tokens_out, prices, model.model),
            "cost_usd_with_caching": _money(tokens_in, cached, tokens_out, prices, model.model),
        }
        # provider batch jobs bill half the online price, prompt-cache reads included
        for key in ("cost_usd", "cost_usd_with_caching"):
            online = stages[str(stage)][key]
            stages[str(stage)][key.replace("cost_usd", "cost_usd_batch")] = (
                None if online is None else online * BATCH_PRICE_FACTOR
            )
        # what this build will pay per its mode (without counting on prompt-cache hits)
        stages[str(stage)]["cost_usd_expected"] = stages[str(stage)][
            "cost_usd_batch" if model.batch is not None else "cost_usd"
        ]
    total: dict[str, Any] = {
        k: sum(s[k] for s in stages.values())
        for k in ("calls", "input_tokens", "output_tokens", "cached_input_tokens")
    }
    for k in (
        "cost_usd",
        "cost_usd_with_caching",
        "cost_usd_batch",
        "cost_usd_batch_with_caching",
        "cost_usd_expected",
    ):
        values = [s[k] for s in stages.values()]
        total[k] = None if any(v is None for v in values) else sum(values)
    total["unpriced"] = sorted({s["model"] for s in stages.values() if s["cost_usd"] is None})
    return {
        "n": n,
        "seed": seed,
        "pipeline": recipe.name,
        "source": factors.source,
        "slots": round(needed),
        "window": window,
        "accept_rate": round(factors.accept_rate, 4),
        "ambiguous_rule_rate": round(factors.ambiguous_rule_rate, 4),
        "reask_rate": {str(k): round(v, 4) for k, v in factors.reask.items()},
        "sampled_slots": sample_slots,
        "tokenizer": f"chars/{CHARS_PER_TOKEN}",
        "stages": stages,
        "total": total,
        "pilot": factors.pilot,
    }


# -- the pilot ------------------------------------------------------------------------------------
async def pilot_factors(
    recipe: Recipe,
    endpoints: dict[str, EndpointConfig],
    k: int,
    seed: int,
    overrides: dict[str, str],
    banks: Banks,
    banks_root: Path | None = None,
) -> Factors:
    """Run a real K-sample build into a temporary database and measure the factors there."""
    from factory.runner.build import build

    with tempfile.TemporaryDirectory(prefix="factory-pilot-") as tmp:
        db = Path(tmp) / "pilot.duckdb"
        summary = await build(db, recipe, k, seed, overrides, progress=False, banks_root=banks_root)
        return measure(db, recipe, endpoints, banks, seed, k, summary.cost_usd)


STAGE_TABLES = {
    Stage.PARAPHRASE: "paraphrases",
    Stage.PERSONA: "personas",
    Stage.DIALOGUE: "dialogues",
    Stage.LABEL: "rule_labels",
    Stage.TRACE: "traces",
}


def measure(
    db: Path,
    recipe: Recipe,
    endpoints: dict[str, EndpointConfig],
    banks: Banks,
    seed: int,
    k: int,
    cost: float,
) -> Factors:
    """Factors from a finished (pilot) build's tables."""
    con = duckdb.connect(str(db), read_only=True)
    try:

        def one(sql: str) -> Any:
            return con.execute(sql).fetchall()[0][0] or 0

        committed = one("SELECT count(*) FROM slot_status")
        accepted = one("SELECT count(*) FROM samples")
        started = one("SELECT count(*) FROM policies")
        calls = dict(con.execute("SELECT stage, count(*) FROM llm_calls GROUP BY 1").fetchall())
        tokens = {
            r[0]: (r[1], r[2])
            for r in con.execute(
                "SELECT stage, sum(input_tokens), sum(output_tokens) FROM llm_calls GROUP BY 1"
            ).fetchall()
        }
        logical_all: dict[str, int] = {}
        logical_committed: dict[str, int] = {}
        for stage, table in STAGE_TABLES.items():
            logical_all[stage] = one(f"SELECT count(*) FROM {table}")
            logical_committed[stage] = one(f"SELECT count(*) FROM {table} JOIN slot_status USING (slot)")
        over_label = one(
            "SELECT count(*) FROM rule_labels r JOIN policies p USING (slot) WHERE r.rule_index > p.target_size"
        )
        size_label = one(
            "SELECT count(*) FROM rule_labels r JOIN policies p USING (slot) WHERE r.rule_index <= p.target_size"
        )
    finally:
        con.close()
    if committed == 0 or accepted == 0:
        from factory.errors import BuildStopped

        raise BuildStopped(
            f"the pilot of {k} samples accepted none; check `factory stats` of a small build", 1
        )
    model = model_slots(recipe, banks, seed, range(committed), 0.0)
    f = Factors(source="pilot", accept_rate=accepted / committed)
    for stage in LLM_STAGES:
        m = model[stage]
        per_committed = logical_committed[stage] / committed
        f.calls[stage] = per_committed / m.calls if m.calls else 1.0
        network = calls.get(stage, 0)
        f.reask[stage] = max(0.0, network / logical_all[stage] - 1) if logical_all[stage] else 0.0
        tin, tout = tokens.get(stage, (0, 0))
        if network and m.calls:
            f.input_ratio[stage] = (tin / network) / (m.input_tokens / m.calls)
            f.output_ratio[stage] = (tout / network) / (m.output_tokens / m.calls)
    # calls made by slots started past the last committed one, per slot of the pilot's window
    window = slot_window(endpoints, k, batch_window=recipe.batch.window)
    for stage in LLM_STAGES:
        expected = logical_committed[stage] * (1 + f.reask[stage])
        f.overshoot[stage] = max(0.0, calls.get(stage, 0) - expected) / window
    f.ambiguous_rule_rate = over_label / (size_label + over_label) if size_label + over_label else 0.0
    f.pilot = {
        "samples": accepted,
        "slots_committed": committed,
        "slots_started": started,
        "calls": sum(calls.values()),
        "cost_usd": round(cost, 6),
        "window": window,
    }
    return f


def store_estimate(store: Any, run_id: str | None, est: dict[str, Any]) -> None:
    import time

    store.add(
        "estimates",
        {
            "run_id": run_id,
            "created_at": time.time(),
            "n_target": est["n"],
            "source": est["source"],
            "estimate_json": orjson.dumps(est).decode(),
        },
    )
    store.flush()


def format_estimate(est: dict[str, Any]) -> str:
    def usd(v: float | None) -> str:
        return "unpriced" if v is None else f"${v:,.2f}"

    lines = [
        f"estimate for --n {est['n']} ({est['pipeline']}, seed {est['seed']}; rates from the {est['source']}; "
        f"{est['sampled_slots']} sampled slots; tokens as {est['tokenizer']})",
        f"slots: {est['slots']} (accept rate {est['accept_rate']:.1%}, ambiguous-rule rate "
        f"{est['ambiguous_rule_rate']:.1%})",
        f"  {'stage':10} {'model':28} {'calls':>10} {'input tok':>14} {'output tok':>13} {'online':>12} "
        f"{'w/ caching':>12} {'batch':>12} {'batch+cache':>12}",
    ]

    def money(s: dict[str, Any]) -> str:
        return " ".join(
            f"{usd(s.get(k)):>12}"
            for k in ("cost_usd", "cost_usd_with_caching", "cost_usd_batch", "cost_usd_batch_with_caching")
        )

    for stage, s in est["stages"].items():
        mode = " (batch)" if s.get("mode") == "batch" else ""
        lines.append(
            f"  {stage:10} {s['model'] + mode:28} {s['calls']:>10,} {s['input_tokens']:>14,} "
            f"{s['output_tokens']:>13,} {money(s)}"
        )
    t = est["total"]
    lines.append(
        f"  {'total':10} {'':28} {t['calls']:>10,} {t['input_tokens']:>14,} {t['output_tokens']:>13,} {money(t)}"
    )
    if t["unpriced"]:
        lines.append(
            "unpriced models (no price in the table; add `pricing:` to the recipe): "
            + ", ".join(t["unpriced"])
        )
    if est.get("pilot"):
        p = est["pilot"]
        lines.append(
            f"pilot: {p['samples']} samples from {p['slots_committed']} slots, {p['calls']} calls, "
            f"${p['cost_usd']:.4f}"
        )
    return "\n".join(lines)


def slots_needed(n: int, accept_rate: float) -> int:
    return math.ceil(n / max(accept_rate, 1e-6))
