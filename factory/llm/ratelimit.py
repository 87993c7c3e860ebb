"""Client-side rate limiting: a sliding window for requests/min, a token bucket for tokens/min,
both fed by the providers' rate-limit headers."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping


class TokenBucket:
    """A leaky bucket that lets callers go into debt; waiters are served in arrival order.

    `rate` is units per second, `capacity` the burst size. `acquire(n)` returns at once when the
    bucket holds n units; otherwise it sleeps exactly as long as the deficit takes to refill.
    """

    def __init__(self, rate: float, capacity: float | None = None) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.capacity = capacity if capacity is not None else max(1.0, rate)
        self._level = self.capacity
        self._stamp = time.monotonic()
        self._blocked_until = 0.0

    def _refill(self, now: float) -> None:
        self._level = min(self.capacity, self._level + (now - self._stamp) * self.rate)
        self._stamp = now

    async def acquire(self, amount: float = 1.0) -> None:
        now = time.monotonic()
        self._refill(now)
        self._level -= amount  # reserve now (possibly into debt) so later callers queue behind us
        wait = max(0.0, -self._level / self.rate, self._blocked_until - now)
        if wait > 0:
            await asyncio.sleep(wait)

    def refund(self, amount: float) -> None:
        """Give back what was over-reserved (estimates are corrected after the response)."""
        self._level = min(self.capacity, self._level + amount)

    def block_for(self, seconds: float) -> None:
        """Stop handing out capacity for a while (the server said we are out)."""
        self._blocked_until = max(self._blocked_until, time.monotonic() + seconds)


class SlidingWindow:
    """At most `limit` requests in any `window` seconds, granted in arrival order, and never faster
    than `spread` times the rate.

    The window is one second (longer when the rate is below one a second, so that `limit` is at
    least 1) plus `margin_s` for the jitter between our clock and the server's. Unlike a token
    bucket, whose burst sits on top of its steady rate, this never lets more than a second's worth
    of the rate through in any second, so a provider that enforces its per-minute limit per second
    (or with a bucket of a second or more) does not see us above it; and it lets a second's worth
    go within the first 1/`spread` of a second, so a build does not crawl up to speed at the start.
    The spacing (1/(spread * rate) between grants) keeps a burst from arriving all at once, which
    queues every request of it behind the others' client-side work.
    """

    def __init__(self, rate: float, margin_s: float = 0.01, spread: float = 4.0) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        base = max(1.0, 1.0 / rate)
        self.limit = max(1, int(rate * base + 1e-9))
        self.window = base + margin_s
        self.gap = 1.0 / (rate * spread)
        self._grants: deque[float] = deque()  # grant times, non-decreasing; may lie in the future
        self._blocked_until = 0.0

    def _reserve(self, now: float) -> float:
        grants = self._grants
        t = max(now, self._blocked_until, grants[-1] + self.gap if grants else now)
        horizon = t - self.window
        while grants and grants[0] <= horizon:
            grants.popleft()  # expired for this grant and so for every later one
        if len(grants) >= self.limit:
            t = max(t, grants[len(grants) - self.limit] + self.window)
            while grants and grants[0] <= t - self.window:
                grants.popleft()
        grants.append(t)
        return t

    async def acquire(self, amount: float = 1.0) -> None:
        now = time.monotonic()
        t = now
        for _ in range(max(1, round(amount))):
            t = self._reserve(now)  # reserve now so later callers queue behind us
        if t > now:
            await asyncio.sleep(t - now)

    def refund(self, amount: float) -> None:
        """Requests are never over-reserved: nothing to give back."""

    def block_for(self, seconds: float) -> None:
        """Stop granting for a while (the server said we are out)."""
        self._blocked_until = max(self._blocked_until, time.monotonic() + seconds)


def _parse_duration(value: str) -> float | None:
    """Parse OpenAI-style reset values ('1s', '6m0s', '250ms', '0.5')."""
    value = value.strip()
    try:
        return float(value)
    except ValueError:
        pass
    total, num = 0.0, ""
    i = 0
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    while i < len(value):
        c = value[i]
        if c.isdigit() or c == ".":
            num += c
            i += 1
            continue
        unit = "ms" if value[i : i + 2] == "ms" else c
        if unit not in units or not num:
            return None
        total += float(num) * units[unit]
        num = ""
        i += len(unit)
    return total if not num else None


class RateLimiter:
    """Requests-per-minute and tokens-per-minute limits for one provider/model."""

    def __init__(self, rpm: float | None = None, tpm: float | None = None) -> None:
        # Requests: at most a second's worth in any second (see SlidingWindow). Tokens: a bucket
        # that goes into debt, so one request estimated above a second's worth still waits its due.
        self.requests: SlidingWindow | TokenBucket | LeasedBucket | None = (
            SlidingWindow(rpm / 60.0) if rpm else None
        )
        self.tokens: TokenBucket | LeasedBucket | None = (
            TokenBucket(tpm / 60.0, capacity=tpm / 60.0) if tpm else None
        )

    async def acquire(self, estimated_tokens: int) -> None:
        if self.requests is not None:
            await self.requests.acquire(1)
        if self.tokens is not None:
            await self.tokens.acquire(estimated_tokens)

    def settle(self, estimated_tokens: int, actual_tokens: int) -> None:
        if self.tokens is not None and actual_tokens < estimated_tokens:
            self.tokens.refund(estimated_tokens - actual_tokens)

    def observe_headers(self, headers: Mapping[str, str]) -> None:
        """Pause when the server reports an exhausted budget (OpenAI and Anthropic headers)."""
        for remaining_key, reset_key in (
            ("x-ratelimit-remaining-requests", "x-ratelimit-reset-requests"),
            ("x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens"),
            ("anthropic-ratelimit-requests-remaining", None),
        ):
            remaining = headers.get(remaining_key)
            if remaining is None:
                continue
            try:
                exhausted = float(remaining) <= 0
            except ValueError:
                continue
            if not exhausted:
                continue
            delay = _parse_duration(headers.get(reset_key, "1")) if reset_key else 1.0
            bucket = self.requests or self.tokens
            if bucket is not None and delay:
                bucket.block_for(min(delay, 60.0))


Lease = Callable[[str, float], Awaitable[None]]  # (kind "requests"|"tokens", amount): returns once granted
Block = Callable[[str, float], None]  # (kind, seconds): the server said the budget is exhausted


class LeasedBucket:
    """A local share of a bucket held elsewhere (one limiter for many processes): capacity is
    leased in chunks, so a process asks the shared bucket about once per `chunk` units.

    The shared bucket grants a lease only when its rate allows, so K processes together never go
    above the rate; a lease not used yet is at most `chunk` units per process (a small burst)."""

    def __init__(self, kind: str, lease: Lease, block: Block, chunk: float) -> None:
        self.kind = kind
        self._lease = lease
        self._block = block
        self.chunk = max(1.0, chunk)
        self._level = 0.0
        self._lock = asyncio.Lock()  # one lease at a time; waiters are served in arrival order

    async def acquire(self, amount: float = 1.0) -> None:
        async with self._lock:
            if self._level < amount:
                want = max(self.chunk, amount - self._level)
                await self._lease(self.kind, want)
                self._level += want
            self._level -= amount

    def refund(self, amount: float) -> None:
        self._level += amount  # over-reserved tokens stay with this process's lease

    def block_for(self, seconds: float) -> None:
        self._level = 0.0
        self._block(self.kind, seconds)


class LeasedLimiter(RateLimiter):
    """A RateLimiter whose buckets are shares of a shared limiter (see LeasedBucket); leases are
    sized to about `lease_s` of the rate."""

    def __init__(
        self,
        lease: Lease,
        block: Block,
        rpm: float | None = None,
        tpm: float | None = None,
        lease_s: float = 0.05,
    ) -> None:
        self.requests = LeasedBucket("requests", lease, block, rpm / 60.0 * lease_s) if rpm else None
        self.tokens = LeasedBucket("tokens", lease, block, tpm / 60.0 * lease_s) if tpm else None
