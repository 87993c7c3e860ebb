"""Pipeline recipes (pipelines/*.yaml): which model per stage, mixes, laws, filters."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, NotRequired

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from typing_extensions import TypedDict

from factory.errors import ConfigError
from factory.llm.config import BatchSettings, EndpointConfig, Transport
from factory.paths import pipelines_dir
from factory.recipes.laws import MAX_RULES, MAX_TURNS, RULES_LAW, TURNS_LAW, SizeLaw
from factory.recipes.names import DYNAMICS, STAGES, Stage

# A build waits this long for a provider that stopped answering before it stops (and can resume).
DEFAULT_OUTAGE_PATIENCE_S = 300.0

Share = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
Weight = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Usd = Annotated[float, Field(ge=0, allow_inf_nan=False, description="USD per 1M tokens")]


class PriceEntry(TypedDict):
    """One model's price in a recipe's `pricing:` (the format of factory.llm.pricing.Price)."""

    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]
    input: Usd
    output: Usd
    cached_input: NotRequired[Usd]


def _check_law_max(law: SizeLaw, limit: int, what: str) -> SizeLaw:
    if law.max > limit:
        raise ValueError(f"max {law.max} is above {limit}, the most {what} the factory allows")
    return law


def _check_spec(spec: str) -> None:
    if spec == "auto":
        return
    try:
        EndpointConfig.parse(spec)
    except ConfigError as exc:
        raise ValueError(str(exc)) from exc


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
    transport: Transport | None = Field(
        default=None,
        description="sdk (default) or http: online chat calls of openai endpoints as plain HTTP on one "
        "aiohttp session, without the SDK's per-request CPU (for self-hosted OpenAI-compatible servers)",
    )
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
    rules_law: SizeLaw = Field(default=RULES_LAW, description=f"rules per policy; max at most {MAX_RULES}")
    industry_share: tuple[Share, Share] = Field(
        default=(0.3, 0.7),
        description="[low, high] share of a policy's rules taken from its industry, each in [0, 1]",
    )
    max_categories: int = Field(default=4, ge=1)

    @field_validator("rules_law")
    @classmethod
    def _rules_max(cls, law: SizeLaw) -> SizeLaw:
        return _check_law_max(law, MAX_RULES, "rules per policy")

    @field_validator("industry_share")
    @classmethod
    def _share_order(cls, share: tuple[float, float]) -> tuple[float, float]:
        if share[0] > share[1]:
            raise ValueError(f"low {share[0]:g} is above high {share[1]:g}")
        return share


class DialogueConfig(_Strict):
    turns_law: SizeLaw = Field(default=TURNS_LAW, description=f"turns per dialogue; max at most {MAX_TURNS}")
    dynamics: dict[str, Weight] = Field(
        default_factory=lambda: dict.fromkeys(DYNAMICS, 0.25),
        description="relative weight of each dynamic, each >= 0, summing to more than 0",
    )
    near_miss_rate: float = Field(default=0.25, ge=0, le=1)
    max_target_rules: int = Field(default=2, ge=1)
    temperature: float = Field(default=0.9, ge=0, le=2)

    @field_validator("turns_law")
    @classmethod
    def _turns_max(cls, law: SizeLaw) -> SizeLaw:
        return _check_law_max(law, MAX_TURNS, "turns per dialogue")

    @field_validator("dynamics")
    @classmethod
    def _check_dynamics(cls, dynamics: dict[str, float]) -> dict[str, float]:
        unknown = set(dynamics) - set(DYNAMICS)
        if unknown:
            raise ValueError(f"unknown dynamics {sorted(unknown)}; allowed: {list(DYNAMICS)}")
        if sum(dynamics.values()) <= 0:
            raise ValueError("dynamics weights must sum to a positive number")
        return dynamics


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


class CostConfig(_Strict):
    """The budget and the rates the dry-run estimate assumes when no pilot measures them."""

    max_usd: float | None = Field(
        default=None,
        gt=0,
        allow_inf_nan=False,
        description="stop starting slots once spent + in-flight cost would pass this (USD); --max-cost",
    )
    expected_drop_rate: float = Field(
        default=0.10, ge=0, lt=1, description="share of slots the filters drop (estimate only)"
    )
    expected_reask_rate: float = Field(
        default=0.02, ge=0, le=5, description="re-asks per call after an unusable answer (estimate only)"
    )
    expected_ambiguous_rule_rate: float = Field(
        default=0.10,
        ge=0,
        lt=1,
        description="share of rule judgements above the ambiguity threshold, each replaced by a spare "
        "(estimate only; 0 is assumed when the threshold is 10)",
    )


class BatchConfig(BatchSettings):
    """Batch mode: which LLM stages send their requests as provider batch jobs (half price, answered
    within the provider's window, up to 24 h), and how requests are grouped into jobs. `mode` maps a
    stage (or `default`) to `online` or `batch`; `--mode` on the command line sets the default."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    mode: dict[str, Literal["online", "batch"]] = Field(default_factory=lambda: {"default": "online"})
    window: int = Field(
        default=5000,
        ge=2,
        le=1_000_000,
        description="slots in flight when a stage runs in batch mode: the size of each stage's jobs",
    )

    @field_validator("mode")
    @classmethod
    def _check_stages(cls, mode: dict[str, str]) -> dict[str, str]:
        unknown = set(mode) - set(STAGES) - {"default"}
        if unknown:
            raise ValueError(f"unknown stage(s): {sorted(unknown)}; stages: {list(STAGES)}")
        return mode

    def stage_mode(self, stage: str) -> str:
        return self.mode.get(stage) or self.mode.get("default", "online")

    def settings(self) -> BatchSettings:
        return BatchSettings(**self.model_dump(include=set(BatchSettings.model_fields)))


class SplitConfig(_Strict):
    """How samples are split into train / validation / test.

    `rules` (default): the bank's rules are partitioned by rule id into one pool per split before
    composition, and a slot composes its policy from its split's pool only, so no bank rule appears
    in two splits. `policy`: every slot draws from the whole bank and the export hashes policy ids
    into splits (a bank rule may then recur, reworded, across splits)."""

    validation: Share = 0.05
    test: Share = 0.05
    method: Literal["rules", "policy"] = "rules"

    @field_validator("test")
    @classmethod
    def _sum(cls, test: float, info) -> float:  # noqa: ANN001
        if test + info.data.get("validation", 0.0) >= 1:
            raise ValueError("validation + test must be less than 1")
        return test


class ExportConfig(_Strict):
    mix: dict[str, Share] = Field(
        default_factory=dict,
        description="share of each split taken from other sources at export, e.g. {safety: 0.5} "
        "(imported with `factory safety import`); the default export has none",
    )

    @field_validator("mix")
    @classmethod
    def _check_mix(cls, mix: dict[str, float]) -> dict[str, float]:
        unknown = set(mix) - {"safety"}
        if unknown:
            raise ValueError(f"unknown mix part(s) {sorted(unknown)}; parts: ['safety']")
        for key, share in mix.items():
            if share >= 1:
                raise ValueError(f"{key}: share {share:g} must be below 1")
        return mix


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
    splits: SplitConfig = Field(default_factory=SplitConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    paraphrase_temperature: float = Field(default=0.8, ge=0, le=2)
    persona_temperature: float = Field(default=1.0, ge=0, le=2)
    oversample_cap: float = Field(default=3.0, ge=1.0, description="give up after n * cap slots")
    cost: CostConfig = Field(default_factory=CostConfig)
    batch: BatchConfig = Field(default_factory=BatchConfig)
    pricing: dict[str, PriceEntry] = Field(
        default_factory=dict,
        description="extra prices, model: {input: USD per 1M tokens, output: USD per 1M tokens}, each >= 0",
    )

    @field_validator("models")
    @classmethod
    def _check_models(cls, models: dict[str, str]) -> dict[str, str]:
        unknown = set(models) - set(STAGES) - {"default"}
        if unknown:
            raise ValueError(f"unknown stage(s): {sorted(unknown)}; stages: {list(STAGES)}")
        for stage, spec in models.items():
            try:
                _check_spec(spec)
            except ValueError as exc:
                raise ValueError(f"{stage}: {exc}") from None
        return models

    @field_validator("endpoints")
    @classmethod
    def _check_endpoint_specs(cls, endpoints: dict[str, EndpointLimits]) -> dict[str, EndpointLimits]:
        for spec in endpoints:
            _check_spec(spec)
        return endpoints

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

    def with_mode(self, mode: str | None) -> Recipe:
        """This recipe with every LLM stage in `mode` (online or batch); None: as the recipe says."""
        if mode is None:
            return self
        return self.model_copy(update={"batch": self.batch.model_copy(update={"mode": {"default": mode}})})

    def stage_endpoint(self, stage: str, spec: str) -> EndpointConfig:
        """`endpoint(spec)` for one stage, with batch settings when the stage runs in batch mode."""
        cfg = self.endpoint(spec)
        if self.batch.stage_mode(stage) != "batch":
            return cfg
        if cfg.provider == "local":
            raise ConfigError(
                f"stage {stage}: {spec} has no batch API (the embedded model runs in this process); "
                f"run it online (--mode online, or batch.mode.{stage}: online) or pick a provider with "
                f"one (openai, anthropic, google)"
            )
        return cfg.model_copy(update={"batch": self.batch.settings()})

    def endpoint(self, spec: str) -> EndpointConfig:
        """The endpoint for a resolved 'provider:model' spec with this recipe's client-side limits.

        'auto' must be resolved first (factory.llm.auto): a recipe is data and never calls out."""
        if spec == "auto":
            raise ConfigError("model spec 'auto' must be resolved before it is used (factory.llm.auto)")
        cfg = EndpointConfig.parse(spec)
        limits: dict = {"outage_patience_s": DEFAULT_OUTAGE_PATIENCE_S}
        limits.update(self.endpoint_defaults.model_dump(exclude_none=True))
        if cfg.provider != "openai":  # the defaults' transport applies where there is a choice
            limits.pop("transport", None)
        own = self.endpoints.get(spec, EndpointLimits())
        if own.transport == "http" and cfg.provider != "openai":
            raise ConfigError(
                f"endpoints.{spec}.transport: 'http' is for OpenAI-compatible endpoints (openai:...); "
                f"{cfg.provider} goes through its SDK (transport 'sdk')"
            )
        limits.update(own.model_dump(exclude_none=True))
        return cfg.model_copy(update=limits)


def _where(loc: tuple) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def _message(error: dict) -> str:
    msg = error["msg"]
    return msg.removeprefix("Value error, ")


def load_recipe(name_or_path: str | None) -> Recipe:
    """Load and validate a recipe; every problem is one line naming the file and the key."""
    name_or_path = name_or_path or "dynabench"
    path = Path(name_or_path)
    if not path.suffix:
        path = pipelines_dir() / f"{name_or_path}.yaml"
    if not path.exists():
        available = ", ".join(sorted(p.stem for p in pipelines_dir().glob("*.yaml")))
        raise ConfigError(f"pipeline {name_or_path!r} not found ({path}); available: {available}")
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder, expected a recipe YAML file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {' '.join(str(exc).split())}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a recipe must be a YAML mapping, got {type(data).__name__}")
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        lines = [f"{path}: {_where(e['loc'])}: {_message(e)}" for e in exc.errors()]
        raise ConfigError("\n".join(lines)) from exc
