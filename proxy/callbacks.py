"""The callback endpoints of a running attempt.

``POST /_durable/v1/invocations/{id}/journal`` with an ``AppendRequest``. The
entry is acknowledged (200, ``AppendAck``) only after it is committed, together
with its effects (a call or send starts its callee, a sleep sets its timer),
and the handler goes on only after the ack. The token must be the one the
proxy gave this attempt, and the store fences the write: an attempt that is no
longer the current one is answered 409 and writes nothing.

``POST /_durable/v1/invocations/{id}/await`` with an ``AwaitRequest``: wait a
little for entries to be completed, so that a short call or sleep does not cost
a suspension and a replay.
"""

from __future__ import annotations

import asyncio
import logging
from time import perf_counter
from typing import TYPE_CHECKING

import msgspec
from starlette.types import Receive, Scope, Send as ASGISend

from handler_sdk.protocol import (
    AppendAck,
    AwaitResponse,
    Call,
    ClearAllState,
    ClearState,
    CompletePromise,
    Completion,
    Entry,
    ErrorBody,
    GetPromise,
    PeekPromise,
    Send,
    SetState,
    Sleep,
    append_request_decoder,
    await_request_decoder,
    callee_invocation_id,
    entry_decoder,
    entry_kind,
    json_encoder,
    parse_content_type_version,
)

from .crashpoints import crash_point
from .errors import (
    BadRequest,
    Conflict,
    Forbidden,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    ProxyError,
    ServiceUnavailable,
    UnsupportedMediaType,
)
from .http import read_asgi_body
from .invoker import to_completion
from .store.base import CompletionRow, Invocation, NewInvocation, PromiseOp, StateOp, StoredFailure, StoreUnavailable
from .submission import MAX_DELAY_MS, WORKFLOW_RUN_KEY, new_invocation, parse_input

#: Trace context a callee inherits from its caller (W3C trace context and baggage).
_PROPAGATED_HEADERS = frozenset({"traceparent", "tracestate", "baggage"})
#: What the store keeps in an integer column (SQLite's INTEGER).
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
#: The longest an ``/await`` callback holds the request.
_MAX_AWAIT_MS = 30_000

if TYPE_CHECKING:
    from .app import Runtime

log = logging.getLogger("durable_proxy.callbacks")


def error_answer(error: ProxyError) -> tuple[int, bytes]:
    return error.status_code, json_encoder.encode(ErrorBody(code=error.code, message=error.message))


