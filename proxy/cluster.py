"""Several proxy instances on one database: leases kept and taken over, the others' commits heard.

Only for a store that is ``shared`` (PostgreSQL). Two duties:

* **Leases.** Every attempt this instance claims is leased to it for
  ``lease_ms``. Every third of that, the keeper renews the leases of the
  attempts it runs, then takes over the invocations whose lease ran out (their
  instance died, or stopped long enough to be presumed dead): the store makes
  them ``pending`` and closes their attempt, which fences it, and this instance
  claims them. It also picks up ``pending`` invocations that nobody claimed
  for a whole lease (an instance woke them, then died before claiming them).
  Correctness never rests on a lease: a stale owner's writes are refused by the
  attempt number in the same transaction. Leases decide only who runs what, and
  how soon a dead instance's work moves.
* **Broadcasts.** A client waiting here for an invocation that ends on another
  instance, and an attempt running here that waits for a completion written by
  another instance, hear of it through the store's broadcasts
  (``LISTEN``/``NOTIFY``). When broadcasts may have been missed (the listening
  connection was lost), everything that waits re-reads the store.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from .clock import Clock
from .invoker import Invoker
from .registry import Registry
from .signals import CompletionSignals
from .store.base import Broadcast, JournalStore
from .waiters import Outcome, Waiters

log = logging.getLogger("durable_proxy.cluster")

#: The most invocations taken over (or picked up) per pass.
_BATCH = 500


class Cluster:
    def __init__(
        self,
        *,
        store: JournalStore,
        clock: Clock,
        invoker: Invoker,
        registry: Registry,
        waiters: Waiters,
        signals: CompletionSignals,
    ) -> None:
        self._store = store
        self._clock = clock
        self._invoker = invoker
        self._registry = registry
        self._waiters = waiters
        self._signals = signals
        self._keeper: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        #: Invocations this instance took over from another (for logs and tests).
        self.taken_over = 0

    async def start(self) -> None:
        await self._store.subscribe(self._on_broadcast, self._on_gap)
        self._keeper = asyncio.get_running_loop().create_task(self._keep_leases(), name="leases")

    async def close(self) -> None:
        tasks = [*self._tasks, *([self._keeper] if self._keeper is not None else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ------------------------------------------------------------------ leases

    async def _keep_leases(self) -> None:
        interval_ms = max(self._store.lease_ms // 3, 1)
        while True:
            try:
                await self.tend()
            except Exception:
                log.exception("renewing or taking over leases failed; trying again in %d ms", interval_ms)
            await self._clock.sleep_until(self._clock.now_ms() + interval_ms)

    async def tend(self) -> None:
        """One pass: renew this instance's leases, then take over the expired ones of others."""
        now = self._clock.now_ms()
        # Renewing first: after a long pause of this process, its own leases are extended
        # before it looks for expired ones, so it never takes over its own live attempts.
        await self._store.renew_leases(now)
        taken = await self._store.take_over_expired(now, _BATCH)
        if taken:
            self.taken_over += len(taken)
            log.warning("took over %d invocations whose instance stopped renewing its leases", len(taken))
        stale = await self._store.list_stale_pending(now - self._store.lease_ms, _BATCH)
        for invocation_id in dict.fromkeys([*taken, *stale]):
            self._invoker.schedule(invocation_id)

    # ------------------------------------------------------------------ broadcasts

    def _on_broadcast(self, broadcast: Broadcast) -> None:
        for invocation_id in broadcast.ended:
            self._invoker.abort(invocation_id)  # killed through another instance while it ran here
            if self._waiters.waiting_for(invocation_id):
                self._spawn(self._answer_waiters(invocation_id))
        for invocation_id in broadcast.notified:
            self._signals.notify(invocation_id)
        if broadcast.deployments:
            self._spawn(self._reload_registry())

    def _on_gap(self) -> None:
        log.info("broadcasts may have been missed; re-reading what this instance waits for")
        for invocation_id in self._waiters.invocation_ids():
            self._spawn(self._answer_waiters(invocation_id))
        self._signals.notify_all()
        self._spawn(self._reload_registry())

    async def _answer_waiters(self, invocation_id: str) -> None:
        invocation = await self._store.get_invocation(invocation_id)
        if invocation is not None and invocation.done:
            self._waiters.notify(Outcome.of(invocation))

    async def _reload_registry(self) -> None:
        await self._registry.load()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("acting on another instance's commit failed: %s", task.exception())
