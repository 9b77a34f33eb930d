"""When to try an invocation again: a pure function of the policy and the attempt number."""

from __future__ import annotations

import random

import msgspec


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """Exponential backoff between attempts of an invocation.

    The delay before attempt ``n + 1`` is ``initial_interval_ms * factor ** (n - 1)``,
    capped at ``max_interval_ms``, with up to ``jitter`` of it taken off at random
    so that many invocations failing together do not retry in lockstep. After
    ``max_attempts`` attempts (counted since the invocation's last resume) it is
    paused or ends failed with its last error, as the ``on_max_attempts`` setting says.
    """

    initial_interval_ms: int = 100
    factor: float = 2.0
    max_interval_ms: int = 30_000
    max_attempts: int = 30
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if self.initial_interval_ms < 0 or self.max_interval_ms < 0:
            raise ValueError("retry intervals must not be negative")
        if self.factor < 1:
            raise ValueError("the retry backoff factor must be at least 1")
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("jitter must be between 0 and 1")


def next_retry_at(
    policy: RetryPolicy,
    attempt: int,
    now_ms: int,
    *,
    retry_after_ms: int | None = None,
    rng: random.Random | None = None,
) -> int | None:
    """When attempt ``attempt + 1`` may start, or None when the attempts are used up."""
    if attempt >= policy.max_attempts:
        return None
    if retry_after_ms is not None:
        return now_ms + max(0, retry_after_ms)
    delay = min(policy.initial_interval_ms * policy.factor ** max(0, attempt - 1), policy.max_interval_ms)
    if policy.jitter:
        delay -= delay * policy.jitter * (rng or random).random()
    return now_ms + int(delay)
