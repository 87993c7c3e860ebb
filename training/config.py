"""Run configurations for the three trainers, loadable from YAML.

One pydantic model per trainer (:class:`SFTRunConfig`, :class:`GRPORunConfig`,
:class:`DPORunConfig`), sharing :class:`CommonRunConfig`. Their fields are what our recipes need;
anything else TRL accepts can be passed through ``trainer_args`` (a dict merged last into the
TRL config, so it wins). Unknown top-level keys are rejected so that typos in YAML fail loudly.

A YAML file may contain a top-level ``sft:``/``grpo:``/``dpo:`` section; when it does, that section
is used for the matching trainer, otherwise the whole file is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class ConfigError(ValueError):
    """A configuration file is missing, unreadable or invalid."""


class LoraSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] | str = "all-linear"


class CommonRunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # What to train on / start from / write to
    model: str | None = Field(None, description="Hub name or local directory of the starting model")
    data: str | None = Field(None, description="export directory (from `factory export`)")
    out: str | None = Field(None, description="run directory: checkpoints/, final/, logs")
    train_split: str = "train"
    eval_split: str | None = None
    limit: int | None = Field(None, description="use only the first N training rows")
    eval_limit: int | None = None
    seed: int = 42
    template: Literal["dynaguard", "factory"] = Field(
        "dynaguard", description="prompt template (training.format.TEMPLATES); dynaguard: DynaGuard's layout"
    )

    # Model adaptation
    lora: bool = False
    lora_settings: LoraSettings = Field(default_factory=LoraSettings)
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    attn_implementation: str | None = None

    # Optimisation (names follow transformers.TrainingArguments)
    learning_rate: float = 1e-5
    num_train_epochs: float = 1.0
    max_steps: int = -1
    per_device_train_batch_size: int = 4
    per_device_eval_batch_size: int = 4
    gradient_accumulation_steps: int = 1
    lr_scheduler_type: str = "cosine"
    warmup_steps: float = Field(0, description="int: steps; float in [0, 1): share of total steps")
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    max_grad_norm: float = 1.0
    max_length: int | None = 4096

    # Hardware
    use_cpu: bool = False
    bf16: bool = False
    gradient_checkpointing: bool = False
    torch_threads: int | None = Field(None, description="torch.set_num_threads; 1 is steadiest on small CPUs")

    # Bookkeeping
    logging_steps: int = 10
    save_steps: int = 500
    save_total_limit: int | None = 2
    eval_steps: int | None = None
    report_to: list[str] = Field(default_factory=list)
    resume_from_checkpoint: bool | str | None = Field(
        None, description="True: latest checkpoint in OUT/checkpoints; or a checkpoint path"
    )
    save_merged: bool = Field(True, description="save OUT/final as a plain (LoRA-merged) model")

    trainer_args: dict[str, Any] = Field(
        default_factory=dict, description="extra keyword arguments for the TRL config, applied last"
    )

    @field_validator("learning_rate")
    @classmethod
    def _positive_lr(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("learning_rate must be > 0")
        return v


class SFTRunConfig(CommonRunConfig):
    learning_rate: float = 2e-5
    think_fraction: float = Field(1 / 3, ge=0.0, le=1.0, description="share of reasoning-mode targets")
    mode_source: Literal["fraction", "column"] = Field(
        "fraction",
        description="fraction: seeded exact share of think targets; column: follow the export's trace_mode",
    )
    assistant_only_loss: bool = True


class GRPORunConfig(CommonRunConfig):
    learning_rate: float = 1e-6
    mode: Literal["think", "answer", "mixed"] = Field(
        "think", description="prefill used for rollouts; mixed uses think_fraction"
    )
    think_fraction: float = Field(1 / 3, ge=0.0, le=1.0)
    num_generations: int = 8
    max_completion_length: int = 1024
    temperature: float = 1.0
    top_p: float = 1.0
    beta: float = 1e-3
    generation_batch_size: int | None = None
    # Reward mixture
    correct_weight: float = 1.0
    format_weight: float = 0.2
    length_weight: float = 0.0
    length_budget_words: int = 300
    miss_penalty: float = Field(0.0, description="extra penalty when a FAIL is called PASS (recall first)")


class DPORunConfig(CommonRunConfig):
    learning_rate: float = 5e-7
    beta: float = 0.1
    loss_type: str = "sigmoid"
    hard: bool = Field(False, description="mine hard samples with the model instead of label-flip pairs")
    mode: Literal["think", "answer", "mixed"] = "think"
    think_fraction: float = Field(1 / 3, ge=0.0, le=1.0)
    # Hard-sample mining
    k: int = Field(4, ge=2, description="samples per input when mining")
    sample_temperature: float = 1.0
    sample_top_p: float = 1.0
    sample_max_new_tokens: int = 512
    sample_batch_size: int = 8
    max_pairs_per_input: int | None = Field(None, description="cap on duplicated pairs per input")
    mine_limit: int | None = Field(None, description="mine from at most N training rows")


CONFIG_CLASSES: dict[str, type[CommonRunConfig]] = {
    "sft": SFTRunConfig,
    "grpo": GRPORunConfig,
    "dpo": DPORunConfig,
}


def _read_yaml(path: str | Path) -> dict[str, Any]:
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {p} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must contain a mapping, got {type(data).__name__}")
    return data


def load_run_config(kind: str, path: str | Path | None = None, **overrides: Any) -> CommonRunConfig:
    """Build the config for ``kind`` ('sft'|'grpo'|'dpo') from YAML (optional) plus overrides.

    Overrides whose value is ``None`` are ignored, so CLI options that were not given keep the
    YAML value.
    """
    cls = CONFIG_CLASSES.get(kind)
    if cls is None:
        raise ConfigError(f"unknown trainer {kind!r}; expected one of {', '.join(CONFIG_CLASSES)}")
    data: dict[str, Any] = {}
    if path is not None:
        raw = _read_yaml(path)
        data = dict(raw[kind]) if isinstance(raw.get(kind), dict) else raw
        if any(k in data for k in CONFIG_CLASSES if k != kind) and kind not in raw:
            raise ConfigError(f"config file {path} has no {kind!r} section (it has {', '.join(raw)})")
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return cls(**data)
    except ValidationError as exc:
        where = f"config file {path}" if path else "configuration"
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid {kind} {where}: {problems}") from exc


def dump_run_config(config: CommonRunConfig, path: str | Path) -> None:
    import yaml

    Path(path).write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
