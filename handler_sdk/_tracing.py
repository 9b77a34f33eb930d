"""OpenTelemetry spans for attempts and steps, when the ``opentelemetry-api`` package is installed.

Each attempt of an invocation is a span named ``{service}/{handler}``, the child of
the trace context the invocation was created with (the ``traceparent`` and
``tracestate`` the client sent to the proxy's ingress, which the proxy keeps and
sends with every attempt, and passes on to the invocations it calls). When the app's
own HTTP instrumentation already opened a span for the request in that trace, the
attempt's span is the child of that one. Each new journal entry is a child span of
the attempt: a ``ctx.run`` step spans its function and the commit of its outcome
(spans its function makes are children of it), the other actions (sleep, call,
send, awakeable, state, promises...) span the commit of their entry. Entries
replayed from the journal did not run again, and get no span.

Without the package nothing happens: the only import is the guarded one below, and
the SDK checks ``TRACER`` before doing anything else. The spans go wherever the
app's tracer provider sends them (``opentelemetry-sdk`` and an exporter, see
docs/observability.md). With the API alone (no tracer provider set) no span is made;
when the attempt's span is not recorded (a trace sampled out), its steps make no spans
either: a step then costs one context-variable read (``ACTIVE``), not the few
microseconds of a no-op span.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, TypeVar

from .errors import _Suspend
from .protocol import (
    Call,
    Completed,
    Failed,
    InvokeRequest,
    InvokeResponse,
    JournalEntry,
    Retry,
    Send,
    Sleep,
    Suspended,
    callee_invocation_id,
    entry_kind,
)

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Span, Tracer

T = TypeVar("T")

TRACER: Tracer | None
try:
    from opentelemetry import context as _context, propagate as _propagate, trace as _trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
except ImportError:  # tracing is optional: ``pip install 'durable-proxy[tracing]'``
    TRACER = None
else:
    # A proxy tracer until the app sets its tracer provider, the provider's tracer from then on.
    TRACER = _trace.get_tracer("handler_sdk")

#: True inside an attempt whose span is recorded: its new journal entries get spans.
ACTIVE: ContextVar[bool] = ContextVar("handler_sdk.tracing", default=False)

#: Span attribute names.
INVOCATION_ID = "durable.invocation_id"
ATTEMPT = "durable.attempt"
SERVICE = "durable.service"
HANDLER = "durable.handler"
KEY = "durable.key"
OUTCOME = "durable.outcome"
STEP_INDEX = "durable.step.index"
STEP_NAME = "durable.step.name"
STEP_KIND = "durable.step.kind"


def _parent(headers: Mapping[str, str]) -> tuple[Context | None, bool]:
    """(the context to start the attempt's span in, whether it continues a span of this process)."""
    extracted = _propagate.extract(headers)
    remote = _trace.get_current_span(extracted).get_span_context()
    current = _trace.get_current_span().get_span_context()
    if current.is_valid and (not remote.is_valid or current.trace_id == remote.trace_id):
        return None, True  # inside the request's span opened by the app's HTTP instrumentation
    return extracted, False


def _no_provider() -> bool:
    """The app set no tracer provider (yet): every span would be a no-op, so none is made at all."""
    provider = _trace.get_tracer_provider()
    return isinstance(TRACER, _trace.ProxyTracer) and isinstance(provider, _trace.ProxyTracerProvider)


async def trace_attempt(request: InvokeRequest, attempt: Awaitable[InvokeResponse]) -> InvokeResponse:
    """Await ``attempt`` (one attempt of the invocation ``request`` starts) inside its span."""
    assert TRACER is not None
    if _no_provider():
        return await attempt
    parent, local = _parent(request.headers)
    attributes: dict[str, Any] = {
        INVOCATION_ID: request.invocation_id,
        ATTEMPT: request.attempt,
        SERVICE: request.service,
        HANDLER: request.handler,
        "durable.journal.length": len(request.journal),
    }
    if request.key is not None:
        attributes[KEY] = request.key
    span = TRACER.start_span(
        f"{request.service}/{request.handler}",
        context=parent,
        kind=SpanKind.INTERNAL if local else SpanKind.SERVER,
        attributes=attributes,
    )
    token = _context.attach(_trace.set_span_in_context(span, parent))
    active = ACTIVE.set(span.is_recording())
    try:
        response = await attempt
    except BaseException as exc:
        span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        raise
    else:
        _record_outcome(span, response)
        return response
    finally:
        ACTIVE.reset(active)
        _context.detach(token)
        span.end()


def _record_outcome(span: Span, response: InvokeResponse) -> None:
    match response:
        case Completed():
            span.set_attribute(OUTCOME, "completed")
        case Suspended(waiting_on=waiting_on):
            span.set_attribute(OUTCOME, "suspended")
            span.set_attribute("durable.waiting_on", waiting_on)
        case Failed(failure=failure) | Retry(failure=failure):
            span.set_attribute(OUTCOME, "failed" if isinstance(response, Failed) else "retry")
            span.set_attribute("durable.failure.code", failure.code)
            event: dict[str, Any] = {"exception.message": failure.message}
            if failure.stacktrace:
                event["exception.stacktrace"] = failure.stacktrace
            span.add_event("exception", event)
            span.set_status(Status(StatusCode.ERROR, failure.message))


async def trace_step(
    request: InvokeRequest,
    index: int,
    kind: str,
    name: str,
    step: Awaitable[T],
    *,
    label: str = "",
    **attributes: Any,
) -> T:
    """Await ``step`` (the new journal entry at ``index``) inside its span, a child of the attempt's.

    The span is named ``{kind} {label or name}``, e.g. ``run charge`` or ``call Payments/charge``."""
    assert TRACER is not None
    attributes[INVOCATION_ID] = request.invocation_id
    attributes[ATTEMPT] = request.attempt
    attributes[STEP_INDEX] = index
    attributes[STEP_NAME] = name
    attributes[STEP_KIND] = kind
    label = label or name
    span = TRACER.start_span(f"{kind} {label}" if label else kind, attributes=attributes)
    token = _context.attach(_trace.set_span_in_context(span))
    try:
        return await step
    except _Suspend:
        raise  # the attempt ends after this entry (always-replay mode): nothing failed
    except BaseException as exc:
        span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        raise
    finally:
        _context.detach(token)
        span.end()


async def trace_entry(request: InvokeRequest, index: int, entry: JournalEntry, append: Awaitable[None]) -> None:
    """Await the append of ``entry`` (any kind but ``run``) inside its step span."""
    attributes: dict[str, Any] = {}
    label = ""
    if isinstance(entry, Call | Send):
        attributes["durable.call.service"] = entry.service
        attributes["durable.call.handler"] = entry.handler
        if entry.key is not None:
            attributes["durable.call.key"] = entry.key
        attributes["durable.callee.invocation_id"] = callee_invocation_id(request.invocation_id, index)
        label = entry.name or f"{entry.service}/{entry.handler}"
    elif isinstance(entry, Sleep):
        attributes["durable.sleep.wake_at_ms"] = entry.wake_at_ms
    await trace_step(request, index, entry_kind(entry), entry.name, append, label=label, **attributes)
