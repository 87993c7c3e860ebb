"""Pipeline recipes (pipelines/*.yaml): which model per stage, mixes, laws, filters."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from factory.errors import ConfigError
from factory.llm.config import EndpointConfig
from factory.paths import pipelines_dir
from factory.recipes.laws import RULES_LAW, TURNS_LAW, SizeLaw
from factory.recipes.names import DYNAMICS, STAGES, Stage

# A build waits this long for a provider that stopped answering before it stops (and can resume).
DEFAULT_OUTAGE_PATIENCE_S = 300.0


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EndpointLimits(_Strict):
    concurrency: int | None = Field(default=None, ge=1)
    rpm: float | None = Field(default=None, gt=0)
    tpm: float | None = Field(default=None, gt=0)
    timeout_s: float | None = Field(default=None, gt=0)
    max_retries: int | None = Field(default=None, ge=0)
    max_reasks: int | None = Field(default=None, ge=0)
    strict_schema: bool | None = None
    outage_patience_s: float | None = Field(
        default=None,
        gt=0,
        le=86_400,
        description="how long a build waits out a provider outage (default 300)",
    )
    startup_patience_s: float | None = Field(
        default=None,
        gt=0,
        le=3600,
        description="patience when the provider never answered and refuses connections",
    )


class PolicyConfig(_Strict):
    rules_law: SizeLaw = RULES_LAW
    industry_share: tuple[float, float] = (0.3, 0.7)
    max_categories: int = Field(default=4, ge=1)


class DialogueConfig(_Strict):
    turns_law: SizeLaw = TURNS_LAW
    dynamics: dict[str, float] = Field(default_factory=lambda: dict.fromkeys(DYNAMICS, 0.25))
    near_miss_rate: float = Field(default=0.25, ge=0, le=1)
    max_target_rules: int = Field(default=2, ge=1)
    temperature: float = Field(default=0.9, ge=0, le=2)

    @model_validator(mode="after")
    def _check(self) -> DialogueConfig:
        unknown = set(self.dynamics) - set(DYNAMICS)
        if unknown:
            raise ValueError(f"unknown dynamics {sorted(unknown)}; allowed: {list(DYNAMICS)}")
        if sum(self.dynamics.values()) <= 0:
            raise ValueError("dynamics weights must sum to a positive number")
        return self


class LabelConfig(_Strict):
    ambiguity_threshold: int = Field(
        default=6,
        ge=0,
        le=10,
        description="a rule judged more ambiguous than this is removed from the policy",
    )
    on_intent_disagreement: Literal["keep", "drop"] = "keep"
    temperature: float = Field(default=0.0, ge=0, le=2)
    spare_share: float = Field(
        default=0.4,
        ge=0,
        le=2,
        description="spare rules drawn per policy rule; an ambiguous rule is replaced by the next spare, "
        "so the policy keeps its drawn size",
    )
    max_spares: int = Field(default=40, ge=0, le=200)


class TraceConfig(_Strict):
    think_fraction: float = Field(default=1 / 3, ge=0, le=1)
    max_reasoning_chars: int = Field(default=2400, ge=200, le=20_000, description="reasoning budget")
    max_repeated_sentence_share: float = Field(default=0.3, ge=0, le=1)
    temperature: float = Field(default=0.3, ge=0, le=2)
    native_reasoning: bool = Field(
        default=False,
        description="keep the trace model's own reasoning (reasoning_content, extended thinking, Gemini "
        "thoughts) as the trace, verified like a written one",
    )
    native_reasoning_budget: int = Field(default=2048, ge=256, le=65_536)


class FilterConfig(_Strict):
    near_duplicates: bool = True
    simhash_max_distance: int = Field(default=3, ge=0, le=16)


class Recipe(_Strict):
    name: str
    description: str = ""
    models: dict[str, str] = Field(default_factory=lambda: {"default": "auto"})
    endpoint_defaults: EndpointLimits = Field(default_factory=EndpointLimits)
    endpoints: dict[str, EndpointLimits] = Field(default_factory=dict)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    dialogue: DialogueConfig = Field(default_factory=DialogueConfig)
    label: LabelConfig = Field(default_factory=LabelConfig)
    traces: TraceConfig = Field(default_factory=TraceConfig)
    filters: FilterConfig = Field(default_factory=FilterConfig)
    paraphrase_temperature: float = Field(default=0.8, ge=0, le=2)
    persona_temperature: float = Field(default=1.0, ge=0, le=2)
    oversample_cap: float = Field(default=3.0, ge=1.0, description="give up after n * cap slots")
    pricing: dict[str, dict[str, float]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_models(self) -> Recipe:
        unknown = set(self.models) - set(STAGES) - {"default"}
        if unknown:
            raise ValueError(f"unknown stage(s) in models: {sorted(unknown)}; stages: {list(STAGES)}")
        return self

    def model_spec(self, stage: str, overrides: dict[str, str] | None = None) -> str:
        """The spec chosen for a stage: --model-for, then the recipe's stage entry, then (for the trace
        stage) whatever labels, then --model, then the recipe's default."""
        overrides = overrides or {}
        if stage == Stage.TRACE and not overrides.get(stage) and stage not in self.models:
            return self.model_spec(Stage.LABEL, overrides)
        return (
            overrides.get(stage)
            or overrides.get("default")
            or self.models.get(stage)
            or self.models.get("default", "auto")
        )

    def endpoint(self, spec: str) -> EndpointConfig:
        """The endpoint for a resolved 'provider:model' spec with this recipe's client-side limits.

        'auto' must be resolved first (factory.llm.auto): a recipe is data and never calls out."""
        if spec == "auto":
            raise ConfigError("model spec 'auto' must be resolved before it is used (factory.llm.auto)")
        cfg = EndpointConfig.parse(spec)
        limits: dict = {"outage_patience_s": DEFAULT_OUTAGE_PATIENCE_S}
        limits.update(self.endpoint_defaults.model_dump(exclude_none=True))
        limits.update(self.endpoints.get(spec, EndpointLimits()).model_dump(exclude_none=True))
        return cfg.model_copy(update=limits)


def load_recipe(name_or_path: str | None) -> Recipe:
    name_or_path = name_or_path or "dynabench"
    path = Path(name_or_path)
    if not path.suffix:
        path = pipelines_dir() / f"{name_or_path}.yaml"
    if not path.exists():
        available = ", ".join(sorted(p.stem for p in pipelines_dir().glob("*.yaml")))
        raise ConfigError(f"pipeline {name_or_path!r} not found ({path}); available: {available}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from exc
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        lines = [f"  {'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise ConfigError(f"{path}: invalid pipeline recipe:\n" + "\n".join(lines)) from exc
