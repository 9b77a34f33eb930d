"""Workflows: one main handler, shared handlers, and durable promises completed at once or later."""

from datetime import timedelta
from typing import Any

import msgspec
import pytest

from handler_sdk import (
    DurableFuture,
    DurablePromise,
    Endpoint,
    ObjectSharedContext,
    TerminalError,
    Workflow,
    WorkflowContext,
    WorkflowSharedContext,
)
from handler_sdk.protocol import (
    AwaitResponse,
    CompletePromise,
    Failed,
    Failure,
    GetPromise,
    GetState,
    PeekPromise,
    Retry,
    Select,
    SetState,
    Sleep,
    Suspended,
)

from .conftest import MakeEndpoint
from .fakes import START_MS, FakeProxy, completion, invoke, output, recorded, replay_until_done

Raw = msgspec.Raw
DAY_MS = 86_400_000


def approval() -> Workflow:
    flow = Workflow("Approval")

    @flow.main()
    async def start(ctx: WorkflowContext, amount: int) -> str:
        ctx.set("status", "waiting")
        key, decision = await ctx.select(
            decision=ctx.promise("approval-decision", type_hint=bool).value(),
            timeout=ctx.timer(timedelta(days=7)),
        )
        outcome = "timed out" if key == "timeout" else ("approved" if decision else "denied")
        ctx.set("status", outcome)
        return f"{amount}: {outcome}"

    @flow.handler()
    async def decide(ctx: WorkflowSharedContext, approved: bool) -> str:
        try:
            await ctx.promise("approval-decision").resolve(approved)
        except TerminalError as exc:
            return f"{exc.status_code}: {exc.message}"
        return "decided"

    @flow.handler()
    async def refuse(ctx: WorkflowSharedContext, reason: str) -> None:
        await ctx.promise("approval-decision").reject(reason)

    @flow.handler()
    async def status(ctx: WorkflowSharedContext) -> Any:
        return [await ctx.get("status"), await ctx.promise("approval-decision", type_hint=bool).peek()]

    @flow.handler()
    async def wait(ctx: WorkflowSharedContext) -> bool:
        promise: DurablePromise[bool] = ctx.promise("approval-decision", type_hint=bool)
        return await promise

    return flow


# ---------------------------------------------------------------------- registration


def test_main_is_named_run_and_the_others_are_shared() -> None:
    flow = approval()
    assert flow.kind == "workflow"
    assert {name: h.kind for name, h in flow.handlers.items()} == {
        "run": "workflow",
        "decide": "shared",
        "refuse": "shared",
        "status": "shared",
        "wait": "shared",
    }
    assert flow.main_handler is flow.handlers["run"]


def test_a_workflow_has_one_main_handler() -> None:
    flow = approval()

    async def again(ctx: WorkflowContext) -> None:
        pass

    with pytest.raises(ValueError, match="workflow 'Approval' already has a handler named 'run'"):
        flow.main()(again)

    async def run(ctx: WorkflowSharedContext) -> None:
        pass

    with pytest.raises(ValueError, match="'run' is the name of the main handler of a workflow"):
        Workflow("W").handler()(run)


def test_an_endpoint_refuses_a_workflow_without_main() -> None:
    flow = Workflow("W")

    @flow.handler()
    async def signal(ctx: WorkflowSharedContext) -> None:
        pass

    with pytest.raises(ValueError, match=r"workflow 'W' has no main handler: register one with @workflow.main\(\)"):
        Endpoint([flow])


def test_shared_workflow_handlers_get_a_shared_context() -> None:
    async def writes(ctx: WorkflowContext) -> None:
        pass

    async def reads(ctx: ObjectSharedContext) -> None:
        pass

    flow = Workflow("W")
    flow.handler()(reads)
    with pytest.raises(TypeError, match="is called with a WorkflowSharedContext, but its first parameter is annotated"):
        flow.handler(name="w")(writes)
    assert not hasattr(WorkflowSharedContext, "set")
    assert issubclass(WorkflowContext, WorkflowSharedContext)


# ---------------------------------------------------------------------- resolve and reject


