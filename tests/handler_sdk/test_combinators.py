"""``ctx.select`` and ``ctx.gather``: deterministic winners, suspension on all, replay."""

from datetime import timedelta
from typing import Any

import pytest

from handler_sdk import Context, DurableFuture, Service, TerminalError
from handler_sdk.protocol import (
    AwaitResponse,
    Awakeable,
    Call,
    Failed,
    Failure,
    Retry,
    Select,
    Sleep,
    Suspended,
)

from .conftest import MakeEndpoint
from .fakes import START_MS, FakeProxy, completion, invoke, output, recorded

DAY_MS = 86_400_000


def racer() -> Service:
    service = Service("Race")

    @service.handler()
    async def handler(ctx: Context) -> list[Any]:
        call = ctx.call("Other", "work", type_hint=int)
        _, promise = ctx.awakeable(str)
        timer = ctx.timer(timedelta(days=1))
        key, value = await ctx.select("race", work=call, promise=promise, timeout=timer)
        return [key, value]

    @service.handler()
    async def approval(ctx: Context) -> str:
        _, promise = ctx.awakeable(bool)
        key, approved = await ctx.select(approved=promise, timeout=ctx.timer(timedelta(days=7)))
        return "timed out" if key == "timeout" else f"approved={approved}"

    @service.handler()
    async def all_of(ctx: Context) -> list[Any]:
        call = ctx.call("Other", "work", type_hint=int)
        _, promise = ctx.awakeable(str)
        return await ctx.gather(call, promise)

    return service


RACE_JOURNAL = [
    recorded(Call(service="Other", handler="work")),
    recorded(Awakeable()),
    recorded(Sleep(wake_at_ms=START_MS + DAY_MS)),
]


async def test_select_picks_the_lowest_complete_index_and_journals_it(
    make_endpoint: MakeEndpoint, proxy: FakeProxy
) -> None:
    app = make_endpoint(racer()).asgi()
    done = [completion(2), completion(1, "yes")]
    response = await invoke(app, "Race", "handler", journal=RACE_JOURNAL, completions=done)
    assert output(response) == ["promise", "yes"]
    assert proxy.entries == [Select(name="race", winner=1)]
    assert proxy.indices == [3]
    assert proxy.awaits == []


