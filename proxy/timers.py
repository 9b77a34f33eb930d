"""Durable timers: sleeps, delayed starts and retry backoffs, fired in due order.

Timers live in the store, indexed by due time. This service keeps only the
ones due within a horizon (a minute by default) in an in-memory heap, and
fetches the next window from the store's index before the current one runs
out. Neither a tick nor a timer costs a scan, so 100,000 pending timers cost
no more per fire than ten. A timer made while the proxy runs is pushed
straight onto the heap when it falls inside the loaded window; later ones
are picked up when their window is loaded.

A timer fires no earlier than its due time, by the injected clock; one that
fell due while the proxy was down fires as soon as the proxy starts.

On a database shared by several instances, every instance loads the same
window (a short one: a timer set by an instance that died is found within
half of it) and, when timers fall due, asks the store to fire whatever is due
(``fire_due_timers``). The store claims each timer's row with ``FOR UPDATE
SKIP LOCKED`` and deletes it as it fires, so each timer fires once across the
instances, and the others skip it.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections.abc import Callable

from .clock import Clock
from .crashpoints import crash_point
from .store.base import Effects, JournalStore

log = logging.getLogger("durable_proxy.timers")

_BATCH = 1_000


class TimerService:
    def __init__(
        self,
        store: JournalStore,
        clock: Clock,
        on_effects: Callable[[Effects], None],
        *,
        horizon_ms: int = 60_000,
    ) -> None:
        self._store = store
        self._clock = clock
        self._on_effects = on_effects
        self._horizon_ms = horizon_ms
        self._heap: list[tuple[int, str, int]] = []
        self._queued: set[tuple[str, int]] = set()
        #: Every timer due before this is in the heap (or fired).
        self._loaded_until = -1
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._working = False
        self.fired = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="timers")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def add(self, invocation_id: str, index: int, due_at_ms: int) -> None:
        """A timer was committed: keep it if it falls in the loaded window (else the store has it)."""
        if due_at_ms < self._loaded_until:
            self._push(due_at_ms, invocation_id, index)
            self._changed.set()

    def __len__(self) -> int:
        return len(self._heap)

    def busy(self) -> bool:
        """Timers are due (or a window is to be loaded) and not yet handled: for the test kit's quiescence."""
        now = self._clock.now_ms()
        return (
            self._working
            or bool(self._heap and self._heap[0][0] <= now)
            or now + self._horizon_ms // 2 >= self._loaded_until
        )

    def _push(self, due_at_ms: int, invocation_id: str, index: int) -> None:
        key = (invocation_id, index)
        if key not in self._queued:
            self._queued.add(key)
            heapq.heappush(self._heap, (due_at_ms, invocation_id, index))

    async def _load(self, now_ms: int) -> None:
        """Load every timer due before ``now + horizon`` that is not in the heap yet."""
        until = now_ms + self._horizon_ms
        limit = _BATCH + len(self._queued)
        rows = await self._store.due_timers(until, limit)
        for row in rows:
            self._push(row.due_at_ms, row.invocation_id, row.index)
        if len(rows) >= limit:
            # Denser than a batch: the window is complete only up to the last due time loaded.
            until = rows[-1].due_at_ms
        self._loaded_until = until

    async def _fire_shared(self, now: int) -> None:
        """Fire every timer due by ``now`` that no other instance is firing; forget the due ones here."""
        if not (self._heap and self._heap[0][0] <= now):
            return
        crash_point("proxy.timer.before_fire")
        try:
            while True:
                fired, effects = await self._store.fire_due_timers(now, _BATCH)
                self.fired += len(fired)
                self._on_effects(effects)
                if len(fired) < _BATCH:
                    break
        except Exception:
            log.exception("firing due timers failed; retrying in a second")
            retry_at = now + 1_000
            while self._heap and self._heap[0][0] <= now:
                _, invocation_id, index = heapq.heappop(self._heap)
                self._queued.discard((invocation_id, index))
                self._push(retry_at, invocation_id, index)
            return
        # Fired here, fired by another instance, or being fired by one right now (and if that one
        # fails, its transaction rolls back and the timer is found again at the next load).
        while self._heap and self._heap[0][0] <= now:
            _, invocation_id, index = heapq.heappop(self._heap)
            self._queued.discard((invocation_id, index))

    async def _run(self) -> None:
        while True:
            self._working = True
            now = self._clock.now_ms()
            if now + self._horizon_ms // 2 >= self._loaded_until:
                await self._load(now)
            if self._store.shared:
                await self._fire_shared(now)
            while self._heap and self._heap[0][0] <= now:
                due, invocation_id, index = heapq.heappop(self._heap)
                self._queued.discard((invocation_id, index))
                crash_point("proxy.timer.before_fire")
                try:
                    effects = await self._store.fire_timer(invocation_id, index, now)
                except Exception:
                    log.exception("firing the timer of %s (entry %d) failed; retrying later", invocation_id, index)
                    self._push(due + 1_000, invocation_id, index)
                    continue
                self.fired += 1
                self._on_effects(effects)
            next_due = self._heap[0][0] if self._heap else None
            wake_at = self._loaded_until - self._horizon_ms // 2
            if next_due is not None:
                wake_at = min(wake_at, next_due)
            self._changed.clear()
            self._working = False
            sleeper = asyncio.ensure_future(self._clock.sleep_until(wake_at))
            changed = asyncio.ensure_future(self._changed.wait())
            try:
                await asyncio.wait({sleeper, changed}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                sleeper.cancel()
                changed.cancel()
