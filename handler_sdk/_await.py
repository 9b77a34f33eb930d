"""Awaiting durable futures: use a known completion, wait briefly, or suspend.

Once the futures' entries are committed, a completion the proxy already sent
is used at once. Otherwise the handler may wait in-process, through the proxy's
``/await`` callback, for at most ``suspend_after`` (a timer only if it is due
within that time); when nothing useful arrives it suspends, which ends the
attempt, and the proxy re-invokes it, replaying, once a completion exists.

An await is also where a pending cancellation may be raised, whether the
futures are complete or not (see ``Attempt.cancel_at_await``); the SDK's own
waits inside a single action (a replayed ``select``, a promise's ``peek``,
``resolve`` or ``reject``) are not awaits of the handler and raise nothing.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from ._attempt import Attempt
    from ._futures import DurableFuture

T = TypeVar("T")


def awaited(futures: Iterable[DurableFuture[Any]]) -> list[int]:
    """The journal indices of ``futures``, sorted and distinct, as a ``Cancel`` entry records them."""
    return sorted({future.index for future in futures})


async def until_done(
    attempt: Attempt,
    futures: Sequence[DurableFuture[Any]],
    *,
    every: bool = False,
    slot: int | None = None,
    interruptible: bool = True,
) -> None:
    """Return once any of ``futures`` (with ``every``, all of them) is complete.

    When ``interruptible``, the cancellation is raised first if it falls on
    this await (in ``slot`` when the caller already holds the new index it
    would be journaled at), before and after every wait. While the futures
    are not complete, the handler waits briefly, else it suspends on the
    pending ones.
    """
    for future in futures:
        await future._until_journaled()
    attempt.journal.check()
    indices = awaited(futures) if interruptible else []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + attempt.suspend_after_ms / 1000
    waited_in_vain = False
    while True:
        if indices:
            cancelling = attempt.cancel_in_slot(slot, indices) if slot is not None else attempt.cancel_at_await(indices)
            if cancelling is not None:
                await attempt.raise_cancelled(cancelling)
        pending = [future for future in futures if not future.done()]
        if not pending or (not every and len(pending) < len(futures)):
            return
        budget_ms = math.ceil((deadline - loop.time()) * 1000)
        now_ms = attempt.clock.now_ms()
        worth_it = any(future._worth_waiting(now_ms, attempt.suspend_after_ms) for future in pending)
        if waited_in_vain or budget_ms <= 0 or not worth_it:
            attempt.suspend(future.index for future in pending)
        waited_in_vain = not await attempt.wait((future.index for future in pending), budget_ms)


async def result_of(future: DurableFuture[T]) -> T:
    """The result of ``future``, once it is complete."""
    await until_done(future._attempt, [future])
    return future._result()
