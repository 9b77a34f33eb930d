"""The clock the SDK reads time through, injectable for tests.

The SDK reads the time when it journals a new sleep (``wake_at_ms``) or a new
``ctx.now()``, and when it decides whether a sleep is short enough to wait
for in-process. Tests pass a manual clock, possibly the one the proxy uses, so
that both sides agree on "now".
"""

from __future__ import annotations

import time
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "SystemClock"]


@runtime_checkable
class Clock(Protocol):
    """Anything with ``now_ms()``: milliseconds since the Unix epoch."""

    def now_ms(self) -> int:
        """Milliseconds since the Unix epoch."""
        ...


class SystemClock:
    """The wall clock of the machine (the default)."""

    def now_ms(self) -> int:
        """Milliseconds since the Unix epoch, from ``time.time_ns()``."""
        return time.time_ns() // 1_000_000
