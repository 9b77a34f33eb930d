"""The ``durable-proxy`` commands that talk to a running proxy: invocations, services, deployments, objects.

``add_commands`` adds their parsers to ``durable-proxy``'s; each parsed command
carries its function as ``args.run``. They return an exit code or raise
``CliError`` (see ``proxy.cli_client`` for what the codes mean). Tables and
progress go through ``proxy.cli_output``; ``--json`` prints what the admin API
answered, for scripts.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any, get_args
from urllib.parse import quote

import httpx

from handler_sdk.protocol import awakeable_id, callee_invocation_id

from .cli_client import (
    ADMIN_URL_ENV,
    DEFAULT_ADMIN_URL,
    DEFAULT_INGRESS_URL,
    FAILED,
    INGRESS_TOKEN_ENV,
    INGRESS_URL_ENV,
    TIMED_OUT,
    USAGE,
    AdminClient,
    CliError,
    admin_url,
    bearer,
    error_from,
    ingress_url,
    transport_error,
)
from .cli_output import (
    Progress,
    Spinner,
    clock_time,
    duration,
    failure_text,
    now_ms,
    offset,
    parse_duration,
    parse_since,
    short_json,
    table,
    truncate,
)
from .store.base import TERMINAL_STATUSES, InvocationStatus

STATUSES: tuple[str, ...] = get_args(InvocationStatus)
#: Rows asked for per request when following cursors.
PAGE_SIZE = 500

Run = Callable[[argparse.Namespace], int]


# --------------------------------------------------------------------------- parsers


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``register``, ``deployments``, ``services``, ``invocations`` and ``objects`` to ``commands``."""
    admin = argparse.ArgumentParser(add_help=False)
    admin.add_argument("--admin-url", help=f"the proxy's admin API (default: ${ADMIN_URL_ENV} or {DEFAULT_ADMIN_URL})")
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print JSON for scripts instead of text")

    register = commands.add_parser(
        "register", parents=[admin, as_json], help="register a deployment (same as `deployments register`)"
    )
    register.add_argument("uri", help="the endpoint's base URL, e.g. http://127.0.0.1:9080/durable")
    register.set_defaults(run=register_deployment)

    deployments = commands.add_parser("deployments", help="list, register and remove deployments")
    deployment_actions = deployments.add_subparsers(dest="action", required=True, metavar="ACTION")
    sub = deployment_actions.add_parser("ls", parents=[admin, as_json], help="deployments with endpoints and services")
    sub.set_defaults(run=list_deployments)
    sub = deployment_actions.add_parser(
        "register", parents=[admin, as_json], help="register an endpoint serving handlers (reads its /discover)"
    )
    sub.add_argument("uri", help="the endpoint's base URL, e.g. http://127.0.0.1:9080/durable")
    sub.set_defaults(run=register_deployment)
    sub = deployment_actions.add_parser(
        "remove", parents=[admin, as_json], help="remove a deployment (refused while invocations need it)"
    )
    sub.add_argument("id", help="deployment id (dp_...)")
    sub.set_defaults(run=remove_deployment)

    services = commands.add_parser("services", help="list registered services")
    service_actions = services.add_subparsers(dest="action", required=True, metavar="ACTION")
    sub = service_actions.add_parser("ls", parents=[admin, as_json], help="services with their kinds and handlers")
    sub.set_defaults(run=list_services)

    invocations = commands.add_parser("invocations", help="list, inspect and act on invocations")
    actions = invocations.add_subparsers(dest="action", required=True, metavar="ACTION")

    ls = actions.add_parser("ls", parents=[admin, as_json], help="list invocations, most recent first")
    ls.add_argument(
        "--status",
        action="append",
        default=[],
        metavar="STATUS",
        help=f"only these statuses; repeat it or separate with commas ({', '.join(STATUSES)})",
    )
    ls.add_argument("--service", help="only invocations of this service")
    ls.add_argument("--handler", help="only invocations of this handler")
    ls.add_argument("--key", help="only invocations of this object or workflow key")
    ls.add_argument("--since", help="only those created since: a duration ago (10m, 2h, 1d) or an ISO 8601 time")
    ls.add_argument("--limit", type=_positive_int, default=50, help="show at most this many (default: 50)")
    ls.add_argument("--all", action="store_true", help="show every match, following the pages (ignores --limit)")
    ls.set_defaults(run=list_invocations)

    show = actions.add_parser(
        "show", parents=[admin, as_json], help="one invocation: status, timings, journal timeline, attempts"
    )
    show.add_argument("id", help="invocation id (inv_...)")
    show.set_defaults(run=show_invocation)

    for action, text in (
        ("cancel", "cancel: the handler raises at its next step and runs its compensations; callees too"),
        ("kill", "kill: end the invocation and its callees now, without compensation"),
        ("resume", "resume a paused invocation: it runs again with a fresh retry budget"),
        ("retry", "retry an invocation that is waiting to retry now, without waiting out its backoff"),
    ):
        sub = actions.add_parser(action, parents=[admin, as_json], help=text)
        sub.add_argument("id", help="invocation id (inv_...)")
        sub.set_defaults(run=invocation_action)

    purge = actions.add_parser(
        "purge",
        parents=[admin, as_json],
        help="delete ended invocations: one by id, or every one matching the filters (with --yes)",
    )
    purge.add_argument("id", nargs="?", help="the ended invocation to purge; leave out to purge by filters")
    purge.add_argument(
        "--status",
        action="append",
        default=[],
        metavar="STATUS",
        help=f"bulk: only these ended statuses ({', '.join(TERMINAL_STATUSES)}); repeatable",
    )
    purge.add_argument("--service", help="bulk: only invocations of this service")
    purge.add_argument("--older-than", help="bulk: only those that ended longer ago than this (10m, 2h, 7d)")
    purge.add_argument(
        "--batch-size",
        type=_positive_int,
        default=500,
        help="bulk: invocations per request, at most 1000 (default: 500)",
    )
    purge.add_argument("--yes", action="store_true", help="bulk: really purge (required for a bulk purge)")
    purge.set_defaults(run=purge_invocations)

    attach = actions.add_parser(
        "attach", parents=[admin], help="wait for an invocation to end and print its result (JSON)"
    )
    attach.add_argument("id", help="invocation id (inv_...)")
    attach.add_argument(
        "--ingress-url", help=f"the proxy's ingress (default: ${INGRESS_URL_ENV} or {DEFAULT_INGRESS_URL})"
    )
    attach.add_argument(
        "--timeout", help="give up waiting after this long (30s, 5m; default: wait as long as it takes)"
    )
    attach.set_defaults(run=attach_invocation)

    objects = commands.add_parser("objects", help="inspect virtual objects and workflows")
    object_actions = objects.add_subparsers(dest="action", required=True, metavar="ACTION")
    sub = object_actions.add_parser(
        "show", parents=[admin], help="state, lock holder, queued invocations and promises of a key"
    )
    sub.add_argument("service", help="the virtual object or workflow")
    sub.add_argument("key", help="the key")
    sub.add_argument("--json", action="store_true", help="print the admin API's JSON")
    sub.set_defaults(run=show_object)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def _client(args: argparse.Namespace) -> AdminClient:
    return AdminClient(admin_url(args.admin_url))


