"""The admin API, for operators, the CLI and the web UI. It listens on loopback unless told otherwise.

docs/admin-api.md describes it in full; ``GET /openapi.json`` serves its OpenAPI document (``openapi.py``).

====================================  ==================================================
``POST /deployments``                 ``{"uri": ...}``: discover and register a deployment
``GET  /deployments``                 deployments with their instances and services
``GET  /deployments/{id}``            one deployment
``DELETE /deployments/{id}``          remove a deployment nothing needs any more; 409 while a service
                                      points at it or an unfinished invocation is pinned to it
``GET  /services``                    services with their handlers' schemas
``GET  /services/{name}``             one service
``GET  /invocations``                 filtered (``status``, ``service``, ``handler``, ``key``,
                                      ``created_after_ms``, ``created_before_ms``), newest first,
                                      ``limit`` per page, ``cursor`` from the previous page's ``next_cursor``
``GET  /invocations/{id}``            one invocation with its journal, completions and attempts
``POST /invocations/{id}/cancel``     cancel: the handler raises at its next step, compensations run,
                                      callees are cancelled too (PATCH too, as every action but purge)
``POST /invocations/{id}/kill``       kill: end it and its callees now, without compensation
``POST /invocations/{id}/resume``     resume a paused invocation (its retry policy ran out) with a
                                      fresh retry budget; 409 if it is not paused
``POST /invocations/{id}/retry``      a backing-off invocation runs its next attempt now (a paused one
                                      is resumed); 409 otherwise
``POST /invocations/{id}/purge``      delete an ended invocation with its journal; 409 if it has not ended
``POST /invocations/purge``           ``{"ended_before_ms": ..., "status": [...], "service": ..., "limit": N}``:
                                      delete up to N ended invocations; ``{"purged": n, "more": bool}``
``DELETE /invocations/{id}``          ``?mode=cancel`` (default) or ``?mode=kill``, as older Restate clients send
``GET  /objects/{service}/{key}``     a virtual object's or workflow's state, lock holder, queue and promises
``GET  /health``                      liveness
``GET  /instance``                    this proxy instance and its fencing counters
``GET  /metrics``                     Prometheus metrics, text format 0.0.4 (docs/observability.md)
``GET  /openapi.json``                the OpenAPI 3.1 document of this API
``GET  /ui/``                         the web UI's files (``GET /`` redirects there)
====================================  ==================================================

Without the admin token, only the health check, the OpenAPI document and the UI's files are served
(``OPEN_PATHS``, ``OPEN_PREFIXES``); the UI asks for the token and sends it with its API calls.
"""

from __future__ import annotations

import base64
import binascii
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, get_args

import msgspec
from starlette.applications import Starlette
from starlette.datastructures import QueryParams
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from handler_sdk.protocol import (
    COMPLETABLE_KINDS,
    Awakeable,
    Call,
    Failure,
    JournalEntry,
    Run,
    Send,
    Sleep,
    awakeable_id,
    callee_invocation_id,
    entry_decoder,
)

from .errors import BadRequest, Conflict, MethodNotAllowed, NotFound, ProxyError, ServiceUnavailable
from .http import decode_json, error_response, json_response, read_body
from .metrics import metrics_endpoint
from .openapi import ADMIN_OPENAPI
from .store.base import (
    TERMINAL_STATUSES,
    AttemptRow,
    CompletionRow,
    Deployment,
    Invocation,
    InvocationCursor,
    InvocationStatus,
    JournalRow,
    StoredFailure,
    StoreUnavailable,
)

if TYPE_CHECKING:
    from .app import Runtime

_STATUSES = get_args(InvocationStatus)
_ADMIN_BODY_LIMIT = 1024 * 1024

#: Served without the admin token: liveness, the OpenAPI document, and the web UI's static files
#: (the UI itself asks for the token and sends it with every API call it makes).
OPEN_PATHS: Final = frozenset({"/health", "/openapi.json", "/", "/ui"})
OPEN_PREFIXES: Final = ("/ui/",)
#: The web UI's files (index.html and what it loads), shipped inside the package.
UI_DIRECTORY: Final = Path(__file__).parent / "ui"

