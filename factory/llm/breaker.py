"""A circuit breaker per endpoint: an outage pauses every caller instead of failing each one.

Closed: calls go through. After `open_after` consecutive transport failures (connection refused,
timeout, 429, 5xx after the provider's own retry hints) it opens: callers wait, and one probe at a
time is let through, spaced by a growing interval. A successful probe closes it. If it stays open
longer than its patience, it trips: every waiting and future call raises ProviderOutage, which
stops the build (rerunning the same command resumes). An endpoint that never answered at all and
refuses connections gets a much shorter patience, so "nothing listens" fails within seconds.
"""

from __future__ import annotations

import asyncio
import time

from factory.llm.errors import ProviderOutage, RetryableProviderError


class CircuitBreaker:
    def __init__(
        self,
        spec: str,
        *,
        patience_s: float,
        startup_patience_s: float,
        open_after: int = 5,
        probe_max_s: float = 15.0,
    ) -> None:
        self.spec = spec
        self.patience_s = patience_s
        self.startup_patience_s = startup_patience_s
        self.open_after = open_after
        self.probe_max_s = probe_max_s
        self.consecutive = 0
        self.failures = 0  # transport failures seen, for the progress display
        self.ever_ok = False
        self.opened_at: float | None = None
        self.next_probe_at = 0.0
        self.probe_interval = 1.0
        self.probing = False
        self.last_error: RetryableProviderError | None = None
        self.tripped: ProviderOutage | None = None
        self._changed = asyncio.Event()

    @property
    def is_open(self) -> bool:
        return self.opened_at is not None

    def _patience(self) -> float:
        refused = self.last_error is not None and self.last_error.kind == "connection"
        return self.startup_patience_s if (not self.ever_ok and refused) else self.patience_s

    def remaining_s(self) -> float:
        """Seconds left before the breaker gives up (for the countdown on screen)."""
        if self.opened_at is None:
            return self._patience()
        return max(0.0, self.opened_at + self._patience() - time.monotonic())

    def next_probe_in_s(self) -> float:
        return max(0.0, self.next_probe_at - time.monotonic())

    def _trip(self) -> ProviderOutage:
        err = self.last_error
        what = err.kind_text() if err is not None else "no answer"
        waited = time.monotonic() - (self.opened_at or time.monotonic())
        self.tripped = ProviderOutage(
            f"{self.spec} is unavailable ({what}; last error: {err}) and did not come back within "
            f"{waited:.0f}s. Nothing is lost: rerun the same command to resume when it is back.",
            provider=err.provider if err else "",
            model=err.model if err else "",
        )
        self._notify()
        return self.tripped

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def admit(self) -> bool:
        """Wait until a call may go out. Returns True if this call is the probe."""
        while True:
            if self.tripped is not None:
                raise self.tripped
            if self.opened_at is None:
                return False
            now = time.monotonic()
            if now - self.opened_at > self._patience():
                raise self._trip()
            if not self.probing and now >= self.next_probe_at:
                self.probing = True
                return True
            wait = self.next_probe_at - now if not self.probing else self.probe_max_s
            deadline = self.opened_at + self._patience() - now
            changed = self._changed
            try:
                await asyncio.wait_for(changed.wait(), timeout=max(0.05, min(wait, deadline, 1.0)))
            except TimeoutError:
                pass

    def success(self, probe: bool) -> None:
        self.ever_ok = True
        self.consecutive = 0
        if probe:
            self.probing = False
        if self.opened_at is not None:
            self.opened_at = None
            self.probe_interval = 1.0
            self._notify()

    def failure(self, exc: RetryableProviderError, probe: bool) -> None:
        self.failures += 1
        self.consecutive += 1
        self.last_error = exc
        now = time.monotonic()
        if probe:
            self.probing = False
            self.probe_interval = min(self.probe_max_s, self.probe_interval * 2)
            wait = exc.retry_after if exc.retry_after is not None else self.probe_interval
            self.next_probe_at = now + min(wait, self.probe_max_s * 4)
            self._notify()
        elif self.opened_at is None and self.consecutive >= self.open_after:
            self.opened_at = now
            self.probe_interval = 1.0
            wait = exc.retry_after if exc.retry_after is not None else self.probe_interval
            self.next_probe_at = now + wait
            self._notify()

    def release(self, probe: bool) -> None:
        """A probe ended without an answer either way (cancelled): let another caller probe."""
        if probe and self.probing:
            self.probing = False
            self._notify()