def _path_id(value: str) -> str:
    return quote(value, safe="")


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


def _statuses(values: list[str], allowed: tuple[str, ...]) -> list[str]:
    """``--status a --status b,c`` as ``[a, b, c]``, each checked against ``allowed``."""
    statuses = [part.strip() for value in values for part in value.split(",") if part.strip()]
    for status in statuses:
        if status not in allowed:
            raise CliError(f"unknown status '{status}': choose from {', '.join(allowed)}", USAGE)
    return list(dict.fromkeys(statuses))


# --------------------------------------------------------------------------- deployments and services


def register_deployment(args: argparse.Namespace) -> int:
    body = _client(args).post("/deployments", what=f"register {args.uri}", body={"uri": args.uri})
    if args.json:
        _print_json(body)
        return 0
    services = ", ".join(_service_names(body.get("services", [])))
    print(f"registered deployment {body['id']} at {args.uri}: {services}", flush=True)
    return 0


def remove_deployment(args: argparse.Namespace) -> int:
    body = _client(args).request("DELETE", f"/deployments/{_path_id(args.id)}", what=f"remove {args.id}")
    if args.json:
        _print_json(body if body is not None else {"id": args.id, "removed": True})
        return 0
    print(f"removed deployment {args.id}")
    return 0


def list_deployments(args: argparse.Namespace) -> int:
    body = _client(args).get("/deployments", what="listing deployments")
    deployments: list[dict[str, Any]] = body["deployments"]
    if args.json:
        _print_json(deployments)
        return 0
    if not deployments:
        print("no deployments registered", file=sys.stderr)
        return 0
    now = now_ms()
    rows = []
    for d in deployments:
        endpoints = d.get("endpoints") or ([d["uri"]] if d.get("uri") else [])
        created = d.get("created_at_ms")
        rows.append(
            [
                d["id"],
                duration(now - created) + " ago" if isinstance(created, int) else "-",
                ", ".join(_endpoint_names(endpoints)) or "-",
                ", ".join(_service_names(d.get("services", []))) or "-",
            ]
        )
    print("\n".join(table(["ID", "CREATED", "ENDPOINTS", "SERVICES"], rows)))
    return 0


