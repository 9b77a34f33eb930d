"""Cancellation: raised once at the next journaled action or await, journaled as a Cancel entry, replayed there."""

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import msgspec
import pytest

from handler_sdk import Context, InvocationCancelled, Service, TerminalError
from handler_sdk.protocol import (
    AppendRequest,
    AwaitResponse,
    Awakeable,
    Call,
    Cancel,
    Failed,
    Failure,
    Retry,
    Run,
    Select,
    Sleep,
    Suspended,
)

from .conftest import MakeEndpoint
from .fakes import FakeProxy, completion, invoke, output, recorded, recorded_run, replay_until_done

CANCELLED = Failed(failure=Failure(code=409, message="cancelled"))


def shop(ran: list[str], caught: list[TerminalError]) -> Service:
    service = Service("Shop")

    def step(name: str) -> str:
        ran.append(name)
        return name

    @service.handler()
    async def order(ctx: Context) -> str:
        try:
            await ctx.run("charge", step, "charge")
            await ctx.run("ship", step, "ship")
        except InvocationCancelled as exc:
            caught.append(exc)
            await ctx.run("refund", step, "refund")
            await ctx.run("notify", step, "notify")
            raise
        return "shipped"

    @service.handler()
    async def waits(ctx: Context) -> str:
        future = ctx.call("Other", "work")
        try:
            return str(await future)
        except InvocationCancelled:
            await ctx.run("undo", step, "undo")
            return "undone"

    return service


def names(proxy: FakeProxy) -> list[tuple[int, str]]:
    return [
        (append.index, type(entry).__name__.lower()) for append, entry in zip(proxy.appends, proxy.entries, strict=True)
    ]


