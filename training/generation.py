"""Batched generation with a transformers model (greedy for evaluation, sampled for mining)."""

from __future__ import annotations

from typing import Any


def generate_continuations(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    *,
    max_new_tokens: int,
    batch_size: int = 8,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    num_return_sequences: int = 1,
    top_k: int = 0,
) -> list[list[str]]:
    """Generate continuations of already-rendered prompt texts.

    Returns, per prompt, ``num_return_sequences`` decoded continuations (prompt excluded,
    special tokens such as ``<|im_end|>`` dropped; the guardian tags are plain tokens and stay).
    """
    import torch

    was_training = model.training
    model.eval()
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    device = next(model.parameters()).device
    results: list[list[str]] = []
    try:
        for start in range(0, len(prompts), max(1, batch_size)):
            chunk = prompts[start : start + batch_size]
            enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            gen_kwargs: dict[str, Any] = {
                "max_new_tokens": max_new_tokens,
                "do_sample": do_sample,
                "num_return_sequences": num_return_sequences,
                "pad_token_id": tokenizer.pad_token_id,
                "eos_token_id": model.generation_config.eos_token_id,
            }
            if do_sample:
                gen_kwargs.update(temperature=temperature, top_p=top_p, top_k=top_k)
            else:
                gen_kwargs.update(temperature=None, top_p=None, top_k=None)
            with torch.inference_mode():
                output = model.generate(**enc, **gen_kwargs)
            new_tokens = output[:, enc["input_ids"].shape[1] :]
            texts = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
            for i in range(len(chunk)):
                results.append(texts[i * num_return_sequences : (i + 1) * num_return_sequences])
    finally:
        tokenizer.padding_side = old_side
        if was_training:
            model.train()
    return results
