"""The ingress: how clients start invocations and get their results.

It follows Restate's ingress HTTP API, both the classic paths and the
``/restate/...`` paths of Restate 1.7, so clients written for Restate work
unchanged:

=========================================  ============================================
``POST /{service}/{handler}``              call and wait for the result
``POST /restate/call/{service}/{handler}``  same
``POST /{service}/{handler}/send``         start and answer 202 with the invocation id
``POST /restate/send/{service}/{handler}``  same
``GET  /restate/attach/{id}``              wait for the result of an invocation
``GET  /restate/invocation/{id}/attach``   same (classic path)
``GET  /restate/output/{id}``              the result if it is there, else 470
``GET  /restate/invocation/{id}/output``   same (classic path)
``POST /restate/awakeables/{id}/resolve``  resolve an awakeable with the JSON body
``POST /restate/awakeables/{id}/reject``   reject it with the body as the reason
``POST /restate/a/{id}/resolve|reject``    same (the short form Restate's clients use)
``GET  /restate/health``                   liveness
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

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from handler_sdk.protocol import parse_awakeable_id

from .errors import BadRequest, Conflict, MethodNotAllowed, NotFound, ProxyError, UnprocessableEntity
from .http import error_response, json_response, raw_json_response, read_body
from .ids import invocation_id as new_invocation_id
from .store.base import IdempotencyConflict, Invocation, StoredFailure
from .submission import new_invocation, parse_delay_ms, parse_input
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
        request = Request(scope, receive)
        try:
            response = await self._route(request)
        except ProxyError as exc:
            response = error_response(exc)
        await response(scope, receive, send)

    async def _route(self, request: Request) -> Response:
        parts = [p for p in request.url.path.split("/") if p]
        method = request.method
        if parts[:1] == ["_durable"]:
            return await self._rt.callbacks.handle(request, parts)
        if parts[:1] == ["restate"]:
            return await self._route_restate(request, parts[1:], method)
        if len(parts) == 2:
            _require(method, "POST")
            return await self._submit(request, parts[0], parts[1], send=False)
        if len(parts) == 3 and parts[2] == "send":
            _require(method, "POST")
            return await self._submit(request, parts[0], parts[1], send=True)
        raise NotFound(f"no ingress route for {method} {request.url.path}")

    async def _route_restate(self, request: Request, parts: list[str], method: str) -> Response:
        match parts:
            case ["health"]:
                return json_response({"status": "ok"})
            case ["call", service, handler]:
                _require(method, "POST")
                return await self._submit(request, service, handler, send=False)
            case ["send", service, handler]:
                _require(method, "POST")
                return await self._submit(request, service, handler, send=True)
            case ["attach", invocation_id] | ["invocation", invocation_id, "attach"]:
                _require(method, "GET")
                return await self._attach(request, invocation_id)
            case ["output", invocation_id] | ["invocation", invocation_id, "output"]:
                _require(method, "GET")
                return await self._output(invocation_id)
            case ["awakeables" | "a", awakeable, ("resolve" | "reject") as verb]:
                _require(method, "POST")
                return await self._complete_awakeable(request, awakeable, verb)
        raise NotFound(f"no ingress route for {method} {request.url.path}")

    # ------------------------------------------------------------------ submissions

    async def _submit(self, request: Request, service: str, handler: str, *, send: bool) -> Response:
        rt = self._rt
        rt.registry.handler(service, handler)  # 404 before reading the body
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
            idempotency_key=idempotency_key,
            headers={k: v for k, v in request.headers.items() if k not in _DROPPED_HEADERS},
            run_at_ms=run_at_ms,
        )
        waiter = None if send else rt.waiters.register(new.id)
        try:
            try:
                created = await rt.store.create_invocation(new, now)
            except IdempotencyConflict as conflict:
                raise UnprocessableEntity(
                    f"Idempotency-Key '{idempotency_key}' was already used for invocation {conflict.existing.id} "
                    "with a different request body",
                    code="idempotency_conflict",
                ) from None
            invocation = created.invocation
            if created.created and run_at_ms is not None:
                rt.timers.add(invocation.id, -1, run_at_ms)
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

    async def _attach(self, request: Request, invocation_id: str) -> Response:
        invocation = await self._rt.store.get_invocation(invocation_id)
        if invocation is None:
            raise NotFound(f"invocation {invocation_id} not found", code="invocation_not_found")
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

    async def _output(self, invocation_id: str) -> Response:
        invocation = await self._rt.store.get_invocation(invocation_id)
        if invocation is None:
            raise NotFound(f"invocation {invocation_id} not found", code="invocation_not_found")
        if not invocation.done:
            return json_response({"message": "not ready"}, 470, headers={ID_HEADER: invocation_id})
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


def _require(method: str, expected: str) -> None:
    if method != expected:
        raise MethodNotAllowed(f"use {expected} here, not {method}")
