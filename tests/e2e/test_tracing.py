"""Trace context from the ingress to every attempt and callee, and the SDK's OpenTelemetry spans."""

from __future__ import annotations

import asyncio
import contextvars
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import SpanKind, StatusCode
from starlette.types import ASGIApp, Receive, Scope, Send

from handler_sdk import Context, Service, TerminalError, _tracing

from .harness import HANDLER_URI, handler_app_for, open_runtime

TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
CLIENT_SPAN_ID = 0xB7AD6B7169203331
TRACEPARENT = f"00-{TRACE_ID:032x}-{CLIENT_SPAN_ID:016x}-01"
TRACESTATE = "vendor=opaque"

svc = Service("Tracing")


async def _prepare() -> str:
    # A span the step function makes is a child of the step's span.
    with trace.get_tracer("app").start_as_current_span("app work"):
        return "prepared"


@svc.handler()
async def outer(ctx: Context) -> str:
    prepared = await ctx.run("prepare", _prepare)
    answer = await ctx.call("Tracing", "inner", prepared, type_hint=str)
    return f"{answer} via outer"


@svc.handler()
async def inner(ctx: Context, what: str) -> str:
    return await ctx.run("work", lambda: f"{what}, worked")


@svc.handler()
async def broken(ctx: Context) -> None:
    await ctx.run("explode", _explode)


