"""The whole loop in one process: proxy and handler apps wired together over ASGI, no ports.

A test names its journal by a file path (``tmp_path / "p.db"``); ``database``
turns that into the proxy's ``db`` setting: the path itself on SQLite, the URL
of a PostgreSQL database standing in for it with ``DURABLE_TEST_STORE=postgresql``
(see ``tests.postgres``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from starlette.types import ASGIApp, Receive, Scope, Send

from handler_sdk import Endpoint, Service
from proxy.app import Runtime
from proxy.clock import Clock
from proxy.config import Settings
from tests import postgres

HANDLER_URI = "http://handlers"
PROXY_URL = "http://proxy"
#: The proxy's name on a PostgreSQL database: the same across reopenings, so a restarted proxy takes
#: its invocations back at once, as on SQLite (and not after their leases run out).
INSTANCE_ID = "e2e"


async def database(path: Path) -> str:
    """The proxy's ``db`` for a journal at ``path``: the file on SQLite, or the PostgreSQL database
    standing in for it (the same one each time this test asks for the same path)."""
    return await postgres.database_for(path)


class Harness:
    def __init__(self, runtime: Runtime, ingress: httpx.AsyncClient, admin: httpx.AsyncClient) -> None:
        self.runtime = runtime
        self.ingress = ingress
        self.admin = admin

    async def invocation(self, invocation_id: str) -> dict[str, Any]:
        response = await self.admin.get(f"/invocations/{invocation_id}")
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    async def wait_for(
        self, invocation_id: str, predicate: Callable[[dict[str, Any]], bool], timeout_s: float = 10.0
    ) -> dict[str, Any]:
        """Poll the admin API until the invocation satisfies ``predicate``, or fail after the deadline."""
        deadline = time.monotonic() + timeout_s
        while True:
            found = await self.invocation(invocation_id)
            if predicate(found):
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"invocation never reached the expected state: {found}")
            await asyncio.sleep(0.01)


class _Forward:
    """An ASGI app that forwards to another, set later (the proxy and the handlers refer to each other)."""

    def __init__(self) -> None:
        self.target: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.target is not None
        await self.target(scope, receive, send)


@asynccontextmanager
async def open_runtime(
    db: Path,
    handler_app: ASGIApp,
    proxy_forward: _Forward,
    *,
    clock: Clock | None = None,
    **settings: Any,
) -> AsyncIterator[Harness]:
    settings.setdefault("instance_id", INSTANCE_ID)
    async with Runtime.open(
        Settings(db=await database(db), **settings),
        transport=httpx.ASGITransport(app=handler_app),
        clock=clock,
        callback_base=PROXY_URL,
    ) as runtime:
        proxy_forward.target = runtime.ingress
        async with (
            httpx.AsyncClient(transport=httpx.ASGITransport(app=runtime.ingress), base_url=PROXY_URL) as ingress,
            httpx.AsyncClient(transport=httpx.ASGITransport(app=runtime.admin), base_url="http://admin") as admin,
        ):
            yield Harness(runtime, ingress, admin)


def handler_app_for(services: Sequence[Service]) -> tuple[ASGIApp, _Forward]:
    forward = _Forward()
    endpoint = Endpoint(list(services), callback_transport=httpx.ASGITransport(app=forward))
    return endpoint.asgi(), forward


@asynccontextmanager
async def running(
    db: Path, services: Sequence[Service], *, clock: Clock | None = None, register: bool = True, **settings: Any
) -> AsyncIterator[Harness]:
    """A proxy on ``db`` with ``services`` registered, all in-process."""
    app, forward = handler_app_for(services)
    async with open_runtime(db, app, forward, clock=clock, **settings) as harness:
        if register:
            response = await harness.admin.post("/deployments", json={"uri": HANDLER_URI})
            assert response.status_code == 201, response.text
        yield harness


async def eventually(check: Callable[[], Awaitable[bool] | bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.01)
