"""``ctx.run``: journaling new steps, replaying recorded ones, failures and retries."""

import asyncio
import threading
from datetime import timedelta
from typing import Any

import msgspec
import pytest

from handler_sdk import Context, RunOptions, Service, StepInfo, TerminalError, current_step
from handler_sdk.protocol import INVOKE_CONTENT_TYPE, Completed, Failed, Failure, Retry, Run

from .conftest import MakeEndpoint
from .fakes import FakeProxy, invoke, recorded_run


class Payment(msgspec.Struct):
    id: str
    amount: int


def output(response: Any) -> Any:
    assert isinstance(response, Completed), response
    return msgspec.json.decode(response.output)


class Calls:
    """Counts how often each step function really ran."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def hit(self, name: str) -> None:
        self.counts[name] = self.counts.get(name, 0) + 1


def checkout_service(calls: Calls) -> Service:
    service = Service("Checkout")

    async def charge(amount: int) -> Payment:
        calls.hit("charge")
        return Payment(id="pay-1", amount=amount)

    def reserve(sku: str) -> str:
        calls.hit("reserve")
        return f"res-{sku}"

    async def notify(payment: Payment, reservation: str) -> bool:
        calls.hit("notify")
        return True

    @service.handler()
    async def checkout(ctx: Context, amount: int) -> dict[str, Any]:
        payment = await ctx.run("charge", charge, amount)
        reservation = await ctx.run("reserve", reserve, "sku-9")
        notified = await ctx.run("notify", notify, payment, reservation)
        return {"payment": payment, "reservation": reservation, "notified": notified}

    return service


async def test_fresh_run_appends_each_step_in_order(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    calls = Calls()
    app = make_endpoint(checkout_service(calls)).asgi()
    response = await invoke(app, "Checkout", "checkout", input=5, attempt=3, token="tok-3")
    assert output(response) == {"payment": {"id": "pay-1", "amount": 5}, "reservation": "res-sku-9", "notified": True}
    assert proxy.indices == [0, 1, 2]
    assert {(a.attempt, a.token) for a in proxy.appends} == {(3, "tok-3")}
    assert set(proxy.content_types) == {INVOKE_CONTENT_TYPE}
    entries = proxy.entries
    assert all(isinstance(entry, Run) for entry in entries)
    assert [entry.name for entry in entries] == ["charge", "reserve", "notify"]
    assert [msgspec.json.decode(entry.result) for entry in entries if isinstance(entry, Run)][:2] == [
        {"id": "pay-1", "amount": 5},
        "res-sku-9",
    ]
    assert calls.counts == {"charge": 1, "reserve": 1, "notify": 1}


async def test_full_replay_runs_nothing(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    calls = Calls()
    app = make_endpoint(checkout_service(calls)).asgi()
    journal = [
        recorded_run("charge", {"id": "pay-old", "amount": 7}),
        recorded_run("reserve", "res-old"),
        recorded_run("notify", True),
    ]
    response = await invoke(app, "Checkout", "checkout", input=5, journal=journal, attempt=2)
    assert output(response) == {"payment": {"id": "pay-old", "amount": 7}, "reservation": "res-old", "notified": True}
    assert calls.counts == {}
    assert proxy.received == []


async def test_partial_replay_runs_only_new_steps(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    calls = Calls()
    app = make_endpoint(checkout_service(calls)).asgi()
    journal = [recorded_run("charge", {"id": "pay-old", "amount": 7})]
    response = await invoke(app, "Checkout", "checkout", input=5, journal=journal, attempt=2, token="tok-2")
    assert output(response)["payment"] == {"id": "pay-old", "amount": 7}
    assert calls.counts == {"reserve": 1, "notify": 1}
    assert proxy.indices == [1, 2]
    assert {(a.attempt, a.token) for a in proxy.appends} == {(2, "tok-2")}


async def test_replayed_value_is_decoded_as_the_declared_type(make_endpoint: MakeEndpoint) -> None:
    service = Service("S")
    seen: list[Any] = []

    async def charge() -> Payment:
        raise AssertionError("replayed steps must not run")

    @service.handler()
    async def handler(ctx: Context) -> None:
        seen.append(await ctx.run("charge", charge))
        seen.append(await ctx.run("untyped", lambda: None))
        seen.append(await ctx.run("hinted", lambda: None, type_hint=Payment))

    payment = {"id": "p", "amount": 1}
    journal = [recorded_run("charge", payment), recorded_run("untyped", payment), recorded_run("hinted", payment)]
    await invoke(make_endpoint(service).asgi(), "S", "handler", journal=journal)
    assert seen == [Payment("p", 1), payment, Payment("p", 1)]


async def test_first_run_returns_what_a_replay_would(make_endpoint: MakeEndpoint) -> None:
    service = Service("S")
    seen: list[Any] = []

    def pair() -> Any:
        return ("a", 1)

    def typed() -> list[int]:
        return (1, 2)  # type: ignore[return-value]

    @service.handler()
    async def handler(ctx: Context) -> None:
        seen.append(await ctx.run("pair", pair))
        seen.append(await ctx.run("typed", typed))

    await invoke(make_endpoint(service).asgi(), "S", "handler")
    assert seen == [["a", 1], [1, 2]]


async def test_step_result_that_does_not_match_its_type_ends_the_attempt(
    make_endpoint: MakeEndpoint, proxy: FakeProxy
) -> None:
    service = Service("S")

    def lies() -> int:
        return "not an int"  # type: ignore[return-value]

    @service.handler()
    async def handler(ctx: Context) -> None:
        await ctx.run("lies", lies)

    response = await invoke(make_endpoint(service).asgi(), "S", "handler")
    assert isinstance(response, Retry)
    assert "step 'lies' returned a value that does not round-trip through JSON" in response.failure.message
    assert proxy.received == []


@pytest.mark.parametrize(
    ("journal", "index", "requested"),
    [
        ([recorded_run("send-email")], 0, "charge-payment"),
        ([recorded_run("charge-payment"), recorded_run("send-email")], 1, "create-order"),
    ],
)
async def test_name_mismatch_asks_for_a_retry_and_appends_nothing(
    make_endpoint: MakeEndpoint, proxy: FakeProxy, journal: list[msgspec.Raw], index: int, requested: str
) -> None:
    service = Service("S")
    ran: list[str] = []

    @service.handler()
    async def handler(ctx: Context) -> None:
        await ctx.run("charge-payment", lambda: ran.append("charge-payment"))
        await ctx.run("create-order", lambda: ran.append("create-order"))

    response = await invoke(make_endpoint(service).asgi(), "S", "handler", journal=journal)
    assert isinstance(response, Retry)
    assert response.failure.code == 570
    assert response.failure.message == (
        f"journal mismatch at index {index}: the journal recorded run 'send-email', "
        f"the code now asks for run '{requested}'"
    )
    assert proxy.received == []
    assert ran == []


async def test_mismatch_cannot_be_swallowed(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    service = Service("S")

    @service.handler()
    async def handler(ctx: Context) -> str:
        try:
            await ctx.run("create-order", lambda: 1)
        except BaseException:  # a careless handler; the attempt must still end
            pass
        await ctx.run("after", lambda: 2)
        return "done"

    response = await invoke(make_endpoint(service).asgi(), "S", "handler", journal=[recorded_run("charge")])
    assert isinstance(response, Retry)
    assert response.failure.code == 570
    assert proxy.received == []


async def test_handler_ending_before_its_journal_is_a_mismatch(make_endpoint: MakeEndpoint) -> None:
    service = Service("S")

    @service.handler()
    async def handler(ctx: Context) -> int:
        return await ctx.run("one", lambda: 1)

    journal = [recorded_run("one", 1), recorded_run("two", 2)]
    response = await invoke(make_endpoint(service).asgi(), "S", "handler", journal=journal)
    assert isinstance(response, Retry)
    assert response.failure.code == 570
    assert "index 1: the journal recorded run 'two'" in response.failure.message


async def test_undecodable_journal_entry_is_a_protocol_violation(make_endpoint: MakeEndpoint) -> None:
    service = Service("S")

    @service.handler()
    async def handler(ctx: Context) -> int:
        return await ctx.run("one", lambda: 1)

    response = await invoke(
        make_endpoint(service).asgi(), "S", "handler", journal=[msgspec.Raw(b'{"kind":"teleport"}')]
    )
    assert isinstance(response, Retry)
    assert response.failure.code == 571
    assert "journal entry 0 cannot be decoded" in response.failure.message


async def test_terminal_error_in_a_step_is_journaled_and_raised(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    service = Service("S")
    caught: list[TerminalError] = []

    class Declined(TerminalError):
        pass

    def charge() -> str:
        raise Declined("card declined", status_code=402)

    @service.handler()
    async def handler(ctx: Context) -> str:
        try:
            await ctx.run("charge", charge)
        except TerminalError as exc:
            caught.append(exc)
            raise
        return "unreachable"

    response = await invoke(make_endpoint(service).asgi(), "S", "handler")
    assert response == Failed(failure=Failure(code=402, message="card declined"))
    assert proxy.entries == [Run(name="charge", failure=Failure(code=402, message="card declined"))]
    assert [(exc.message, exc.status_code) for exc in caught] == [("card declined", 402)]


async def test_replayed_failure_raises_terminal_error(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    service = Service("S")
    runs = Calls()

    def charge() -> str:
        runs.hit("charge")
        return "never"

    @service.handler()
    async def handler(ctx: Context) -> str:
        try:
            await ctx.run("charge", charge)
        except TerminalError as exc:
            return f"compensated {exc.status_code}: {exc.message}"
        return "charged"

    journal = [recorded_run("charge", failure=Failure(code=402, message="card declined"))]
    response = await invoke(make_endpoint(service).asgi(), "S", "handler", journal=journal)
    assert output(response) == "compensated 402: card declined"
    assert runs.counts == {}
    assert proxy.received == []


async def test_default_options_end_the_attempt_without_appending(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    service = Service("S")
    runs = Calls()

    def flaky() -> None:
        runs.hit("flaky")
        raise ValueError("boom")

    @service.handler()
    async def handler(ctx: Context) -> None:
        await ctx.run("charge", flaky)
        runs.hit("after")

    response = await invoke(make_endpoint(service).asgi(), "S", "handler")
    assert isinstance(response, Retry)
    assert response.failure.code == 500
    assert response.failure.message == "step 'charge' failed: ValueError: boom"
    assert response.failure.stacktrace is not None
    assert 'raise ValueError("boom")' in response.failure.stacktrace
    assert runs.counts == {"flaky": 1}
    assert proxy.received == []


async def test_except_exception_does_not_swallow_a_failed_step(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    service = Service("S")
    swallowed: list[BaseException] = []

    def flaky() -> None:
        raise ValueError("boom")

    @service.handler()
    async def handler(ctx: Context) -> str:
        try:
            await ctx.run("charge", flaky)
        except Exception as exc:
            swallowed.append(exc)
        return "fine"

    response = await invoke(make_endpoint(service).asgi(), "S", "handler")
    assert isinstance(response, Retry)
    assert response.failure.message == "step 'charge' failed: ValueError: boom"
    assert swallowed == []


async def test_max_attempts_retries_then_journals_the_failure(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    service = Service("S")
    attempts: list[int] = []
    options = RunOptions(max_attempts=3, initial_interval=timedelta(milliseconds=1))

    def flaky() -> str:
        attempts.append(current_step().attempt)
        raise ValueError("boom")

    @service.handler()
    async def handler(ctx: Context) -> str:
        return await ctx.run("charge", flaky, options=options)

    response = await invoke(make_endpoint(service).asgi(), "S", "handler")
    message = "step 'charge' failed after 3 attempts: ValueError: boom"
    assert response == Failed(failure=Failure(code=500, message=message))
    assert attempts == [1, 2, 3]
    assert proxy.entries == [Run(name="charge", failure=Failure(code=500, message=message))]

    journal = [msgspec.Raw(proxy.appends[0].entry)]
    replayed = await invoke(make_endpoint(service).asgi(), "S", "handler", journal=journal, attempt=2)
    assert replayed == Failed(failure=Failure(code=500, message=message))
    assert attempts == [1, 2, 3]


async def test_max_attempts_succeeds_after_a_retry(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    service = Service("S")
    options = RunOptions(max_attempts=5, initial_interval=timedelta(milliseconds=1))

    def flaky() -> int:
        if current_step().attempt < 3:
            raise ConnectionError("try again")
        return current_step().attempt

    @service.handler()
    async def handler(ctx: Context) -> int:
        return await ctx.run("charge", flaky, options=options)

    assert output(await invoke(make_endpoint(service).asgi(), "S", "handler")) == 3
    assert len(proxy.entries) == 1


async def test_timeout_fails_the_step(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    service = Service("S")
    never = asyncio.Event()

    async def hangs() -> None:
        await never.wait()

    @service.handler()
    async def handler(ctx: Context) -> None:
        await ctx.run("hangs", hangs, options=RunOptions(timeout=timedelta(milliseconds=20)))

    response = await invoke(make_endpoint(service).asgi(), "S", "handler")
    assert isinstance(response, Retry)
    assert response.failure.message == "step 'hangs' failed: TimeoutError: timed out after 0.02s"
    assert proxy.received == []


async def test_timeout_with_max_attempts_is_journaled(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    service = Service("S")
    never = asyncio.Event()

    async def hangs() -> None:
        await never.wait()

    options = RunOptions(max_attempts=2, initial_interval=timedelta(milliseconds=1), timeout=timedelta(milliseconds=10))

    @service.handler()
    async def handler(ctx: Context) -> None:
        await ctx.run("hangs", hangs, options=options)

    response = await invoke(make_endpoint(service).asgi(), "S", "handler")
    assert isinstance(response, Failed)
    assert response.failure.message == "step 'hangs' failed after 2 attempts: TimeoutError: timed out after 0.01s"


async def test_sync_step_runs_in_a_worker_thread_and_knows_its_step(make_endpoint: MakeEndpoint) -> None:
    service = Service("S")
    loop_thread = threading.get_ident()
    seen: list[tuple[bool, StepInfo]] = []

    def sync_step() -> None:
        seen.append((threading.get_ident() != loop_thread, current_step()))

    async def async_step() -> None:
        seen.append((threading.get_ident() != loop_thread, current_step()))

    @service.handler()
    async def handler(ctx: Context) -> None:
        await ctx.run("sync", sync_step)
        await ctx.run("async", async_step)

    await invoke(make_endpoint(service).asgi(), "S", "handler", attempt=2)
    assert seen == [
        (True, StepInfo(invocation_id="inv-1", index=0, name="sync", attempt=1)),
        (False, StepInfo(invocation_id="inv-1", index=1, name="async", attempt=1)),
    ]


async def test_idempotency_key_is_stable_across_attempts(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    service = Service("S")
    keys: list[str] = []
    proxy.script = [200, 409]  # commit "first", then fence the attempt

    def remember() -> str:
        keys.append(current_step().idempotency_key)
        return keys[-1]

    @service.handler()
    async def handler(ctx: Context) -> None:
        await ctx.run("first", remember)
        await ctx.run("second", remember)

    app = make_endpoint(service).asgi()
    assert isinstance(await invoke(app, "S", "handler"), Retry)
    await invoke(app, "S", "handler", attempt=2, journal=[msgspec.Raw(proxy.appends[0].entry)])
    assert keys == ["inv-1:0", "inv-1:1", "inv-1:1"]


def test_current_step_outside_a_step() -> None:
    with pytest.raises(RuntimeError, match="outside of a step function"):
        current_step()


async def test_gathered_steps_append_in_index_order(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    service = Service("S")
    finished: list[str] = []
    second_done = asyncio.Event()

    async def slow() -> str:
        await second_done.wait()
        finished.append("slow")
        return "slow"

    async def fast() -> str:
        finished.append("fast")
        second_done.set()
        return "fast"

    @service.handler()
    async def handler(ctx: Context) -> list[str]:
        return list(await asyncio.gather(ctx.run("slow", slow), ctx.run("fast", fast)))

    response = await invoke(make_endpoint(service).asgi(), "S", "handler")
    assert output(response) == ["slow", "fast"]
    assert finished == ["fast", "slow"]
    assert [(a.index, entry.name) for a, entry in zip(proxy.appends, proxy.entries, strict=True)] == [
        (0, "slow"),
        (1, "fast"),
    ]


async def test_indices_are_taken_at_call_time(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    service = Service("S")

    @service.handler()
    async def handler(ctx: Context) -> list[str]:
        first = ctx.run("a", lambda: "a")
        second = ctx.run("b", lambda: "b")
        # Started in reverse order, yet "a" keeps index 0.
        b = asyncio.ensure_future(second)
        a = await first
        return [a, await b]

    response = await invoke(make_endpoint(service).asgi(), "S", "handler")
    assert output(response) == ["a", "b"]
    assert [(a.index, e.name) for a, e in zip(proxy.appends, proxy.entries, strict=True)] == [(0, "a"), (1, "b")]


async def test_gathered_failure_stops_later_appends(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    service = Service("S")
    first_may_fail = asyncio.Event()

    async def fails() -> None:
        await first_may_fail.wait()
        raise ValueError("boom")

    async def succeeds() -> str:
        first_may_fail.set()
        return "ok"

    @service.handler()
    async def handler(ctx: Context) -> None:
        await asyncio.gather(ctx.run("fails", fails), ctx.run("succeeds", succeeds))

    response = await invoke(make_endpoint(service).asgi(), "S", "handler")
    assert isinstance(response, Retry)
    assert response.failure.message == "step 'fails' failed: ValueError: boom"
    assert proxy.received == []


async def test_run_inside_a_step_is_refused(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    service = Service("S")
    errors: list[str] = []

    @service.handler()
    async def handler(ctx: Context) -> None:
        async def nested() -> None:
            try:
                await ctx.run("inner", lambda: 1)
            except RuntimeError as exc:
                errors.append(str(exc))
                raise

        await ctx.run("outer", nested)

    response = await invoke(make_endpoint(service).asgi(), "S", "handler")
    assert isinstance(response, Retry)
    assert "RuntimeError" in response.failure.message
    assert errors == [
        "ctx.run('inner') was called inside a step function; steps cannot be nested, "
        "call ctx.run from the handler itself"
    ]
    assert proxy.received == []


async def test_cancelled_step_stops_the_attempt(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    service = Service("S")
    never = asyncio.Event()

    async def hangs() -> None:
        await never.wait()

    @service.handler()
    async def handler(ctx: Context) -> str:
        try:
            await asyncio.wait_for(ctx.run("hangs", hangs), timeout=0.01)
        except TimeoutError:
            pass
        return await ctx.run("next", lambda: "next")

    response = await invoke(make_endpoint(service).asgi(), "S", "handler")
    assert isinstance(response, Retry)
    assert "step 'hangs' (journal index 0) ended before its outcome was journaled" in response.failure.message
    assert proxy.received == []


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"max_attempts": 0}, "max_attempts"),
        ({"backoff_factor": 0.5}, "backoff_factor"),
        ({"initial_interval": timedelta(0)}, "initial_interval"),
        ({"max_interval": timedelta(seconds=-1)}, "max_interval"),
        ({"timeout": timedelta(0)}, "timeout"),
    ],
)
def test_run_options_are_validated(kwargs: dict[str, Any], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        RunOptions(**kwargs)


def test_backoff_grows_and_is_capped() -> None:
    options = RunOptions(initial_interval=timedelta(seconds=1), backoff_factor=3, max_interval=timedelta(seconds=5))
    assert [options.backoff(n) for n in range(4)] == [1, 3, 5, 5]


async def test_task_group_failures_are_unwrapped(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    service = Service("S")

    def declined() -> None:
        raise TerminalError("declined", status_code=402)

    def flaky() -> None:
        raise ValueError("boom")

    @service.handler()
    async def terminal(ctx: Context) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(ctx.run("declined", declined))

    @service.handler()
    async def transient(ctx: Context) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(ctx.run("flaky", flaky))

    app = make_endpoint(service).asgi()
    assert await invoke(app, "S", "terminal") == Failed(failure=Failure(code=402, message="declined"))
    response = await invoke(app, "S", "transient")
    assert isinstance(response, Retry)
    assert response.failure.message == "step 'flaky' failed: ValueError: boom"
