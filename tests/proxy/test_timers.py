"""The timer service: due order, never early, and only a window of timers in memory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from proxy.clock import ManualClock
from proxy.store import open_store
from proxy.store.base import Effects, JournalStore, NewInvocation
from proxy.timers import TimerService

START = 1_800_000_000_000
DAY = 86_400_000


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[JournalStore]:
    store = open_store(str(tmp_path / "timers.db"), synchronous="NORMAL")
    await store.open()
    yield store
    await store.close()


async def _schedule(store: JournalStore, count: int, first_due: int, spacing: int) -> None:
    await asyncio.gather(
        *(
            store.create_invocation(
                NewInvocation(
                    id=f"inv_{i:026d}",
                    service="S",
                    handler="h",
                    input=b"null",
                    deployment_id="dp",
                    run_at_ms=first_due + i * spacing,
                ),
                START,
            )
            for i in range(count)
        )
    )


async def _until(condition: object, what: str) -> None:
    for _ in range(2_000):
        if callable(condition) and condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


async def test_timers_fire_in_due_order_and_never_early(store: JournalStore) -> None:
    clock = ManualClock(START)
    woken: list[str] = []
    await _schedule(store, 5, START + 1_000, 1_000)
    service = TimerService(store, clock, lambda effects: woken.extend(effects.woken))
    service.start()
    try:
        clock.advance(999)
        await _until(lambda: not service.busy(), "the service to settle")
        assert woken == []
        clock.advance(1)
        await _until(lambda: len(woken) == 1, "the first timer")
        clock.advance(10_000)
        await _until(lambda: len(woken) == 5, "every timer")
        assert woken == [f"inv_{i:026d}" for i in range(5)]
    finally:
        await service.close()


async def test_a_hundred_thousand_pending_timers_stay_in_the_store(store: JournalStore) -> None:
    """Only the timers due within the horizon are held in memory; the rest wait in the due-time index."""
    clock = ManualClock(START)
    await _schedule(store, 100_000, START + DAY, 60_000)  # one a minute, for 70 days
    fired: list[Effects] = []
    service = TimerService(store, clock, fired.append, horizon_ms=60_000)
    service.start()
    try:
        await _until(lambda: not service.busy(), "the first window to load")
        assert len(service) == 0, "nothing is due within the first minute"
        # A new short timer, made while 100,000 are pending, fires on time without touching them.
        await store.create_invocation(
            NewInvocation(id="inv_short", service="S", handler="h", input=b"null", deployment_id="dp",
                          run_at_ms=START + 5_000),
            START,
        )  # fmt: skip
        service.add("inv_short", -1, START + 5_000)
        assert len(service) == 1
        clock.advance(5_000)
        await _until(lambda: service.fired == 1, "the short timer")
        assert fired[0].woken == ["inv_short"]
        # A day later: the window holds about a minute of timers, not 100,000.
        clock.advance(DAY)
        await _until(lambda: service.fired >= 2 and not service.busy(), "the first of the pending timers")
        assert len(service) <= 2
        assert [e.woken for e in fired[1:]] == [["inv_" + "0" * 26]]
    finally:
        await service.close()
