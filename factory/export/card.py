"""The dataset card (README.md with YAML front matter) written by export and pushed to the Hub."""

from __future__ import annotations


def dataset_card(dd, stats_text: str) -> str:  # noqa: ANN001
    n = sum(len(ds) for ds in dd.values())
    size = "n<1K" if n < 1000 else "1K<n<10K" if n < 10_000 else "10K<n<100K" if n < 100_000 else "100K<n<1M"
    configs = "\n".join(f"  - split: {s}\n    path: parquet/{s}.parquet" for s in dd)
    splits = "\n".join(f"| {s} | {len(ds)} |" for s, ds in dd.items())
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
- config_name: default
  data_files:
{configs}
---

# Synthetic policy-compliance dialogues (DynaBench format)

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
{splits}

Splits are assigned per policy, so no policy appears in two splits. Rules of the seed bank may
recur, reworded, across splits.

## Columns

`sample_id`, `policy_id`, `policy`, `transcript`, `label` (PASS/FAIL), `rules` (list), `turns`
(list of role/content), `rule_labels` (per rule: label, ambiguity 0-10, explanation, violated agent
turns), `violated_rules` (1-based), `explanation`, `reasoning` (may be empty), `trace_mode`
(think/answer), `industry`, `dynamic` (normal_comply, trick_resist, trick_break, normal_break),
`near_miss`, `num_rules`, `num_turns`, `intended_label`, `agrees_with_intent`, `max_ambiguity`,
`models` (JSON: the model behind each stage).

## Statistics

```
{stats_text}
```
"""