#: ``POST /invocations/{id}/{action}`` (and ``PATCH``, but for purge).
ACTIONS: Final = ("cancel", "kill", "resume", "retry", "purge")
#: The query parameters of ``GET /invocations``.
LIST_PARAMETERS: Final = (
    "status",
    "service",
    "handler",
    "key",
    "created_after_ms",
    "created_before_ms",
    "limit",
    "cursor",
)
DEFAULT_PAGE: Final = 50
MAX_PAGE: Final = 1_000
DEFAULT_PURGE_BATCH: Final = 100
#: Times are milliseconds since the epoch; 15 digits reach past the year 30000 and stay in a BIGINT.
_MAX_MS_DIGITS: Final = 15
_CURSOR_RE: Final = re.compile(r"^[A-Za-z0-9_-]{1,1024}$")
_cursor_decoder: Final = msgspec.json.Decoder(tuple[int, str])


def _raw(data: bytes | None) -> msgspec.Raw | None:
    return None if data is None else msgspec.Raw(data)


def _failure(failure: StoredFailure | None) -> dict[str, Any] | None:
    return None if failure is None else {"code": failure.code, "message": failure.message}


def invocation_json(invocation: Invocation) -> dict[str, Any]:
    return {
        "id": invocation.id,
        "service": invocation.service,
        "handler": invocation.handler,
        "key": invocation.key,
        "status": invocation.status,
        "attempt": invocation.attempt,
        "journal_length": invocation.journal_len,
        "deployment_id": invocation.deployment_id,
        "idempotency_key": invocation.idempotency_key,
        "created_at_ms": invocation.created_at_ms,
        "modified_at_ms": invocation.modified_at_ms,
        "completed_at_ms": invocation.completed_at_ms,
        "next_run_at_ms": invocation.next_run_at_ms,
        "input": _raw(invocation.input),
        "output": _raw(invocation.output),
        "failure": _failure(invocation.failure),
        "last_failure": _failure(invocation.last_failure),
        "parent_id": invocation.parent_id,
        "parent_index": invocation.parent_index,
        "cancel_requested": invocation.cancel_requested,
        "waiting_on": invocation.waiting_on,
        "attempts_at_resume": invocation.attempts_at_resume,
    }


def journal_json(
    row: JournalRow, completion: CompletionRow | None = None, invocation_id: str | None = None
) -> dict[str, Any]:
    """One journal entry for operators: its kind, name, attempt and time, the raw ``entry``, and
    what it came to. A completable entry says whether it is ``completed``, when
    (``completed_at_ms``) and with which ``result`` or ``failure``; a ``run`` entry carries its
    ``result`` or ``failure`` itself; a ``sleep`` its ``wake_at_ms``. With ``invocation_id``: a call
    or send names its callee (``callee_id``, derived from the caller's id and the entry's index;
    a call that failed at once or a send to a workflow key that already ran started none), and
    an awakeable its public ``awakeable_id``."""
    result: dict[str, Any] = {
        "index": row.index,
        "kind": row.kind,
        "name": row.name,
        "attempt": row.attempt,
        "created_at_ms": row.created_at_ms,
        "entry": msgspec.Raw(row.entry),
    }
    if row.kind in COMPLETABLE_KINDS:
        result["completed"] = completion is not None
        if completion is not None:
            result["completed_at_ms"] = completion.created_at_ms
            result["result"] = _raw(completion.result)
            result["failure"] = _failure(completion.failure)
    entry = _entry(row.entry)
    if isinstance(entry, Run):
        result["result"] = None if entry.failure is not None else entry.result
        result["failure"] = _wire_failure(entry.failure)
    elif isinstance(entry, Sleep):
        result["wake_at_ms"] = entry.wake_at_ms
    if invocation_id is not None:
        if isinstance(entry, Call | Send):
            result["callee_id"] = callee_invocation_id(invocation_id, row.index)
        elif isinstance(entry, Awakeable):
            result["awakeable_id"] = awakeable_id(invocation_id, row.index)
    return result


def _entry(data: bytes) -> JournalEntry | None:
    try:
        return entry_decoder.decode(data)
    except msgspec.DecodeError:
        return None  # not an entry this proxy knows (the raw bytes are shown as they are)


def _wire_failure(failure: Failure | None) -> dict[str, Any] | None:
    return None if failure is None else {"code": failure.code, "message": failure.message}