def _endpoint_names(endpoints: list[Any]) -> list[str]:
    """Endpoints as URIs, whether the API lists them as strings or as objects with a ``uri``."""
    return [e if isinstance(e, str) else str(e.get("uri", e)) if isinstance(e, dict) else str(e) for e in endpoints]


def _service_names(services: list[Any]) -> list[str]:
    return [s if isinstance(s, str) else str(s.get("name", s)) if isinstance(s, dict) else str(s) for s in services]


def list_services(args: argparse.Namespace) -> int:
    body = _client(args).get("/services", what="listing services")
    services: list[dict[str, Any]] = body["services"]
    if args.json:
        _print_json(services)
        return 0
    if not services:
        print("no services registered", file=sys.stderr)
        return 0
    rows = []
    for s in services:
        handlers = [f"{h['name']} ({h['kind']})" if h.get("kind") else str(h["name"]) for h in s.get("handlers", [])]
        rows.append([s["name"], str(s.get("kind", "-")), str(s.get("deployment_id") or "-"), ", ".join(handlers)])
    print("\n".join(table(["NAME", "KIND", "DEPLOYMENT", "HANDLERS"], rows)))
    return 0


# --------------------------------------------------------------------------- invocations


def list_invocations(args: argparse.Namespace) -> int:
    client = _client(args)
    statuses = _statuses(args.status, STATUSES)
    params: dict[str, Any] = {
        "status": ",".join(statuses) or None,
        "service": args.service,
        "handler": args.handler,
        "key": args.key,
        "created_after_ms": max(parse_since(args.since, now_ms()), 0) if args.since else None,
    }
    found: list[dict[str, Any]] = []
    cursor: str | None = None
    more = False
    while True:
        limit = PAGE_SIZE if args.all else min(args.limit - len(found), 1000)
        body = client.get(
            "/invocations", what="listing invocations", params={**params, "limit": limit, "cursor": cursor}
        )
        found.extend(body["invocations"])
        cursor = body.get("next_cursor")
        if not cursor:
            break
        if not args.all and len(found) >= args.limit:
            more = True
            break
    if args.json:
        _print_json(found)
        return 0
    if not found:
        print("no invocations match", file=sys.stderr)
        return 0
    print("\n".join(invocation_table(found, now_ms())))
    if more:
        print(f"(showing the {len(found)} most recent; --all or --limit N for more)", file=sys.stderr)
    return 0


def invocation_table(invocations: list[dict[str, Any]], now: int) -> list[str]:
    with_keys = any(i.get("key") is not None for i in invocations)
    headers = ["ID", "TARGET", *(["KEY"] if with_keys else []), "STATUS", "ATTEMPT", "AGE", "DURATION", "ERROR"]
    rows = []
    for i in invocations:
        created = i["created_at_ms"]
        ended = i.get("completed_at_ms")
        error = i.get("failure") or i.get("last_failure")
        rows.append(
            [
                i["id"],
                f"{i['service']}/{i['handler']}",
                *([truncate(str(i["key"]), 24) if i.get("key") is not None else "-"] if with_keys else []),
                str(i["status"]),
                str(i.get("attempt", "-")),
                duration(now - created),
                duration(ended - created) if isinstance(ended, int) else "-",
                failure_text(error, 50) or "-",
            ]
        )
    return table(headers, rows)


def show_invocation(args: argparse.Namespace) -> int:
    invocation = _client(args).get(f"/invocations/{_path_id(args.id)}", what=f"show {args.id}")
    if args.json:
        _print_json(invocation)
        return 0
    print("\n".join(invocation_details(invocation, now_ms())))
    return 0


