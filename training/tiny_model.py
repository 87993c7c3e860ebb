"""A tiny random-init Qwen3 model plus an offline BPE tokenizer, for CPU tests and smoke runs.

Nothing is downloaded: the tokenizer is trained with ``tokenizers`` on the text it will see
(our system prompt and the dataset's policies, transcripts and targets) and carries the guardian
chat template (with ``{% generation %}`` markers for assistant-only loss). The saved directory
loads with ``AutoTokenizer`` / ``AutoModelForCausalLM`` like any Hub model.

Usage: ``python -m training.tiny_model --data EXPORT --out DIR``.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from training.format import (
    ENDOFTEXT,
    GUARDIAN_CHAT_TEMPLATE,
    GUARDIAN_TAGS,
    IM_END,
    IM_START,
    SYSTEM_PROMPT,
    build_prompt_messages,
    build_target,
)


def corpus_from_rows(rows: Iterable[dict[str, Any]]) -> list[str]:
    """Texts to train the tokenizer on: prompts plus both kinds of targets."""
    texts = [SYSTEM_PROMPT]
    for row in rows:
        messages = build_prompt_messages(row)
        texts.append(messages[1]["content"])
        texts.append(build_target(row["label"], "answer", explanation=row.get("explanation") or ""))
        if (row.get("reasoning") or "").strip():
            texts.append(build_target(row["label"], "think", reasoning=row["reasoning"]))
    return texts


def train_tokenizer(texts: Iterable[str], vocab_size: int = 1024, guardian_tokens: bool = True) -> Any:
    """A byte-level BPE ``PreTrainedTokenizerFast`` with ChatML specials and, unless
    ``guardian_tokens=False`` (to mimic a Hub model that lacks them), the guardian tags and chat
    template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[ENDOFTEXT, IM_START, IM_END],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        additional_special_tokens=[IM_START, IM_END],
    )
    if guardian_tokens:
        fast.add_tokens(list(GUARDIAN_TAGS))
        fast.chat_template = GUARDIAN_CHAT_TEMPLATE
    fast.padding_side = "right"
    fast.model_max_length = 4096
    return fast


def build_tiny_model(
    out_dir: str | Path,
    texts: Iterable[str],
    vocab_size: int = 1024,
    hidden_size: int = 64,
    intermediate_size: int = 128,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    num_key_value_heads: int = 2,
    max_position_embeddings: int = 4096,
    seed: int = 0,
    guardian_tokens: bool = True,
) -> Path:
    """Train a tokenizer on ``texts``, build a random-init Qwen3 around it and save both.

    With the defaults the model has about 140K parameters (tied embeddings).
    """
    import torch
    from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(texts, vocab_size=vocab_size, guardian_tokens=guardian_tokens)
    eos_id = tokenizer.convert_tokens_to_ids(IM_END)
    pad_id = tokenizer.convert_tokens_to_ids(ENDOFTEXT)
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads,
        head_dim=hidden_size // num_attention_heads,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
    )
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=eos_id, pad_token_id=pad_id)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="export directory")
    parser.add_argument("--out", required=True, help="where to save the tiny model")
    parser.add_argument("--split", default="train")
    parser.add_argument("--vocab-size", type=int, default=1024)
    args = parser.parse_args(argv)
    from training.data import load_split

    rows = load_split(args.data, args.split)
    path = build_tiny_model(args.out, corpus_from_rows(rows), vocab_size=args.vocab_size)
    print(path)


if __name__ == "__main__":  # pragma: no cover
    main()
