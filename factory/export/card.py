"""The dataset card (README.md with YAML front matter) written by export and pushed to the Hub."""

from __future__ import annotations

import textwrap

from factory.safety.licences import LICENCES
from factory.store.sample_row import OWN_SOURCE


def dataset_card(
    dd,  # noqa: ANN001
    stats_text: str,
    *,
    unfinished: tuple[int, int, str | None] | None = None,
    split_info=None,  # noqa: ANN001  (factory.export.hf.SplitInfo; None: policy-level hashing, not measured)
    sources: dict[str, dict[str, int]] | None = None,
) -> str:
    """The card; `unfinished` = (samples, target, last run status) puts a notice right under the title;
    `sources` (source -> rows per split and with reasoning) adds the sources section with licences."""
    n = sum(len(ds) for ds in dd.values())
    size = "n<1K" if n < 1000 else "1K<n<10K" if n < 10_000 else "10K<n<100K" if n < 100_000 else "100K<n<1M"
    # `datasets.load_dataset` fails on every split when one listed split has no rows, so the Hub
    # config lists the non-empty splits only; empty ones stay in the folder with the full schema.
    filled = [s for s, ds in dd.items() if len(ds)]
    empty = [s for s, ds in dd.items() if not len(ds)]
    configs = _configs(filled)
    splits = "\n".join(f"| {s} | {len(ds)} |" for s, ds in dd.items())
    empty_note = (
        f"\n\nEmpty split(s): {', '.join(empty)}. Their files (hf/, parquet/, jsonl/) have the full schema "
        f"and 0 rows; they are left out of the `configs` above because `datasets.load_dataset` cannot "
        f"load a split with no rows."
        if empty
        else ""
    )
    notice = _unfinished_notice(*unfinished) if unfinished else ""
    sources_text = _sources_section(sources or {})
    return f"""---
license: other
task_categories:
- text-classification
language:
- en
size_categories:
- {size}
tags:
- guardrails
- policy-compliance
- synthetic
configs:
{configs}
---

# Synthetic policy-compliance dialogues (DynaBench format)
{notice}
Generated with the DynaBench factory: each sample pairs a policy (numbered free-form rules) with a
user/agent dialogue and a compliance label (`FAIL` if the agent broke any rule, else `PASS`), plus
the per-rule judgements behind the label, a short explanation, and for about a third of the samples
a reasoning trace. The columns `policy`, `transcript` and `label` match the published DynaBench.

Labels come from an LLM judging one rule at a time; they are synthetic and carry that model's errors.
Validate a sample by hand before relying on the data. Data produced with the embedded offline model
(SmolLM2-135M, listed under models) is a smoke test only, not training-quality data.

## Splits

| split | samples |
|---|---|
{splits}{empty_note}

{_split_text(split_info)}

## Loading

```python
from datasets import load_dataset
test = load_dataset(EXPORT_DIR, "DynaBench", split="test")            # as the DynaGuard harness loads DynaBench
train = load_dataset(EXPORT_DIR, "DynaBenchTrain", split="train")     # and "validation"
```

The `DynaBench` config is the test split and `DynaBenchTrain` holds train and validation; a config
whose splits are all empty is not listed.

## Columns

`sample_id`, `policy_id`, `policy`, `transcript`, `label` (PASS/FAIL), `rules` (list), `turns`
(list of role/content), `rule_labels` (per rule: label, ambiguity 0-10, explanation, violated agent
turns), `violated_rules` (1-based), `explanation`, `reasoning` (may be empty), `trace_mode`
(think/answer), `industry`, `dynamic` (normal_comply, trick_resist, trick_break, normal_break),
`near_miss`, `num_rules`, `num_turns`, `intended_label`, `agrees_with_intent`, `max_ambiguity`,
`models` (JSON: the model behind each stage), `source` (`dynabench` for generated samples, else
the safety dataset), `source_id` (the row's id in its source), `source_labels` (JSON: the source's
original labels; empty for generated samples), `rule_ids` (bank ids of the policy's rules).

DynaBench-compatible columns: `transcript` uses the published DynaBench prefixes (`'User': ` and
`'Agent': `, one turn per line; the structured `turns` keep the exact messages), `base_id` (the
sample id), `metadata` (a JSON string with `num_rules`, `num_turns`, `num_tokens` (whitespace
tokens of policy + transcript, not a model tokenizer's count), `num_hops` and `num_counts` (-1:
not measured), `rule_len` (mean characters per rule), `failure_mode` and `business_impact` (""
outside a DynaBench-style test set), plus our extras: industry, dynamic, near_miss, max_ambiguity,
violated_rules), `formatted_input` (`<rules>` and `<transcript>` blocks) and `formatted_output`
(`<think>`/`<answer>` for samples with a reasoning trace, else `<answer>`/`<explanation>`).

{sources_text}
## Statistics

```
{stats_text}
```
"""


#: Hub configs besides `default`: the names the DynaGuard harness and training scripts load.
DYNABENCH_CONFIGS = {"DynaBench": ("test",), "DynaBenchTrain": ("train", "validation")}


