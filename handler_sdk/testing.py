"""A test environment for durable handlers: the real proxy and your handlers in one process, on a clock you control.

Time only moves when the test moves it, or when the environment skips ahead
because nothing else can happen: while a test waits for a result and every
invocation is waiting on a timer, the clock jumps to the next timer. A 30-day
sleep returns at once, and timers fire in due order::

    from handler_sdk.testing import TestEnvironment

    async def test_trial_expires() -> None:
        async with TestEnvironment([subscriptions]) as env:
            result = await env.call("SubscriptionService", "run", {"customer": "ada", ...})
            assert result["status"] == "trial-expired"
            assert env.now() - env.start >= timedelta(days=14)

With ``always_replay=True`` every attempt ends right after its first new journal
entry, so each step of the handler is replayed before the next one runs: a
handler that is not replay-safe (it branches on the wall clock, on
``random.random()``, on a global that changes) fails the test with a journal
mismatch instead of failing in production.

The environment runs the proxy from the ``proxy`` package of this distribution
(imported when an environment is opened, never by ``import handler_sdk``), with
its journal in a temporary SQLite file, unless it is given a database:
``database="journal.db"`` (a SQLite file, kept afterwards) or
``database="postgresql://user@host/db"`` (an existing PostgreSQL database; the
proxy creates its tables). A test suite can send every environment opened
without a database to PostgreSQL by setting ``default_database``.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

import httpx
import msgspec

from .endpoint import Endpoint
from .service import Service

if TYPE_CHECKING:
    from proxy.app import Runtime
    from proxy.clock import ManualClock

__all__ = ["InvocationFailed", "TestEnvironment", "default_database"]

_HANDLERS = "http://handlers.test"
_PROXY = "http://proxy.test"
#: The name a ``TestEnvironment``'s proxy goes by on a PostgreSQL database. The same name every time, so
#: an environment reopened on the database of a previous one takes its invocations back at once.
_INSTANCE_ID = "test-environment"

#: Where an environment opened without ``database`` or ``db_path`` keeps its journal: ``None`` (the
#: default) for a temporary SQLite file, or an async function returning a database (a SQLite path or
#: a ``postgresql://`` URL), called once per environment, so each can get a fresh one. A test suite
#: sets it for the length of a test, e.g. ``monkeypatch.setattr(handler_sdk.testing,
#: "default_database", make_fresh_database)``, to run every environment on PostgreSQL.
default_database: Callable[[], Awaitable[str]] | None = None


class InvocationFailed(Exception):
    """The invocation ended failed; ``status_code`` and ``message`` are what a client would get."""

    def __init__(self, status_code: int, message: str, invocation_id: str | None) -> None:
        super().__init__(f"{status_code}: {message}")
        self.status_code = status_code
        self.message = message
        self.invocation_id = invocation_id


class _Forward:
    def __init__(self) -> None:
        self.app: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


class _CountingStore:
    """Wraps the proxy's store and counts the calls in flight, so the environment knows when all is quiet."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.in_flight = 0

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._store, name)
        if not asyncio.iscoroutinefunction(attribute):
            return attribute

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.in_flight += 1
            try:
                return await attribute(*args, **kwargs)
            finally:
                self.in_flight -= 1

        return counted


