"""Pieces shared by the SFT, GRPO and DPO runners: runtime set-up, model and tokenizer
preparation, the TrainingArguments fields we set, resuming, and saving the final model.

Run directory layout (``OUT``)::

    OUT/run_config.yaml      the resolved configuration
    OUT/checkpoints/         trainer checkpoints (checkpoint-N/), used by resume
    OUT/adapter/             the LoRA adapter (LoRA runs only)
    OUT/final/               model + tokenizer loadable with AutoModelForCausalLM (LoRA merged)
    OUT/log_history.json     trainer log history (loss, reward, ...)
    OUT/summary.json         row counts, mode counts, final metrics
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from training.config import CommonRunConfig, ConfigError, dump_run_config
from training.format import ENDOFTEXT, GUARDIAN_CHAT_TEMPLATE, GUARDIAN_TAGS, IM_END, IM_START

log = logging.getLogger(__name__)


def setup_runtime(config: CommonRunConfig) -> None:
    import torch
    from transformers import set_seed

    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)
    set_seed(config.seed)


def require(config: CommonRunConfig, *names: str) -> None:
    missing = [n for n in names if getattr(config, n) in (None, "")]
    if missing:
        raise ConfigError(
            f"missing required setting(s): {', '.join(missing)} (give them as options or in YAML)"
        )


def run_dir(config: CommonRunConfig, kind: str) -> Path:
    out = Path(config.out) if config.out else Path("outputs") / "training" / kind
    out.mkdir(parents=True, exist_ok=True)
    return out


def start_run(config: CommonRunConfig, kind: str) -> Path:
    """What every trainer does first: check model and data are set, threads and seed, run folder."""
    require(config, "model", "data")
    setup_runtime(config)
    return run_dir(config, kind)


# --------------------------------------------------------------------------------------------
# Tokenizer and model
# --------------------------------------------------------------------------------------------


def prepare_tokenizer(tokenizer: Any) -> dict[str, list[int]]:
    """Make any causal-LM tokenizer speak our format.

    * ChatML markers ``<|im_start|>``/``<|im_end|>`` (special) and the guardian tags (plain added
      tokens, so prefilled prompts end on a token boundary and the tags survive
      ``skip_special_tokens`` decoding) are added when missing.
    * The chat template becomes :data:`GUARDIAN_CHAT_TEMPLATE` (verbatim ChatML with generation
      markers): Qwen-style templates rewrite ``<think>`` blocks, which would break dual mode.
    * ``<|im_end|>`` becomes the EOS token; a pad token distinct from it is ensured.

    Returns the added tokens, each with the ids it was split into before (used to initialise its
    embedding, see :func:`init_added_embeddings`).
    """
    vocab = tokenizer.get_vocab()
    added: dict[str, list[int]] = {}

    def _add(tokens: list[str], special: bool) -> None:
        missing = [t for t in tokens if t not in tokenizer.get_vocab()]
        if not missing:
            return
        pieces = {t: tokenizer(t, add_special_tokens=False)["input_ids"] for t in missing}
        tokenizer.add_tokens(missing, special_tokens=special)
        added.update(pieces)

    _add([IM_START, IM_END], special=True)
    _add(list(GUARDIAN_TAGS), special=False)
    tokenizer.chat_template = GUARDIAN_CHAT_TEMPLATE
    tokenizer.eos_token = IM_END
    if tokenizer.pad_token is None or tokenizer.pad_token == IM_END:
        if ENDOFTEXT not in vocab:
            _add([ENDOFTEXT], special=True)
        tokenizer.pad_token = ENDOFTEXT
    return added


def init_added_embeddings(model: Any, tokenizer: Any, added: dict[str, list[int]]) -> None:
    """Start each added token's embedding (input and, if untied, output) at the mean of the
    embeddings of the pieces it used to be split into.

    Rows that are new after resizing, or spare rows a checkpoint ships untrained (Qwen3 pads its
    vocabulary), would otherwise be identical or arbitrary; the tags then start out distinct and
    close to their spelling. This also matters for LoRA, which leaves embedding rows frozen: TRL
    computes the loss through ``lm_head.weight`` directly, so PEFT's trainable-token wrappers on a
    tied LM head cannot be used.
    """
    import torch

    if not added:
        return
    inp = model.get_input_embeddings().weight
    out_module = model.get_output_embeddings()
    out = out_module.weight if out_module is not None else None
    with torch.no_grad():
        for token, pieces in added.items():
            token_id = tokenizer.convert_tokens_to_ids(token)
            valid = [p for p in pieces if p < inp.shape[0] and p != token_id]
            if not valid:
                continue
            inp[token_id] = inp[valid].mean(dim=0)
            if out is not None and out.data_ptr() != inp.data_ptr() and token_id < out.shape[0]:
                out[token_id] = out[valid].mean(dim=0)


def load_tokenizer(name: str) -> tuple[Any, dict[str, list[int]]]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(name)
    added = prepare_tokenizer(tokenizer)
    return tokenizer, added


def _torch_dtype(name: str) -> Any:
    import torch

    return {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[
        name
    ]


def load_model(name: str, tokenizer: Any, config: CommonRunConfig) -> tuple[Any, bool]:
    """Load a causal LM and align it with the prepared tokenizer; returns (model, resized)."""
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"dtype": _torch_dtype(config.dtype)}
    if config.use_cpu and config.dtype == "auto":
        kwargs["dtype"] = _torch_dtype("float32")
    if config.attn_implementation:
        kwargs["attn_implementation"] = config.attn_implementation
    model = AutoModelForCausalLM.from_pretrained(name, **kwargs)
    resized = False
    rows = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > rows:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
        resized = True
    align_special_ids(model, tokenizer)
    return model, resized


def align_special_ids(model: Any, tokenizer: Any) -> None:
    eos_id = tokenizer.convert_tokens_to_ids(IM_END)
    pad_id = tokenizer.pad_token_id
    model.config.eos_token_id = eos_id
    model.config.pad_token_id = pad_id
    gen = model.generation_config
    existing = gen.eos_token_id
    existing = [] if existing is None else ([existing] if isinstance(existing, int) else list(existing))
    gen.eos_token_id = [eos_id, *[e for e in existing if e != eos_id]]
    gen.pad_token_id = pad_id


def load_model_and_tokenizer(config: CommonRunConfig, out: Path) -> tuple[Any, Any, list[str]]:
    """Model and tokenizer ready for training; returns (model, tokenizer, added tokens).

    When tokens had to be added (a base model that does not know our tags), their embeddings are
    initialised (:func:`init_added_embeddings`), and the prepared model is saved to
    ``OUT/prepared_model`` and reloaded from there: TRL builds GRPO/DPO reference models from
    ``model.config._name_or_path``, which must point at the same weights, and a LoRA adapter
    (``OUT/adapter``) applies to this prepared base.
    """
    assert config.model is not None
    tokenizer, added = load_tokenizer(config.model)
    model, _ = load_model(config.model, tokenizer, config)
    if added:
        log.info("added tokens to the tokenizer: %s", list(added))
        init_added_embeddings(model, tokenizer, added)
        prepared = out / "prepared_model"
        model.save_pretrained(prepared)
        tokenizer.save_pretrained(prepared)
        del model
        model, _ = load_model(str(prepared), tokenizer, config)
    return model, tokenizer, list(added)


def peft_config_for(config: CommonRunConfig) -> Any:
    """A LoRA config, or None."""
    if not config.lora:
        return None
    from peft import LoraConfig

    lora = config.lora_settings
    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type="CAUSAL_LM",
    )


# --------------------------------------------------------------------------------------------
# Trainer arguments, resume, saving
# --------------------------------------------------------------------------------------------


def training_kwargs(config: CommonRunConfig, output_dir: Path, has_eval: bool) -> dict[str, Any]:
    """The TrainingArguments fields shared by SFTConfig, GRPOConfig and DPOConfig."""
    kw: dict[str, Any] = {
        "output_dir": str(output_dir),
        "seed": config.seed,
        "learning_rate": config.learning_rate,
        "num_train_epochs": config.num_train_epochs,
        "max_steps": config.max_steps,
        "per_device_train_batch_size": config.per_device_train_batch_size,
        "per_device_eval_batch_size": config.per_device_eval_batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation_steps,
        "lr_scheduler_type": config.lr_scheduler_type,
        "warmup_steps": config.warmup_steps,
        "weight_decay": config.weight_decay,
        "adam_beta1": config.adam_beta1,
        "adam_beta2": config.adam_beta2,
        "max_grad_norm": config.max_grad_norm,
        "use_cpu": config.use_cpu,
        "bf16": config.bf16,
        "gradient_checkpointing": config.gradient_checkpointing,
        "logging_steps": config.logging_steps,
        "logging_first_step": True,
        "save_strategy": "steps",
        "save_steps": config.save_steps,
        "save_total_limit": config.save_total_limit,
        "report_to": config.report_to or "none",
        "disable_tqdm": True,
    }
    if has_eval:
        kw["eval_strategy"] = "steps"
        kw["eval_steps"] = config.eval_steps or config.save_steps
    kw.update(config.trainer_args)
    return kw


def resolve_resume(config: CommonRunConfig, checkpoints: Path) -> bool | str | None:
    """What to pass to ``trainer.train(resume_from_checkpoint=...)``."""
    value = config.resume_from_checkpoint
    if value in (None, False):
        return None
    if value is True or (isinstance(value, str) and value.lower() in ("true", "last", "latest")):
        from transformers.trainer_utils import get_last_checkpoint

        last = get_last_checkpoint(str(checkpoints)) if checkpoints.is_dir() else None
        if last is None:
            log.warning("resume requested but no checkpoint in %s; starting from scratch", checkpoints)
            return None
        return last
    path = Path(str(value))
    if not path.is_dir():
        raise ConfigError(f"resume_from_checkpoint: {path} is not a checkpoint directory")
    return str(path)


def save_final(trainer: Any, tokenizer: Any, out: Path, config: CommonRunConfig) -> Path:
    """Save OUT/final (merged when LoRA), OUT/adapter for LoRA runs, and the log history."""
    from peft import PeftModel

    model = trainer.accelerator.unwrap_model(trainer.model)
    final = out / "final"
    if isinstance(model, PeftModel):
        model.save_pretrained(out / "adapter")
        tokenizer.save_pretrained(out / "adapter")
        if config.save_merged:
            model = model.merge_and_unload()
        else:
            final = out / "adapter"
    if not isinstance(model, PeftModel):
        align_special_ids(model, tokenizer)
        model.save_pretrained(final)
        tokenizer.save_pretrained(final)
    (out / "log_history.json").write_text(json.dumps(trainer.state.log_history, indent=2))
    return final


def write_summary(out: Path, config: CommonRunConfig, summary: dict[str, Any]) -> None:
    dump_run_config(config, out / "run_config.yaml")
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))


def logged_values(log_history: list[dict[str, Any]], key: str) -> list[float]:
    return [float(entry[key]) for entry in log_history if key in entry]
