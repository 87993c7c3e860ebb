"""The provider interface: one HTTP exchange, mapped to RawCompletion or a typed error."""

from __future__ import annotations

import abc
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any

from pydantic import BaseModel

from factory.llm.config import API_KEY_ENV, EndpointConfig
from factory.llm.errors import FatalProviderError, RetryableProviderError
from factory.llm.types import GenParams, RawCompletion

RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524, 529}

FATAL_HINTS = {
    400: "the request was rejected as malformed; check the model name, parameters and schema",
    401: "the API key was rejected; check the key in the environment",
    403: "the key is not allowed to use this model or endpoint",
    404: "the model or endpoint does not exist; check the model name and base URL",
    422: "the server could not process the request; check parameters and schema",
}


def parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds from a Retry-After (delta or HTTP date) or retry-after-ms header."""
    if not headers:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        import time

        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def refused(exc: BaseException) -> bool:
    """True when the cause chain holds a refused connection (nothing listens at the address).

    Some transports (httpx over aiohttp) report a refused connection as a connect *timeout*; the
    circuit breaker needs to tell the two apart (nothing listening fails fast)."""
    seen = 0
    x: BaseException | None = exc
    while x is not None and seen < 10:
        if isinstance(x, ConnectionRefusedError):
            return True
        x, seen = x.__cause__ or x.__context__, seen + 1
    return False


def error_detail(exc: Any) -> str:
    """The provider's own error message from an SDK status error (openai and anthropic alike)."""
    return body_message(getattr(exc, "body", None)) or str(getattr(exc, "message", exc))


def body_message(body: Any) -> str:
    """The message of a provider's error body (`{"error": {"message": ...}}` and the like); "" if none."""
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict):
            return str(err.get("message") or err)
    return ""


def status_error(
    provider: str, model: str, status: int, detail: str, headers: Mapping[str, str] | None = None
) -> Exception:
    """Map an HTTP status to the right error class with an actionable message."""
    detail = (detail or "").strip().replace("\n", " ")[:300]
    if status in RETRYABLE_STATUS or status >= 500:
        return RetryableProviderError(
            f"HTTP {status}: {detail}",
            provider=provider,
            model=model,
            status=status,
            retry_after=parse_retry_after(headers),
        )
    hint = FATAL_HINTS.get(status, "the provider refused the request")
    key_vars = " or ".join(API_KEY_ENV.get(provider, ()))
    if status in (401, 403) and key_vars:
        hint = (
            f"the API key read from {key_vars} was {'rejected' if status == 401 else 'refused for this model'}; "
            f"set a valid key in {key_vars}, or pick another provider with --model"
        )
    return FatalProviderError(
        f"HTTP {status}: {hint} ({detail})", provider=provider, model=model, status=status
    )


def connection_refused(provider: str, model: str, where: str) -> RetryableProviderError:
    """Nothing listens at `where`: retryable, and read as a connection failure (not a timeout)."""
    return RetryableProviderError(
        f"connection failed: connection refused at {where}", provider=provider, model=model
    )


class Provider(abc.ABC):
    """One configured SDK client. Subclasses implement `_send`."""

    name: str = ""

    def __init__(self, config: EndpointConfig) -> None:
        self.config = config

    @abc.abstractmethod
    async def send(
        self, messages: list[dict[str, Any]], params: GenParams, schema: type[BaseModel] | None
    ) -> tuple[RawCompletion, Mapping[str, str]]:
        """Make one call. Raise FatalProviderError or RetryableProviderError on failure."""

    async def aclose(self) -> None:  # pragma: no cover - default no-op
        return None

    def sdk_error(self, exc: Exception, sdk: Any) -> Exception:
        """Our error for an exception of the openai or anthropic SDK (they share class names):
        a status error by its status, a timeout or a dropped connection as retryable."""
        model = self.config.model
        if isinstance(exc, sdk.APIStatusError):
            return status_error(self.name, model, exc.status_code, error_detail(exc), exc.response.headers)
        if isinstance(exc, sdk.APITimeoutError) and not refused(exc):  # a subclass of APIConnectionError
            return RetryableProviderError(
                f"timed out after {self.config.timeout_s}s", provider=self.name, model=model
            )
        if refused(exc):
            where = self.config.resolved_base_url() or "the provider's default address"
            return connection_refused(self.name, model, where)
        return RetryableProviderError(f"connection failed: {exc}", provider=self.name, model=model)

    def missing_key(self, env_vars: tuple[str, ...]) -> FatalProviderError:
        names = " or ".join(env_vars)
        return FatalProviderError(
            f"no API key: set {names} in the environment (or pick another provider with --model)",
            provider=self.name,
            model=self.config.model,
            status=401,
        )