def invocation_details(inv: dict[str, Any], now: int) -> list[str]:
    """The header, the journal as a timeline, and the attempts of ``GET /invocations/{id}``."""
    created: int = inv["created_at_ms"]
    ended = inv.get("completed_at_ms")
    fields: list[tuple[str, str]] = [
        ("target", f"{inv['service']}/{inv['handler']}"),
        *([("key", str(inv["key"]))] if inv.get("key") is not None else []),
        ("status", f"{inv['status']}, attempt {inv.get('attempt', '-')}"),
        ("created", f"{clock_time(created)} ({duration(now - created)} ago)"),
    ]
    if isinstance(ended, int):
        fields.append(("ended", f"{offset(ended - created)} (took {duration(ended - created)})"))
    elif isinstance(inv.get("modified_at_ms"), int):
        fields.append(("modified", offset(inv["modified_at_ms"] - created)))
    next_run = inv.get("next_run_at_ms")
    if isinstance(next_run, int) and not isinstance(ended, int):
        fields.append(("next run", f"{offset(next_run - created)} (in {duration(max(next_run - now, 0))})"))
    optional = [
        ("deployment", inv.get("deployment_id")),
        ("idempotency", inv.get("idempotency_key")),
    ]
    waiting_on = inv.get("waiting_on")
    if isinstance(waiting_on, list) and waiting_on:
        optional.append(("waiting on", ", ".join(f"entry #{i}" for i in waiting_on)))
    elif waiting_on:
        optional.append(("waiting on", waiting_on))
    fields += [(label, str(value)) for label, value in optional if value not in (None, "", [])]
    if inv.get("parent_id"):
        fields.append(("parent", f"{inv['parent_id']} (entry #{inv.get('parent_index')})"))
    if inv.get("cancel_requested"):
        fields.append(("cancel", "requested"))
    if "input" in inv:
        fields.append(("input", short_json(inv["input"], 100)))
    if inv.get("output") is not None or inv["status"] == "completed":
        fields.append(("output", short_json(inv.get("output"), 100)))
    if inv.get("failure"):
        fields.append(("failure", failure_text(inv["failure"], 100)))
    if inv.get("last_failure") and inv.get("last_failure") != inv.get("failure"):
        fields.append(("last failure", failure_text(inv["last_failure"], 100)))
    width = max(len(label) for label, _ in fields)
    lines = [str(inv["id"])] + [f"  {label.ljust(width)}  {value}" for label, value in fields]

    journal: list[dict[str, Any]] = inv.get("journal") or []
    lines += ["", f"journal ({len(journal)} {'entry' if len(journal) == 1 else 'entries'})"]
    if journal:
        rows = [
            [
                str(e["index"]),
                str(e["kind"]),
                truncate(str(e.get("name") or ""), 24),
                str(e.get("attempt", "-")),
                offset(e["created_at_ms"] - created) if isinstance(e.get("created_at_ms"), int) else "-",
                entry_summary(inv["id"], e, created),
            ]
            for e in journal
        ]
        lines += table(["#", "KIND", "NAME", "ATTEMPT", "AT", "RESULT"], rows, indent="  ")

    attempts: list[dict[str, Any]] = inv.get("attempts") or []
    lines += ["", f"attempts ({len(attempts)})"]
    if attempts:
        rows = []
        for a in attempts:
            started, stopped = a.get("started_at_ms"), a.get("ended_at_ms")
            rows.append(
                [
                    str(a.get("attempt", "-")),
                    offset(started - created) if isinstance(started, int) else "-",
                    duration(stopped - started) if isinstance(started, int) and isinstance(stopped, int) else "-",
                    str(a.get("outcome") or "running"),
                    truncate(str(a.get("endpoint") or "-"), 40),
                    failure_text(a.get("failure"), 60) or "-",
                ]
            )
        lines += table(["ATTEMPT", "STARTED", "TOOK", "OUTCOME", "ENDPOINT", "ERROR"], rows, indent="  ")
    return lines


class _Completion:
    def __init__(self, done: bool, result: Any = None, failure: Any = None, at_ms: Any = None) -> None:
        self.done = done
        self.result = result
        self.failure = failure
        self.at_ms = at_ms if isinstance(at_ms, int) else None


