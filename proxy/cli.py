"""``durable-proxy``: run the proxy and talk to its admin API.

    durable-proxy serve [--db PATH] [--host 127.0.0.1] [--port 8080] [--admin-port 9070] [--callback-port 9071]
    durable-proxy register URI [--admin-url http://127.0.0.1:9070]
    durable-proxy migrate [--db PATH|postgresql://...]
    durable-proxy invocations cancel|kill|resume ID [--admin-url ...]

Exit codes: 0 success, 1 the operation failed (the message says why), 2 bad usage.
Commands that talk to the admin API send ``$DURABLE_PROXY_ADMIN_TOKEN`` as a bearer token when it is set.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import socket
import sys
from collections.abc import Sequence
from typing import Any

import httpx

from . import __version__
from .config import Settings
from .store import redacted
from .store.base import StoreUnavailable

DEFAULT_ADMIN_URL = "http://127.0.0.1:9070"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="durable-proxy", description="Durable execution for Python web services.")
    parser.add_argument("--version", action="version", version=f"durable-proxy {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the proxy (ingress and admin API)")
    serve.add_argument(
        "--db", help="SQLite database file or postgresql://user@host:port/database URL (default: durable-proxy.db)"
    )
    serve.add_argument("--instance-id", help="this instance's name among those sharing a PostgreSQL database")
    serve.add_argument(
        "--lease-ms", type=int, help="PostgreSQL: take over a silent instance's work after this (default: 10000)"
    )
    serve.add_argument("--db-pool-size", type=int, help="PostgreSQL: connections in the pool (default: 16)")
    serve.add_argument("--host", help="ingress address (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, help="ingress port (default: 8080)")
    serve.add_argument("--admin-host", help="admin API address (default: 127.0.0.1)")
    serve.add_argument("--admin-port", type=int, help="admin API port (default: 9070)")
    serve.add_argument("--callback-port", type=int, help="port handlers report their steps to (default: 9071)")
    serve.add_argument(
        "--advertised-url", help="base URL handlers use to reach this proxy (default: http://HOST:CALLBACK_PORT)"
    )
    serve.add_argument("--max-body-bytes", type=int, help="largest accepted request body (default: 32 MiB)")
    serve.add_argument("--inactivity-timeout-ms", type=int, help="abandon a silent attempt after this (default: 60000)")
    serve.add_argument("--abort-timeout-ms", type=int, help="abandon any attempt after this (default: 600000)")
    serve.add_argument("--retry-max-attempts", type=int, help="attempts before pausing or failing (default: 30)")
    serve.add_argument("--retry-initial-interval-ms", type=int, help="first retry delay (default: 100)")
    serve.add_argument("--retry-max-interval-ms", type=int, help="largest retry delay (default: 30000)")
    serve.add_argument(
        "--on-max-attempts",
        choices=["pause", "fail"],
        help="after the last attempt: pause the invocation for an operator to resume, or fail it (default: pause)",
    )
    serve.add_argument("--sqlite-synchronous", choices=["FULL", "NORMAL"], help="SQLite durability (default: FULL)")
    serve.add_argument("--signing-key", help="sign requests to handlers with this key (also DURABLE_PROXY_SIGNING_KEY)")
    serve.add_argument("--ingress-token", help="require Authorization: Bearer TOKEN on the ingress")
    serve.add_argument("--admin-token", help="require Authorization: Bearer TOKEN on the admin API")
    serve.add_argument("--workflow-retention-ms", type=int, help="keep finished workflows this long (default: 1 day)")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])

    register = commands.add_parser("register", help="register a deployment (an endpoint serving handlers)")
    register.add_argument("uri", help="the endpoint's base URL, e.g. http://127.0.0.1:9080/durable")
    register.add_argument("--admin-url", default=DEFAULT_ADMIN_URL, help=f"admin API (default: {DEFAULT_ADMIN_URL})")

    migrate = commands.add_parser("migrate", help="create or upgrade the database schema, then exit")
    migrate.add_argument("--db", help="SQLite database file or postgresql:// URL (default: durable-proxy.db)")

    invocations = commands.add_parser("invocations", help="act on invocations")
    actions = invocations.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, text in (
        ("cancel", "cancel: the handler raises at its next step and runs its compensations; callees too"),
        ("kill", "kill: end the invocation and its callees now, without compensation"),
        ("resume", "resume a paused invocation: it runs again with a fresh retry budget"),
    ):
        sub = actions.add_parser(action, help=text)
        sub.add_argument("id", help="invocation id (inv_...)")
        sub.add_argument("--admin-url", default=DEFAULT_ADMIN_URL, help=f"admin API (default: {DEFAULT_ADMIN_URL})")

    objects = commands.add_parser("objects", help="inspect virtual objects and workflows")
    object_actions = objects.add_subparsers(dest="action", required=True, metavar="ACTION")
    show = object_actions.add_parser("show", help="state, lock holder, queued invocations and promises of a key")
    show.add_argument("service", help="the virtual object or workflow")
    show.add_argument("key", help="the key")
    show.add_argument("--json", action="store_true", help="print the admin API's JSON")
    show.add_argument("--admin-url", default=DEFAULT_ADMIN_URL, help=f"admin API (default: {DEFAULT_ADMIN_URL})")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "register":
            return _register(args)
        if args.command == "migrate":
            return _migrate(args)
        if args.command == "invocations":
            return _invocation_action(args)
        if args.command == "objects":
            return _show_object(args)
    except ValueError as exc:
        print(f"durable-proxy: {exc}", file=sys.stderr)
        return 2
    except StoreUnavailable as exc:
        print(f"durable-proxy: {exc}", file=sys.stderr)
        return 1
    return 2


def _settings(args: argparse.Namespace) -> Settings:
    names = [
        "db", "host", "port", "admin_host", "admin_port", "callback_port", "advertised_url", "max_body_bytes",
        "inactivity_timeout_ms", "abort_timeout_ms", "retry_max_attempts", "retry_initial_interval_ms",
        "retry_max_interval_ms", "on_max_attempts", "sqlite_synchronous", "workflow_retention_ms", "signing_key",
        "ingress_token", "admin_token", "instance_id", "lease_ms", "db_pool_size",
    ]  # fmt: skip
    return Settings.load({name: getattr(args, name, None) for name in names})


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted connections only when the protocol says TCP.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ValueError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def _serve(args: argparse.Namespace) -> int:
    settings = _settings(args)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    # One line per request to a handler would drown the log; failures are logged by the invoker.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    ingress_sock = _bind(settings.host, settings.port)
    admin_sock = _bind(settings.admin_host, settings.admin_port)
    callback_sock = _bind(settings.host, settings.callback_port)
    try:
        import uvloop  # optional speedup
    except ImportError:
        runner = asyncio.run
    else:
        runner = uvloop.run
    runner(_serve_async(settings, ingress_sock, admin_sock, callback_sock, args.log_level))
    return 0


async def _serve_async(
    settings: Settings,
    ingress_sock: socket.socket,
    admin_sock: socket.socket,
    callback_sock: socket.socket,
    level: str,
) -> None:
    import uvicorn

    from .app import PortDispatcher, Runtime
    from .callback_server import CallbackServer

    ingress_port = ingress_sock.getsockname()[1]
    admin_port = admin_sock.getsockname()[1]
    callback_port = callback_sock.getsockname()[1]
    async with Runtime.open(settings, callback_base=settings.callback_base(callback_port)) as runtime:
        callback_server = CallbackServer(runtime.callbacks, settings.max_body_bytes)
        await callback_server.start(callback_sock)
        config = uvicorn.Config(
            PortDispatcher(runtime, admin_port),
            lifespan="off",
            access_log=False,
            log_level=level,
            timeout_keep_alive=75,
            server_header=False,
        )
        server = uvicorn.Server(config)
        logging.getLogger("durable_proxy").info(
            "durable-proxy %s: ingress on %s:%d, admin on %s:%d, callbacks on %s:%d, database %s",
            __version__,
            settings.host,
            ingress_port,
            settings.admin_host,
            admin_port,
            settings.host,
            callback_port,
            redacted(settings.db),
        )
        try:
            await server.serve(sockets=[ingress_sock, admin_sock])
        finally:
            await callback_server.close()


def _admin_request(method: str, url: str, body: Any = None) -> tuple[int, Any]:
    token = os.environ.get("DURABLE_PROXY_ADMIN_TOKEN")
    headers = {"authorization": f"Bearer {token}"} if token else {}
    try:
        response = httpx.request(method, url, json=body, headers=headers, timeout=30)
    except httpx.HTTPError as exc:
        raise _CliError(f"cannot reach the admin API at {url}: {exc}") from None
    try:
        return response.status_code, response.json()
    except ValueError:
        return response.status_code, {"message": response.text}


class _CliError(Exception):
    pass


def _register(args: argparse.Namespace) -> int:
    try:
        status, body = _admin_request("POST", f"{args.admin_url.rstrip('/')}/deployments", {"uri": args.uri})
    except _CliError as exc:
        print(f"durable-proxy: {exc}", file=sys.stderr)
        return 1
    if status >= 300:
        print(f"durable-proxy: registration failed ({status}): {body.get('message', body)}", file=sys.stderr)
        return 1
    services = ", ".join(body.get("services", []))
    print(f"registered deployment {body['id']} at {args.uri}: {services}")
    if not sys.stdout.isatty():
        sys.stdout.flush()
    return 0


def _invocation_action(args: argparse.Namespace) -> int:
    url = f"{args.admin_url.rstrip('/')}/invocations/{args.id}/{args.action}"
    try:
        status, body = _admin_request("PATCH", url)
    except _CliError as exc:
        print(f"durable-proxy: {exc}", file=sys.stderr)
        return 1
    if status >= 300:
        print(f"durable-proxy: {args.action} failed ({status}): {body.get('message', body)}", file=sys.stderr)
        return 1
    done = {"cancel": "cancellation requested", "kill": "killed", "resume": "resumed"}[args.action]
    print(f"{args.id}: {done}")
    return 0


def _show_object(args: argparse.Namespace) -> int:
    from urllib.parse import quote

    url = f"{args.admin_url.rstrip('/')}/objects/{quote(args.service, safe='')}/{quote(args.key, safe='')}"
    try:
        status, body = _admin_request("GET", url)
    except _CliError as exc:
        print(f"durable-proxy: {exc}", file=sys.stderr)
        return 1
    if status >= 300:
        print(f"durable-proxy: {body.get('message', body)}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(body, indent=2))
        return 0
    print(f"{body['kind']} {body['service']}/{body['key']}")
    print(f"  lock holder: {body['lock_holder'] or '-'}")
    print(f"  queued:      {', '.join(body['queue']) or '-'}")
    print("  state:")
    for name, value in body["state"].items() or [("-", None)]:
        print(f"    {name} = {json.dumps(value)}" if name != "-" else "    -")
    if body["promises"]:
        print("  promises:")
        for promise in body["promises"]:
            outcome = (
                f"rejected: {promise['failure']['message']}" if promise["failure"] else json.dumps(promise["value"])
            )
            print(f"    {promise['name']}: {outcome}")
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from .store import open_store

    settings = Settings.load({"db": args.db})

    async def run() -> None:
        store = open_store(settings.db)
        await store.open()
        await store.close()

    asyncio.run(run())
    print(json.dumps({"db": redacted(settings.db), "migrated": True}))
    return 0
