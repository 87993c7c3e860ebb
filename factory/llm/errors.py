"""Errors raised by the LLM layer. Every message names the provider and model."""

from __future__ import annotations

from factory.errors import ConfigError

__all__ = [
    "ConfigError",
    "FatalProviderError",
    "ClientClosing",
    "LLMError",
    "ProviderOutage",
    "RetryableProviderError",
    "StructuredOutputError",
]


class LLMError(Exception):
    """Base class."""

    def __init__(self, message: str, *, provider: str = "", model: str = "") -> None:
        self.provider = provider
        self.model = model
        prefix = f"[{provider}:{model}] " if provider else ""
        super().__init__(prefix + message)


class FatalProviderError(LLMError):
    """Not worth retrying: bad request, bad or missing credentials, forbidden, unknown model."""

    def __init__(
        self, message: str, *, provider: str = "", model: str = "", status: int | None = None
    ) -> None:
        self.status = status
        super().__init__(message, provider=provider, model=model)


class RetryableProviderError(LLMError):
    """Rate limits, server errors, timeouts, dropped connections."""

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        model: str = "",
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.status = status
        self.retry_after = retry_after
        self.during_outage = False  # set by the client when the endpoint's breaker was open
        super().__init__(message, provider=provider, model=model)

    @property
    def kind(self) -> str:
        """connection | timeout | rate_limit | server"""
        if self.status == 429:
            return "rate_limit"
        if self.status is not None:
            return "server"
        return "connection" if "connection failed" in str(self) else "timeout"

    def kind_text(self) -> str:
        return {
            "connection": "connection refused or dropped",
            "timeout": "requests time out",
            "rate_limit": "HTTP 429 rate limited",
            "server": f"HTTP {self.status} server errors",
        }[self.kind]


class ClientClosing(LLMError):
    """The client stopped sending new requests (a build is draining before it exits)."""


class ProviderOutage(LLMError):
    """An endpoint stayed unavailable past its patience: the build stops (and resumes on rerun)."""


class StructuredOutputError(LLMError):
    """The model never produced output matching the schema, re-asks included. Keeps the raw text."""

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        model: str = "",
        raw_text: str = "",
        attempts: int = 0,
        key: str = "",
    ) -> None:
        self.raw_text = raw_text
        self.attempts = attempts
        self.key = key
        super().__init__(message, provider=provider, model=model)