def attempt_json(row: AttemptRow) -> dict[str, Any]:
    return {
        "attempt": row.attempt,
        "endpoint": row.endpoint,
        "started_at_ms": row.started_at_ms,
        "ended_at_ms": row.ended_at_ms,
        "outcome": row.outcome,
        "failure": _failure(row.failure),
    }


def deployment_json(deployment: Deployment, services: list[str]) -> dict[str, Any]:
    return {
        "id": deployment.id,
        "endpoints": deployment.endpoints,
        "created_at_ms": deployment.created_at_ms,
        "services": services,
    }


def create_admin_app(runtime: Runtime) -> Starlette:
    rt = runtime

    def services_of(deployment_id: str) -> list[str]:
        return [s.name for s in rt.registry.services() if s.deployment_id == deployment_id]

    async def register(request: Request) -> Response:
        body = decode_json(await read_body(request, _ADMIN_BODY_LIMIT))
        uri = body.get("uri") if isinstance(body, dict) else None
        if not isinstance(uri, str) or not uri:
            raise BadRequest('the body must be a JSON object with a "uri" string, e.g. {"uri": "http://host:9080"}')
        deployment, manifest = await rt.registry.register(uri)
        result = deployment_json(deployment, [s.name for s in manifest.services])
        return json_response(result, 201)

    async def list_deployments(request: Request) -> Response:
        return json_response(
            {"deployments": [deployment_json(d, services_of(d.id)) for d in rt.registry.deployments()]}
        )

    async def get_deployment(request: Request) -> Response:
        deployment = await rt.store.get_deployment(request.path_params["id"])
        if deployment is None:
            raise NotFound(f"deployment {request.path_params['id']} not found")
        return json_response(deployment_json(deployment, services_of(deployment.id)))

    def service_json(name: str) -> dict[str, Any]:
        info = next((s for s in rt.registry.services() if s.name == name), None)
        if info is None:
            raise NotFound(f"service '{name}' is not registered")
        return {
            "name": info.name,
            "kind": info.manifest.kind,
            "deployment_id": info.deployment_id,
            "handlers": [
                {"name": h.name, "kind": h.kind, "input_schema": h.input_schema, "output_schema": h.output_schema}
                for h in info.manifest.handlers
            ],
        }

    async def list_services(request: Request) -> Response:
        return json_response({"services": [service_json(s.name) for s in rt.registry.services()]})

    async def get_service(request: Request) -> Response:
        return json_response(service_json(request.path_params["name"]))

    async def list_invocations(request: Request) -> Response:
        params = request.query_params
        unknown = sorted(set(params) - set(LIST_PARAMETERS))
        if unknown:
            raise BadRequest(
                f"unknown query parameter '{unknown[0]}'; GET /invocations takes {', '.join(LIST_PARAMETERS)}"
            )
        limit = _page_size(params)
        rows = await rt.store.list_invocations(
            status=_statuses(params),
            service=_single(params, "service"),
            handler=_single(params, "handler"),
            key=_single(params, "key"),
            created_after_ms=_ms(params, "created_after_ms"),
            created_before_ms=_ms(params, "created_before_ms"),
            cursor=_decode_cursor(_single(params, "cursor")),
            limit=limit + 1,  # one more tells whether there is a next page
        )
        page = rows[:limit]
        next_cursor = _encode_cursor(page[-1]) if len(rows) > limit else None
        return json_response({"invocations": [invocation_json(i) for i in page], "next_cursor": next_cursor})

    async def get_invocation(request: Request) -> Response:
        invocation_id = request.path_params["id"]
        invocation = await rt.store.get_invocation(invocation_id)
        if invocation is None:
            raise NotFound(f"invocation {invocation_id} not found", code="invocation_not_found")
        journal = await rt.store.get_journal(invocation_id)
        attempts = await rt.store.get_attempts(invocation_id)
        completions = {
            row.index: row
            for row in await rt.store.get_completions(
                invocation_id, [row.index for row in journal if row.kind in COMPLETABLE_KINDS]
            )
        }
        result = invocation_json(invocation)
        result["journal"] = [journal_json(row, completions.get(row.index), invocation_id) for row in journal]
        result["attempts"] = [attempt_json(row) for row in attempts]
        return json_response(result)

    async def stop_invocation(invocation_id: str, mode: str) -> Response:
        now = rt.clock.now_ms()
        if mode == "cancel":
            outcome, effects = await rt.store.cancel(invocation_id, now)
        elif mode == "kill":
            outcome, effects = await rt.store.kill(invocation_id, StoredFailure(code=409, message="killed"), now)
        else:
            raise BadRequest(f"mode must be cancel or kill, got '{mode}'")
        if outcome == "not_found":
            raise NotFound(f"invocation {invocation_id} not found", code="invocation_not_found")
        rt.apply_effects(effects)
        if outcome == "already_done":
            raise Conflict(f"invocation {invocation_id} has already ended", code="already_ended")
        return json_response({"id": invocation_id, "mode": mode, "accepted": True}, 202)

    async def resume_invocation(invocation_id: str) -> Response:
        outcome, effects = await rt.store.resume(invocation_id, rt.clock.now_ms())
        if outcome == "not_found":
            raise NotFound(f"invocation {invocation_id} not found", code="invocation_not_found")
        if outcome == "not_paused":
            current = await rt.store.get_invocation(invocation_id)
            status = "unknown" if current is None else current.status
            raise Conflict(
                f"invocation {invocation_id} is {status}, not paused; only a paused invocation can be resumed",
                code="not_paused",
            )
        rt.apply_effects(effects)
        return json_response({"id": invocation_id, "mode": "resume", "accepted": True}, 202)

    async def retry_invocation(invocation_id: str) -> Response:
        outcome, effects = await rt.store.retry_now(invocation_id, rt.clock.now_ms())
        if outcome == "not_found":
            raise NotFound(f"invocation {invocation_id} not found", code="invocation_not_found")
        if outcome == "not_retryable":
            current = await rt.store.get_invocation(invocation_id)
            status = "unknown" if current is None else current.status
            raise Conflict(
                f"invocation {invocation_id} is {status}; only an invocation that is backing off can be retried"
                " now (a paused one is resumed)",
                code="not_retryable",
            )
        rt.apply_effects(effects)
        return json_response(
            {"id": invocation_id, "mode": "retry", "accepted": True, "resumed": outcome == "resumed"}, 202
        )

    def workflow_services() -> list[str]:
        return [s.name for s in rt.registry.services() if s.kind == "workflow"]

    async def purge_invocation(invocation_id: str) -> Response:
        outcome, purged = await rt.store.purge_invocation(invocation_id, workflow_services=workflow_services())
        if outcome == "not_found":
            raise NotFound(f"invocation {invocation_id} not found", code="invocation_not_found")
        if outcome == "not_ended":
            current = await rt.store.get_invocation(invocation_id)
            status = "unknown" if current is None else current.status
            raise Conflict(
                f"invocation {invocation_id} is {status}; only an ended invocation can be purged"
                " (cancel or kill it first)",
                code="not_ended",
            )
        if outcome == "workflow_busy":
            raise Conflict(
                f"invocation {invocation_id} is the run of a workflow whose key still has unfinished invocations;"
                " it can be purged, with the key's state and promises, once they have ended",
                code="workflow_busy",
            )
        return json_response({"id": invocation_id, "purged": purged})

    async def invocation_action(request: Request) -> Response:
        action, invocation_id = request.path_params["action"], request.path_params["id"]
        if action == "resume":
            return await resume_invocation(invocation_id)
        if action == "retry":
            return await retry_invocation(invocation_id)
        if action == "purge":
            if request.method != "POST":
                raise MethodNotAllowed(f"purge with POST /invocations/{invocation_id}/purge, not {request.method}")
            return await purge_invocation(invocation_id)
        if action not in ("cancel", "kill"):
            raise BadRequest(f"the action must be one of {', '.join(ACTIONS)}, got '{action}'")
        return await stop_invocation(invocation_id, action)

    async def purge_invocations(request: Request) -> Response:
        body = decode_json(await read_body(request, _ADMIN_BODY_LIMIT))
        statuses, service, ended_before_ms, limit = _purge_request(body)
        result = await rt.store.purge_invocations(
            statuses=statuses,
            service=service,
            ended_before_ms=ended_before_ms,
            limit=limit,
            workflow_services=workflow_services(),
        )
        return json_response({"purged": result.purged, "more": result.more})

    async def delete_invocation(request: Request) -> Response:
        if "purge" in request.query_params:
            # DELETE means cancel here (as older Restate clients send it); never cancel by mistake.
            raise BadRequest(
                f"DELETE /invocations/{{id}} cancels (or kills, with ?mode=kill); to purge an ended invocation,"
                f" POST /invocations/{request.path_params['id']}/purge"
            )
        return await stop_invocation(request.path_params["id"], request.query_params.get("mode", "cancel"))

    async def delete_deployment(request: Request) -> Response:
        deployment_id = request.path_params["id"]
        await rt.registry.remove(deployment_id)
        return json_response({"id": deployment_id, "removed": True})

    async def get_object(request: Request) -> Response:
        service, key = request.path_params["service"], request.path_params["key"]
        info = rt.registry.service(service)
        if info.kind == "service":
            raise BadRequest(f"{service} is a service; only virtual objects and workflows have keyed state")
        status = await rt.store.key_status(service, key)
        return json_response(
            {
                "service": status.service,
                "key": status.key,
                "kind": info.kind,
                "state": {name: msgspec.Raw(value) for name, value in sorted(status.state.items())},
                "lock_holder": status.lock_holder,
                "queue": status.queue,
                "promises": [
                    {
                        "name": p.name,
                        "value": _raw(p.value),
                        "failure": _failure(p.failure),
                        "completed_at_ms": p.completed_at_ms,
                    }
                    for p in status.promises
                ],
            }
        )

    async def health(request: Request) -> Response:
        return json_response({"status": "ok"})

    async def openapi(request: Request) -> Response:
        return json_response(ADMIN_OPENAPI)

    async def home(request: Request) -> Response:
        return RedirectResponse("/ui/")

    async def instance(request: Request) -> Response:
        store = runtime.store
        return json_response(
            {
                "instance_id": store.instance_id,
                "shared": store.shared,
                "lease_ms": store.lease_ms,
                # Writes refused because their attempt had been superseded (fenced), by kind.
                "fenced_appends": runtime.callbacks.fenced_appends,
                "superseded_ends": runtime.invoker.superseded_ends,
                "taken_over": 0 if runtime.cluster is None else runtime.cluster.taken_over,
            }
        )

    async def on_proxy_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ProxyError)
        return error_response(exc)

    async def on_store_unavailable(request: Request, exc: Exception) -> Response:
        return error_response(ServiceUnavailable(f"{exc}; nothing was changed, try again later"))

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        message = (
            f"no admin route for {request.method} {request.url.path}"
            if exc.status_code in (404, 405)
            else (str(exc.detail))
        )
        return json_response({"code": code, "message": message}, exc.status_code)

    return Starlette(
        routes=[
            Route("/deployments", register, methods=["POST"]),
            Route("/deployments", list_deployments, methods=["GET"]),
            Route("/deployments/{id}", get_deployment, methods=["GET"]),
            Route("/deployments/{id}", delete_deployment, methods=["DELETE"]),
            Route("/services", list_services, methods=["GET"]),
            Route("/services/{name}", get_service, methods=["GET"]),
            Route("/invocations", list_invocations, methods=["GET"]),
            Route("/invocations/purge", purge_invocations, methods=["POST"]),
            Route("/invocations/{id}", get_invocation, methods=["GET"]),
            Route("/invocations/{id}", delete_invocation, methods=["DELETE"]),
            Route("/invocations/{id}/{action}", invocation_action, methods=["PATCH", "POST"]),
            Route("/objects/{service}/{key:path}", get_object, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
            Route("/instance", instance, methods=["GET"]),
            Route("/metrics", metrics_endpoint(rt), methods=["GET"]),
            Route("/openapi.json", openapi, methods=["GET"]),
            Route("/", home, methods=["GET"]),
            Mount("/ui", app=StaticFiles(directory=UI_DIRECTORY, html=True), name="ui"),
        ],
        exception_handlers={
            ProxyError: on_proxy_error,
            HTTPException: on_http_error,
            StoreUnavailable: on_store_unavailable,
        },
    )


# --------------------------------------------------------------------------- request parsing


def _single(params: QueryParams, name: str) -> str | None:
    """A query parameter given at most once; empty counts as not given."""
    values = params.getlist(name)
    if len(values) > 1:
        raise BadRequest(f"{name} may be given once, got it {len(values)} times")
    return values[0] if values and values[0] else None


def _digits(text: str, most: int) -> bool:
    # ASCII digits only: str.isdigit() also takes "²", which int() refuses.
    return text.isascii() and text.isdigit() and len(text) <= most


def _page_size(params: QueryParams) -> int:
    text = _single(params, "limit")
    if text is None:
        return DEFAULT_PAGE
    if not (_digits(text, 4) and 1 <= int(text) <= MAX_PAGE):
        raise BadRequest(f"limit must be a number from 1 to {MAX_PAGE}, got '{text}'")
    return int(text)


def _ms(params: QueryParams, name: str) -> int | None:
    text = _single(params, name)
    if text is None:
        return None
    if not _digits(text, _MAX_MS_DIGITS):
        raise BadRequest(f"{name} must be a time in milliseconds since the epoch (digits only), got '{text}'")
    return int(text)


def _statuses(params: QueryParams) -> list[InvocationStatus] | None:
    """``status`` repeated, comma-separated, or both; None when not given."""
    names = [part.strip() for value in params.getlist("status") for part in value.split(",") if part.strip()]
    for name in names:
        if name not in _STATUSES:
            raise BadRequest(f"status must be one of {', '.join(_STATUSES)}, got '{name}'")
    return list(dict.fromkeys(names)) or None  # type: ignore[arg-type]


def _encode_cursor(last: Invocation) -> str:
    """The position after ``last`` in the listing, as an opaque URL-safe string."""
    data = msgspec.json.encode((last.created_at_ms, last.id))
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _decode_cursor(text: str | None) -> InvocationCursor | None:
    if text is None:
        return None
    try:
        if not _CURSOR_RE.match(text):
            raise ValueError
        created_at_ms, invocation_id = _cursor_decoder.decode(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        if not 0 <= created_at_ms < 2**63:
            raise ValueError
    except (ValueError, binascii.Error, msgspec.DecodeError):
        raise BadRequest(
            "cursor is not valid: pass the next_cursor of the previous page as it is", code="invalid_cursor"
        ) from None
    return created_at_ms, invocation_id


_PURGE_FIELDS: Final = ("status", "service", "ended_before_ms", "limit")


def _purge_request(body: object) -> tuple[list[InvocationStatus], str | None, int, int]:
    """(statuses, service, ended_before_ms, limit) of a ``POST /invocations/purge`` body."""
    example = (
        '{"ended_before_ms": 1735689600000, "status": ["completed", "failed"], "service": "Greeter", "limit": 100}'
    )
    if not isinstance(body, dict):
        raise BadRequest(f"the body must be a JSON object, e.g. {example}")
    unknown = sorted(set(body) - set(_PURGE_FIELDS))
    if unknown:
        raise BadRequest(f"unknown field '{unknown[0]}'; the body takes {', '.join(_PURGE_FIELDS)}")
    status = body.get("status", list(TERMINAL_STATUSES))
    names = [status] if isinstance(status, str) else status
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise BadRequest('status must be "completed", "failed" or a non-empty list of them')
    for name in names:
        if name not in TERMINAL_STATUSES:
            raise BadRequest(f"only ended invocations can be purged: status must be completed or failed, got '{name}'")
    service = body.get("service")
    if service is not None and (not isinstance(service, str) or not service):
        raise BadRequest("service must be the name of a service")
    ended_before_ms = body.get("ended_before_ms")
    if ended_before_ms is None:
        raise BadRequest(
            f"ended_before_ms is required (the current time purges everything that has ended), e.g. {example}"
        )
    if not _whole(ended_before_ms) or not 0 <= ended_before_ms < 10**_MAX_MS_DIGITS:
        raise BadRequest(f"ended_before_ms must be a time in milliseconds since the epoch, got {ended_before_ms!r}")
    limit = body.get("limit", DEFAULT_PURGE_BATCH)
    if not _whole(limit) or not 1 <= limit <= MAX_PAGE:
        raise BadRequest(f"limit must be a number from 1 to {MAX_PAGE}, got {limit!r}")
    return list(dict.fromkeys(names)), service, ended_before_ms, limit


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
