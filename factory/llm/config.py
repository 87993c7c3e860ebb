"""Which provider and model a stage talks to, and how hard it may push it."""

from __future__ import annotations

import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from factory.errors import ConfigError

ProviderName = Literal["openai", "anthropic", "google", "local"]
# How online chat calls travel: through the provider's SDK, or (openai only) as plain HTTP on one
# aiohttp session, for self-hosted OpenAI-compatible servers where the SDK's CPU is the limit.
Transport = Literal["sdk", "http"]

# The SDKs' own environment variables, honoured as they are.
API_KEY_ENV: dict[str, tuple[str, ...]] = {
    "openai": ("OPENAI_API_KEY",),
    "anthropic": ("ANTHROPIC_API_KEY",),
    "google": ("GEMINI_API_KEY", "GOOGLE_API_KEY"),
    "local": (),
}
BASE_URL_ENV: dict[str, tuple[str, ...]] = {
    "openai": ("OPENAI_BASE_URL",),
    "anthropic": ("ANTHROPIC_BASE_URL",),
    "google": ("GOOGLE_GEMINI_BASE_URL", "GEMINI_BASE_URL"),
    "local": (),
}


class BatchSettings(BaseModel):
    """How a stage's requests are sent as provider batch jobs (half price, answered within hours)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    quiet_s: float = Field(
        default=5.0, gt=0, le=3600, description="submit the queued requests once none came for this long"
    )
    max_wait_s: float = Field(
        default=60.0, gt=0, le=86_400, description="...or this long after the first one was queued"
    )
    poll_s: float = Field(default=30.0, gt=0, le=3600, description="the longest wait between status polls")
    max_resubmits: int = Field(
        default=2,
        ge=0,
        le=10,
        description="expired or failed requests go into a new job this often, then online",
    )
    online_below: int = Field(
        default=0, ge=0, description="a submission of fewer requests than this is sent online (stragglers)"
    )


class EndpointConfig(BaseModel):
    """A provider + model and the client-side limits to use with it."""

    model_config = ConfigDict(extra="forbid")
    provider: ProviderName
    model: str = Field(min_length=1)
    base_url: str | None = None
    concurrency: int = Field(default=64, ge=1, le=10_000)
    rpm: float | None = Field(default=None, gt=0, description="client-side requests per minute")
    tpm: float | None = Field(default=None, gt=0, description="client-side tokens per minute")
    timeout_s: float = Field(default=120.0, gt=0)
    max_retries: int = Field(default=6, ge=0, le=50)
    max_reasks: int = Field(default=2, ge=0, le=10)
    strict_schema: bool = True
    transport: Transport = "sdk"
    # Circuit breaker (None: off, every request retries on its own and then fails). Builds turn it on.
    outage_patience_s: float | None = Field(default=None, gt=0, le=86_400)
    startup_patience_s: float = Field(default=15.0, gt=0, le=3600)
    # Batch mode (None: online). Requests that miss the cache are queued and sent as batch jobs.
    batch: BatchSettings | None = None

    @field_validator("model")
    @classmethod
    def _strip(cls, v: str) -> str:
        return v.strip()

    @model_validator(mode="after")
    def _transport_for_openai(self) -> EndpointConfig:
        if self.transport == "http" and self.provider != "openai":
            raise ValueError(
                f"transport 'http' is for OpenAI-compatible endpoints (openai:...), not {self.provider}; "
                f"use transport 'sdk'"
            )
        return self

    @classmethod
    def parse(cls, spec: str, **overrides: object) -> EndpointConfig:
        """Parse 'provider:model' (e.g. 'openai:gpt-4o-mini', 'local:smollm2-135m')."""
        if ":" not in spec:
            raise ConfigError(
                f"model spec {spec!r} must look like 'provider:model', e.g. 'openai:gpt-4o-mini'; "
                f"providers: openai, anthropic, google, local"
            )
        provider, model = spec.split(":", 1)
        if provider not in API_KEY_ENV:
            raise ConfigError(
                f"unknown provider {provider!r} in {spec!r}; use openai, anthropic, google or local"
            )
        if not model.strip():
            raise ConfigError(
                f"model spec {spec!r} names no model after {provider + ':'!r}, e.g. '{provider}:<model-name>'"
            )
        try:
            return cls(provider=provider, model=model, **overrides)  # type: ignore[arg-type]
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'spec'}: {e['msg']}" for e in exc.errors()
            )
            raise ConfigError(f"model spec {spec!r}: {problems}") from exc

    @property
    def spec(self) -> str:
        return f"{self.provider}:{self.model}"

    def resolved_base_url(self) -> str | None:
        if self.base_url:
            return self.base_url
        for var in BASE_URL_ENV[self.provider]:
            if os.environ.get(var):
                return os.environ[var]
        return None

    def api_key(self) -> str | None:
        for var in API_KEY_ENV[self.provider]:
            if os.environ.get(var):
                return os.environ[var]
        return None


def configured_remote() -> EndpointConfig | None:
    """The endpoint implied by the environment, if any (used when a recipe says 'auto')."""
    if os.environ.get("OPENAI_BASE_URL") or os.environ.get("OPENAI_API_KEY"):
        return EndpointConfig(provider="openai", model=os.environ.get("FACTORY_MODEL", "gpt-4o-mini"))
    if os.environ.get("ANTHROPIC_API_KEY"):
        return EndpointConfig(provider="anthropic", model=os.environ.get("FACTORY_MODEL", "claude-haiku-4-5"))
    if os.environ.get("GEMINI_API_KEY") or os.environ.get("GOOGLE_API_KEY"):
        return EndpointConfig(provider="google", model=os.environ.get("FACTORY_MODEL", "gemini-2.0-flash"))
    return None
