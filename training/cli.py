"""Command-line entry points: ``factory train sft|grpo|dpo`` and ``factory eval``.

The project CLI mounts them::

    app.add_typer(train_app, name="train")
    app.command("eval")(eval_command)

``python -m training.cli`` runs the same commands stand-alone. Heavy libraries (torch,
transformers, trl) are imported only when a command runs.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer

train_app = typer.Typer(
    name="train",
    help="Fine-tune a guardian model on a factory export with TRL (SFT, GRPO, DPO).",
    no_args_is_help=True,
    add_completion=False,
)


class EvalMode(StrEnum):
    think = "think"
    answer = "answer"


class RolloutMode(StrEnum):
    think = "think"
    answer = "answer"
    mixed = "mixed"


def _console() -> Any:
    from rich.console import Console

    return Console(stderr=False, highlight=False)


def _check_export(data: Path | None, split: str | None = None) -> None:
    if data is None:
        return
    from training.data import ExportError, describe_export

    try:
        info = describe_export(data)
    except ExportError as exc:
        raise typer.BadParameter(str(exc), param_hint="'--data'") from exc
    if split is not None and split not in info["splits"]:
        raise typer.BadParameter(
            f"split {split!r} not in {data} (available: {', '.join(info['splits'])})", param_hint="'--split'"
        )


def _load_config(kind: str, config: Path | None, overrides: dict[str, Any]) -> Any:
    from training.config import ConfigError, load_run_config

    try:
        cfg = load_run_config(kind, config, **overrides)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc), param_hint="'--config'") from exc
    if cfg.model is None:
        raise typer.BadParameter(
            "no model given (use --model or set `model:` in the config)", param_hint="'--model'"
        )
    if cfg.data is None:
        raise typer.BadParameter(
            "no export given (use --data or set `data:` in the config)", param_hint="'--data'"
        )
    _check_export(Path(cfg.data), cfg.train_split)
    return cfg


def _common_overrides(
    data: Path | None,
    model: str | None,
    out: Path | None,
    lora: bool | None,
    resume: str | None,
    max_steps: int | None,
    limit: int | None,
    learning_rate: float | None,
    seed: int | None,
    cpu: bool,
) -> dict[str, Any]:
    overrides: dict[str, Any] = {
        "data": str(data) if data else None,
        "model": model,
        "out": str(out) if out else None,
        "lora": lora,
        "max_steps": max_steps,
        "limit": limit,
        "learning_rate": learning_rate,
        "seed": seed,
    }
    if resume is not None:
        overrides["resume_from_checkpoint"] = True if resume in ("", "last", "latest", "true") else resume
    if cpu:
        overrides.update(use_cpu=True, bf16=False)
    return overrides


def _run(kind: str, runner: Any, cfg: Any) -> None:
    import logging

    from rich.markup import escape

    from training.config import ConfigError
    from training.data import ExportError

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    console = _console()
    typer.echo(f"factory train {kind}: model={cfg.model} data={cfg.data} lora={cfg.lora} out={cfg.out}")
    try:
        final = runner(cfg)
    except (ConfigError, ExportError, ValueError) as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from exc
    typer.echo(f"final model: {final}")


# Options shared by the three training commands.
DATA_OPT = typer.Option(
    None, "--data", help="Export directory written by `factory export` (has hf/ or parquet/)."
)
MODEL_OPT = typer.Option(None, "--model", help="Starting model: Hub name or local directory.")
CONFIG_OPT = typer.Option(
    None, "--config", help="YAML recipe (see training/configs/); options given here win."
)
OUT_OPT = typer.Option(None, "--out", help="Run directory (default: outputs/training/<kind>).")
LORA_OPT = typer.Option(
    None, "--lora/--no-lora", help="Train a LoRA adapter (merged into OUT/final at the end)."
)
RESUME_OPT = typer.Option(
    None,
    "--resume",
    help="Resume: 'last' for the latest checkpoint in OUT/checkpoints, or a checkpoint path.",
)
MAX_STEPS_OPT = typer.Option(None, "--max-steps", help="Stop after N optimizer steps.")
LIMIT_OPT = typer.Option(None, "--limit", help="Use only the first N training rows.")
LR_OPT = typer.Option(None, "--learning-rate", "--lr", help="Learning rate.")
SEED_OPT = typer.Option(None, "--seed", help="Random seed.")
CPU_OPT = typer.Option(False, "--cpu", help="Train on CPU in float32 (use_cpu=True, bf16=False).")


TEMPLATE_OPT = typer.Option(
    None,
    "--template",
    help="Prompt template: dynaguard (default; <rules>/<transcript> in, <think>/<answer>/<explanation> out, "
    "as DynaGuard's models use) or factory (the earlier POLICY/DIALOGUE layout).",
)


def _check_template(name: str | None) -> str | None:
    from training.format import TEMPLATES

    if name is not None and name not in TEMPLATES:
        raise typer.BadParameter(
            f"unknown template {name!r}; choose from {', '.join(TEMPLATES)}", param_hint="'--template'"
        )
    return name


@train_app.command("sft")
def sft_command(
    data: Path | None = DATA_OPT,
    model: str | None = MODEL_OPT,
    config: Path | None = CONFIG_OPT,
    out: Path | None = OUT_OPT,
    lora: bool | None = LORA_OPT,
    resume: str | None = RESUME_OPT,
    max_steps: int | None = MAX_STEPS_OPT,
    limit: int | None = LIMIT_OPT,
    learning_rate: float | None = LR_OPT,
    seed: int | None = SEED_OPT,
    cpu: bool = CPU_OPT,
    think_fraction: float | None = typer.Option(
        None, "--think-fraction", min=0.0, max=1.0, help="Share of reasoning-mode targets (default: 1/3)."
    ),
    template: str | None = TEMPLATE_OPT,
) -> None:
    """Supervised fine-tuning with dual-mode targets and assistant-only loss."""
    from training.sft import run_sft

    overrides = _common_overrides(data, model, out, lora, resume, max_steps, limit, learning_rate, seed, cpu)
    overrides["think_fraction"] = think_fraction
    overrides["template"] = _check_template(template)
    _run("sft", run_sft, _load_config("sft", config, overrides))


@train_app.command("grpo")
def grpo_command(
    data: Path | None = DATA_OPT,
    model: str | None = MODEL_OPT,
    config: Path | None = CONFIG_OPT,
    out: Path | None = OUT_OPT,
    lora: bool | None = LORA_OPT,
    resume: str | None = RESUME_OPT,
    max_steps: int | None = MAX_STEPS_OPT,
    limit: int | None = LIMIT_OPT,
    learning_rate: float | None = LR_OPT,
    seed: int | None = SEED_OPT,
    cpu: bool = CPU_OPT,
    mode: RolloutMode | None = typer.Option(None, "--mode", help="Prefill for rollouts (default: think)."),
    num_generations: int | None = typer.Option(None, "--num-generations", help="Rollouts per prompt."),
    max_completion_length: int | None = typer.Option(
        None, "--max-completion-length", help="Tokens per rollout."
    ),
    template: str | None = TEMPLATE_OPT,
) -> None:
    """GRPO with label-correctness, format and (optional) reasoning-length rewards."""
    from training.grpo import run_grpo

    overrides = _common_overrides(data, model, out, lora, resume, max_steps, limit, learning_rate, seed, cpu)
    overrides.update(
        mode=mode.value if mode else None,
        num_generations=num_generations,
        max_completion_length=max_completion_length,
        template=_check_template(template),
    )
    _run("grpo", run_grpo, _load_config("grpo", config, overrides))


@train_app.command("dpo")
def dpo_command(
    data: Path | None = DATA_OPT,
    model: str | None = MODEL_OPT,
    config: Path | None = CONFIG_OPT,
    out: Path | None = OUT_OPT,
    lora: bool | None = LORA_OPT,
    resume: str | None = RESUME_OPT,
    max_steps: int | None = MAX_STEPS_OPT,
    limit: int | None = LIMIT_OPT,
    learning_rate: float | None = LR_OPT,
    seed: int | None = SEED_OPT,
    cpu: bool = CPU_OPT,
    hard: bool | None = typer.Option(
        None,
        "--hard/--no-hard",
        help="Mine hard samples with the model (k samples per input) (default: off).",
    ),
    k: int | None = typer.Option(None, "--k", min=2, help="Samples per input when mining (default: 4)."),
    mode: RolloutMode | None = typer.Option(None, "--mode", help="Prefill for pairs (default: think)."),
    template: str | None = TEMPLATE_OPT,
) -> None:
    """DPO on preference pairs: hard-mined (--hard) or label-flipped gold targets."""
    from training.dpo import run_dpo

    overrides = _common_overrides(data, model, out, lora, resume, max_steps, limit, learning_rate, seed, cpu)
    overrides.update(hard=hard, k=k, mode=mode.value if mode else None, template=_check_template(template))
    _run("dpo", run_dpo, _load_config("dpo", config, overrides))


def eval_command(
    model: str = typer.Option(
        ...,
        "--model",
        help="Model directory or Hub name, or SCHEME:NAME for a registered predictor (LLM API).",
    ),
    data: Path = typer.Option(..., "--data", help="Export directory written by `factory export`."),
    mode: EvalMode = typer.Option(
        EvalMode.answer, "--mode", help="Prefill <think> (reasoning) or <answer> (fast)."
    ),
    split: str = typer.Option("test", "--split", help="Export split to evaluate."),
    out: Path | None = typer.Option(
        None, "--out", help="Report directory (default: outputs/eval/<model>-<split>-<mode>)."
    ),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Evaluate only the first N rows."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Generation batch size."),
    max_new_tokens: int | None = typer.Option(
        None, "--max-new-tokens", min=1, help="Token budget per output (default: 1024 think, 160 answer)."
    ),
    threads: int | None = typer.Option(None, "--threads", min=1, help="torch CPU threads."),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="Write PNG plots."),
    template: str | None = TEMPLATE_OPT,
    runs: int = typer.Option(
        1, "--runs", min=1, help="Sampled runs; metrics pooled, mean and spread over runs."
    ),
    temperature: float | None = typer.Option(
        None,
        "--temperature",
        min=0.0,
        help="Sample at this temperature (default greedy; 0.6 when --runs > 1).",
    ),
    top_k: int | None = typer.Option(
        None, "--top-k", min=0, help="Top-k when sampling (local models; paper: 300)."
    ),
    target_fpr: float = typer.Option(
        0.05,
        "--target-fpr",
        min=0.0,
        max=0.999,
        help="Report recall/F1 at this false-positive rate, with AUC, when the model gives scores "
        "(local checkpoints: answer-token logits; provider models: share of --runs answering FAIL).",
    ),
) -> None:
    """Score a guardian on an export split: F1/recall/precision/FPR/accuracy (FAIL = positive),
    unparseable rate, per-slice tables and plots."""
    import training.provider_predictor  # noqa: F401  (registers openai:/anthropic:/google:/local: models)
    from training.data import ExportError, load_split
    from training.evaluate import evaluate, make_predictor, save_report

    _check_export(data, split)
    try:
        rows = load_split(data, split, limit)
    except ExportError as exc:
        raise typer.BadParameter(str(exc), param_hint="'--data'") from exc
    options: dict[str, Any] = {"batch_size": batch_size}
    if max_new_tokens:
        options["max_new_tokens"] = max_new_tokens
    if threads:
        options["torch_threads"] = threads
    try:
        predictor = make_predictor(model, **options)
    except (OSError, ValueError) as exc:
        raise typer.BadParameter(f"could not load model {model!r}: {exc}", param_hint="'--model'") from exc
    name = Path(model).name if Path(model).exists() else model.replace("/", "_").replace(":", "_")
    out_dir = out or Path("outputs") / "eval" / f"{name}-{split}-{mode.value}"
    typer.echo(f"evaluating {model} on {data}, split {split} ({len(rows)} rows, mode={mode.value})")
    report = evaluate(
        predictor,
        rows,
        mode=mode.value,
        batch_size=batch_size,
        model_name=model,
        template=_check_template(template),
        runs=runs,
        temperature=temperature,
        top_k=top_k,
        target_fpr=target_fpr,
    )
    paths = save_report(report, out_dir, plots=plots)
    typer.echo(paths["table"].read_text())  # already rendered by rich; echo keeps its width
    typer.echo(json.dumps({k: str(v) for k, v in paths.items()}, indent=2))


app = typer.Typer(
    help="DynaBench factory training and evaluation.", no_args_is_help=True, add_completion=False
)
app.add_typer(train_app, name="train")
app.command("eval")(eval_command)


if __name__ == "__main__":  # pragma: no cover
    app()
