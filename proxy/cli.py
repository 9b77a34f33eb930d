"""``durable-proxy``: run the proxy and talk to its admin API. docs/cli.md describes every command.

    durable-proxy serve [--db PATH] [--host 127.0.0.1] [--port 8080] [--admin-port 9070] [--callback-port 9071]
    durable-proxy migrate [--db PATH|postgresql://...]
    durable-proxy invocations ls [--status S]... [--service S] [--handler H] [--key K] [--since 10m] [--limit N] [--all]
    durable-proxy invocations show|cancel|kill|resume|retry|attach ID
    durable-proxy invocations purge ID | purge [--status S]... [--service S] [--older-than 7d] --yes
    durable-proxy services ls
    durable-proxy deployments ls | register URI | remove ID      (``durable-proxy register URI`` too)
    durable-proxy objects show SERVICE KEY

Commands that read data take ``--json`` to print JSON for scripts. They find the admin API at
``--admin-url``, else ``$DURABLE_PROXY_ADMIN_URL``, else http://127.0.0.1:9070, and send
``$DURABLE_PROXY_ADMIN_TOKEN`` as a bearer token when it is set; ``attach`` waits on the ingress
(``--ingress-url``, ``$DURABLE_PROXY_INGRESS_URL``, http://127.0.0.1:8080; ``$DURABLE_PROXY_INGRESS_TOKEN``).

Exit codes:

    0  success
    1  the operation failed or the target is in the wrong state: the proxy answered an error other than
       404 (its message is printed), or the invocation ``attach`` waited for ended failed; for ``serve``
       and ``migrate``, the proxy could not start or the database could not be migrated
    2  bad usage (a wrong option or argument, a bulk purge without ``--yes``); nothing was sent
    3  the proxy cannot be reached (connection refused, unknown host, no answer in time)
    4  not found: no such invocation, deployment or service (the proxy answered 404)
    5  ``attach --timeout`` ran out before the invocation ended (it goes on)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import socket
import sys
from collections.abc import Callable, Sequence

from . import __version__
from .cli_client import CliError
from .cli_commands import add_commands
from .config import Settings
from .store import redacted
from .store.base import StoreUnavailable


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
    serve.add_argument("--log-format", choices=["text", "json"], help="log lines as text or as JSON (default: text)")

    migrate = commands.add_parser("migrate", help="create or upgrade the database schema, then exit")
    migrate.add_argument("--db", help="SQLite database file or postgresql:// URL (default: durable-proxy.db)")

    add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "migrate":
            return _migrate(args)
        run: Callable[[argparse.Namespace], int] | None = getattr(args, "run", None)
        if run is not None:
            return run(args)
    except CliError as exc:
        print(f"durable-proxy: {exc.message}", file=sys.stderr)
        return exc.exit_code
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
        "ingress_token", "admin_token", "instance_id", "lease_ms", "db_pool_size", "log_format",
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
    from .logs import configure_logging

    configure_logging(args.log_level, settings.log_format)
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
    from .logs import uvicorn_log_config

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
            log_config=uvicorn_log_config(settings.log_format),
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
