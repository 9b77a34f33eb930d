"""Deterministic helpers (random, uuid4, now) and the always-replay test mode."""

import asyncio
import itertools
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from handler_sdk import Context, Service
from handler_sdk.protocol import Call, Now, Retry, Run, Send, Sleep, Suspended

from .conftest import MakeEndpoint
from .fakes import START_MS, FakeProxy, ManualClock, completion, invoke, output, recorded, replay_until_done


def dice() -> Service:
    service = Service("Dice")

    @service.handler()
    async def handler(ctx: Context) -> list[Any]:
        rng = ctx.random()
        assert ctx.random() is rng
        return [rng.randint(1, 6) for _ in range(5)] + [str(ctx.uuid4()), str(ctx.uuid4())]

    return service


async def test_random_and_uuid_repeat_with_the_same_seed(make_endpoint: MakeEndpoint) -> None:
    app = make_endpoint(dice()).asgi()
    first = output(await invoke(app, "Dice", "handler", random_seed=42))
    again = output(await invoke(app, "Dice", "handler", random_seed=42, attempt=2))
    other = output(await invoke(app, "Dice", "handler", random_seed=43))
    assert first == again
    assert first != other
    ids = [uuid.UUID(value) for value in first[5:]]
    assert [u.version for u in ids] == [4, 4]
    assert all(u.variant == uuid.RFC_4122 for u in ids)
    assert ids[0] != ids[1]


def clock_reader(readings: list[datetime]) -> Service:
    service = Service("Clock")

    @service.handler()
    async def handler(ctx: Context) -> str:
        readings.append(await ctx.now(name="start"))
        await ctx.run("work", lambda: None)
        return (await ctx.now()).isoformat()

    return service


async def test_now_is_journaled_and_replayed(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    readings: list[datetime] = []
    clock = ManualClock(START_MS + 250)
    app = make_endpoint(clock_reader(readings), clock=clock).asgi()
    first = output(await invoke(app, "Clock", "handler"))
    assert proxy.entries[0] == Now(name="start", now_ms=START_MS + 250)
    assert proxy.entries[2] == Now(now_ms=START_MS + 250)
    assert readings == [datetime.fromtimestamp((START_MS + 250) / 1000, tz=UTC)]
    assert readings[0].tzinfo is UTC
    assert first == readings[0].isoformat()

    clock.now += 3_600_000
    journal = proxy.journal[:1]
    proxy.appends.clear()
    later = output(await invoke(app, "Clock", "handler", journal=journal, attempt=2))
    assert readings[1] == readings[0]
    assert later == datetime.fromtimestamp((START_MS + 3_600_250) / 1000, tz=UTC).isoformat()
    assert proxy.indices == [1, 2]


async def test_now_mismatch(make_endpoint: MakeEndpoint) -> None:
    app = make_endpoint(clock_reader([])).asgi()
    response = await invoke(app, "Clock", "handler", journal=[recorded(Now(name="begin", now_ms=1))])
    assert isinstance(response, Retry)
    assert "the journal recorded now 'begin', the code now asks for now 'start'" in response.failure.message


def workflow(ran: list[str]) -> Service:
    service = Service("Flow")

    def step(name: str) -> str:
        ran.append(name)
        return name

    @service.handler()
    async def handler(ctx: Context) -> list[Any]:
        a = await ctx.run("a", step, "a")
        await ctx.sleep(timedelta(hours=1))
        result = await ctx.call("Other", "work", a)
        sent = await ctx.send("Other", "notify", result)
        b = await ctx.run("b", step, "b")
        return [a, result, sent[:4], b, ctx.uuid4().version]

    return service


async def test_always_replay_suspends_after_every_new_entry(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    ran: list[str] = []
    app = make_endpoint(workflow(ran), always_replay=True).asgi()
    responses = await replay_until_done(
        app, "Flow", "handler", proxy, completions=[completion(1), completion(2, "worked")], random_seed=7
    )
    assert [type(entry) for entry in proxy.entries] == [Run, Sleep, Call, Send, Run]
    assert responses[:-1] == [
        Suspended(),  # after run a
        Suspended(),  # after the sleep entry
        Suspended(),  # after the call entry: the call needs no wait, its completion is there
        Suspended(),  # after the send
        Suspended(),  # after run b
    ]
    assert output(responses[-1]) == ["a", "worked", "inv_", "b", 4]
    assert ran == ["a", "b"]


async def test_always_replay_never_waits_in_process(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    ran: list[str] = []
    app = make_endpoint(workflow(ran), always_replay=True, suspend_after=timedelta(seconds=5)).asgi()
    responses = await replay_until_done(app, "Flow", "handler", proxy)
    assert responses[-2:] == [Suspended(), Suspended(waiting_on=[1])]
    assert proxy.awaits == []


async def test_always_replay_catches_a_nondeterministic_handler(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    service = Service("S")
    counter = itertools.count()

    @service.handler()
    async def handler(ctx: Context) -> None:
        await ctx.run(f"step-{next(counter)}", lambda: None)  # differs on every execution
        await ctx.run("next", lambda: None)

    responses = await replay_until_done(make_endpoint(service, always_replay=True).asgi(), "S", "handler", proxy)
    assert responses[0] == Suspended()
    assert isinstance(responses[1], Retry)
    assert responses[1].failure.code == 570


async def test_always_replay_runs_each_step_once_even_behind_a_background_append(
    make_endpoint: MakeEndpoint, proxy: FakeProxy
) -> None:
    service = Service("S")
    ran: list[str] = []

    def step(name: str) -> str:
        ran.append(name)
        return name

    @service.handler()
    async def handler(ctx: Context) -> list[str]:
        _, promise = ctx.awakeable()  # appended in the background
        await ctx.run("publish", step, "publish")
        both = await asyncio.gather(ctx.run("a", step, "a"), ctx.run("b", step, "b"))
        return [*both, await promise]

    app = make_endpoint(service, always_replay=True).asgi()
    responses = await replay_until_done(app, "S", "handler", proxy, completions=[completion(0, "resolved")])
    assert output(responses[-1]) == ["a", "b", "resolved"]
    assert ran == ["publish", "a", "b"]
    assert proxy.indices == [0, 1, 2, 3]
