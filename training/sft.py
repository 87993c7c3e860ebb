"""Supervised fine-tuning with dual-mode targets (TRL SFTTrainer, optional LoRA).

Each export row becomes a conversation ``[system, user, assistant]``; the assistant target is
the reasoning form for a seeded ``think_fraction`` of the rows that have a trace and the fast
form (answer + explanation) otherwise. Loss is computed on assistant tokens only
(``assistant_only_loss=True`` with the ``{% generation %}`` markers of our chat template).
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

from training.config import SFTRunConfig
from training.format import assign_modes, sft_messages

log = logging.getLogger(__name__)


def choose_modes(rows: Any, think_fraction: float, seed: int, mode_source: str = "fraction") -> list[str]:
    has_reasoning = (
        [bool((r or "").strip()) for r in rows["reasoning"]]
        if "reasoning" in rows.column_names
        else [False] * len(rows)
    )
    if mode_source == "column" and "trace_mode" in rows.column_names:
        return [
            "think" if (m == "think" and ok) else "answer"
            for m, ok in zip(rows["trace_mode"], has_reasoning, strict=True)
        ]
    return assign_modes(list(rows["sample_id"]), has_reasoning, think_fraction, seed)


def build_sft_dataset(
    rows: Any,
    think_fraction: float = 1 / 3,
    seed: int = 0,
    mode_source: str = "fraction",
    tokenizer: Any = None,
    max_length: int | None = None,
    template: str | None = None,
) -> tuple[Any, dict[str, Any]]:
    """A ``datasets.Dataset`` with a single ``messages`` column, plus statistics.

    With ``tokenizer`` and ``max_length`` given, conversations longer than ``max_length`` tokens
    are dropped rather than truncated (truncation would cut off the verdict, which comes last).
    """
    from datasets import Dataset

    modes = choose_modes(rows, think_fraction, seed, mode_source)
    conversations = []
    kept_modes = []
    dropped = 0
    for row, mode in zip(rows, modes, strict=True):
        messages = sft_messages(row, mode, template=template)
        if tokenizer is not None and max_length:
            ids = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
            if len(ids) > max_length:
                dropped += 1
                continue
        conversations.append(messages)
        kept_modes.append(mode)
    stats = {
        "rows": len(rows),
        "kept": len(conversations),
        "dropped_overlong": dropped,
        "modes": dict(Counter(kept_modes)),
        "template": template or "dynaguard",
    }
    return Dataset.from_dict({"messages": conversations}), stats


def run_sft(config: SFTRunConfig) -> Path:
    """Train and return the directory of the final (merged) model."""
    from trl import SFTConfig, SFTTrainer

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

    out = start_run(config, "sft")
    train_rows = load_split(config.data, config.train_split, config.limit)
    eval_rows = load_split(config.data, config.eval_split, config.eval_limit) if config.eval_split else None
    model, tokenizer, added = load_model_and_tokenizer(config, out)

    train_ds, stats = build_sft_dataset(
        train_rows,
        config.think_fraction,
        config.seed,
        config.mode_source,
        tokenizer,
        config.max_length,
        config.template,
    )
    if len(train_ds) == 0:
        raise ValueError(f"no training conversations left (all {stats['rows']} rows longer than max_length)")
    eval_ds = None
    if eval_rows is not None:
        eval_ds, eval_stats = build_sft_dataset(
            eval_rows,
            config.think_fraction,
            config.seed,
            config.mode_source,
            tokenizer,
            config.max_length,
            config.template,
        )
        stats["eval"] = eval_stats
    log.info("SFT data: %s", stats)

    checkpoints = out / "checkpoints"
    args = SFTConfig(
        **training_kwargs(config, checkpoints, has_eval=eval_ds is not None)
        | {
            "max_length": config.max_length,
            "assistant_only_loss": config.assistant_only_loss,
            "dataset_num_proc": None,
        }
        | config.trainer_args
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
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
