"""Live progress per stage: done, failed, rate, ETA, tokens and dollars (rich; plain lines off a TTY)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from factory.recipes.names import LLM_STAGES, Stage

STAGE_ORDER = (Stage.COMPOSE, *LLM_STAGES)


class Progress:
    def __init__(
        self,
        ctx: Any,
        committer: Any,
        n_target: int,
        enabled: bool = True,
        extra: Callable[[], str] | None = None,
    ) -> None:
        self.ctx = ctx
        self.extra = extra  # one more line (the Ray executor's per-worker throughput)
        self.committer = committer
        self.n = n_target
        self.enabled = enabled
        self.console = Console(stderr=True)
        self.tty = self.console.is_terminal
        self.start = time.monotonic()
        self.start_accepted = committer.accepted
        self._live: Live | None = None
        self._last_line = 0.0

    def __enter__(self) -> Progress:
        if self.enabled and self.tty:
            self._live = Live(self.render(), console=self.console, refresh_per_second=4, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.update(self.render())
            self._live.__exit__(*exc)
        elif self.enabled:
            self._line(force=True)

    def update(self) -> None:
        if not self.enabled:
            return
        if self._live is not None:
            self._live.update(self.render())
        else:
            self._line()

    def _eta(self) -> tuple[float, str]:
        elapsed = max(1e-6, time.monotonic() - self.start)
        gained = self.committer.accepted - self.start_accepted
        rate = gained / elapsed
        left = self.n - self.committer.accepted
        eta = f"{left / rate:,.0f}s" if rate > 0 else "?"
        return rate, eta

    def render(self) -> Table:
        acc = self.ctx.client.accounting
        stages = acc.by_stage()
        elapsed = max(1e-6, time.monotonic() - self.start)
        rate, eta = self._eta()
        table = Table(
            title=f"factory build: {self.committer.accepted}/{self.n} samples  "
            f"({rate:.1f}/s, ETA {eta}, dropped {sum(self.committer.dropped.values())})"
        )
        for col in (
            "stage",
            "done",
            "failed",
            "rate/s",
            "calls",
            "cached",
            "retries",
            "tokens in/out",
            "cost $",
        ):
            table.add_column(col, justify="right" if col != "stage" else "left")
        for name in STAGE_ORDER:
            c = self.ctx.counts.get(name)
            s = stages.get(name)
            if c is None and s is None:
                continue
            done = c.done if c else 0
            table.add_row(
                name,
                f"{done:,}",
                f"{c.failed if c else 0:,}",
                f"{done / elapsed:.1f}",
                f"{s.network_calls:,}" if s else "-",
                f"{s.cache_hits:,}" if s else "-",
                f"{s.retries:,}" if s else "-",
                f"{s.input_tokens:,}/{s.output_tokens:,}" if s else "-",
                (f"{s.cost_usd:.4f}" + ("*" if s.unpriced else "")) if s else "-",
            )
        caption = "\n".join(x for x in (self.outage_line(), self.batch_line(), self.extra_line()) if x)
        if caption:
            table.caption = caption
        return table

    def batch_line(self) -> str:
        """Jobs running and requests queued per endpoint in batch mode ('' when none)."""
        return "; ".join(
            s for ep in self.ctx.client.endpoints if ep.batch is not None and (s := ep.batch.summary())
        )

    def extra_line(self) -> str:
        return self.extra() if self.extra is not None else ""

    def outage_line(self) -> str:
        """A countdown for each endpoint whose circuit breaker is open (empty when all answer)."""
        parts = []
        for ep in self.ctx.client.endpoints:
            b = ep.breaker
            if b is None or not b.is_open or b.last_error is None:
                continue
            parts.append(
                f"{b.spec} unavailable ({b.last_error.kind_text()}): next probe in {b.next_probe_in_s():.0f}s, "
                f"giving up in {b.remaining_s():.0f}s"
            )
        return "; ".join(parts)

    def _line(self, force: bool = False) -> None:
        now = time.monotonic()
        interval = 2 if self.outage_line() else 10
        if not force and now - self._last_line < interval:
            return
        self._last_line = now
        tot = self.ctx.client.accounting.total()
        rate, eta = self._eta()
        print(
            f"[build] {self.committer.accepted}/{self.n} samples, dropped {sum(self.committer.dropped.values())}, "
            f"{rate:.1f}/s, ETA {eta}, calls {tot.network_calls} (+{tot.cache_hits} cached), "
            f"retries {tot.retries}, tokens {tot.input_tokens}/{tot.output_tokens}, ${tot.cost_usd:.4f}"
            + (f"; {outage}" if (outage := self.outage_line()) else "")
            + (f"; {batch}" if (batch := self.batch_line()) else "")
            + (f"; {extra}" if (extra := self.extra_line()) else ""),
            file=sys.stderr,
            flush=True,
        )