async def test_resolve_is_completed_in_the_ack(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    app = make_endpoint(approval()).asgi()
    response = await invoke(app, "Approval", "decide", input=True, key="exp-1")
    assert output(response) == "decided"
    assert proxy.entries == [CompletePromise(name="approval-decision", value=Raw(b"true"))]
    assert proxy.awaits == []
    assert proxy.promises["approval-decision"].result == Raw(b"true")


async def test_resolving_a_completed_promise_raises(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    app = make_endpoint(approval()).asgi()
    proxy.resolve_promise("approval-decision", False)
    response = await invoke(app, "Approval", "decide", input=True, key="exp-1")
    assert output(response) == "409: promise 'approval-decision' is already completed"
    assert proxy.awaits == []


async def test_reject(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    app = make_endpoint(approval()).asgi()
    assert output(await invoke(app, "Approval", "refuse", input="over budget", key="exp-1")) is None
    assert proxy.entries == [CompletePromise(name="approval-decision", failure=Failure(message="over budget"))]
    response = await invoke(app, "Approval", "refuse", input="again", key="exp-1")
    assert response == Failed(failure=Failure(code=409, message="promise 'approval-decision' is already completed"))


async def test_replayed_resolve_is_not_appended_again(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    app = make_endpoint(approval()).asgi()
    journal = [recorded(CompletePromise(name="approval-decision", value=Raw(b"true")))]
    response = await invoke(
        app, "Approval", "decide", input=True, key="exp-1", journal=journal, completions=[completion(0)]
    )
    assert output(response) == "decided"
    assert proxy.received == []


async def test_replaying_a_resolve_as_a_reject_is_a_mismatch(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    app = make_endpoint(approval()).asgi()
    journal = [recorded(CompletePromise(name="approval-decision", value=Raw(b"true")))]
    response = await invoke(app, "Approval", "refuse", input="no", key="exp-1", journal=journal)
    assert isinstance(response, Retry)
    assert response.failure.code == 570
    assert response.failure.message == (
        "journal mismatch at index 0: the journal recorded complete_promise 'approval-decision (resolve)', "
        "the code now asks for complete_promise 'approval-decision (reject)'"
    )


# ---------------------------------------------------------------------- peek


@pytest.mark.parametrize(
    ("promise", "expected"),
    [(None, ["waiting", None]), (True, ["waiting", True])],
)
async def test_peek(make_endpoint: MakeEndpoint, proxy: FakeProxy, promise: bool | None, expected: list[Any]) -> None:
    if promise is not None:
        proxy.resolve_promise("approval-decision", promise)
    app = make_endpoint(approval()).asgi()
    response = await invoke(app, "Approval", "status", key="exp-1", state={"status": "waiting"})
    assert output(response) == expected
    assert proxy.entries == [
        GetState(name="status", value=Raw(b'"waiting"'), found=True),
        PeekPromise(name="approval-decision"),
    ]
    assert proxy.awaits == []


async def test_peek_of_a_rejected_promise_raises(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    proxy.resolve_promise("approval-decision", failure=Failure(code=500, message="over budget"))
    response = await invoke(make_endpoint(approval()).asgi(), "Approval", "status", key="exp-1")
    assert response == Failed(failure=Failure(code=500, message="over budget"))


async def test_replayed_peek_uses_the_recorded_completion(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    proxy.resolve_promise("approval-decision", True)  # resolved since: the replay must not see it
    journal = [recorded(GetState(name="status", found=False)), recorded(PeekPromise(name="approval-decision"))]
    completions = [completion(1, {"resolved": False})]
    app = make_endpoint(approval()).asgi()
    response = await invoke(app, "Approval", "status", key="exp-1", journal=journal, completions=completions)
    assert output(response) == [None, None]
    assert proxy.received == []


# ---------------------------------------------------------------------- value


async def test_value_of_a_completed_promise_needs_no_wait(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    proxy.resolve_promise("approval-decision", True)
    response = await invoke(make_endpoint(approval()).asgi(), "Approval", "wait", key="exp-1")
    assert output(response) is True
    assert proxy.entries == [GetPromise(name="approval-decision")]
    assert proxy.awaits == []


async def test_value_suspends_until_the_promise_is_completed(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    app = make_endpoint(approval()).asgi()
    assert await invoke(app, "Approval", "wait", key="exp-1") == Suspended(waiting_on=[0])
    assert [a.indices for a in proxy.awaits] == [[0]]
    proxy.resolve_promise("approval-decision", False)  # another handler resolves it: the proxy completes index 0
    responses = await replay_until_done(app, "Approval", "wait", proxy, key="exp-1")
    assert output(responses[-1]) is False
    assert proxy.indices == [0]


async def test_value_completed_during_the_brief_wait(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    proxy.await_script = [AwaitResponse(completions=[completion(0, True)])]
    response = await invoke(make_endpoint(approval()).asgi(), "Approval", "wait", key="exp-1")
    assert output(response) is True


async def test_value_of_a_rejected_promise_raises(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    app = make_endpoint(approval()).asgi()
    rejected = completion(0, failure=Failure(code=500, message="over budget"))
    journal = [recorded(GetPromise(name="approval-decision"))]
    response = await invoke(app, "Approval", "wait", key="exp-1", journal=journal, completions=[rejected])
    assert response == Failed(failure=Failure(code=500, message="over budget"))


async def test_value_that_does_not_decode_fails_the_attempt(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    proxy.resolve_promise("approval-decision", "yes")
    response = await invoke(make_endpoint(approval()).asgi(), "Approval", "wait", key="exp-1")
    assert isinstance(response, Retry)
    assert response.failure.message.startswith("the result of journal index 0 does not decode as <class 'bool'>")


async def test_promise_methods_take_their_index_when_called(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    flow = Workflow("W")

    @flow.main()
    async def run(ctx: WorkflowContext) -> list[Any]:
        promise = ctx.promise("p", type_hint=int)
        resolving = promise.resolve(7)  # index 0
        value: DurableFuture[int] = promise.value()  # index 1
        peeking = promise.peek()  # index 2
        await resolving
        return [await value, await peeking, promise.name]

    response = await invoke(make_endpoint(flow).asgi(), "W", "run", key="w")
    assert output(response) == [7, 7, "p"]
    assert proxy.entries == [CompletePromise(name="p", value=Raw(b"7")), GetPromise(name="p"), PeekPromise(name="p")]


# ---------------------------------------------------------------------- select


async def test_select_over_a_promise_and_a_timer_suspends_on_both(
    make_endpoint: MakeEndpoint, proxy: FakeProxy
) -> None:
    app = make_endpoint(approval()).asgi()
    response = await invoke(app, "Approval", "run", input=100, key="exp-1")
    assert response == Suspended(waiting_on=[1, 2])
    assert proxy.entries == [
        SetState(name="status", value=Raw(b'"waiting"')),
        GetPromise(name="approval-decision"),
        Sleep(wake_at_ms=START_MS + 7 * DAY_MS),
    ]
    assert [a.indices for a in proxy.awaits] == [[1, 2]]


@pytest.mark.parametrize(
    ("done", "winner", "expected"),
    [(completion(1, True), 1, "100: approved"), (completion(2), 2, "100: timed out")],
)
async def test_select_over_a_promise_and_a_timer(
    make_endpoint: MakeEndpoint, proxy: FakeProxy, done: Any, winner: int, expected: str
) -> None:
    app = make_endpoint(approval()).asgi()
    assert isinstance(await invoke(app, "Approval", "run", input=100, key="exp-1"), Suspended)
    responses = await replay_until_done(app, "Approval", "run", proxy, completions=[done], input=100, key="exp-1")
    assert output(responses[-1]) == expected
    assert proxy.entries[3:] == [
        Select(winner=winner),
        SetState(name="status", value=Raw(f'"{expected[5:]}"'.encode())),
    ]
    assert proxy.state == {"status": Raw(f'"{expected[5:]}"'.encode())}


async def test_a_promise_resolved_before_the_run_waits_for_it(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    proxy.resolve_promise("approval-decision", False)
    response = await invoke(make_endpoint(approval()).asgi(), "Approval", "run", input=5, key="exp-1")
    assert output(response) == "5: denied"
    assert proxy.entries[3] == Select(winner=1)
    assert proxy.awaits == []


async def test_promise_name_mismatch(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    journal = [recorded(GetPromise(name="other"))]
    response = await invoke(make_endpoint(approval()).asgi(), "Approval", "wait", key="exp-1", journal=journal)
    assert isinstance(response, Retry)
    assert response.failure.code == 570
    assert response.failure.message == (
        "journal mismatch at index 0: the journal recorded get_promise 'other', "
        "the code now asks for get_promise 'approval-decision'"
    )
    assert proxy.received == []
