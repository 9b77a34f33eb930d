"""Durable sleeps and timers: journaling, suspending, waiting briefly, replay."""

import time
from datetime import datetime, timedelta, timezone

import msgspec
import pytest

from handler_sdk import Clock, Context, Endpoint, Service, SystemClock
from handler_sdk.protocol import AwaitRequest, AwaitResponse, Completed, Retry, Run, Sleep, Suspended

from .conftest import MakeEndpoint
from .fakes import START_MS, FakeProxy, ManualClock, completion, invoke, output, recorded, recorded_run

HOUR_MS = 3_600_000


def napper(delta: timedelta, after: list[str]) -> Service:
    service = Service("S")

    @service.handler()
    async def handler(ctx: Context) -> str:
        await ctx.sleep(delta, name="nap")
        after.append("woke")
        return await ctx.run("after", lambda: "done")

    return service


async def test_new_sleep_is_journaled_from_the_clock_and_a_long_one_suspends_at_once(
    make_endpoint: MakeEndpoint, proxy: FakeProxy
) -> None:
    after: list[str] = []
    app = make_endpoint(napper(timedelta(hours=1), after), clock=ManualClock(START_MS)).asgi()
    response = await invoke(app, "S", "handler")
    assert response == Suspended(waiting_on=[0])
    assert proxy.entries == [Sleep(name="nap", wake_at_ms=START_MS + HOUR_MS)]
    assert proxy.awaits == []
    assert after == []