async def test_replay_obeys_the_recorded_winner(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    app = make_endpoint(racer()).asgi()
    journal = [*RACE_JOURNAL, recorded(Select(name="race", winner=2))]
    everything = [completion(0, 5), completion(1, "yes"), completion(2)]
    response = await invoke(app, "Race", "handler", journal=journal, completions=everything)
    assert output(response) == ["timeout", None]
    assert proxy.received == []


async def test_select_with_nothing_complete_waits_then_suspends_on_all(
    make_endpoint: MakeEndpoint, proxy: FakeProxy
) -> None:
    app = make_endpoint(racer()).asgi()
    assert await invoke(app, "Race", "handler") == Suspended(waiting_on=[0, 1, 2])
    assert [a.indices for a in proxy.awaits] == [[0, 1, 2]]
    assert proxy.indices == [0, 1, 2]


async def test_select_completed_during_the_brief_wait(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    proxy.await_script = [AwaitResponse(completions=[completion(0, True)])]
    response = await invoke(make_endpoint(racer()).asgi(), "Race", "approval")
    assert output(response) == "approved=True"
    assert proxy.entries[2] == Select(winner=0)


async def test_only_far_timers_suspend_at_once(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    service = Service("S")

    @service.handler()
    async def handler(ctx: Context) -> str:
        key, _ = await ctx.select(soon=ctx.timer(timedelta(hours=1)), late=ctx.timer(timedelta(hours=2)))
        return key

    app = make_endpoint(service).asgi()
    assert await invoke(app, "S", "handler") == Suspended(waiting_on=[0, 1])
    assert proxy.awaits == []
    response = await invoke(app, "S", "handler", journal=proxy.journal, completions=[completion(0)])
    assert output(response) == "soon"


async def test_failed_winner_raises_after_it_is_journaled(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    app = make_endpoint(racer()).asgi()
    failed = completion(0, failure=Failure(code=503, message="worker gone"))
    response = await invoke(app, "Race", "handler", journal=RACE_JOURNAL, completions=[failed])
    assert response == Failed(failure=Failure(code=503, message="worker gone"))
    assert proxy.entries == [Select(name="race", winner=0)]


async def test_recorded_winner_that_is_not_raced_is_a_mismatch(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    app = make_endpoint(racer()).asgi()
    journal = [*RACE_JOURNAL, recorded(Select(name="race", winner=7))]
    response = await invoke(app, "Race", "handler", journal=journal)
    assert isinstance(response, Retry)
    assert response.failure.code == 570
    assert response.failure.message == (
        "journal mismatch at index 3: the journal recorded select 'race', the code now asks for select 'race': "
        "the recorded winner, journal index 7, is not one of [0, 1, 2]"
    )


async def test_select_name_mismatch(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    app = make_endpoint(racer()).asgi()
    journal = [*RACE_JOURNAL, recorded(Select(name="other", winner=0))]
    response = await invoke(app, "Race", "handler", journal=journal)
    assert isinstance(response, Retry)
    assert "the journal recorded select 'other', the code now asks for select 'race'" in response.failure.message


async def test_select_refuses_what_it_cannot_race(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    service = Service("S")
    errors: list[str] = []

    async def coroutine() -> None:
        pass

    @service.handler()
    async def handler(ctx: Context) -> None:
        with pytest.raises(ValueError) as info:
            _ = ctx.select()
        errors.append(str(info.value))
        pending = coroutine()
        with pytest.raises(TypeError) as type_info:
            _ = ctx.select(a=pending)  # type: ignore[arg-type]
        await pending
        errors.append(str(type_info.value))
        with pytest.raises(TypeError):
            _ = ctx.gather(42)  # type: ignore[arg-type]

    assert output(await invoke(make_endpoint(service).asgi(), "S", "handler")) is None
    assert errors[0] == "ctx.select needs at least one future"
    assert errors[1].startswith("ctx.select takes durable futures")
    assert proxy.received == []


async def test_gather_returns_all_results(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    app = make_endpoint(racer()).asgi()
    journal = RACE_JOURNAL[:2]
    response = await invoke(app, "Race", "all_of", journal=journal, completions=[completion(1, "b"), completion(0, 1)])
    assert output(response) == [1, "b"]
    assert proxy.received == []


async def test_gather_suspends_on_what_is_missing(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    app = make_endpoint(racer()).asgi()
    proxy.await_script = [AwaitResponse(completions=[completion(1, "b")])]
    assert await invoke(app, "Race", "all_of", journal=RACE_JOURNAL[:2]) == Suspended(waiting_on=[0])
    assert [a.indices for a in proxy.awaits] == [[0, 1], [0]]


async def test_gather_raises_the_first_failure_in_order(make_endpoint: MakeEndpoint) -> None:
    app = make_endpoint(racer()).asgi()
    failures = [
        completion(1, failure=Failure(code=400, message="second")),
        completion(0, failure=Failure(code=409, message="first")),
    ]
    response = await invoke(app, "Race", "all_of", journal=RACE_JOURNAL[:2], completions=failures)
    assert response == Failed(failure=Failure(code=409, message="first"))


async def test_gather_of_nothing(make_endpoint: MakeEndpoint) -> None:
    service = Service("S")

    @service.handler()
    async def handler(ctx: Context) -> list[Any]:
        return await ctx.gather()

    assert output(await invoke(make_endpoint(service).asgi(), "S", "handler")) == []


async def test_futures_can_be_awaited_again(make_endpoint: MakeEndpoint) -> None:
    service = Service("S")

    @service.handler()
    async def handler(ctx: Context) -> list[Any]:
        future: DurableFuture[int] = ctx.call("Other", "work", type_hint=int)
        key, first = await ctx.select(only=future)
        try:
            await ctx.gather(future, future)
        except TerminalError:
            pass
        return [key, first, await future]

    response = await invoke(make_endpoint(service).asgi(), "S", "handler", completions=[completion(0, 3)])
    assert output(response) == ["only", 3, 3]
