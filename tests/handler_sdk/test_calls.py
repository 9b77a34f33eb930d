"""Calls and sends: journaling, results as completions, typed convenience, replay checks."""

import dataclasses
from datetime import timedelta
from typing import Any

import msgspec
import pytest

from handler_sdk import CallFuture, Context, DurableFuture, Service, TerminalError
from handler_sdk.protocol import (
    AppendRequest,
    AwaitResponse,
    Call,
    Failed,
    Failure,
    Retry,
    Send,
    Suspended,
    callee_invocation_id,
)

from .conftest import MakeEndpoint
from .fakes import FakeProxy, completion, invoke, output, recorded


@dataclasses.dataclass
class Greeting:
    text: str
    length: int


greeter = Service("Greeter")


@greeter.handler()
async def greet(ctx: Context, name: str) -> Greeting:
    return Greeting(f"hello {name}", len(name))


@greeter.handler()
async def tick(ctx: Context) -> int:
    return 1


def caller(seen: list[Any]) -> Service:
    service = Service("Caller")

    @service.handler()
    async def generic(ctx: Context, name: str) -> Any:
        future = ctx.call("Greeter", "greet", name, key="k1", type_hint=Greeting, name="hi")
        seen.append(future.invocation_id)
        try:
            greeting = await future
        except TerminalError as exc:
            return f"failed {exc.status_code}: {exc.message}"
        seen.append(greeting)
        return greeting.text

    @service.handler()
    async def typed(ctx: Context, name: str) -> str:
        greeting = await ctx.service_call(greet, name)
        seen.append(greeting)
        count = await ctx.service_call(tick)
        seen.append(count)
        return greeting.text

    @service.handler()
    async def untyped(ctx: Context) -> Any:
        return await ctx.call("Greeter", "greet", "ann")

    return service


async def test_new_call_is_journaled_then_waits_briefly_then_suspends(
    make_endpoint: MakeEndpoint, proxy: FakeProxy
) -> None:
    seen: list[Any] = []
    app = make_endpoint(caller(seen), suspend_after=timedelta(milliseconds=300)).asgi()
    response = await invoke(app, "Caller", "generic", input="ann", invocation_id="inv_abc")
    assert response == Suspended(waiting_on=[0])
    assert proxy.entries == [Call(name="hi", service="Greeter", handler="greet", key="k1", input=msgspec.Raw(b'"ann"'))]
    assert [(a.indices, a.timeout_ms) for a in proxy.awaits] == [([0], 300)]
    assert seen == [callee_invocation_id("inv_abc", 0)]


