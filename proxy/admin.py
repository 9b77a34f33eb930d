"""The admin API, for operators and the CLI. It listens on loopback unless told otherwise.

=================================  ==================================================
``POST /deployments``              ``{"uri": ...}``: discover and register a deployment
``GET  /deployments``              deployments with their instances and services
``GET  /deployments/{id}``         one deployment
``GET  /services``                 services with their handlers' schemas
``GET  /services/{name}``          one service
``GET  /invocations``              ``?status=&limit=``, most recent first
``GET  /invocations/{id}``         one invocation with its journal, completions and attempts
``PATCH /invocations/{id}/cancel`` cancel: the handler raises at its next step, compensations run,
                                   callees are cancelled too
``PATCH /invocations/{id}/kill``   kill: end it and its callees now, without compensation
``PATCH /invocations/{id}/resume`` resume a paused invocation (its retry policy ran out) with a
                                   fresh retry budget; 409 if it is not paused
``DELETE /invocations/{id}``       ``?mode=cancel`` (default) or ``?mode=kill``, as older Restate clients send
``GET  /objects/{service}/{key}``  a virtual object's or workflow's state, lock holder, queue and promises
``GET  /health``                   liveness
=================================  ==================================================
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, get_args

import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from handler_sdk.protocol import COMPLETABLE_KINDS

from .errors import BadRequest, Conflict, NotFound, ProxyError, ServiceUnavailable
from .http import decode_json, error_response, json_response, read_body
from .store.base import (
    AttemptRow,
    CompletionRow,
    Deployment,
    Invocation,
    InvocationStatus,
    JournalRow,
    StoredFailure,
    StoreUnavailable,
)

if TYPE_CHECKING:
    from .app import Runtime

_STATUSES = get_args(InvocationStatus)
_ADMIN_BODY_LIMIT = 1024 * 1024


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


def journal_json(row: JournalRow, completion: CompletionRow | None = None) -> dict[str, Any]:
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
    return result


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
        status = request.query_params.get("status")
        if status is not None and status not in _STATUSES:
            raise BadRequest(f"status must be one of {', '.join(_STATUSES)}, got '{status}'")
        limit_text = request.query_params.get("limit", "100")
        # ASCII digits only: str.isdigit() also takes "²", which int() refuses.
        if not (
            limit_text.isascii() and limit_text.isdigit() and len(limit_text) <= 4 and 1 <= int(limit_text) <= 1000
        ):
            raise BadRequest(f"limit must be a number from 1 to 1000, got '{limit_text}'")
        rows = await rt.store.list_invocations(status=status, limit=int(limit_text))  # type: ignore[arg-type]
        return json_response({"invocations": [invocation_json(i) for i in rows]})

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
        result["journal"] = [journal_json(row, completions.get(row.index)) for row in journal]
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

    async def patch_invocation(request: Request) -> Response:
        action = request.path_params["action"]
        if action == "resume":
            return await resume_invocation(request.path_params["id"])
        if action not in ("cancel", "kill"):
            raise BadRequest(f"the action must be cancel, kill or resume, got '{action}'")
        return await stop_invocation(request.path_params["id"], action)

    async def delete_invocation(request: Request) -> Response:
        return await stop_invocation(request.path_params["id"], request.query_params.get("mode", "cancel"))

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
            Route("/services", list_services, methods=["GET"]),
            Route("/services/{name}", get_service, methods=["GET"]),
            Route("/invocations", list_invocations, methods=["GET"]),
            Route("/invocations/{id}", get_invocation, methods=["GET"]),
            Route("/invocations/{id}", delete_invocation, methods=["DELETE"]),
            Route("/invocations/{id}/{action}", patch_invocation, methods=["PATCH", "POST"]),
            Route("/objects/{service}/{key:path}", get_object, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
            Route("/instance", instance, methods=["GET"]),
        ],
        exception_handlers={
            ProxyError: on_proxy_error,
            HTTPException: on_http_error,
            StoreUnavailable: on_store_unavailable,
        },
    )
