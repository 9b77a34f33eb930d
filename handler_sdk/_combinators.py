"""``select`` and ``gather`` over durable futures, deterministic under replay.

``select`` journals which future won (``Select(winner=index)``) the first time
it picks one, and a replay obeys that entry, even if by then more of the
futures are complete. ``gather`` needs no entry: it waits for all of them, and
every completion is itself recorded by the proxy.

Both are awaits, where a pending cancellation is raised: ``gather`` at the
next index, ``select`` in the index it took (``Cancel(awaiting=...)`` naming
the futures either way). A replayed ``select`` only returns its recorded
winner: the cancellation is not raised inside it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ._attempt import Attempt
from ._await import until_done
from ._futures import DurableFuture
from .errors import NonDeterminismError
from .protocol import Select


def _check_futures(attempt: Attempt, futures: Sequence[object], what: str) -> None:
    for future in futures:
        if not isinstance(future, DurableFuture):
            raise TypeError(f"{what} takes durable futures (from ctx.call, ctx.timer, ...), got {future!r}")
        if future._attempt is not attempt:
            raise ValueError(f"{what} got {future!r}, which belongs to another invocation or attempt")


def check_select(attempt: Attempt, futures: Mapping[str, object]) -> None:
    """Refuse what ``select`` cannot race, before it takes a journal index."""
    if not futures:
        raise ValueError("ctx.select needs at least one future")
    _check_futures(attempt, list(futures.values()), "ctx.select")


def check_gather(attempt: Attempt, futures: Sequence[object]) -> None:
    _check_futures(attempt, futures, "ctx.gather")


async def select(attempt: Attempt, slot: int, name: str, futures: Mapping[str, DurableFuture[Any]]) -> tuple[str, Any]:
    """The key and result of the first of ``futures`` to complete; ``slot`` holds the ``Select`` entry."""
    keys: dict[int, str] = {}
    for label, future in futures.items():
        keys.setdefault(future.index, label)
    recorded = attempt.replayed(slot, Select(name=name, winner=-1))
    if recorded is not None:
        assert isinstance(recorded, Select)
        winner = keys.get(recorded.winner)
        if winner is None:
            detail = f"the recorded winner, journal index {recorded.winner}, is not one of {sorted(keys)}"
            error = NonDeterminismError(
                index=slot, recorded=("select", recorded.name), requested=("select", name), detail=detail
            )
            attempt.journal.stop(error)
            raise error
        await until_done(attempt, [futures[winner]], interruptible=False)
        return winner, futures[winner]._result()
    await until_done(attempt, list(futures.values()), slot=slot)
    # Deterministic when several completed together: the lowest journal index wins.
    index = min(future.index for future in futures.values() if future.done())
    await attempt.append(slot, Select(name=name, winner=index))
    key = keys[index]
    return key, futures[key]._result()


async def gather(attempt: Attempt, futures: Sequence[DurableFuture[Any]]) -> list[Any]:
    """The results of all ``futures``, in order; the first failure (in that order) is raised."""
    await until_done(attempt, futures, every=True)
    return [future._result() for future in futures]