async def test_cancelled_invocation_raises_at_its_first_action(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    ran: list[str] = []
    caught: list[TerminalError] = []
    response = await invoke(make_endpoint(shop(ran, caught)).asgi(), "Shop", "order", cancelled=True)
    assert response == CANCELLED
    assert ran == ["refund", "notify"]
    assert proxy.entries[0] == Cancel()
    assert names(proxy) == [(0, "cancel"), (1, "run"), (2, "run")]
    assert [(type(exc), exc.status_code, exc.message) for exc in caught] == [(InvocationCancelled, 409, "cancelled")]


async def test_cancellation_reported_in_an_ack(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    ran: list[str] = []

    async def cancel_after_first(append: AppendRequest) -> None:
        proxy.cancelled = True

    proxy.before_ack = cancel_after_first
    response = await invoke(make_endpoint(shop(ran, [])).asgi(), "Shop", "order")
    assert response == CANCELLED
    assert ran == ["charge", "refund", "notify"]
    assert names(proxy) == [(0, "run"), (1, "cancel"), (2, "run"), (3, "run")]


async def test_cancellation_reported_while_waiting(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    ran: list[str] = []
    proxy.await_script = [AwaitResponse(cancelled=True)]
    response = await invoke(make_endpoint(shop(ran, [])).asgi(), "Shop", "waits")
    assert output(response) == "undone"
    assert names(proxy) == [(0, "call"), (1, "cancel"), (2, "run")]
    assert proxy.entries[1] == Cancel(awaiting=[0])
    assert len(proxy.awaits) == 1


async def test_cancelled_while_suspended_raises_at_the_incomplete_await(
    make_endpoint: MakeEndpoint, proxy: FakeProxy
) -> None:
    ran: list[str] = []
    journal = [recorded(Call(service="Other", handler="work"))]
    response = await invoke(make_endpoint(shop(ran, [])).asgi(), "Shop", "waits", journal=journal, cancelled=True)
    assert output(response) == "undone"
    assert names(proxy) == [(1, "cancel"), (2, "run")]
    assert proxy.entries[0] == Cancel(awaiting=[0])
    assert proxy.awaits == []


async def test_a_complete_future_is_interrupted_by_a_pending_cancellation(
    make_endpoint: MakeEndpoint, proxy: FakeProxy
) -> None:
    ran: list[str] = []
    journal = [recorded(Call(service="Other", handler="work"))]
    app = make_endpoint(shop(ran, [])).asgi()
    response = await invoke(app, "Shop", "waits", journal=journal, completions=[completion(0, 5)], cancelled=True)
    assert output(response) == "undone"
    assert proxy.entries == [Cancel(awaiting=[0]), Run(name="undo", result=msgspec.Raw(b'"undo"'))]
    assert [append.index for append in proxy.appends] == [1, 2]
    assert proxy.awaits == []

    # The replay raises at the same await, although the future is complete again.
    full = [*journal, *proxy.journal]
    proxy.appends.clear()
    response = await invoke(app, "Shop", "waits", journal=full, completions=[completion(0, 5)], attempt=2)
    assert output(response) == "undone"
    assert proxy.appends == []
    assert ran == ["undo"]


async def test_a_completion_and_the_cancellation_arriving_together_raise_at_the_await(
    make_endpoint: MakeEndpoint, proxy: FakeProxy
) -> None:
    failure = Failure(code=409, message="cancelled")
    proxy.await_script = [AwaitResponse(completions=[completion(0, failure=failure)], cancelled=True)]
    response = await invoke(make_endpoint(shop([], [])).asgi(), "Shop", "waits")
    assert output(response) == "undone"  # the caller's own cancellation, not the callee's 409
    assert proxy.entries[:2] == [Call(service="Other", handler="work"), Cancel(awaiting=[0])]


def await_then_act() -> Service:
    """Awaits a call, then runs a step; reports where the cancellation was raised."""
    service = Service("S")

    @service.handler()
    async def handler(ctx: Context) -> str:
        future = ctx.call("Other", "work", type_hint=int)
        try:
            value = await future
        except InvocationCancelled:
            return "at the await"
        try:
            await ctx.run("next", lambda: 1)
        except InvocationCancelled:
            return f"at the step, after {value}"
        return "not cancelled"

    return service


async def test_a_cancel_of_a_new_action_is_not_raised_at_an_earlier_await(
    make_endpoint: MakeEndpoint, proxy: FakeProxy
) -> None:
    journal = [recorded(Call(service="Other", handler="work")), recorded(Cancel())]
    app = make_endpoint(await_then_act()).asgi()
    response = await invoke(app, "S", "handler", journal=journal, completions=[completion(0, 5)], cancelled=True)
    assert output(response) == "at the step, after 5"
    assert proxy.received == []


async def test_a_cancel_of_an_await_reached_by_a_new_action_is_a_mismatch(
    make_endpoint: MakeEndpoint, proxy: FakeProxy
) -> None:
    service = Service("S")

    @service.handler()
    async def handler(ctx: Context) -> int:
        ctx.call("Other", "work")
        return await ctx.run("next", lambda: 1)  # the code no longer awaits the call first

    journal = [recorded(Call(service="Other", handler="work")), recorded(Cancel(awaiting=[0]))]
    app = make_endpoint(service).asgi()
    response = await invoke(app, "S", "handler", journal=journal, completions=[completion(0, 5)], cancelled=True)
    assert isinstance(response, Retry)
    assert response.failure.code == 570
    assert response.failure.message == (
        "journal mismatch at index 1: the journal recorded cancel '', the code now asks for run 'next': "
        "the cancellation was raised at an await of journal indices [0]"
    )
    assert proxy.received == []


async def test_a_cancel_of_an_await_of_other_futures_is_not_raised_here(
    make_endpoint: MakeEndpoint, proxy: FakeProxy
) -> None:
    service = Service("S")

    @service.handler()
    async def handler(ctx: Context) -> str:
        first = ctx.call("Other", "work", type_hint=int)
        second = ctx.call("Other", "work", type_hint=int)
        values = [await first]  # when the first execution awaited this one, it knew of no cancellation
        try:
            values.append(await second)
        except InvocationCancelled:
            return f"cancelled at the second, after {values}"
        return "not cancelled"

    call = recorded(Call(service="Other", handler="work"))
    journal = [call, call, recorded(Cancel(awaiting=[1]))]
    completions = [completion(0, 1), completion(1, 2)]
    app = make_endpoint(service).asgi()
    response = await invoke(app, "S", "handler", journal=journal, completions=completions, cancelled=True)
    assert output(response) == "cancelled at the second, after [1]"
    assert proxy.received == []


async def test_gather_records_every_awaited_future(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    service = Service("S")

    @service.handler()
    async def handler(ctx: Context) -> str:
        first, second = ctx.call("Other", "work"), ctx.call("Other", "work")
        try:
            await ctx.gather(second, first, second)
        except InvocationCancelled:
            return "cancelled"
        return "gathered"

    call = recorded(Call(service="Other", handler="work"))
    app = make_endpoint(service).asgi()
    completions = [completion(0, 1), completion(1, 2)]
    response = await invoke(app, "S", "handler", journal=[call, call], completions=completions, cancelled=True)
    assert output(response) == "cancelled"
    assert proxy.entries == [Cancel(awaiting=[0, 1])]


async def test_a_replayed_select_does_not_raise_a_later_await_s_cancel(
    make_endpoint: MakeEndpoint, proxy: FakeProxy
) -> None:
    service = Service("S")

    @service.handler()
    async def handler(ctx: Context) -> str:
        _, promise = ctx.awakeable(type_hint=str)
        key, _ = await ctx.select(done=promise, timeout=ctx.timer(timedelta(days=1)))
        try:
            return str(await promise)
        except InvocationCancelled:
            return f"cancelled after {key}"

    journal = [
        recorded(Awakeable()),
        recorded(Sleep(wake_at_ms=0)),
        recorded(Select(winner=0)),
        recorded(Cancel(awaiting=[0])),
    ]
    app = make_endpoint(service).asgi()
    response = await invoke(app, "S", "handler", journal=journal, completions=[completion(0, "yes")], cancelled=True)
    assert output(response) == "cancelled after done"
    assert proxy.received == []


async def test_replay_raises_at_the_recorded_cancel(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    ran: list[str] = []
    caught: list[TerminalError] = []
    journal = [recorded_run("charge", "charge"), recorded(Cancel()), recorded_run("refund", "refund")]
    app = make_endpoint(shop(ran, caught)).asgi()
    response = await invoke(app, "Shop", "order", journal=journal, cancelled=True, attempt=2)
    assert response == CANCELLED
    # Raised where the journal says, once: "notify" is new and runs normally.
    assert len(caught) == 1
    assert ran == ["notify"]
    assert names(proxy) == [(3, "run")]


ACTIONS: dict[str, Callable[[Context], Awaitable[Any]]] = {
    "run": lambda ctx: ctx.run("step", lambda: 1),
    "sleep": lambda ctx: ctx.sleep(timedelta(days=1)),
    "timer": lambda ctx: ctx.timer(timedelta(days=1)),
    "call": lambda ctx: ctx.call("Other", "work"),
    "send": lambda ctx: ctx.send("Other", "work"),
    "awakeable": lambda ctx: ctx.awakeable()[1],
    "now": lambda ctx: ctx.now(),
}


@pytest.mark.parametrize("kind", sorted(ACTIONS))
async def test_replayed_cancel_wins_over_any_requested_kind(
    make_endpoint: MakeEndpoint, proxy: FakeProxy, kind: str
) -> None:
    service = Service("S")

    @service.handler()
    async def handler(ctx: Context) -> str:
        try:
            await ACTIONS[kind](ctx)
        except InvocationCancelled:
            return "cancelled"
        return "not cancelled"

    app = make_endpoint(service).asgi()
    response = await invoke(app, "S", "handler", journal=[recorded(Cancel())], cancelled=True)
    assert output(response) == "cancelled"
    assert proxy.received == []


async def test_replay_raises_at_an_incomplete_await_before_a_recorded_cancel(
    make_endpoint: MakeEndpoint, proxy: FakeProxy
) -> None:
    ran: list[str] = []
    journal = [recorded(Call(service="Other", handler="work")), recorded(Cancel(awaiting=[0]))]
    response = await invoke(make_endpoint(shop(ran, [])).asgi(), "Shop", "waits", journal=journal)
    assert output(response) == "undone"
    assert names(proxy) == [(2, "run")]
    assert ran == ["undo"]


async def test_methods_returning_futures_raise_at_once(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    service = Service("S")

    @service.handler()
    async def handler(ctx: Context) -> str:
        try:
            ctx.call("Other", "work")
        except InvocationCancelled:
            return "cancelled"
        return "called"

    response = await invoke(make_endpoint(service).asgi(), "S", "handler", cancelled=True)
    assert output(response) == "cancelled"
    assert proxy.entries == [Cancel()]  # committed before the attempt answered


async def test_select_journals_the_cancel_in_its_own_slot(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    service = Service("S")

    @service.handler()
    async def handler(ctx: Context) -> Any:
        _, promise = ctx.awakeable()
        try:
            return await ctx.select(done=promise, timeout=ctx.timer(timedelta(days=1)))
        except InvocationCancelled:
            return await ctx.run("cleanup", lambda: "cleaned")

    proxy.await_script = [AwaitResponse(cancelled=True)]
    app = make_endpoint(service).asgi()
    assert output(await invoke(app, "S", "handler")) == "cleaned"
    assert [type(entry) for entry in proxy.entries] == [Awakeable, Sleep, Cancel, Run]
    assert proxy.entries[2] == Cancel(awaiting=[0, 1])

    # On replay the select meets its Cancel entry, even though a future completed meanwhile.
    journal = proxy.journal
    proxy.appends.clear()
    response = await invoke(app, "S", "handler", journal=journal, completions=[completion(0, "late")], attempt=2)
    assert output(response) == "cleaned"
    assert proxy.appends == []
    assert Select not in [type(entry) for entry in proxy.entries]


async def test_a_select_meeting_the_cancel_of_another_await_is_a_mismatch(
    make_endpoint: MakeEndpoint, proxy: FakeProxy
) -> None:
    service = Service("S")

    @service.handler()
    async def handler(ctx: Context) -> Any:
        _, promise = ctx.awakeable()
        return await ctx.select("race", done=promise, timeout=ctx.timer(timedelta(days=1)))

    journal = [recorded(Awakeable()), recorded(Sleep(wake_at_ms=0)), recorded(Cancel(awaiting=[0]))]
    response = await invoke(make_endpoint(service).asgi(), "S", "handler", journal=journal, cancelled=True)
    assert isinstance(response, Retry)
    assert response.failure.code == 570
    assert response.failure.message == (
        "journal mismatch at index 2: the journal recorded cancel '', the code now asks for select 'race': "
        "the cancellation was raised at an await of journal indices [0]"
    )


async def test_handler_that_swallows_the_cancellation_completes(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    service = Service("S")

    @service.handler()
    async def handler(ctx: Context) -> str:
        try:
            await ctx.sleep(timedelta(seconds=1))
        except TerminalError as exc:
            return f"stopped {exc.status_code}"
        return "slept"

    assert output(await invoke(make_endpoint(service).asgi(), "S", "handler", cancelled=True)) == "stopped 409"
    assert proxy.entries == [Cancel()]


async def test_cancellation_under_always_replay(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    ran: list[str] = []
    caught: list[TerminalError] = []
    app = make_endpoint(shop(ran, caught), always_replay=True).asgi()
    responses = await replay_until_done(app, "Shop", "order", proxy, cancelled=True)
    assert responses == [Suspended(), Suspended(), Suspended(), CANCELLED]
    assert names(proxy) == [(0, "cancel"), (1, "run"), (2, "run")]
    assert ran == ["refund", "notify"]
    assert len(caught) == 3  # raised in every attempt, always at index 0


async def test_a_refused_cancel_append_ends_the_attempt(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    ran: list[str] = []
    proxy.script = [409]
    response = await invoke(make_endpoint(shop(ran, [])).asgi(), "Shop", "order", cancelled=True)
    assert isinstance(response, Retry)
    assert response.failure.code == 409
    assert proxy.appends == []
    assert ran == []  # the cancellation is raised only once its Cancel entry is committed


async def test_ending_before_a_recorded_cancel_is_a_mismatch(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    service = Service("S")

    @service.handler()
    async def handler(ctx: Context) -> int:
        return await ctx.run("one", lambda: 1)

    journal = [recorded_run("one", 1), recorded(Cancel())]
    response = await invoke(make_endpoint(service).asgi(), "S", "handler", journal=journal, cancelled=True)
    assert isinstance(response, Retry)
    assert response.failure.code == 570
    assert response.failure.message == (
        "journal mismatch at index 1: the journal recorded cancel '', "
        "the code now asks for the end of handler 'handler'"
    )