async def test_completed_sleep_goes_on_without_waiting(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    after: list[str] = []
    app = make_endpoint(napper(timedelta(hours=1), after), clock=ManualClock(START_MS + 5)).asgi()
    journal = [recorded(Sleep(name="nap", wake_at_ms=START_MS + HOUR_MS))]
    response = await invoke(app, "S", "handler", journal=journal, completions=[completion(0)])
    assert output(response) == "done"
    assert after == ["woke"]
    assert [(e.name, type(e)) for e in proxy.entries] == [("after", Run)]
    assert proxy.awaits == []


async def test_replayed_sleep_keeps_its_recorded_wake_up_time(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    # Replayed later, when an hour from now would be much later: the recorded time still decides.
    clock = ManualClock(START_MS + 10 * HOUR_MS)
    app = make_endpoint(napper(timedelta(hours=1), []), clock=clock, suspend_after=timedelta(seconds=1)).asgi()
    journal = [recorded(Sleep(name="nap", wake_at_ms=START_MS + HOUR_MS))]
    response = await invoke(app, "S", "handler", journal=journal)
    # Already due, not yet completed by the proxy: worth a brief wait before suspending.
    assert response == Suspended(waiting_on=[0])
    assert proxy.appends == []
    assert [(a.indices, a.timeout_ms) for a in proxy.awaits] == [([0], 1000)]


async def test_short_sleep_waits_in_process(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    after: list[str] = []
    proxy.await_script = [AwaitResponse(completions=[completion(0)])]
    endpoint = make_endpoint(napper(timedelta(milliseconds=500), after), suspend_after=timedelta(seconds=2))
    response = await invoke(endpoint.asgi(), "S", "handler", attempt=3, token="tok-3")
    assert output(response) == "done"
    assert proxy.awaits == [AwaitRequest(attempt=3, token="tok-3", indices=[0], timeout_ms=2000)]
    assert proxy.indices == [0, 1]
    assert after == ["woke"]


async def test_short_sleep_suspends_when_the_wait_times_out(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    app = make_endpoint(napper(timedelta(milliseconds=500), []), suspend_after=timedelta(seconds=1)).asgi()
    assert await invoke(app, "S", "handler") == Suspended(waiting_on=[0])
    assert len(proxy.awaits) == 1


async def test_suspend_after_zero_never_waits(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    app = make_endpoint(napper(timedelta(0), []), suspend_after=timedelta(0)).asgi()
    assert await invoke(app, "S", "handler") == Suspended(waiting_on=[0])
    assert proxy.awaits == []


@pytest.mark.parametrize("status", [500, 503])
async def test_an_unavailable_proxy_makes_the_wait_suspend(
    make_endpoint: MakeEndpoint, proxy: FakeProxy, status: int
) -> None:
    proxy.await_script = [status]
    app = make_endpoint(napper(timedelta(0), [])).asgi()
    assert await invoke(app, "S", "handler") == Suspended(waiting_on=[0])


async def test_a_refused_wait_fences_the_attempt(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    proxy.await_script = [409]
    app = make_endpoint(napper(timedelta(0), [])).asgi()
    response = await invoke(app, "S", "handler")
    assert isinstance(response, Retry)
    assert response.failure.code == 409
    assert "the proxy refused the wait (HTTP 409)" in response.failure.message


async def test_sleep_until_journals_the_given_time(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    service = Service("S")
    when = datetime(2031, 1, 2, 3, 4, 5, 678000, tzinfo=timezone(timedelta(hours=2)))

    @service.handler()
    async def handler(ctx: Context) -> None:
        await ctx.sleep_until(when)

    assert await invoke(make_endpoint(service).asgi(), "S", "handler") == Suspended(waiting_on=[0])
    assert proxy.entries == [Sleep(wake_at_ms=int(when.timestamp() * 1000))]


async def test_bad_durations_are_refused_before_taking_an_index(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    service = Service("S")
    errors: list[str] = []

    @service.handler()
    async def handler(ctx: Context) -> str:
        for bad in (
            lambda: ctx.sleep_until(datetime(2031, 1, 1)),
            lambda: ctx.sleep(timedelta(seconds=-1)),
            lambda: ctx.timer(timedelta(seconds=-1)),
            lambda: ctx.timer_until(datetime(2031, 1, 1)),
        ):
            with pytest.raises(ValueError) as info:
                bad()
            errors.append(str(info.value))
        return await ctx.run("first", lambda: "index 0")

    response = await invoke(make_endpoint(service).asgi(), "S", "handler")
    assert output(response) == "index 0"
    assert "naive datetime" in errors[0]
    assert "must not be negative" in errors[1]
    assert proxy.indices == [0]


@pytest.mark.parametrize(
    ("journal", "message"),
    [
        (
            [recorded_run("nap")],
            "journal mismatch at index 0: the journal recorded run 'nap', the code now asks for sleep 'nap'",
        ),
        (
            [recorded(Sleep(name="siesta", wake_at_ms=START_MS))],
            "journal mismatch at index 0: the journal recorded sleep 'siesta', the code now asks for sleep 'nap'",
        ),
    ],
)
async def test_sleep_mismatch(
    make_endpoint: MakeEndpoint, proxy: FakeProxy, journal: list[msgspec.Raw], message: str
) -> None:
    app = make_endpoint(napper(timedelta(hours=1), [])).asgi()
    response = await invoke(app, "S", "handler", journal=journal)
    assert isinstance(response, Retry)
    assert response.failure.code == 570
    assert response.failure.message == message
    assert proxy.received == []


async def test_timer_is_a_future(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    service = Service("S")
    seen: list[object] = []

    @service.handler()
    async def handler(ctx: Context) -> None:
        timer = ctx.timer(timedelta(minutes=1), name="t")
        seen.append((timer.index, timer.done()))
        await timer
        seen.append("woke")

    clock = ManualClock()
    app = make_endpoint(service, clock=clock).asgi()
    assert await invoke(app, "S", "handler") == Suspended(waiting_on=[0])
    assert proxy.entries == [Sleep(name="t", wake_at_ms=START_MS + 60_000)]
    clock.now += 120_000
    response = await invoke(app, "S", "handler", journal=proxy.journal, completions=[completion(0)])
    assert isinstance(response, Completed)
    assert seen == [(0, False), (0, True), "woke"]


async def test_sleep_is_refused_inside_a_step(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    service = Service("S")

    @service.handler()
    async def handler(ctx: Context) -> None:
        async def nested() -> None:
            await ctx.sleep(timedelta(seconds=1))

        await ctx.run("outer", nested)

    response = await invoke(make_endpoint(service).asgi(), "S", "handler")
    assert isinstance(response, Retry)
    assert "ctx.sleep was called inside a step function" in response.failure.message


def test_endpoint_refuses_a_negative_suspend_after(make_endpoint: MakeEndpoint) -> None:
    with pytest.raises(ValueError, match="suspend_after"):
        make_endpoint(Service("S"), suspend_after=timedelta(seconds=-1))


async def test_the_system_clock_is_the_default(proxy: FakeProxy) -> None:
    endpoint = Endpoint([napper(timedelta(hours=1), [])], callback_transport=proxy.transport)
    before = SystemClock().now_ms()
    assert await invoke(endpoint.asgi(), "S", "handler") == Suspended(waiting_on=[0])
    after = SystemClock().now_ms()
    entry = proxy.entries[0]
    assert isinstance(entry, Sleep)
    assert before + HOUR_MS <= entry.wake_at_ms <= after + HOUR_MS
    assert abs(SystemClock().now_ms() - time.time() * 1000) < 1000
    assert isinstance(ManualClock(), Clock)
    await endpoint.aclose()


async def test_suspension_cannot_be_swallowed(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    service = Service("S")

    @service.handler()
    async def handler(ctx: Context) -> str:
        try:
            await ctx.sleep(timedelta(days=1))
        except BaseException:  # a careless handler; the attempt must still suspend
            pass
        return "too early"

    assert await invoke(make_endpoint(service).asgi(), "S", "handler") == Suspended(waiting_on=[0])
