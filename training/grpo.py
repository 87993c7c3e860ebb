"""GRPO on the guardian task (TRL GRPOTrainer, optional LoRA).

Prompts are rendered to text with our chat template and end with the mode's prefill
(``<think>`` by default, as in the paper's GRPO stage; ``mixed`` draws the mode per row with
``think_fraction``). The completion TRL samples is what follows the prefill; the rewards get the
prefill back through the ``prefill`` column. Rewards (see :mod:`training.rewards`): label
correctness, well-formed tags, and optionally a reasoning-length budget, mixed with
``reward_weights``.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

from training.config import GRPORunConfig
from training.format import PREFILL, assign_modes, build_prompt_messages, render_prompt

log = logging.getLogger(__name__)


def rollout_modes(rows: Any, mode: str, think_fraction: float, seed: int) -> list[str]:
    if mode in PREFILL:
        return [mode] * len(rows)
    return assign_modes(list(rows["sample_id"]), [True] * len(rows), think_fraction, seed)


def build_prompt_dataset(
    rows: Any,
    tokenizer: Any,
    mode: str = "think",
    think_fraction: float = 1 / 3,
    seed: int = 0,
    max_prompt_tokens: int | None = None,
    template: str | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Dataset with ``prompt`` (templated text + prefill), ``prefill``, ``label``, ``sample_id``.

    Prompts longer than ``max_prompt_tokens`` are dropped.
    """
    from datasets import Dataset

    modes = rollout_modes(rows, mode, think_fraction, seed)
    data: dict[str, list[Any]] = {"prompt": [], "prefill": [], "label": [], "sample_id": []}
    dropped = 0
    for row, row_mode in zip(rows, modes, strict=True):
        prompt = render_prompt(tokenizer, build_prompt_messages(row, template=template), row_mode)
        if (
            max_prompt_tokens
            and len(tokenizer(prompt, add_special_tokens=False)["input_ids"]) > max_prompt_tokens
        ):
            dropped += 1
            continue
        data["prompt"].append(prompt)
        data["prefill"].append(PREFILL[row_mode])
        data["label"].append(row["label"])
        data["sample_id"].append(row["sample_id"])
    stats = {"rows": len(rows), "kept": len(data["prompt"]), "dropped_overlong": dropped}
    stats["modes"] = dict(Counter("think" if p == PREFILL["think"] else "answer" for p in data["prefill"]))
    return Dataset.from_dict(data), stats


def run_grpo(config: GRPORunConfig) -> Path:
    """Train and return the directory of the final (merged) model."""
    from trl import GRPOConfig, GRPOTrainer

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
    from training.rewards import build_reward_functions

    out = start_run(config, "grpo")
    rows = load_split(config.data, config.train_split, config.limit)
    model, tokenizer, added = load_model_and_tokenizer(config, out)
    train_ds, stats = build_prompt_dataset(
        rows, tokenizer, config.mode, config.think_fraction, config.seed, config.max_length, config.template
    )
    if len(train_ds) == 0:
        raise ValueError("no prompts left after dropping those longer than max_length")
    log.info("GRPO data: %s", stats)
    reward_funcs, reward_weights = build_reward_functions(
        correct_weight=config.correct_weight,
        format_weight=config.format_weight,
        length_weight=config.length_weight,
        length_budget_words=config.length_budget_words,
        miss_penalty=config.miss_penalty,
    )
    checkpoints = out / "checkpoints"
    extra: dict[str, Any] = {
        "num_generations": config.num_generations,
        "max_completion_length": config.max_completion_length,
        "temperature": config.temperature,
        "top_p": config.top_p,
        "beta": config.beta,
        "reward_weights": reward_weights,
        "remove_unused_columns": False,
    }
    if config.generation_batch_size:
        extra["generation_batch_size"] = config.generation_batch_size
    args = GRPOConfig(**training_kwargs(config, checkpoints, has_eval=False) | extra | config.trainer_args)
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=reward_funcs,
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
        {"data": stats, "train": result.metrics, "final_model": str(final), "added_tokens": added},
    )
    return final