def _completion(e: dict[str, Any]) -> _Completion | None:
    """The completion of a completable entry (``None`` for other kinds), in either shape the API may use:
    ``{"completion": {result, failure, created_at_ms}}`` or ``completed``, ``result``, ``failure`` inline."""
    if "completion" in e:
        c = e["completion"]
        if not isinstance(c, dict):
            return _Completion(False)
        return _Completion(True, c.get("result"), c.get("failure"), c.get("created_at_ms", c.get("completed_at_ms")))
    if "completed" in e:
        return _Completion(bool(e["completed"]), e.get("result"), e.get("failure"), e.get("completed_at_ms"))
    return None


def entry_summary(invocation_id: str, e: dict[str, Any], created: int, width: int = 70) -> str:
    """What a journal entry recorded, on one line: a step's result, a call's callee and result, ..."""
    entry: dict[str, Any] = e.get("entry") if isinstance(e.get("entry"), dict) else {}  # type: ignore[assignment]
    kind = e["kind"]
    index = e["index"]
    completion = _completion(e)

    def outcome(result: Any, failure: Any) -> str:
        return f"error {failure_text(failure, width)}" if failure else short_json(result, width)

    def completed() -> str:
        if completion is None:
            return ""
        if not completion.done:
            return "waiting"
        at = f" at {offset(completion.at_ms - created)}" if completion.at_ms is not None else ""
        return f"{outcome(completion.result, completion.failure)}{at}"

    if kind == "run":
        text = outcome(e.get("result", entry.get("result")), e.get("failure", entry.get("failure")))
    elif kind == "sleep":
        wake = e.get("wake_at_ms", entry.get("wake_at_ms"))
        until = f"until {offset(wake - created)}" if isinstance(wake, int) else "sleep"
        fired = completion is not None and completion.done
        at = f" at {offset(completion.at_ms - created)}" if fired and completion and completion.at_ms else ""
        text = f"{until}, {'fired' + at if fired else 'waiting'}"
    elif kind in ("call", "send"):
        target = f"{entry.get('service')}/{entry.get('handler')}" + (
            f" [{entry['key']}]" if entry.get("key") is not None else ""
        )
        callee = e.get("callee_id") or callee_invocation_id(invocation_id, index)
        text = f"{target} -> {callee}"
        if kind == "send":
            delay = entry.get("delay_ms")
            text += f" (delay {duration(delay)})" if delay else ""
        else:
            text += f": {completed()}"
    elif kind == "awakeable":
        text = f"{e.get('awakeable_id') or awakeable_id(invocation_id, index)}: {completed()}"
    elif kind == "select":
        text = f"winner #{entry.get('winner')}"
    elif kind == "now":
        text = clock_time(entry["now_ms"]) if isinstance(entry.get("now_ms"), int) else "now"
    elif kind == "cancel":
        awaiting = entry.get("awaiting")
        text = "cancelled" + (f" while awaiting {', '.join(f'#{i}' for i in awaiting)}" if awaiting else "")
    elif kind == "get_state":
        text = short_json(entry.get("value"), width) if entry.get("found") else "(not set)"
    elif kind == "get_state_keys":
        text = truncate(", ".join(entry.get("keys", [])) or "(none)", width)
    elif kind == "set_state":
        text = "= " + short_json(entry.get("value"), width)
    elif kind == "complete_promise":
        given = outcome(entry.get("value"), entry.get("failure"))
        text = f"{given}: {completed()}"
    elif completion is not None:
        text = completed()
    else:
        rest = {k: v for k, v in entry.items() if k not in ("kind", "name")}
        text = short_json(rest, width) if rest else ""
    return truncate(text, width + 40)


_DONE = {"cancel": "cancellation requested", "kill": "killed", "resume": "resumed", "retry": "retry requested"}


def invocation_action(args: argparse.Namespace) -> int:
    body = _client(args).post(
        f"/invocations/{_path_id(args.id)}/{args.action}", what=f"{args.action} {args.id}", body=None
    )
    if args.json:
        _print_json(body)
        return 0
    resumed = isinstance(body, dict) and body.get("resumed") is True
    print(f"{args.id}: {'resumed (it was paused)' if resumed else _DONE[args.action]}")
    return 0


