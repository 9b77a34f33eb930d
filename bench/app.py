"""The benchmark service for durable-proxy, written with handler_sdk.

Serve it with ``uvicorn bench.app:app``. It mounts two endpoints:

``/durable``
    service ``Bench`` on a default ``Endpoint``: a short sleep or a call's
    result is waited for in-process, through the proxy's ``/await`` long-poll.
``/suspend``
    service ``BenchSuspend`` on an ``Endpoint(suspend_after=0)``: every wait
    really suspends the attempt, and the proxy invokes the handler again, with
    its journal, when the timer fires.

The two are registered as two deployments, so the proxy never spreads the
invocations of one over the other.

Every input carries ``i``, a number distinct per request, so that no two
invocations are alike.
"""

from __future__ import annotations

from datetime import timedelta

import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from handler_sdk import Context, Endpoint, Service

SERVICE = "Bench"
SUSPENDING_SERVICE = "BenchSuspend"


class Steps(msgspec.Struct, frozen=True):
    n: int
    i: int = 0


class Sleep(msgspec.Struct, frozen=True):
    ms: int
    i: int = 0


class Chain(msgspec.Struct, frozen=True):
    depth: int
    i: int = 0


async def _step_async(k: int) -> str:
    return f"s{k}"


def _step_sync(k: int) -> str:
    return f"s{k}"


bench = Service(SERVICE)


@bench.handler()
async def noop(ctx: Context, value: int) -> int:
    """No step: the fixed cost of an invocation."""
    return value


@bench.handler()
async def steps(ctx: Context, request: Steps) -> str:
    """``n`` sequential steps, each an async function (no thread hop)."""
    last = ""
    for k in range(request.n):
        last = await ctx.run(f"s{k}", _step_async, k)
    return last


@bench.handler()
async def steps_sync(ctx: Context, request: Steps) -> str:
    """``n`` sequential steps, each a plain function, which the SDK runs in a worker thread."""
    last = ""
    for k in range(request.n):
        last = await ctx.run(f"s{k}", _step_sync, k)
    return last


@bench.handler()
async def sleep(ctx: Context, request: Sleep) -> int:
    """A durable sleep of ``ms`` milliseconds, waited for in-process when it is short."""
    await ctx.sleep(timedelta(milliseconds=request.ms))
    return request.i


@bench.handler()
async def chain(ctx: Context, request: Chain) -> int:
    """Calls itself ``depth`` times: depth 3 is 4 invocations, each waiting on the next."""
    if request.depth <= 0:
        return request.i
    result: int = await ctx.call(SERVICE, "chain", Chain(depth=request.depth - 1, i=request.i), type_hint=int)
    return result


suspending = Service(SUSPENDING_SERVICE)


@suspending.handler(name="sleep")
async def sleep_suspending(ctx: Context, request: Sleep) -> int:
    """The same sleep, on an endpoint that suspends at once: the proxy re-invokes it when the timer fires."""
    await ctx.sleep(timedelta(milliseconds=request.ms))
    return request.i


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


app = Starlette(
    routes=[
        Route("/health", health, methods=["GET"]),
        Mount("/durable", Endpoint([bench]).asgi()),
        Mount("/suspend", Endpoint([suspending], suspend_after=timedelta(0)).asgi()),
    ]
)
