"""The ASGI endpoint the proxy talks to, mounted inside the user's web app.

It answers discovery, and runs one attempt of an invocation per ``POST
/invoke/{service}/{handler}``: decode the input, run the handler against the
journal it was sent, and turn however the handler ended into exactly one
``InvokeResponse``: completed, failed, retry, or suspended when it awaits a
completion that does not exist yet. Exceptions never escape as HTTP 500s:
the proxy needs to know whether to retry, fail, or fence, and tracebacks only
ever travel in ``Failure.stacktrace``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from typing import Any

import httpx
import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import _tracing
from ._attempt import Attempt
from ._callback import CallbackClient
from ._crashpoints import crash_point
from ._keyed_context import new_context
from ._replay import Journal, active, describe, mismatch_detail
from .clock import Clock, SystemClock
from .context import NOUNS
from .errors import (
    InputError,
    NonDeterminismError,
    SdkInternalError,
    TerminalError,
    _AttemptFailed,
    _AttemptFenced,
    _Suspend,
    describe_exception,
    format_stacktrace,
)
from .protocol import (
    INVOKE_CONTENT_TYPE,
    MANIFEST_CONTENT_TYPE,
    MAX_PROTOCOL_VERSION,
    MIN_PROTOCOL_VERSION,
    Completed,
    ErrorBody,
    Failed,
    Failure,
    InvokeRequest,
    InvokeResponse,
    Manifest,
    Retry,
    Suspended,
    invoke_request_decoder,
    json_encoder,
    parse_content_type_version,
)
from .service import HandlerDefinition, Service
from .signing import SIGNATURE_HEADER, SignatureError, SignatureVerifier, keys_from_env

__all__ = ["Endpoint"]

SDK_NAME = "handler_sdk/0.1.0"


def _error(status: int, code: str, message: str) -> Response:
    return Response(json_encoder.encode(ErrorBody(code=code, message=message)), status, media_type="application/json")


def _internal_response(reason: SdkInternalError) -> InvokeResponse:
    if isinstance(reason, _Suspend):
        return Suspended(waiting_on=reason.waiting_on)
    if isinstance(reason, _AttemptFailed):
        return Retry(failure=reason.failure)
    if isinstance(reason, _AttemptFenced):
        return Retry(failure=Failure(code=reason.code, message=reason.message))
    if isinstance(reason, NonDeterminismError):
        return Retry(failure=Failure(code=reason.code, message=str(reason)))
    return Retry(failure=Failure(message=describe_exception(reason), stacktrace=format_stacktrace(reason)))


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _response_for_exception(exc: BaseException) -> InvokeResponse:
    leaves = _leaves(exc)
    internal = [leaf for leaf in leaves if isinstance(leaf, SdkInternalError)]
    if internal:
        return _internal_response(internal[0])
    if all(isinstance(leaf, TerminalError) for leaf in leaves):
        terminal = leaves[0]
        assert isinstance(terminal, TerminalError)
        return Failed(failure=Failure(code=terminal.status_code, message=terminal.message))
    return Retry(failure=Failure(message=describe_exception(exc), stacktrace=format_stacktrace(exc)))


def _must_propagate(exc: BaseException) -> bool:
    """Interpreter exits and a cancellation of this very request are not handler outcomes."""
    task = asyncio.current_task()
    for leaf in _leaves(exc):
        if isinstance(leaf, asyncio.CancelledError):
            if task is not None and task.cancelling() > 0:
                return True
        elif not isinstance(leaf, Exception | SdkInternalError):
            return True
    return False


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class AttemptSettings:
    """How attempts wait and read time; the same for every invocation of an endpoint."""

    callbacks: CallbackClient
    clock: Clock
    suspend_after: timedelta
    always_replay: bool


async def run_attempt(
    definition: HandlerDefinition, request: InvokeRequest, settings: AttemptSettings
) -> InvokeResponse:
    """Run one attempt of an invocation and say how it ended (in a span, with OpenTelemetry)."""
    if _tracing.TRACER is not None:
        return await _tracing.trace_attempt(request, _run_attempt(definition, request, settings))
    return await _run_attempt(definition, request, settings)


async def _run_attempt(
    definition: HandlerDefinition, request: InvokeRequest, settings: AttemptSettings
) -> InvokeResponse:
    try:
        argument = definition.decode_input(bytes(request.input))
    except InputError as exc:
        return Failed(failure=Failure(code=exc.status_code, message=exc.message))
    journal = Journal(request.journal, always_replay=settings.always_replay)
    attempt = Attempt(
        request=request,
        journal=journal,
        callbacks=settings.callbacks,
        clock=settings.clock,
        suspend_after=settings.suspend_after,
    )
    ctx = new_context(definition, attempt)
    try:
        with active(journal):
            output = await definition.invoke(ctx, argument)
            await attempt.settle()
            _check_fully_replayed(journal, definition)
        response: InvokeResponse = _completed(definition, output)
    except BaseException as exc:
        if _must_propagate(exc):
            raise
        # Entries the handler started (a call it never awaited, a cancellation) are journaled before it answers.
        await attempt.settle()
        response = _response_for_exception(exc)
    finally:
        reason = journal.stopped
        # Steps still running in tasks the handler left behind must not append any more.
        journal.stop(_AttemptFenced("the attempt has already ended"))
    # A control-flow error the handler swallowed still decides the outcome.
    return response if reason is None else _internal_response(reason)


def _check_fully_replayed(journal: Journal, definition: HandlerDefinition) -> None:
    """A handler that ends before consuming its journal no longer matches the code that wrote it."""
    if journal.replaying:
        index = journal.cursor
        entry = journal.recorded(index)
        assert entry is not None
        raise NonDeterminismError(
            index=index,
            recorded=describe(entry),
            requested=("the end of handler", definition.name),
            detail=mismatch_detail(entry),
        )


def _completed(definition: HandlerDefinition, output: Any) -> InvokeResponse:
    try:
        encoded = definition.output_codec.encode(output)
    except Exception as exc:
        message = f"the handler output cannot be encoded as JSON: {describe_exception(exc)}"
        return Retry(failure=Failure(message=message, stacktrace=format_stacktrace(exc)))
    return Completed(output=msgspec.Raw(encoded))


class Endpoint:
    """Serves a set of services (plain, virtual objects, workflows) to the proxy as one ASGI app.

    Each service is checked first: a ``Workflow`` without a main handler is refused.

    ``callback_transport`` replaces the network for calls to the proxy (tests
    pass an ``httpx.MockTransport`` or ``httpx.ASGITransport``);
    ``append_deadline`` is how long an append keeps being retried while the
    proxy is unreachable.

    ``suspend_after`` is the longest a handler waits in-process for a
    completion (a call's result, an awakeable, a sleep due within that time)
    before it suspends and frees its connection; 0 suspends at once.
    ``always_replay=True`` is a test mode: the attempt ends after every new
    journal entry and the proxy re-invokes the handler at once, so every step
    is replayed before the next one runs, which shows whether a handler is
    deterministic. ``clock`` is where the SDK reads the time (the system
    clock by default); tests pass a manual clock shared with the proxy.
    ``signing_keys``: when given (or set in ``DURABLE_SIGNING_KEYS``, comma
    separated), discovery and invocations must be signed by the proxy with one
    of them (see ``handler_sdk.signing``); anything else is answered 401.
    Configure them in production: without keys, anyone who can reach the
    endpoint can run its handlers.
    """

    def __init__(
        self,
        services: Sequence[Service],
        *,
        callback_transport: httpx.AsyncBaseTransport | None = None,
        append_deadline: timedelta = timedelta(seconds=30),
        suspend_after: timedelta = timedelta(seconds=1),
        always_replay: bool = False,
        clock: Clock | None = None,
        signing_keys: Sequence[str | bytes] | None = None,
        signature_window: timedelta = timedelta(minutes=5),
    ) -> None:
        if suspend_after < timedelta(0):
            raise ValueError(f"suspend_after must not be negative, got {suspend_after}")
        self._services: dict[str, Service] = {}
        for service in services:
            if service.name in self._services:
                raise ValueError(f"two services are named {service.name!r}")
            service.check()
            self._services[service.name] = service
        self._callbacks = CallbackClient(transport=callback_transport, deadline=append_deadline)
        self._settings = AttemptSettings(
            callbacks=self._callbacks,
            clock=clock or SystemClock(),
            suspend_after=timedelta(0) if always_replay else suspend_after,
            always_replay=always_replay,
        )
        self._app: Starlette | None = None
        self._manifest: bytes | None = None
        keys = list(signing_keys) if signing_keys is not None else keys_from_env()
        self._verifier = (
            SignatureVerifier(keys, window_ms=int(signature_window.total_seconds() * 1000)) if keys else None
        )

    def _unsigned(self, request: Request, path: str, body: bytes) -> Response | None:
        """A 401 answer when signing keys are configured and the request is not signed by one of them."""
        if self._verifier is None:
            return None
        try:
            self._verifier.verify(
                request.headers.get(SIGNATURE_HEADER), request.method, path, body, self._settings.clock.now_ms()
            )
        except SignatureError as exc:
            return _error(401, "unauthorized", str(exc))
        return None

    def manifest(self) -> Manifest:
        return Manifest(sdk=SDK_NAME, services=[service.manifest() for service in self._services.values()])

    def asgi(self) -> Starlette:
        """The ASGI app, built once; mount it anywhere, e.g. ``app.mount("/durable", ...)``."""
        if self._app is None:
            self._app = Starlette(
                routes=[
                    Route("/discover", self._discover, methods=["GET"]),
                    Route("/health", self._health, methods=["GET"]),
                    Route("/invoke/{service}/{handler}", self._invoke, methods=["POST"]),
                ],
                lifespan=self._lifespan,
            )
        return self._app

    async def aclose(self) -> None:
        """Close the connection pool used for calls to the proxy."""
        await self._callbacks.aclose()

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        # Only runs when the app is served on its own; mounted apps get no lifespan,
        # which is why the HTTP client is created lazily.
        try:
            yield
        finally:
            await self.aclose()

    async def _discover(self, request: Request) -> Response:
        if (refused := self._unsigned(request, "/discover", b"")) is not None:
            return refused
        if self._manifest is None:
            self._manifest = json_encoder.encode(self.manifest())
        return Response(self._manifest, media_type=MANIFEST_CONTENT_TYPE)

    async def _health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def _invoke(self, request: Request) -> Response:
        body = await request.body()
        path = f"/invoke/{request.path_params['service']}/{request.path_params['handler']}"
        if (refused := self._unsigned(request, path, body)) is not None:
            return refused
        content_type = request.headers.get("content-type")
        version = parse_content_type_version(content_type)
        if version is None or not MIN_PROTOCOL_VERSION <= version <= MAX_PROTOCOL_VERSION:
            supported = f"application/vnd.durable.v{{{MIN_PROTOCOL_VERSION}..{MAX_PROTOCOL_VERSION}}}+json"
            return _error(415, "unsupported_protocol", f"content type {content_type!r} is not {supported}")
        try:
            invoke = invoke_request_decoder.decode(body)
        except msgspec.DecodeError as exc:
            return _error(400, "bad_request", f"invalid InvokeRequest: {exc}")
        service_name, handler_name = request.path_params["service"], request.path_params["handler"]
        service = self._services.get(service_name)
        definition = service.handlers.get(handler_name) if service is not None else None
        if definition is None:
            return _error(404, "not_found", f"no handler '{service_name}/{handler_name}' here")
        if (invoke.service, invoke.handler) != (service_name, handler_name):
            named, path = f"{invoke.service}/{invoke.handler}", f"{service_name}/{handler_name}"
            message = f"the request names '{named}' but was sent to '{path}'"
            return _error(400, "bad_request", message)
        if definition.keyed and invoke.key is None:
            noun = NOUNS[definition.service_kind]
            message = f"'{service_name}/{handler_name}' is a handler of a {noun}: the request needs a key"
            return _error(400, "bad_request", message)
        response = await run_attempt(definition, invoke, self._settings)
        crash_point("sdk.response.before_send")
        return Response(json_encoder.encode(response), media_type=INVOKE_CONTENT_TYPE)
