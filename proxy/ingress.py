"""The ingress: how clients start invocations and get their results.

It follows Restate's ingress HTTP API, both the classic paths and the
``/restate/...`` paths of Restate 1.7, so clients written for Restate work
unchanged:

=========================================  ============================================
``POST /{service}/{handler}``              call and wait for the result
``POST /{object}/{key}/{handler}``         the same for a virtual object or workflow key
``POST /restate/call/{service}/{handler}``  same
``POST /{service}/{handler}/send``         start and answer 202 with the invocation id
``POST /restate/send/{service}/{handler}``  same
``GET  /restate/attach/{id}``              wait for the result of an invocation
``GET  /restate/invocation/{id}/attach``   same (classic path)
``GET  /restate/output/{id}``              the result if it is there, else 470
``GET  /restate/invocation/{id}/output``   same (classic path)
``GET  /restate/workflow/{name}/{key}/attach|output``  the result of a workflow's run, by key
``POST /restate/attach|output``            the same, by a ``{"target": ...}`` body (Restate 1.7)
``POST /restate/awakeables/{id}/resolve``  resolve an awakeable with the JSON body
``POST /restate/awakeables/{id}/reject``   reject it with the body as the reason
``POST /restate/a/{id}/resolve|reject``    same (the short form Restate's clients use)
``GET  /restate/health``                   liveness
``GET  /openapi.json``                     the OpenAPI 3.1 document of the registered handlers
                                           (``openapi.ingress_openapi``), with their schemas
=========================================  ============================================

``?delay=10s`` (or ISO-8601 ``PT10S``) on a send starts the invocation later;
the delay is a durable timer.

An ``Idempotency-Key`` header makes a submission idempotent: the same key (for
the same service and handler) gives the same invocation and the same result,
and a repeat while it runs attaches to it. Every answer about an invocation
carries its id in the ``x-restate-id`` header.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from handler_sdk.protocol import parse_awakeable_id

from .auth import check_bearer
from .crashpoints import crash_point
from .errors import (
    BadRequest,
    Conflict,
    MethodNotAllowed,
    NotFound,
    ProxyError,
    ServiceUnavailable,
    UnprocessableEntity,
)
from .http import error_response, json_response, raw_json_response, read_body
from .ids import invocation_id as new_invocation_id
from .openapi import ingress_openapi
from .store.base import Created, IdempotencyConflict, Invocation, StoredFailure, StoreUnavailable
from .submission import WORKFLOW_RUN_KEY, new_invocation, parse_delay_ms, parse_input
from .waiters import Outcome

if TYPE_CHECKING:
    from .app import Runtime

ID_HEADER = "x-restate-id"
#: Headers never passed to handlers nor written to the journal.
_DROPPED_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
        "host",
        "content-length",
        "content-type",
        "connection",
        "keep-alive",
        "transfer-encoding",
        "upgrade",
        "te",
        "accept-encoding",
        "idempotency-key",
        "expect",
    }
)
_MAX_IDEMPOTENCY_KEY = 256


class Ingress:
    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["path"].startswith("/_durable/"):
            await self._rt.callbacks(scope, receive, send)  # authorised by the attempt's token
            return
        request = Request(scope, receive)
        try:
            response = await self._route(request)
        except ProxyError as exc:
            response = error_response(exc)
        except StoreUnavailable as exc:
            response = error_response(ServiceUnavailable(f"{exc}; nothing was recorded, try again later"))
        await response(scope, receive, send)

    async def _route(self, request: Request) -> Response:
        parts = _segments(request)
        method = request.method
        if parts != ["restate", "health"]:
            check_bearer(request, self._rt.settings.ingress_token)
        if parts[:1] == ["restate"]:
            return await self._route_restate(request, parts[1:], method)
        if parts == ["openapi.json"]:  # no submission path has a single segment
            _require(method, "GET")
            token = bool(self._rt.settings.ingress_token)
            return json_response(ingress_openapi(self._rt.registry.services(), token=token))
        target = self._target(parts)
        if target is None:
            raise NotFound(f"no ingress route for {method} {request.url.path}")
        _require(method, "POST")
        service, key, handler, send = target
        return await self._submit(request, service, handler, key=key, send=send)

    def _target(self, parts: list[str]) -> tuple[str, str | None, str, bool] | None:
        """(service, key, handler, send) of a submission path, by the kind of the service it names.

        ``/{service}/{handler}[/send]`` for services, ``/{object}/{key}/{handler}[/send]``
        for virtual objects and workflows.
        """
        if not parts:
            return None
        send = parts[-1] == "send" and len(parts) in (3, 4)
        body = parts[:-1] if send else parts
        info = self._rt.registry.service(body[0]) if len(body) in (2, 3) else None
        if info is None:
            return None
        if info.kind == "service" and len(body) == 2:
            return body[0], None, body[1], send
        if info.kind != "service" and len(body) == 3:
            return body[0], body[1], body[2], send
        if info.kind != "service":
            raise NotFound(f"{body[0]} is keyed: use /{body[0]}/{{key}}/{{handler}}", code="handler_not_found")
        return None

    async def _route_restate(self, request: Request, parts: list[str], method: str) -> Response:
        match parts:
            case ["health"]:
                return json_response({"status": "ok"})
            case ["call" | "send" as verb, service, handler]:
                _require(method, "POST")
                return await self._submit(request, service, handler, key=None, send=verb == "send")
            case ["call" | "send" as verb, service, key, handler]:
                _require(method, "POST")
                return await self._submit(request, service, handler, key=key, send=verb == "send")
            case ["attach", invocation_id] | ["invocation", invocation_id, "attach"]:
                _require(method, "GET")
                return await self._attach(request, await self._invocation(invocation_id))
            case ["output", invocation_id] | ["invocation", invocation_id, "output"]:
                _require(method, "GET")
                return self._output(await self._invocation(invocation_id))
            case ["workflow", name, key, ("attach" | "output") as verb]:
                _require(method, "GET")
                return await self._result(request, await self._workflow_run(name, key), verb)
            case ["attach" | "output" as verb]:
                _require(method, "POST")
                return await self._result(request, await self._lookup(request), verb)
            case ["awakeables" | "a", awakeable, ("resolve" | "reject") as verb]:
                _require(method, "POST")
                return await self._complete_awakeable(request, awakeable, verb)
        raise NotFound(f"no ingress route for {method} {request.url.path}")

    async def _result(self, request: Request, invocation: Invocation, verb: str) -> Response:
        return await self._attach(request, invocation) if verb == "attach" else self._output(invocation)

    async def _invocation(self, invocation_id: str) -> Invocation:
        invocation = await self._rt.store.get_invocation(invocation_id)
        if invocation is None:
            raise NotFound(f"invocation {invocation_id} not found", code="invocation_not_found")
        return invocation

    async def _workflow_run(self, name: str, key: str) -> Invocation:
        info = self._rt.registry.service(name)
        if info.kind != "workflow":
            raise BadRequest(f"{name} is not a workflow")
        run = await self._rt.store.find_by_idempotency_key(name, "run", key, WORKFLOW_RUN_KEY)
        if run is None:
            raise NotFound(f"workflow {name} has no run with key '{key}'", code="workflow_not_found")
        return run

    async def _lookup(self, request: Request) -> Invocation:
        """The invocation named by a Restate 1.7 ``POST /restate/attach|output`` body."""
        body = await read_body(request, 64 * 1024)
        value = parse_input(body)
        if not isinstance(value, dict):
            raise BadRequest('the body must be a JSON object with a "target" field')
        match value.get("target"):
            case "invocation" if isinstance(value.get("invocationId"), str):
                return await self._invocation(value["invocationId"])
            case "workflow" if isinstance(value.get("workflowName"), str) and isinstance(value.get("workflowKey"), str):
                return await self._workflow_run(value["workflowName"], value["workflowKey"])
            case "idempotentInvocation" if all(
                isinstance(value.get(f), str) for f in ("service", "handler", "idempotencyKey")
            ):
                found = await self._rt.store.find_by_idempotency_key(
                    value["service"], value["handler"], value.get("key"), value["idempotencyKey"]
                )
                if found is None:
                    raise NotFound("no invocation with that idempotency key", code="invocation_not_found")
                return found
        raise BadRequest(
            'target must be {"target": "invocation", "invocationId": ...}, '
            '{"target": "workflow", "workflowName": ..., "workflowKey": ...} or '
            '{"target": "idempotentInvocation", "service": ..., "handler": ..., "idempotencyKey": ...}'
        )

    # ------------------------------------------------------------------ submissions

    async def _submit(self, request: Request, service: str, handler: str, *, key: str | None, send: bool) -> Response:
        rt = self._rt
        info = rt.registry.handler(service, handler)  # 404 before reading the body
        body = await read_body(request, rt.settings.max_body_bytes)
        idempotency_key = request.headers.get("idempotency-key")
        if idempotency_key is not None and not 0 < len(idempotency_key) <= _MAX_IDEMPOTENCY_KEY:
            raise BadRequest(f"Idempotency-Key must be 1 to {_MAX_IDEMPOTENCY_KEY} characters long")
        now = rt.clock.now_ms()
        run_at_ms = None
        if "delay" in request.query_params:
            if not send:
                raise BadRequest("?delay= applies to sends only: use .../send?delay=...")
            run_at_ms = now + parse_delay_ms(request.query_params["delay"])
        new = new_invocation(
            rt.registry,
            invocation_id=new_invocation_id(now),
            service=service,
            handler=handler,
            value=parse_input(body),
            key=key,
            idempotency_key=idempotency_key,
            headers={k: v for k, v in request.headers.items() if k not in _DROPPED_HEADERS},
            run_at_ms=run_at_ms,
        )
        if info.workflow_run and run_at_ms is not None:
            raise BadRequest("a workflow's run cannot be delayed")
        waiter = None if send else rt.waiters.register(new.id)
        try:
            try:
                # A new invocation that can start at once is claimed in the same commit that creates it.
                endpoint = (
                    rt.registry.pick_endpoint(new.deployment_id)
                    if run_at_ms is None and rt.invoker.can_start_now()
                    else None
                )
                created = await rt.store.create_invocation(new, now, claim_endpoint=endpoint)
            except IdempotencyConflict as conflict:
                if info.workflow_run:  # the workflow exists: attach to its run, as Restate does
                    created = Created(invocation=conflict.existing, created=False)
                else:
                    raise UnprocessableEntity(
                        f"Idempotency-Key '{idempotency_key}' was already used for invocation "
                        f"{conflict.existing.id} with a different request body",
                        code="idempotency_conflict",
                    ) from None
            invocation = created.invocation
            if created.created:
                crash_point("proxy.submit.after_commit")
            if created.created and run_at_ms is not None:
                rt.timers.add(invocation.id, -1, run_at_ms)
            elif created.claim is not None and endpoint is not None:
                rt.invoker.start_claimed(created.claim, endpoint)
            elif invocation.status == "pending":
                rt.invoker.schedule(invocation.id, deployment_id=invocation.deployment_id)
            if send:
                status = "Accepted" if created.created else "PreviouslyAccepted"
                return json_response(
                    {"invocationId": invocation.id, "status": status},
                    202,
                    headers={ID_HEADER: invocation.id},
                )
            if not created.created:
                # The idempotency key points at an earlier invocation: wait for that one instead.
                assert waiter is not None
                rt.waiters.discard(new.id, waiter)
                return await self._wait_for(request, invocation)
            assert waiter is not None
            return await self._await_outcome(request, invocation.id, waiter)
        finally:
            if waiter is not None:
                rt.waiters.discard(new.id, waiter)

    # ------------------------------------------------------------------ results

    async def _attach(self, request: Request, invocation: Invocation) -> Response:
        return await self._wait_for(request, invocation)

    async def _wait_for(self, request: Request, invocation: Invocation) -> Response:
        rt = self._rt
        waiter = rt.waiters.register(invocation.id)
        try:
            current = await rt.store.get_invocation(invocation.id)
            if current is not None and current.done:
                return outcome_response(Outcome.of(current))
            return await self._await_outcome(request, invocation.id, waiter)
        finally:
            rt.waiters.discard(invocation.id, waiter)

    def _output(self, invocation: Invocation) -> Response:
        if not invocation.done:
            return json_response({"message": "not ready"}, 470, headers={ID_HEADER: invocation.id})
        return outcome_response(Outcome.of(invocation))

    async def _complete_awakeable(self, request: Request, awakeable: str, verb: str) -> Response:
        rt = self._rt
        parsed = parse_awakeable_id(awakeable)
        if parsed is None:
            raise NotFound(f"awakeable {awakeable} not found", code="awakeable_not_found")
        invocation_id, index = parsed
        body = await read_body(request, rt.settings.max_body_bytes)
        if verb == "resolve":
            result: bytes | None = msgspec.json.encode(parse_input(body))
            failure = None
        else:
            reason = body.decode("utf-8", "replace").strip() or "rejected"
            result, failure = None, StoredFailure(code=500, message=reason)
        outcome, effects = await rt.store.complete_entry(
            invocation_id, index, rt.clock.now_ms(), result=result, failure=failure, kind="awakeable"
        )
        if outcome == "not_found":
            raise NotFound(f"awakeable {awakeable} not found", code="awakeable_not_found")
        if outcome == "already_completed":
            raise Conflict(f"awakeable {awakeable} was already resolved or rejected", code="already_completed")
        rt.apply_effects(effects)
        return Response(status_code=202)

    async def _await_outcome(self, request: Request, invocation_id: str, waiter: asyncio.Future[Outcome]) -> Response:
        """Wait for the invocation's end, unless the client goes away first (the invocation goes on)."""
        disconnect = asyncio.ensure_future(_wait_disconnect(request))
        pending: set[asyncio.Future[Any]] = {waiter, disconnect}
        try:
            await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        finally:
            disconnect.cancel()
        if not waiter.done():
            return Response(status_code=499)
        return outcome_response(waiter.result())


def outcome_response(outcome: Outcome) -> Response:
    headers = {ID_HEADER: outcome.invocation_id}
    if outcome.failure is not None:
        status = outcome.failure.code if 400 <= outcome.failure.code <= 599 else 500
        return json_response({"code": outcome.failure.code, "message": outcome.failure.message}, status, headers)
    return raw_json_response(outcome.output if outcome.output is not None else b"null", 200, headers)


async def _wait_disconnect(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def _segments(request: Request) -> list[str]:
    """The path's segments, each percent-decoded on its own, so an object key may contain ``/``."""
    raw = request.scope.get("raw_path") or request.url.path.encode()
    path = raw.split(b"?", 1)[0].decode("latin-1")
    return [unquote(segment) for segment in path.split("/") if segment]


def _require(method: str, expected: str) -> None:
    if method != expected:
        raise MethodNotAllowed(f"use {expected} here, not {method}")
