"""DPO for guardians (TRL DPOTrainer, optional LoRA), with hard-sample mining.

Two ways to get preference pairs:

* ``hard=True`` (the recipe, after GuardReasoner's HS-DPO): the model being trained samples
  ``k`` outputs per training input (temperature ``sample_temperature``). Inputs where some
  samples give the right verdict and some the wrong one (or none at all) sit on the decision
  boundary; only those are kept. Each kept input yields pairs with a correct sample as
  ``chosen`` and a wrong sample as ``rejected``.

  **Weighting: by duplicating pairs, not by a weight column.** An input with ``w`` wrong samples
  out of ``k`` contributes ``w`` pairs (each wrong sample once, paired with the correct samples
  in turn), optionally capped by ``max_pairs_per_input``. Harder inputs therefore weigh more in
  the loss in proportion to their error count. We duplicate because TRL's DPOTrainer has no
  per-example weight input (its ``use_weighting`` is WPO's probability-based weighting, a
  different thing), so duplication works with every loss type and the stock trainer; and the
  duplicates are not copies - each carries a different wrong output, so the extra pairs add
  information. The ``hardness`` (= w/k) of every pair is kept in ``OUT/pairs.jsonl``.

* ``hard=False``: label-flip pairs from the data itself - ``chosen`` is the gold target,
  ``rejected`` the same text with the verdict flipped. A cheap baseline that needs no sampling.

Prompts are text (chat template applied) ending with the mode prefill, as in GRPO; chosen and
rejected are the continuations after it (TRL appends the EOS token).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from training.config import DPORunConfig
from training.format import (
    ANSWER_CLOSE,
    ANSWER_OPEN,
    PREFILL,
    build_prompt_messages,
    build_target,
    normalize_label,
    parse_output,
    render_prompt,
)

log = logging.getLogger(__name__)

Sampler = Callable[[list[str], int], list[list[str]]]


def _modes(rows: Any, mode: str, think_fraction: float, seed: int, need_reasoning: bool) -> list[str]:
    from training.format import assign_modes

    if mode in PREFILL:
        if mode == "think" and need_reasoning:
            return ["think" if (r.get("reasoning") or "").strip() else "answer" for r in rows]
        return [mode] * len(rows)
    has = [bool((r.get("reasoning") or "").strip()) or not need_reasoning for r in rows]
    return assign_modes([r["sample_id"] for r in rows], has, think_fraction, seed)


def pairs_from_samples(
    prompt: str,
    prefill: str,
    gold: str,
    samples: Sequence[str],
    max_pairs: int | None = None,
) -> list[dict[str, Any]]:
    """Preference pairs for one input from its ``k`` sampled continuations.

    Returns ``[]`` unless there is at least one correct and one wrong sample. One pair per wrong
    sample (rejected), chosen cycling through the correct ones; ``max_pairs`` caps the count.
    """
    gold = normalize_label(gold) or gold
    labels = [parse_output(prefill + s).label for s in samples]  # samples continue the prefill
    correct = [s for s, label in zip(samples, labels, strict=True) if label == gold]
    wrong = [s for s, label in zip(samples, labels, strict=True) if label != gold]
    if not correct or not wrong:
        return []
    n_pairs = len(wrong) if max_pairs is None else min(len(wrong), max_pairs)
    hardness = len(wrong) / len(samples)
    return [
        {
            "prompt": prompt,
            "chosen": correct[i % len(correct)],
            "rejected": wrong[i],
            "hardness": hardness,
            "num_wrong": len(wrong),
            "num_samples": len(samples),
        }
        for i in range(n_pairs)
    ]


def mine_hard_pairs(
    rows: Sequence[dict[str, Any]],
    tokenizer: Any,
    sampler: Sampler,
    k: int,
    modes: Sequence[str],
    max_pairs_per_input: int | None = None,
    template: str | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Sample ``k`` continuations per row with ``sampler(prompts, k)`` and build hard pairs."""
    prompts = [
        render_prompt(tokenizer, build_prompt_messages(r, template=template), m)
        for r, m in zip(rows, modes, strict=True)
    ]
    samples = sampler(prompts, k)
    pairs: list[dict[str, Any]] = []
    all_right = all_wrong = hard = 0
    for row, mode, prompt, outs in zip(rows, modes, prompts, samples, strict=True):
        row_pairs = pairs_from_samples(prompt, PREFILL[mode], row["label"], outs, max_pairs_per_input)
        n_right = sum(parse_output(PREFILL[mode] + o).label == row["label"] for o in outs)
        if n_right == len(outs):
            all_right += 1
        elif n_right == 0:
            all_wrong += 1
        else:
            hard += 1
        for p in row_pairs:
            p["sample_id"] = row["sample_id"]
            p["label"] = row["label"]
            p["mode"] = mode
        pairs.extend(row_pairs)
    stats = {
        "inputs": len(rows),
        "k": k,
        "hard_inputs": hard,
        "all_correct_inputs": all_right,
        "all_wrong_inputs": all_wrong,
        "pairs": len(pairs),
    }
    return pairs, stats