def _explode() -> None:
    raise TerminalError("cannot", status_code=422)


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """The SDK's spans go to an in-memory exporter (the process's global provider is left alone)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(_tracing, "TRACER", provider.get_tracer("handler_sdk"))
    # The tracers the app's code asks for (in the tests below) come from the same provider.
    monkeypatch.setattr(trace, "get_tracer", lambda name, *a, **k: provider.get_tracer(name, *a, **k))
    yield exporter
    provider.shutdown()


class _Recording:
    """The handler app, recording the headers of every invoke request the proxy sends it.

    Each invoke request is served in an empty context, as in a process of its own: in-process, the
    callee's attempt would otherwise run in the context of the caller's append (the call's span)."""

    def __init__(self, app: ASGIApp, *, instrumented: bool = False) -> None:
        self.app = app
        self.instrumented = instrumented
        self.invoke_headers: list[dict[str, str]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/invoke/"):
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            self.invoke_headers.append(headers)
            await asyncio.create_task(self._serve(headers, scope, receive, send), context=contextvars.Context())
            return
        await self.app(scope, receive, send)

    async def _serve(self, headers: dict[str, str], scope: Scope, receive: Receive, send: Send) -> None:
        if self.instrumented:  # as OpenTelemetry's ASGI instrumentation does
            context = propagate.extract(headers)
            with trace.get_tracer("asgi").start_as_current_span("POST /invoke", context=context, kind=SpanKind.SERVER):
                await self.app(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def _by_name(finished: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [span for span in finished if span.name == name]


def _parent_id(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


def _span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.span_id)


async def test_spans_of_attempts_steps_and_callees_continue_the_callers_trace(
    tmp_path: Path, spans: InMemorySpanExporter
) -> None:
    app, forward = handler_app_for([svc])
    recording = _Recording(app)
    async with open_runtime(tmp_path / "p.db", recording, forward) as h:
        assert (await h.admin.post("/deployments", json={"uri": HANDLER_URI})).status_code == 201
        response = await h.ingress.post(
            "/Tracing/outer",
            json=None,
            headers={"traceparent": TRACEPARENT, "tracestate": TRACESTATE, "baggage": "tenant=acme"},
        )
        assert response.status_code == 200, response.text
        assert response.json() == "prepared, worked via outer"
        outer_id = response.headers["x-restate-id"]

    # Every invoke request, the callee's included, carries the trace context as HTTP headers.
    assert len(recording.invoke_headers) >= 2
    for headers in recording.invoke_headers:
        assert headers["traceparent"] == TRACEPARENT and headers["tracestate"] == TRACESTATE
        assert headers["baggage"] == "tenant=acme"

    finished = spans.get_finished_spans()
    assert finished and all(span.context is not None and span.context.trace_id == TRACE_ID for span in finished)

    outer_attempts = _by_name(finished, "Tracing/outer")
    assert outer_attempts and outer_attempts[-1].attributes is not None
    assert outer_attempts[-1].attributes["durable.outcome"] == "completed"
    for attempt_span in outer_attempts:
        assert _parent_id(attempt_span) == CLIENT_SPAN_ID, "the attempt continues the client's span"
        assert attempt_span.kind == SpanKind.SERVER
        assert attempt_span.attributes is not None
        assert attempt_span.attributes["durable.invocation_id"] == outer_id
        assert attempt_span.attributes["durable.service"] == "Tracing"
    attempt_ids = {_span_id(span) for span in outer_attempts}

    (prepare,) = _by_name(finished, "run prepare")
    assert _parent_id(prepare) in attempt_ids
    assert prepare.attributes is not None
    assert dict(prepare.attributes) == {
        "durable.invocation_id": outer_id,
        "durable.attempt": 1,
        "durable.step.index": 0,
        "durable.step.name": "prepare",
        "durable.step.kind": "run",
    }
    (app_work,) = _by_name(finished, "app work")
    assert _parent_id(app_work) == _span_id(prepare)

    (call,) = _by_name(finished, "call Tracing/inner")
    assert _parent_id(call) in attempt_ids
    assert call.attributes is not None
    assert call.attributes["durable.step.index"] == 1 and call.attributes["durable.step.kind"] == "call"
    callee_id = call.attributes["durable.callee.invocation_id"]

    # The callee inherits the trace context its caller was invoked with.
    (inner_attempt,) = _by_name(finished, "Tracing/inner")
    assert inner_attempt.attributes is not None and inner_attempt.attributes["durable.invocation_id"] == callee_id
    assert _parent_id(inner_attempt) == CLIENT_SPAN_ID
    (work,) = _by_name(finished, "run work")
    assert _parent_id(work) == _span_id(inner_attempt)


async def test_the_attempt_span_nests_in_the_apps_http_span_and_failures_are_errors(
    tmp_path: Path, spans: InMemorySpanExporter
) -> None:
    app, forward = handler_app_for([svc])
    recording = _Recording(app, instrumented=True)
    async with open_runtime(tmp_path / "p.db", recording, forward) as h:
        assert (await h.admin.post("/deployments", json={"uri": HANDLER_URI})).status_code == 201
        response = await h.ingress.post("/Tracing/broken", headers={"traceparent": TRACEPARENT})
        assert response.status_code == 422, response.text

    finished = spans.get_finished_spans()
    (http,) = _by_name(finished, "POST /invoke")
    (attempt_span,) = _by_name(finished, "Tracing/broken")
    (step,) = _by_name(finished, "run explode")
    assert _parent_id(http) == CLIENT_SPAN_ID
    assert _parent_id(attempt_span) == _span_id(http) and attempt_span.kind == SpanKind.INTERNAL
    assert _parent_id(step) == _span_id(attempt_span)
    assert step.status.status_code == StatusCode.ERROR
    assert attempt_span.status.status_code == StatusCode.ERROR and attempt_span.status.description == "cannot"
    assert attempt_span.attributes is not None and attempt_span.attributes["durable.outcome"] == "failed"


async def test_without_a_traceparent_the_attempt_starts_a_trace(tmp_path: Path, spans: InMemorySpanExporter) -> None:
    app, forward = handler_app_for([svc])
    async with open_runtime(tmp_path / "p.db", _Recording(app), forward) as h:
        assert (await h.admin.post("/deployments", json={"uri": HANDLER_URI})).status_code == 201
        assert (await h.ingress.post("/Tracing/inner", json="x")).json() == "x, worked"
    (attempt_span,) = _by_name(spans.get_finished_spans(), "Tracing/inner")
    assert attempt_span.parent is None


@pytest.mark.parametrize("setup", ["no provider", "sampled out"])
async def test_no_span_is_made_without_a_provider_or_when_sampled_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, setup: str
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ALWAYS_OFF, shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    if setup == "sampled out":
        monkeypatch.setattr(_tracing, "TRACER", provider.get_tracer("handler_sdk"))
    elif not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        pytest.skip("a global tracer provider was set in this process")
    started: list[str] = []
    original = _tracing.trace_step

    async def trace_step(*args: Any, **kwargs: Any) -> Any:
        started.append(args[2])
        return await original(*args, **kwargs)

    monkeypatch.setattr(_tracing, "trace_step", trace_step)
    app, forward = handler_app_for([svc])
    async with open_runtime(tmp_path / "p.db", _Recording(app), forward) as h:
        assert (await h.admin.post("/deployments", json={"uri": HANDLER_URI})).status_code == 201
        response = await h.ingress.post("/Tracing/outer", headers={"traceparent": TRACEPARENT[:-2] + "00"})
        assert response.json() == "prepared, worked via outer"
    assert exporter.get_finished_spans() == () and started == [], "steps made no span, not even a no-op one"
    provider.shutdown()


def test_without_opentelemetry_the_sdk_imports_nothing_and_runs_as_before() -> None:
    script = textwrap.dedent(
        """
        import asyncio, sys
        sys.modules["opentelemetry"] = None  # as if it were not installed
        from handler_sdk import Context, Service, _tracing
        from handler_sdk.testing import TestEnvironment

        assert _tracing.TRACER is None
        svc = Service("Plain")

        @svc.handler()
        async def go(ctx: Context) -> int:
            return await ctx.run("one", lambda: 1)

        async def main() -> None:
            async with TestEnvironment([svc]) as env:
                assert await env.call("Plain", "go") == 1

        asyncio.run(main())
        loaded = [name for name, module in sys.modules.items() if name.startswith("opentelemetry") and module]
        assert not loaded, loaded
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