async def test_completed_call_decodes_as_the_type_hint(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    seen: list[Any] = []
    app = make_endpoint(caller(seen)).asgi()
    journal = [recorded(Call(name="hi", service="Greeter", handler="greet", key="k1", input=msgspec.Raw(b'"x"')))]
    result = completion(0, {"text": "hello ann", "length": 3})
    response = await invoke(app, "Caller", "generic", input="ann", journal=journal, completions=[result])
    assert output(response) == "hello ann"
    assert seen == [callee_invocation_id("inv-1", 0), Greeting("hello ann", 3)]
    assert proxy.received == []
    assert proxy.awaits == []


async def test_completion_from_the_brief_wait(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    seen: list[Any] = []
    proxy.await_script = [AwaitResponse(completions=[completion(0, {"text": "hi", "length": 2})])]
    response = await invoke(make_endpoint(caller(seen)).asgi(), "Caller", "generic", input="ann")
    assert output(response) == "hi"
    assert len(proxy.awaits) == 1


async def test_failed_call_raises_terminal_error(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    app = make_endpoint(caller([])).asgi()
    failure = completion(0, failure=Failure(code=404, message="no such greeter"))
    response = await invoke(app, "Caller", "generic", input="ann", completions=[failure])
    assert output(response) == "failed 404: no such greeter"


async def test_failed_call_fails_the_caller_with_its_code(make_endpoint: MakeEndpoint) -> None:
    app = make_endpoint(caller([])).asgi()
    failure = completion(0, failure=Failure(code=422, message="bad name"))
    response = await invoke(app, "Caller", "untyped", completions=[failure])
    assert response == Failed(failure=Failure(code=422, message="bad name"))


async def test_untyped_call_returns_plain_json(make_endpoint: MakeEndpoint) -> None:
    app = make_endpoint(caller([])).asgi()
    response = await invoke(app, "Caller", "untyped", completions=[completion(0, {"text": "hi", "length": 2})])
    assert output(response) == {"text": "hi", "length": 2}


async def test_result_that_does_not_decode_asks_for_a_retry(make_endpoint: MakeEndpoint) -> None:
    app = make_endpoint(caller([])).asgi()
    response = await invoke(app, "Caller", "generic", input="ann", completions=[completion(0, "not a greeting")])
    assert isinstance(response, Retry)
    assert response.failure.message.startswith("the result of journal index 0 does not decode as")


async def test_service_call_uses_the_decorated_handler(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    seen: list[Any] = []
    app = make_endpoint(caller(seen), suspend_after=timedelta(0)).asgi()
    assert await invoke(app, "Caller", "typed", input="bo") == Suspended(waiting_on=[0])
    assert proxy.entries == [Call(service="Greeter", handler="greet", input=msgspec.Raw(b'"bo"'))]
    first = [completion(0, {"text": "hello bo", "length": 2})]
    response = await invoke(app, "Caller", "typed", input="bo", journal=proxy.journal, completions=first)
    assert response == Suspended(waiting_on=[1])
    assert proxy.entries[1] == Call(service="Greeter", handler="tick")
    both = [*first, completion(1, 7)]
    response = await invoke(app, "Caller", "typed", input="bo", journal=proxy.journal, completions=both)
    assert output(response) == "hello bo"
    assert seen == [Greeting("hello bo", 2), Greeting("hello bo", 2), 7]


def test_decorated_handlers_record_their_target() -> None:
    definition = greet.__durable_handler__  # type: ignore[attr-defined]
    assert (definition.service, definition.name) == ("Greeter", "greet")


async def test_service_call_refuses_what_it_cannot_call(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    service = Service("S")
    errors: list[str] = []

    async def plain(ctx: Context, name: str) -> str:
        return name

    @service.handler()
    async def handler(ctx: Context) -> None:
        with pytest.raises(TypeError) as info:
            ctx.service_call(plain, "x")
        errors.append(str(info.value))
        with pytest.raises(TypeError) as info:
            ctx.service_call(tick, 3)  # type: ignore[arg-type]
        errors.append(str(info.value))
        with pytest.raises(TypeError) as info:
            ctx.call("Greeter", "greet", object())
        errors.append(str(info.value))

    assert output(await invoke(make_endpoint(service).asgi(), "S", "handler")) is None
    assert "is not a handler: decorate it with @service.handler()" in errors[0]
    assert errors[1] == "handler 'Greeter/tick' takes no input, got 3"
    assert "cannot be encoded as JSON" in errors[2]
    assert proxy.received == []


async def test_a_call_never_awaited_is_still_journaled(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    service = Service("S")

    @service.handler()
    async def handler(ctx: Context) -> str:
        return ctx.call("Greeter", "tick").invocation_id

    response = await invoke(make_endpoint(service).asgi(), "S", "handler")
    assert output(response) == callee_invocation_id("inv-1", 0)
    assert proxy.entries == [Call(service="Greeter", handler="tick")]


def sender(events: list[str]) -> Service:
    service = Service("Sender")

    @service.handler()
    async def handler(ctx: Context) -> list[str]:
        first = await ctx.send("Greeter", "greet", "ann", name="now")
        events.append("returned")
        second = await ctx.service_send(greet, "bob", delay=timedelta(minutes=2), key="k")
        third = await ctx.service_send(tick)
        return [first, second, third]

    return service


async def test_send_returns_the_callee_id_once_durable(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    events: list[str] = []

    async def before_ack(append: AppendRequest) -> None:
        events.append(f"ack {append.index}")

    proxy.before_ack = before_ack
    response = await invoke(make_endpoint(sender(events)).asgi(), "Sender", "handler")
    assert output(response) == [callee_invocation_id("inv-1", index) for index in range(3)]
    assert events[:2] == ["ack 0", "returned"]
    assert proxy.entries == [
        Send(name="now", service="Greeter", handler="greet", input=msgspec.Raw(b'"ann"')),
        Send(service="Greeter", handler="greet", key="k", input=msgspec.Raw(b'"bob"'), delay_ms=120_000),
        Send(service="Greeter", handler="tick"),
    ]
    assert proxy.awaits == []


async def test_replayed_send_returns_the_same_id(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    events: list[str] = []
    app = make_endpoint(sender(events)).asgi()
    first = await invoke(app, "Sender", "handler")
    journal = proxy.journal
    proxy.appends.clear()
    assert await invoke(app, "Sender", "handler", journal=journal, attempt=2) == first
    assert proxy.appends == []


async def test_negative_send_delay_is_refused(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    service = Service("S")

    @service.handler()
    async def handler(ctx: Context) -> None:
        with pytest.raises(ValueError, match="the send delay must not be negative"):
            _ = ctx.send("Greeter", "tick", delay=timedelta(seconds=-1))

    assert output(await invoke(make_endpoint(service).asgi(), "S", "handler")) is None
    assert proxy.received == []


def call_entry(**fields: Any) -> Call:
    return Call(**{"name": "hi", "service": "Greeter", "handler": "greet", "key": "k1", **fields})


@pytest.mark.parametrize(
    ("entry", "recorded_as"),
    [
        (call_entry(handler="wave"), "call 'hi -> Greeter/wave[k1]'"),
        (call_entry(service="Waver"), "call 'hi -> Waver/greet[k1]'"),
        (call_entry(key="k2"), "call 'hi -> Greeter/greet[k2]'"),
        (call_entry(key=None), "call 'hi -> Greeter/greet'"),
        (call_entry(name=""), "call 'Greeter/greet[k1]'"),
        (Send(name="hi", service="Greeter", handler="greet", key="k1"), "send 'hi -> Greeter/greet[k1]'"),
    ],
)
async def test_call_mismatch_names_both_sides(
    make_endpoint: MakeEndpoint, proxy: FakeProxy, entry: Call | Send, recorded_as: str
) -> None:
    app = make_endpoint(caller([])).asgi()
    response = await invoke(app, "Caller", "generic", input="ann", journal=[recorded(entry)])
    assert isinstance(response, Retry)
    assert response.failure.code == 570
    assert response.failure.message == (
        f"journal mismatch at index 0: the journal recorded {recorded_as}, "
        "the code now asks for call 'hi -> Greeter/greet[k1]'"
    )
    assert proxy.received == []


async def test_send_mismatch(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    journal = [recorded(Send(name="now", service="Greeter", handler="wave", input=msgspec.Raw(b'"ann"')))]
    response = await invoke(make_endpoint(sender([])).asgi(), "Sender", "handler", journal=journal)
    assert isinstance(response, Retry)
    assert response.failure.message == (
        "journal mismatch at index 0: the journal recorded send 'now -> Greeter/wave', "
        "the code now asks for send 'now -> Greeter/greet'"
    )


def test_call_future_is_a_durable_future() -> None:
    assert issubclass(CallFuture, DurableFuture)


async def test_call_that_could_not_start_is_completed_in_the_ack(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    proxy.complete_in_ack[0] = completion(0, failure=Failure(code=404, message="no service 'Greeter'"))
    response = await invoke(make_endpoint(caller([])).asgi(), "Caller", "generic", input="ann")
    assert output(response) == "failed 404: no service 'Greeter'"
    assert proxy.awaits == []