class Callbacks:
    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime
        #: Appends refused because their attempt was superseded (for operators and tests).
        self.fenced_appends = 0

    async def __call__(self, scope: Scope, receive: Receive, send: ASGISend) -> None:
        """Serve one callback request that came to the ingress port, straight on ASGI."""
        content_type = None
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value.decode("latin-1")
        try:
            invocation_id, verb = self.route(scope["method"], scope["path"], content_type)
            body = await read_asgi_body(scope, receive, self._rt.settings.max_body_bytes)
        except ProxyError as exc:
            status, payload = error_answer(exc)
        else:
            status, payload = await self.respond(invocation_id, verb, body)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    def route(self, method: str, path: str, content_type: str | None) -> tuple[str, str]:
        """(invocation id, ``journal`` or ``await``) of a callback request, checked before its body is read."""
        parts = path.split("/")  # "", "_durable", "v1", "invocations", id, verb (ids need no decoding)
        if (
            len(parts) != 6
            or parts[1] != "_durable"
            or parts[2] != "v1"
            or parts[3] != "invocations"
            or parts[5] not in ("journal", "await")
        ):
            raise NotFound(f"no callback route for {path[:200]}")
        if method != "POST":
            raise MethodNotAllowed("use POST on callback routes")
        if parse_content_type_version(content_type) != 1:
            raise UnsupportedMediaType(f"content-type '{content_type}' is not a protocol version this proxy speaks (1)")
        return parts[4], parts[5]

    async def respond(self, invocation_id: str, verb: str, body: bytes) -> tuple[int, bytes]:
        """The status and JSON body answering an append or a wait."""
        try:
            if verb == "journal":
                return 200, json_encoder.encode(await self._append(invocation_id, body))
            return 200, json_encoder.encode(await self._await(invocation_id, body))
        except ProxyError as exc:
            return error_answer(exc)
        except StoreUnavailable as exc:
            return error_answer(ServiceUnavailable(f"{exc}; nothing was recorded, try again later"))

    def _authorise(self, invocation_id: str, attempt: int, token: str) -> None:
        if not self._rt.signer.verify(invocation_id, attempt, token):
            raise Forbidden(f"the token does not authorise attempt {attempt} of {invocation_id}")

    async def _append(self, invocation_id: str, body: bytes) -> AppendAck:
        rt = self._rt
        arrived_s = perf_counter()
        try:
            append = append_request_decoder.decode(body)
            entry = entry_decoder.decode(append.entry)
        except msgspec.DecodeError as exc:
            raise BadRequest(f"invalid append request: {exc}", code="protocol_violation") from None
        if append.index < 0 or append.attempt < 1:
            raise BadRequest("index must be >= 0 and attempt >= 1", code="protocol_violation")
        self._authorise(invocation_id, append.attempt, append.token)
        now = rt.clock.now_ms()
        await self._check_limits(invocation_id, append.attempt, append.index, len(append.entry), now)
        state_op, promise_op = await self._keyed_op(invocation_id, append.index, entry)
        child, timer_at_ms, completion = await self._effects_of(invocation_id, append.index, entry, now)
        crash_point("proxy.append.before_commit")
        kind = entry_kind(entry)
        result = await rt.store.append(
            invocation_id,
            append.attempt,
            append.index,
            kind,
            entry.name,
            bytes(append.entry),
            now,
            child=child,
            timer_at_ms=timer_at_ms,
            completion=completion,
            state_op=state_op,
            promise_op=promise_op,
        )
        match result.outcome:
            case "appended" | "duplicate":
                appended = result.outcome == "appended"
                if appended:
                    crash_point("proxy.append.after_commit")
                    rt.metrics.append_duration.labels().observe(perf_counter() - arrived_s)
                    if timer_at_ms is not None:
                        rt.timers.add(invocation_id, append.index, timer_at_ms)
                    if child is not None and child.run_at_ms is not None:
                        rt.timers.add(child.id, -1, child.run_at_ms)
                    rt.apply_effects(result.effects)
                rt.invoker.touch(
                    invocation_id,
                    append.attempt,
                    len(append.entry) if appended else 0,
                    step_kind=kind if appended else None,
                )
                return AppendAck(
                    index=append.index,
                    cancelled=result.cancel_requested,
                    completion=None if result.completion is None else to_completion(result.completion),
                )
            case "fenced":
                self.fenced_appends += 1
                log.warning(
                    "rejected an append from superseded attempt %d of %s (index %d)",
                    append.attempt,
                    invocation_id,
                    append.index,
                    extra={"invocation_id": invocation_id, "attempt": append.attempt},
                )
                raise Conflict(
                    f"attempt {append.attempt} of {invocation_id} is no longer the running attempt", code="fenced"
                )
            case "gap":
                raise Conflict(f"index {append.index} of {invocation_id} leaves a gap in the journal", code="gap")
            case "conflict":
                raise Conflict(
                    f"index {append.index} of {invocation_id} already holds a different entry", code="conflict"
                )
            case "not_found":
                raise NotFound(f"invocation {invocation_id} not found", code="invocation_not_found")

    async def _check_limits(self, invocation_id: str, attempt: int, index: int, size: int, now_ms: int) -> None:
        """An entry over a size limit fails the invocation for good (retrying cannot shrink it) and is refused."""
        settings = self._rt.settings
        journal_bytes = self._rt.invoker.journal_bytes(invocation_id, attempt)
        if size > settings.max_entry_bytes:
            problem = (
                f"journal entry {index} is {size} bytes; the limit is {settings.max_entry_bytes} (max_entry_bytes)"
            )
        elif index >= settings.max_journal_entries:
            problem = f"the journal would exceed {settings.max_journal_entries} entries (max_journal_entries)"
        elif journal_bytes is not None and journal_bytes + size > settings.max_journal_bytes:
            problem = (
                f"the journal would grow to {journal_bytes + size} bytes; "
                f"the limit is {settings.max_journal_bytes} (max_journal_bytes)"
            )
        else:
            return
        effects = await self._rt.store.fail(invocation_id, attempt, StoredFailure(code=413, message=problem), now_ms)
        if effects is not None:
            self._rt.apply_effects(effects)
        raise PayloadTooLarge(problem, code="limit_exceeded")

    async def _invocation(self, invocation_id: str) -> Invocation:
        """The invocation behind an append: from the running attempt if it runs here, else from the store."""
        invocation = self._rt.invoker.running_invocation(invocation_id)
        if invocation is None:
            invocation = await self._rt.store.get_invocation(invocation_id)
        if invocation is None:
            raise NotFound(f"invocation {invocation_id} not found", code="invocation_not_found")
        return invocation

    async def _keyed_op(self, invocation_id: str, index: int, entry: Entry) -> tuple[StateOp | None, PromiseOp | None]:
        """The change of keyed state or promises that committing ``entry`` makes, checked against the handler."""
        state_op: StateOp | None = None
        promise_op: PromiseOp | None = None
        match entry:
            case SetState(name=name, value=value):
                state_op = StateOp(op="set", name=name, value=bytes(value))
            case ClearState(name=name):
                state_op = StateOp(op="clear", name=name)
            case ClearAllState():
                state_op = StateOp(op="clear_all")
            case GetPromise(name=name):
                promise_op = PromiseOp(op="get", name=name)
            case PeekPromise(name=name):
                promise_op = PromiseOp(op="peek", name=name)
            case CompletePromise(name=name, value=value, failure=failure):
                if failure is not None and not _INT64_MIN <= failure.code <= _INT64_MAX:
                    raise BadRequest(
                        f"entry {index}: failure code {failure.code} is out of range", code="protocol_violation"
                    )
                stored = None if failure is None else StoredFailure(code=failure.code, message=failure.message)
                promise_op = PromiseOp(op="complete", name=name, value=None if stored else bytes(value), failure=stored)
            case _:
                return None, None
        if state_op is not None and state_op.op != "clear_all" and not state_op.name:
            raise BadRequest(f"entry {index} ({entry_kind(entry)}) has no state name", code="protocol_violation")
        invocation = await self._invocation(invocation_id)
        if invocation.key is None:
            raise BadRequest(
                f"entry {index} ({entry_kind(entry)}) needs a virtual object or workflow key; "
                f"{invocation.service}/{invocation.handler} has none",
                code="protocol_violation",
            )
        if state_op is not None and not invocation.exclusive:
            raise BadRequest(
                f"entry {index} ({entry_kind(entry)}): {invocation.service}/{invocation.handler} is a shared "
                "handler and may only read state",
                code="protocol_violation",
            )
        return state_op, promise_op

    async def _effects_of(
        self, invocation_id: str, index: int, entry: Entry, now_ms: int
    ) -> tuple[NewInvocation | None, int | None, CompletionRow | None]:
        """What committing ``entry`` must also do: (callee to start, timer to set, immediate completion)."""
        match entry:
            case Sleep(wake_at_ms=wake_at_ms):
                if not 0 <= wake_at_ms <= now_ms + MAX_DELAY_MS:
                    raise BadRequest(
                        f"sleep at index {index} wakes at {wake_at_ms}, out of range", code="protocol_violation"
                    )
                return None, wake_at_ms, None
            case (
                Call(service=service, handler=handler, key=key, input=raw)
                | Send(service=service, handler=handler, key=key, input=raw)
            ):
                is_call = isinstance(entry, Call)
                delay_ms = entry.delay_ms if isinstance(entry, Send) else 0
                if not 0 <= delay_ms <= MAX_DELAY_MS:
                    raise BadRequest(f"send at index {index} has a delay out of range", code="protocol_violation")
                try:
                    value = parse_input(bytes(raw))
                    caller = await self._invocation(invocation_id)
                    child = new_invocation(
                        self._rt.registry,
                        invocation_id=callee_invocation_id(invocation_id, index),
                        headers={k: v for k, v in caller.headers.items() if k in _PROPAGATED_HEADERS},
                        service=service,
                        handler=handler,
                        value=value,
                        key=key,
                        parent_id=invocation_id,
                        parent_index=index,
                        parent_awaits=is_call,
                        run_at_ms=now_ms + delay_ms if delay_ms else None,
                    )
                    if child.idempotency_key == WORKFLOW_RUN_KEY and await self._rt.store.find_by_idempotency_key(
                        service, handler, key, WORKFLOW_RUN_KEY
                    ):
                        raise Conflict(f"workflow {service} with key '{key}' already exists", code="workflow_exists")
                except ProxyError as exc:
                    if not is_call:
                        if exc.code == "workflow_exists":
                            return None, None, None  # sending to an existing workflow's run: it runs once
                        # A send has no completion to carry the error: refuse it, the attempt retries.
                        raise BadRequest(f"send at index {index}: {exc.message}", code="bad_send_target") from None
                    # A call fails at once, as a terminal error the caller can handle.
                    failure = StoredFailure(code=exc.status_code, message=exc.message)
                    return None, None, CompletionRow(index=index, failure=failure, created_at_ms=now_ms)
                return child, None, None
        return None, None, None

    async def _await(self, invocation_id: str, body: bytes) -> AwaitResponse:
        rt = self._rt
        try:
            request = await_request_decoder.decode(body)
        except msgspec.DecodeError as exc:
            raise BadRequest(f"invalid await request: {exc}", code="protocol_violation") from None
        self._authorise(invocation_id, request.attempt, request.token)
        # A real-time wait (not durable time): the attempt holds its connection meanwhile.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0, min(request.timeout_ms, _MAX_AWAIT_MS)) / 1000
        while True:
            event = rt.signals.event(invocation_id)
            try:
                invocation = await rt.store.get_invocation(invocation_id)
                if invocation is None:
                    raise NotFound(f"invocation {invocation_id} not found", code="invocation_not_found")
                if invocation.status != "running" or invocation.attempt != request.attempt:
                    self.fenced_appends += 1
                    raise Conflict(
                        f"attempt {request.attempt} of {invocation_id} is no longer the running attempt",
                        code="fenced",
                    )
                rows = await rt.store.get_completions(invocation_id, request.indices)
                remaining = deadline - loop.time()
                if rows or invocation.cancel_requested or remaining <= 0:
                    rt.invoker.touch(invocation_id, request.attempt)
                    completions: list[Completion] = [to_completion(row) for row in rows]
                    return AwaitResponse(completions=completions, cancelled=invocation.cancel_requested)
                try:
                    await asyncio.wait_for(event.wait(), remaining)
                except TimeoutError:
                    pass
            finally:
                rt.signals.release(invocation_id)