def purge_invocations(args: argparse.Namespace) -> int:
    client = _client(args)
    if args.id is not None:
        if args.status or args.service or args.older_than:
            raise CliError("give either an invocation id or the filters of a bulk purge, not both", USAGE)
        body = client.post(f"/invocations/{_path_id(args.id)}/purge", what=f"purge {args.id}")
        if args.json:
            _print_json(body)
            return 0
        # The run of a workflow takes its key's other ended invocations with it.
        purged = body.get("purged", 1) if isinstance(body, dict) else 1
        others = f" (with {purged - 1} more ended invocation(s) of its workflow key)" if purged > 1 else ""
        print(f"{args.id}: purged{others}")
        return 0

    statuses = _statuses(args.status, TERMINAL_STATUSES)
    request: dict[str, Any] = {"limit": args.batch_size}
    described = []
    if statuses:
        request["status"] = statuses
        described.append("status " + " or ".join(statuses))
    if args.service:
        request["service"] = args.service
        described.append(f"service {args.service}")
    # Fixed once, so invocations that end while the purge goes on are not chased.
    request["ended_before_ms"] = now_ms() - (parse_duration(args.older_than) if args.older_than else 0)
    if args.older_than:
        described.append(f"ended more than {args.older_than} ago")
    scope = ", ".join(described) if described else "no filter: every ended invocation"
    if not args.yes:
        raise CliError(
            f"a bulk purge deletes every ended invocation that matches ({scope}) with its journal, for good; "
            "add --yes to go ahead (`invocations ls` with the same filters shows them first)",
            USAGE,
        )
    progress = Progress(lambda n: f"purging ({scope}): {n} purged so far")
    total = 0
    try:
        while True:
            body = client.post("/invocations/purge", what="bulk purge", body=request)
            purged = int(body.get("purged", 0))
            total += purged
            progress.update(total)
            if not body.get("more") or purged == 0:
                break
    except CliError as exc:
        progress.close()
        exc.message += f" (after purging {total})"
        raise
    except KeyboardInterrupt:
        progress.close()
        print(f"interrupted after purging {total} invocations", file=sys.stderr)
        return 130
    progress.close()
    if args.json:
        _print_json({"purged": total})
    else:
        print(f"purged {total} invocation{'' if total == 1 else 's'}")
    return 0


def attach_invocation(args: argparse.Namespace) -> int:
    base = ingress_url(args.ingress_url)
    timeout_ms = parse_duration(args.timeout) if args.timeout else None
    url = f"{base}/restate/invocation/{_path_id(args.id)}/attach"
    status_client = AdminClient(admin_url(args.admin_url), timeout_s=2.0)

    def status() -> str | None:
        try:
            found = status_client.get(f"/invocations/{_path_id(args.id)}", what="status")
        except CliError:
            return None
        return f"{found.get('status')}, attempt {found.get('attempt')}" if isinstance(found, dict) else None

    read_timeout = None if timeout_ms is None else timeout_ms / 1000
    try:
        with Spinner(f"waiting for {args.id}", status=status):
            response = httpx.get(url, headers=bearer(INGRESS_TOKEN_ENV), timeout=httpx.Timeout(10.0, read=read_timeout))
    except httpx.ReadTimeout:
        raise CliError(
            f"{args.id} has not ended after {args.timeout}; it goes on (attach again to keep waiting)", TIMED_OUT
        ) from None
    except httpx.InvalidURL as exc:
        raise CliError(f"attach: '{url}' is not a usable URL: {exc}", USAGE) from None
    except httpx.HTTPError as exc:
        raise transport_error(exc, f"attach {args.id}", base) from None
    except KeyboardInterrupt:
        print(f"stopped waiting; {args.id} goes on", file=sys.stderr)
        return 130
    if response.status_code == 200:
        try:
            _print_json(response.json())
        except ValueError:
            print(response.text)
        return 0
    try:
        body = response.json()
    except ValueError:
        body = None
    # An invocation that ended failed is answered with its failure, whose code is a number; the
    # proxy's own errors (an unknown id, a missing token) have a string code.
    if isinstance(body, dict) and isinstance(body.get("code"), int):
        raise CliError(f"{args.id} failed: {failure_text(body, 500)}", FAILED)
    raise error_from(response, f"attach {args.id}", INGRESS_TOKEN_ENV)


# --------------------------------------------------------------------------- objects


def show_object(args: argparse.Namespace) -> int:
    path = f"/objects/{_path_id(args.service)}/{_path_id(args.key)}"
    body = _client(args).get(path, what=f"objects show {args.service}/{args.key}")
    if args.json:
        _print_json(body)
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
