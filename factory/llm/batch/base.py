"""The provider batch interface: write requests as one batch job, poll it, read its results.

Each provider's batch API (OpenAI Batch, Anthropic Message Batches, Gemini batch mode) is wrapped
by one adapter implementing `BatchAPI` through the official SDK. An adapter builds each request body
exactly as the online provider does (same model, messages, parameters, structured-output schema and
reasoning settings) and parses each result into the same `RawCompletion`, so a batched answer is
indistinguishable from an online one to the rest of the pipeline.

`custom_id` is the request-cache key of the request (32 hex characters, valid for every provider): it is how results are
matched to requests, and how a resumed build finds the job that already holds a request.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel

from factory.llm.config import EndpointConfig
from factory.llm.types import GenParams, RawCompletion

JobState = Literal["running", "ended", "expired", "failed", "cancelled"]
# running: not finished; ended: every request has an outcome (success or error);
# expired / cancelled: finished with some requests never processed (their outcome is missing);
# failed: the job as a whole was rejected (e.g. validation of the input file failed).
FINISHED: frozenset[str] = frozenset({"ended", "expired", "failed", "cancelled"})


@dataclass(frozen=True)
class BatchItem:
    """One request of a batch job."""

    custom_id: str
    messages: list[dict[str, Any]]
    params: GenParams
    schema: type[BaseModel] | None = None


@dataclass
class JobStatus:
    state: JobState
    total: int = 0  # requests in the job
    done: int = 0  # requests with an outcome so far (succeeded or errored)
    failed: int = 0  # of done, those that errored
    detail: str = ""  # the provider's own words for a failed job


@dataclass
class BatchOutcome:
    """The outcome of one request of a finished job: a completion, or an error."""

    custom_id: str
    completion: RawCompletion | None = None
    error: str = ""  # "" when completion is set
    retryable: bool = True  # False: the request itself was rejected (e.g. HTTP 400): do not resend
    extra: dict[str, Any] = field(default_factory=dict)


class BatchAPI(abc.ABC):
    """One provider's batch endpoints for one configured endpoint (provider, model, base URL)."""

    name: str = ""
    # the provider's limits on one job; a larger set of requests is split into several jobs
    max_requests: int = 50_000
    max_bytes: int = 100 * 1024 * 1024

    def __init__(self, config: EndpointConfig) -> None:
        self.config = config

    @abc.abstractmethod
    async def submit(self, items: list[BatchItem]) -> str:
        """Create one job holding `items`; return its id. Raise FatalProviderError or
        RetryableProviderError (from factory.llm.errors) as the online providers do."""

    @abc.abstractmethod
    async def status(self, job_id: str) -> JobStatus:
        """The job's state and counts."""

    @abc.abstractmethod
    async def results(self, job_id: str) -> list[BatchOutcome]:
        """Outcomes of a finished job, one per request that has one. Requests of an expired or
        cancelled job that were never processed are simply absent (the caller resends them)."""

    async def cancel(self, job_id: str) -> None:  # pragma: no cover - optional
        return None

    async def aclose(self) -> None:  # pragma: no cover - default no-op
        return None


def make_batch_api(config: EndpointConfig) -> BatchAPI:
    """The batch adapter for an endpoint; a ConfigError for a provider without a batch API."""
    from factory.errors import ConfigError

    if config.provider == "openai":
        from factory.llm.batch.openai_batch import OpenAIBatchAPI

        return OpenAIBatchAPI(config)
    if config.provider == "anthropic":
        from factory.llm.batch.anthropic_batch import AnthropicBatchAPI

        return AnthropicBatchAPI(config)
    if config.provider == "google":
        from factory.llm.batch.google_batch import GoogleBatchAPI

        return GoogleBatchAPI(config)
    raise ConfigError(
        f"{config.spec}: the {config.provider!r} provider has no batch API; use mode 'online' for its stages"
    )
