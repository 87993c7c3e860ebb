"""What the three batch adapters share: the online provider each one is built on, per-item outcomes
(from a provider's item error, or from a result the online parser rejected) and the size check of a
job."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from factory.llm.batch.base import BatchAPI, BatchItem, BatchOutcome
from factory.llm.config import EndpointConfig
from factory.llm.errors import FatalProviderError, LLMError
from factory.llm.providers.base import RETRYABLE_STATUS, Provider
from factory.llm.types import RawCompletion


def item_error(custom_id: str, status: int | None, detail: str, **extra: object) -> BatchOutcome:
    """An errored request of a job: an invalid request (4xx other than the retryable ones) is not
    worth resending; a server error, an overload, a rate limit or an unknown status is."""
    retryable = status is None or status in RETRYABLE_STATUS or status >= 500
    where = f"HTTP {status}: " if status is not None else ""
    text = (detail or "no detail").strip().replace("\n", " ")[:300]
    return BatchOutcome(custom_id=custom_id, error=f"{where}{text}", retryable=retryable, extra=dict(extra))


def parsed(custom_id: str, parse: Callable[[Any], RawCompletion], body: Any, **extra: object) -> BatchOutcome:
    """The outcome of a succeeded request, parsed by the online provider's own parser (whose errors,
    such as a content-filter stop or an unreadable body, become the outcome's error)."""
    try:
        return BatchOutcome(custom_id=custom_id, completion=parse(body), extra=dict(extra))
    except LLMError as exc:
        return BatchOutcome(
            custom_id=custom_id,
            error=str(exc),
            retryable=not isinstance(exc, FatalProviderError),
            extra=dict(extra),
        )


def check_size(name: str, items: list[BatchItem], n_bytes: int, max_requests: int, max_bytes: int) -> None:
    """A ValueError for an empty job or one over the provider's limits (the caller splits jobs)."""
    if not items:
        raise ValueError(f"{name}: a batch job needs at least one request")
    if len(items) > max_requests:
        raise ValueError(f"{name}: {len(items)} requests in one job; the limit is {max_requests}")
    if n_bytes > max_bytes:
        raise ValueError(f"{name}: a job of {n_bytes} bytes; the limit is {max_bytes}")


class ProviderBatchAPI(BatchAPI):
    """A batch adapter over the online provider of its endpoint: the provider's SDK client (key, base
    URL, timeouts), its request-body builder, its response parser and its error mapping."""

    provider_class: type[Provider]

    def __init__(self, config: EndpointConfig) -> None:
        super().__init__(config)
        self.provider = self.provider_class(config)
        self.client: Any = self.provider.client  # type: ignore[attr-defined]

    async def aclose(self) -> None:
        await self.provider.aclose()