class TestEnvironment:
    """The proxy and ``services`` in-process, wired over ASGI, with a manual clock."""

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        services: Sequence[Service],
        *,
        always_replay: bool = False,
        start: datetime | None = None,
        auto_skip: bool = True,
        retry_max_attempts: int = 5,
        on_max_attempts: Literal["fail", "pause"] = "fail",
        db_path: str | Path | None = None,
        database: str | None = None,
    ) -> None:
        """``on_max_attempts``: ``"fail"`` (the default here, unlike the proxy's ``"pause"``) makes an
        invocation whose attempts are used up fail, so a test's call ends instead of waiting for a resume.

        ``database``: the journal, as the proxy's ``db`` setting takes it: a SQLite file path (or
        ``sqlite:///path``), created if missing and kept afterwards, or a ``postgresql://`` URL of an
        existing database (needs the ``postgres`` extra, asyncpg). A new environment on the same
        database sees the invocations of the previous one. ``db_path`` is the older spelling of a
        SQLite path; give one or the other. With neither, the journal is a temporary SQLite file
        (or what ``default_database`` gives)."""
        if database is not None and db_path is not None:
            raise ValueError("give database or db_path, not both")
        self.services = list(services)
        self.always_replay = always_replay
        self.start = start or datetime(2030, 1, 1, tzinfo=UTC)
        if self.start.tzinfo is None:
            raise ValueError("start must be a timezone-aware datetime")
        self.auto_skip = auto_skip
        self._retry_max_attempts = retry_max_attempts
        self._on_max_attempts: Literal["fail", "pause"] = on_max_attempts
        self._database = str(database) if database is not None else str(db_path) if db_path is not None else None
        self._stack = AsyncExitStack()
        self._runtime: Runtime | None = None
        self._clock: ManualClock | None = None
        self._store: _CountingStore | None = None
        self.ingress: httpx.AsyncClient
        self.admin: httpx.AsyncClient

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> TestEnvironment:
        from proxy.app import Runtime
        from proxy.clock import ManualClock
        from proxy.config import Settings
        from proxy.store import open_store

        self._clock = clock = ManualClock(int(self.start.timestamp() * 1000))
        database = self._database
        if database is None and default_database is not None:
            database = await default_database()
        if database is None:
            folder = self._stack.enter_context(tempfile.TemporaryDirectory(prefix="durable-test-"))
            database = str(Path(folder) / "journal.db")
        forward = _Forward()
        endpoint = Endpoint(
            self.services,
            callback_transport=httpx.ASGITransport(app=forward),
            clock=clock,
            suspend_after=timedelta(0),
            always_replay=self.always_replay,
        )
        settings = Settings(
            db=database,
            sqlite_synchronous="NORMAL",  # SQLite only: a test needs no durability against power loss
            instance_id=_INSTANCE_ID,
            retry_initial_interval_ms=10,
            retry_max_attempts=self._retry_max_attempts,
            on_max_attempts=self._on_max_attempts,
            # Attempts are in-process and the clock is manual: never abandon one for being "slow".
            inactivity_timeout_ms=10 * 365 * 86_400_000,
            abort_timeout_ms=10 * 365 * 86_400_000,
        )
        self._store = _CountingStore(
            open_store(settings.db, synchronous=settings.sqlite_synchronous, instance_id=settings.instance_id)
        )
        self._runtime = runtime = await self._stack.enter_async_context(
            Runtime.open(
                settings,
                store=self._store,  # type: ignore[arg-type]
                transport=httpx.ASGITransport(app=endpoint.asgi()),
                clock=clock,
                callback_base=_PROXY,
            )
        )
        forward.app = runtime.ingress
        self.ingress = await self._stack.enter_async_context(
            httpx.AsyncClient(transport=httpx.ASGITransport(app=runtime.ingress), base_url=_PROXY, timeout=None)
        )
        self.admin = await self._stack.enter_async_context(
            httpx.AsyncClient(transport=httpx.ASGITransport(app=runtime.admin), base_url="http://admin.test")
        )
        self._stack.push_async_callback(endpoint.aclose)
        response = await self.admin.post("/deployments", json={"uri": _HANDLERS})
        if response.status_code != 201:
            raise RuntimeError(f"registering the services failed: {response.text}")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stack.aclose()

    @property
    def runtime(self) -> Runtime:
        if self._runtime is None:
            raise RuntimeError("use the environment inside `async with`")
        return self._runtime

    # ------------------------------------------------------------------ time

    def now(self) -> datetime:
        assert self._clock is not None
        return datetime.fromtimestamp(self._clock.now_ms() / 1000, UTC)

    async def advance(self, delta: timedelta) -> None:
        """Move time forward by ``delta``, firing every timer that falls due, in due order."""
        assert self._clock is not None
        target = self._clock.now_ms() + int(delta.total_seconds() * 1000)
        while True:
            await self.settle()
            due = await self._next_timer()
            if due is None or due > target:
                break
            self._clock.advance(max(0, due - self._clock.now_ms()))
        self._clock.advance(max(0, target - self._clock.now_ms()))
        await self.settle()

    async def settle(self) -> None:
        """Wait until no attempt is running and nothing is runnable (the system waits on timers or the outside)."""
        quiet = 0
        while quiet < 5:
            await asyncio.sleep(0.0005)
            quiet = 0 if self._busy() else quiet + 1
        runnable = await self.runtime.store.list_runnable()
        if runnable:
            for invocation_id in runnable:
                self.runtime.invoker.schedule(invocation_id)
            await self.settle()

    def _busy(self) -> bool:
        assert self._store is not None
        return self._store.in_flight > 0 or self.runtime.invoker.busy() or self.runtime.timers.busy()

    async def _next_timer(self) -> int | None:
        rows = await self.runtime.store.due_timers(2**62, 1)
        return rows[0].due_at_ms if rows else None

    async def _skip_until_done(self, work: asyncio.Future[Any]) -> None:
        """While ``work`` waits and the system is idle, jump the clock to the next timer."""
        assert self._clock is not None
        while not work.done():
            await self.settle()
            if work.done() or not self.auto_skip:
                break
            due = await self._next_timer()
            if due is None:
                # Nothing will ever happen by itself: the test must act (e.g. resolve an awakeable).
                await asyncio.wait({work}, timeout=0.05)
                continue
            self._clock.advance(max(0, due - self._clock.now_ms()))

    # ------------------------------------------------------------------ invocations

    async def call(
        self,
        service: str,
        handler: str,
        arg: Any = None,
        *,
        key: str | None = None,
        idempotency_key: str | None = None,
    ) -> Any:
        """Call a handler through the ingress and wait for its result (skipping time as needed).

        ``key`` addresses a virtual object or a workflow. Returns the JSON
        result; raises ``InvocationFailed`` if the invocation failed.
        """
        headers = {"idempotency-key": idempotency_key} if idempotency_key else {}
        path = _path(service, handler, key)
        request = self.ingress.post(path, content=msgspec.json.encode(arg), headers=headers)
        return _result(await self._run(request))

    async def send(
        self, service: str, handler: str, arg: Any = None, *, key: str | None = None, delay: timedelta | None = None
    ) -> str:
        """Start an invocation without waiting; returns its id. ``key`` addresses an object or a workflow."""
        params = {"delay": f"{int(delay.total_seconds() * 1000)}ms"} if delay else {}
        response = await self.ingress.post(
            f"{_path(service, handler, key)}/send", content=msgspec.json.encode(arg), params=params
        )
        if response.status_code != 202:
            raise InvocationFailed(response.status_code, response.json()["message"], None)
        invocation_id: str = response.json()["invocationId"]
        return invocation_id

    async def attach(self, invocation_id: str) -> Any:
        """Wait for an invocation's result (skipping time as needed)."""
        return _result(await self._run(self.ingress.get(f"/restate/attach/{invocation_id}")))

    async def resolve_awakeable(self, awakeable_id: str, value: Any = None) -> None:
        response = await self.ingress.post(
            f"/restate/awakeables/{awakeable_id}/resolve", content=msgspec.json.encode(value)
        )
        if response.status_code != 202:
            raise RuntimeError(f"resolving {awakeable_id} failed: {response.text}")

    async def reject_awakeable(self, awakeable_id: str, reason: str) -> None:
        response = await self.ingress.post(f"/restate/awakeables/{awakeable_id}/reject", content=reason.encode())
        if response.status_code != 202:
            raise RuntimeError(f"rejecting {awakeable_id} failed: {response.text}")

    async def cancel(self, invocation_id: str) -> None:
        response = await self.admin.patch(f"/invocations/{invocation_id}/cancel")
        if response.status_code != 202:
            raise RuntimeError(f"cancelling {invocation_id} failed: {response.text}")

    async def kill(self, invocation_id: str) -> None:
        response = await self.admin.patch(f"/invocations/{invocation_id}/kill")
        if response.status_code != 202:
            raise RuntimeError(f"killing {invocation_id} failed: {response.text}")

    async def invocation(self, invocation_id: str) -> dict[str, Any]:
        """The invocation as the admin API shows it: status, journal with completions, attempts."""
        response = await self.admin.get(f"/invocations/{invocation_id}")
        response.raise_for_status()
        found: dict[str, Any] = response.json()
        return found

    async def _run(self, request: Any) -> httpx.Response:
        work: asyncio.Future[httpx.Response] = asyncio.ensure_future(request)
        await self._skip_until_done(work)
        return await work


def _path(service: str, handler: str, key: str | None) -> str:
    if key is None:
        return f"/{service}/{handler}"
    return f"/{service}/{quote(key, safe='')}/{handler}"


def _result(response: httpx.Response) -> Any:
    if response.status_code == 200:
        return response.json()
    body = response.json()
    raise InvocationFailed(response.status_code, str(body.get("message", body)), response.headers.get("x-restate-id"))