def label_flip_pairs(
    rows: Sequence[dict[str, Any]], tokenizer: Any, modes: Sequence[str], template: str | None = None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Chosen = gold target, rejected = the same target with the verdict flipped."""
    pairs = []
    for row, mode in zip(rows, modes, strict=True):
        gold = row["label"]
        target = build_target(gold, mode, row.get("reasoning") or "", row.get("explanation") or "", template)
        flipped = "PASS" if gold == "FAIL" else "FAIL"
        # the verdict inside the answer tags, whatever the template's whitespace around it
        answer = re.compile(rf"({re.escape(ANSWER_OPEN)}\s*){gold}(\s*{re.escape(ANSWER_CLOSE)})")
        wrong = answer.sub(rf"\g<1>{flipped}\g<2>", target, count=1)
        prefill = PREFILL[mode]
        pairs.append(
            {
                "prompt": render_prompt(tokenizer, build_prompt_messages(row, template=template), mode),
                "chosen": target[len(prefill) :],
                "rejected": wrong[len(prefill) :],
                "hardness": 1.0,
                "sample_id": row["sample_id"],
                "label": gold,
                "mode": mode,
            }
        )
    return pairs, {"inputs": len(rows), "pairs": len(pairs)}


def model_sampler(model: Any, tokenizer: Any, config: DPORunConfig) -> Sampler:
    from training.generation import generate_continuations

    def sample(prompts: list[str], k: int) -> list[list[str]]:
        return generate_continuations(
            model,
            tokenizer,
            prompts,
            max_new_tokens=config.sample_max_new_tokens,
            batch_size=config.sample_batch_size,
            do_sample=True,
            temperature=config.sample_temperature,
            top_p=config.sample_top_p,
            num_return_sequences=k,
        )

    return sample


def run_dpo(config: DPORunConfig) -> Path:
    """Build pairs (mined or label-flip), train, and return the final (merged) model directory."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from training.common import (
        load_model_and_tokenizer,
        peft_config_for,
        resolve_resume,
        save_final,
        start_run,
        training_kwargs,
        write_summary,
    )
    from training.data import load_split

    out = start_run(config, "dpo")
    rows = [dict(r) for r in load_split(config.data, config.train_split, config.limit)]
    model, tokenizer, added = load_model_and_tokenizer(config, out)

    pairs_file = out / "pairs.jsonl"
    if config.hard:
        mine_rows = rows[: config.mine_limit] if config.mine_limit else rows
        modes = _modes(mine_rows, config.mode, config.think_fraction, config.seed, need_reasoning=False)
        pairs, stats = mine_hard_pairs(
            mine_rows,
            tokenizer,
            model_sampler(model, tokenizer, config),
            config.k,
            modes,
            config.max_pairs_per_input,
            config.template,
        )
    else:
        modes = _modes(rows, config.mode, config.think_fraction, config.seed, need_reasoning=True)
        pairs, stats = label_flip_pairs(rows, tokenizer, modes, config.template)
    with pairs_file.open("w") as fh:
        for p in pairs:
            fh.write(json.dumps(p, ensure_ascii=False) + "\n")
    log.info("DPO pairs: %s", stats)
    if not pairs:
        raise ValueError(
            f"no preference pairs: mining found no input with both right and wrong samples ({stats}); "
            "raise k or sample_temperature, or use more rows"
        )
    train_ds = Dataset.from_dict({key: [p[key] for p in pairs] for key in ("prompt", "chosen", "rejected")})

    checkpoints = out / "checkpoints"
    extra = {"beta": config.beta, "loss_type": [config.loss_type], "max_length": config.max_length}
    args = DPOConfig(**training_kwargs(config, checkpoints, has_eval=False) | extra | config.trainer_args)
    trainer = DPOTrainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        processing_class=tokenizer,
        peft_config=peft_config_for(config),
    )
    result = trainer.train(resume_from_checkpoint=resolve_resume(config, checkpoints))
    final = save_final(trainer, tokenizer, out, config)
    write_summary(
        out,
        config,
        {
            "pairs": stats,
            "pairs_file": str(pairs_file),
            "train": result.metrics,
            "final_model": str(final),
            "added_tokens": added,
        },
    )
    return final