def _configs(filled: list[str]) -> str:
    """`default` (every non-empty split) plus `DynaBench` / `DynaBenchTrain`, each listing its
    non-empty splits only; a config whose splits are all empty is left out."""
    out = []
    for name, splits in {"default": tuple(filled), **DYNABENCH_CONFIGS}.items():
        files = [s for s in splits if s in filled]
        if not files:
            continue
        out.append(f"- config_name: {name}\n  data_files:")
        out.extend(f"  - split: {s}\n    path: parquet/{s}.parquet" for s in files)
    return "\n".join(out)


def _split_text(splits) -> str:  # noqa: ANN001
    if splits is None or splits.method == "policy":
        text = (
            "Split method: `policy`. Splits are assigned per policy by a seeded hash of the policy id, so no "
            "policy appears in two splits. Rules of the seed bank may recur, reworded, across splits."
        )
    elif splits.method == "rules":
        text = (
            "Split method: `rules` (rule-disjoint). The bank's rules were partitioned by rule id into one "
            "pool per split before any policy was composed (seeded, stratified by industry and generic "
            "category), and each sample's policy was drawn from its split's pool only, so the individual "
            "rules of train and test policies are mutually exclusive (DynaGuard, Section 3.1)."
        )
    else:
        text = (
            "Split method: `mixed`. Some samples carry a rule-disjoint split from the build, the rest were "
            "assigned per policy by a seeded hash; rules may recur across splits."
        )
    if splits is not None:
        o = splits.overlap
        text += (
            f" Measured on this export, bank rule ids shared: train/test {o['train/test']}, "
            f"train/validation {o['train/validation']}, validation/test {o['validation/test']}."
        )
    out = textwrap.fill(text, width=100)
    if splits is not None and getattr(splits, "testset", 0):
        extra = f" (train/test_generated {o['train/test_generated']})" if "train/test_generated" in o else ""
        method = (
            f"Test set: the `test` split (the `DynaBench` config) holds {splits.testset} rows of a "
            f"DynaBench-style test set built by `factory testset` from a grid of failure modes x business "
            f"impacts (DynaGuard, Section 3.1 and Appendix A.3): for each hand-written scenario of a grid "
            f"cell, one policy drawn from the test pool of the rule-disjoint split, one dialogue written "
            f"to violate the rules in focus and one written to comply, each labelled rule by rule like the "
            f"rest of the data (so `label` is the labeller's verdict and `intended_label` the side it was "
            f"written for). `metadata` carries `failure_mode`, `business_impact` and the scenario. The "
            f"build's own test-pool samples are the split `test_generated`{extra}."
        )
        out += "\n\n" + textwrap.fill(method, width=100)
    return out


def _sources_section(sources: dict[str, dict[str, int]]) -> str:
    imported = {k: v for k, v in sources.items() if k != OWN_SOURCE}
    if not imported:
        return ""
    rows = []
    for name, counts in sorted(sources.items(), key=lambda kv: (kv[0] != OWN_SOURCE, kv[0])):
        n = sum(v for k, v in counts.items() if k != "reasoning")
        lic = LICENCES.get(name)
        licence = f"{lic.licence} ({lic.hub_id}): {lic.terms}" if lic else "this dataset's licence"
        share = f"{counts['reasoning'] / n:.0%}" if n else "0%"
        rows.append(
            f"| {name} | {counts['train']} | {counts['validation']} | {counts['test']} | {share} | {licence} |"
        )
    restricted = [LICENCES[k] for k in sorted(imported) if k in LICENCES and LICENCES[k].restricted]
    warning = ""
    if restricted:
        listed = "; ".join(f"{lic.source} ({lic.licence}: {lic.terms})" for lic in restricted)
        text = (
            f"**Warning: restricted sources.** Rows from {listed} carry their source's terms: this mixed "
            f"dataset may not be used beyond what the most restrictive of them allows (no commercial use "
            f"for CC-BY-NC sources; research use under the AI2 Responsible Use Guidelines for WildGuardMix). "
            f"Filter on `source` to drop them."
        )
        warning = "\n" + textwrap.fill(text, width=100, initial_indent="> ", subsequent_indent="> ") + "\n"
    table = "\n".join(rows)
    return f"""
## Sources and licences

Imported safety samples (`factory safety import`) are mixed with the generated ones: each source's
labels were turned into policy rules from its own taxonomy (a harmful response breaks the rules of
its categories; the other rules of a policy are categories the row does not flag), so these rows are
only as accurate as the source's labels. The statistics below describe the generated samples only.
{warning}
| source | train | validation | test | with reasoning | licence and terms |
|---|---|---|---|---|---|
{table}
"""


def _unfinished_notice(samples: int, target: int, status: str | None) -> str:
    last = f" (last run: `{status}`)" if status != "finished" else ""
    text = (
        f"**Unfinished build: {samples} of {target} samples.** The build stopped before its target{last}, "
        f"so the splits and statistics below describe partial data. Rerun `factory build` to finish it, "
        f"then export again."
    )
    return "\n" + textwrap.fill(text, width=100, initial_indent="> ", subsequent_indent="> ") + "\n"
