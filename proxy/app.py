"""The proxy runtime: the store, the registry, the invoker and the HTTP apps that share them.

``Runtime.open(settings, ...)`` is the one place resources are made and released;
``durable-proxy serve`` and the tests both go through it. Every dependency can
be passed in (a store, an HTTP transport to reach handlers, a clock), so tests
run the whole proxy in-process without ports.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from starlette.types import ASGIApp, Receive, Scope, Send

from .admin import OPEN_PATHS as ADMIN_OPEN_PATHS, OPEN_PREFIXES as ADMIN_OPEN_PREFIXES, create_admin_app
from .auth import BearerAuth
from .callbacks import Callbacks
from .clock import Clock, SystemClock
from .cluster import Cluster
from .config import Settings
from .ingress import Ingress
from .invoker import Invoker
from .metrics import ProxyMetrics
from .outbound import Outbound
from .registry import Registry
from .signals import CompletionSignals
from .store import open_store
from .store.base import Effects, JournalStore
from .timers import TimerService
from .tokens import TokenSigner
from .waiters import Outcome, Waiters

log = logging.getLogger("durable_proxy")


class Runtime:
    """Everything one running proxy holds. Build it with ``Runtime.open``."""

    def __init__(
        self,
        *,
        settings: Settings,
        store: JournalStore,
        clock: Clock,
        client: Outbound,
        signer: TokenSigner,
        callback_base: str,
    ) -> None:
        self.settings = settings
        self.metrics = ProxyMetrics()
        store.write_observer = self.metrics.observe_store_write
        self.store = store
        self.clock = clock
        self.client = client
        self.signer = signer
        self.waiters = Waiters()
        self.signals = CompletionSignals()
        self.registry = Registry(store, clock, client, settings.unhealthy_endpoint_ms, settings.signing_key)
        self.timers = TimerService(
            store, clock, self.apply_effects, horizon_ms=max(2 * store.lease_ms, 2_000) if store.shared else 60_000
        )
        self.invoker = Invoker(
            store=store,
            registry=self.registry,
            clock=clock,
            client=client,
            settings=settings,
            signer=signer,
            callback_base=callback_base,
            on_effects=self.apply_effects,
            on_backoff=lambda invocation_id, at_ms: self.timers.add(invocation_id, -1, at_ms),
            metrics=self.metrics,
        )
        self.cluster = (
            Cluster(
                store=store,
                clock=clock,
                invoker=self.invoker,
                registry=self.registry,
                waiters=self.waiters,
                signals=self.signals,
            )
            if store.shared
            else None
        )
        self.callbacks = Callbacks(self)
        self.ingress: ASGIApp = Ingress(self)
        self.admin: ASGIApp = BearerAuth(
            create_admin_app(self), settings.admin_token, ADMIN_OPEN_PATHS, ADMIN_OPEN_PREFIXES
        )

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        settings: Settings,
        *,
        store: JournalStore | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Clock | None = None,
        callback_base: str | None = None,
    ) -> AsyncIterator[Runtime]:
        """Open the store, recover in-flight invocations, and run until the block exits."""
        store = (
            store
            if store is not None
            else open_store(
                settings.db,
                synchronous=settings.sqlite_synchronous,
                instance_id=settings.instance_id,
                lease_ms=settings.lease_ms,
                pool_size=settings.db_pool_size,
            )
        )
        await store.open()
        client = Outbound(connect_timeout=settings.connect_timeout_ms / 1000, transport=transport)
        try:
            runtime = cls(
                settings=settings,
                store=store,
                clock=clock or SystemClock(),
                client=client,
                signer=TokenSigner(await store.secret()),
                callback_base=callback_base or settings.callback_base(),
            )
            await runtime.registry.load()
            if runtime.cluster is not None:
                await runtime.cluster.start()  # before recovering: no broadcast is missed in between
            await runtime.recover()
            purger = asyncio.get_running_loop().create_task(runtime.purge_forever(), name="purge")
            try:
                yield runtime
            finally:
                purger.cancel()
                await asyncio.gather(purger, return_exceptions=True)
                if runtime.cluster is not None:
                    await runtime.cluster.close()
                await runtime.timers.close()
                await runtime.invoker.close()
                store.write_observer = None
        finally:
            await client.aclose()
            await store.close()

    async def recover(self) -> None:
        """Fence every attempt a previous process left running, resume the runnable
        invocations, and start the timers (those that fell due meanwhile fire at once).

        On a shared database, only this instance's own leftovers are fenced here (its
        ``instance_id`` from before a restart, or leases already expired); the others'
        running attempts are left to their instances, or to the lease keeper once
        their leases run out. The runnable ones are claimed by whichever instance
        gets there first."""
        abandoned = await self.store.abandon_running(self.clock.now_ms())
        runnable = await self.store.list_runnable()
        for invocation_id in runnable:
            self.invoker.schedule(invocation_id)
        self.timers.start()
        if runnable:
            log.info("resuming %d invocations (%d were running)", len(runnable), abandoned)

    async def purge(self) -> int:
        """Purge the workflows that ended longer than the retention ago; the number of keys purged."""
        before = self.clock.now_ms() - self.settings.workflow_retention_ms
        purged = 0
        for service in self.registry.services():
            if service.kind == "workflow":
                purged += await self.store.purge_workflows(service.name, before)
        return purged

    async def purge_forever(self) -> None:
        while True:
            await self.clock.sleep_until(self.clock.now_ms() + self.settings.purge_interval_ms)
            try:
                purged = await self.purge()
            except Exception:
                log.exception("purging finished workflows failed; trying again later")
                continue
            if purged:
                log.info("purged %d finished workflows past their retention", purged)

    def apply_effects(self, effects: Effects) -> None:
        """Act on what a committed write did: answer waiting clients, wake attempts, schedule work."""
        for ended in effects.ended:
            self.invoker.abort(ended.invocation_id)  # a killed invocation's attempt, if one runs
            self.metrics.invocations_ended.labels("completed" if ended.failure is None else "failed").inc()
            self.waiters.notify(Outcome(invocation_id=ended.invocation_id, output=ended.output, failure=ended.failure))
        for invocation_id in effects.notified:
            self.signals.notify(invocation_id)
        for invocation_id in effects.woken:
            self.invoker.schedule(invocation_id)


class PortDispatcher:
    """One ASGI app for both listeners: requests to the admin port go to the admin API."""

    def __init__(self, runtime: Runtime, admin_port: int) -> None:
        self._runtime = runtime
        self._admin_port = admin_port

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            return
        server = scope.get("server")
        if server is not None and server[1] == self._admin_port:
            await self._runtime.admin(scope, receive, send)
        else:
            await self._runtime.ingress(scope, receive, send)
