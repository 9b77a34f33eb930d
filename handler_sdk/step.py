"""What the running step function can learn about itself.

A step function is ordinary code (it may run in a worker thread) that has no
``Context`` argument, yet it often needs a stable key to make its side effect
idempotent downstream. A context variable carries that information into it;
``asyncio.to_thread`` copies context variables, so sync steps see it too.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from contextvars import ContextVar

__all__ = ["StepInfo", "current_step"]


@dataclasses.dataclass(frozen=True, slots=True)
class StepInfo:
    """The step being executed.

    ``attempt`` counts in-process tries of this step within the current
    invocation attempt, starting at 1 (see ``RunOptions.max_attempts``); the
    invocation's own attempt number is ``Context.attempt``.
    ``idempotency_key`` is ``"{invocation_id}:{index}"``: identical across
    retries and attempts, so it can be sent as e.g. Stripe's
    ``Idempotency-Key`` to make the side effect happen at most once.
    """

    invocation_id: str
    index: int
    name: str
    attempt: int

    @property
    def idempotency_key(self) -> str:
        return f"{self.invocation_id}:{self.index}"


_current: ContextVar[StepInfo | None] = ContextVar("handler_sdk.current_step", default=None)


def current_step() -> StepInfo:
    """The step whose function is running; ``RuntimeError`` outside a step function."""
    info = _current.get()
    if info is None:
        raise RuntimeError("current_step() was called outside of a step function run by ctx.run()")
    return info


def in_step() -> bool:
    """Whether the caller runs inside a step function."""
    return _current.get() is not None


@contextlib.contextmanager
def running_step(info: StepInfo) -> Iterator[None]:
    """Mark ``info`` as the current step for the code run inside the block."""
    token = _current.set(info)
    try:
        yield
    finally:
        _current.reset(token)
