"""The benchmark service for Restate, run in the Restate virtualenv (restate-sdk, hypercorn).

Service ``bench``: ``noop`` returns its input; ``steps3`` runs three
sequential ``ctx.run_typed`` steps, each returning a short string. Served by
hypercorn, which speaks HTTP/1.1 and HTTP/2 (h2c) on one port, so the same
process can be registered for bidirectional streaming or request/response.

``GET /health`` answers 200; ``GET /stats`` counts the invocation requests
received, so the harness can tell which deployment the server routes to.

Usage: python restate_service.py --port PORT
"""

import argparse
import asyncio
import json
import os
import signal

import restate
from restate import Context, Service

bench = Service("bench")


def _step(k: int) -> str:
    return f"s{k}"


@bench.handler()
async def noop(ctx: Context, value: str) -> str:
    return value


@bench.handler()
async def steps3(ctx: Context, value: str) -> str:
    await ctx.run_typed("s0", _step, restate.RunOptions(), 0)
    await ctx.run_typed("s1", _step, restate.RunOptions(), 1)
    return await ctx.run_typed("s2", _step, restate.RunOptions(), 2)


restate_app = restate.app(services=[bench])
invocations = 0


async def app(scope, receive, send):
    global invocations
    if scope["type"] == "http" and scope["path"] in ("/health", "/stats"):
        body = b'{"status": "ok"}' if scope["path"] == "/health" else json.dumps({"invocations": invocations}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})
        return
    if scope["type"] == "http" and scope["path"].startswith("/invoke/"):
        invocations += 1
    await restate_app(scope, receive, send)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()

    import hypercorn.asyncio
    import hypercorn.config

    config = hypercorn.config.Config()
    config.bind = [f"127.0.0.1:{args.port}"]
    # Long-lived HTTP/2 connections from the server, as in the SDK's hypercorn example.
    config.h2_max_concurrent_streams = 2**31 - 1
    config.keep_alive_max_requests = 2**31 - 1
    config.keep_alive_timeout = 2**31 - 1
    config.accesslog = None

    async def serve() -> None:
        # restate-sdk replaces the SIGTERM handler with its own (it drains invocations) on the first
        # request; this process has nothing to drain, so it leaves at once on SIGINT or SIGTERM.
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, os._exit, 0)
        await hypercorn.asyncio.serve(app, config, shutdown_trigger=asyncio.Event().wait)

    try:
        import uvloop
    except ImportError:
        asyncio.run(serve())
    else:
        uvloop.run(serve())


if __name__ == "__main__":
    main()
