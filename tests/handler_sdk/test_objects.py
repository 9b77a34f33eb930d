"""Virtual objects: keyed state read and written through the journal, replayed deterministically."""

import asyncio
from typing import Any

import msgspec
import pytest

from handler_sdk import (
    Context,
    InvocationCancelled,
    ObjectContext,
    ObjectSharedContext,
    Service,
    TerminalError,
    VirtualObject,
    Workflow,
    WorkflowContext,
)
from handler_sdk.protocol import (
    AppendRequest,
    Call,
    Cancel,
    ClearAllState,
    ClearState,
    Failed,
    Failure,
    GetState,
    GetStateKeys,
    Retry,
    Run,
    Send,
    SetState,
    Suspended,
)

from .conftest import MakeEndpoint
from .fakes import FakeProxy, invoke, invoke_request, output, post_invoke, recorded, replay_until_done

Raw = msgspec.Raw


def counter(effects: list[str] | None = None, *, fail_once: bool = False) -> VirtualObject:
    obj = VirtualObject("Counter")
    done = effects if effects is not None else []

    def side_effect(text: str) -> None:
        done.append(text)
        if fail_once and len(done) == 1:
            raise ConnectionError("downstream hiccup")

    @obj.handler()
    async def add(ctx: ObjectContext, n: int) -> int:
        total: int = (await ctx.get("total", type_hint=int) or 0) + n
        ctx.set("total", total)
        return total

    @obj.handler()
    async def bump(ctx: ObjectContext) -> list[Any]:
        before = await ctx.get("n", type_hint=int) or 0
        ctx.set("n", before + 1)
        await ctx.run("side-effect", side_effect, f"bumped to {before + 1}")
        after = await ctx.get("n", type_hint=int)
        return [before, after, ctx.key()]

    @obj.handler()
    async def tidy(ctx: ObjectContext) -> list[Any]:
        keys = await ctx.state_keys()
        ctx.clear("a")
        after_clear = await ctx.state_keys()
        ctx.clear_all()
        return [keys, after_clear, await ctx.state_keys(), await ctx.get("b")]

    @obj.handler(kind="shared")
    async def total(ctx: ObjectSharedContext) -> Any:
        return [ctx.key(), await ctx.get("total"), await ctx.state_keys()]

    return obj


# ---------------------------------------------------------------------- new entries


async def test_get_and_set_are_journaled(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    app = make_endpoint(counter()).asgi()
    response = await invoke(app, "Counter", "add", input=2, key="c1", state={"total": 5})
    assert output(response) == 7
    assert proxy.entries == [
        GetState(name="total", value=Raw(b"5"), found=True),
        SetState(name="total", value=Raw(b"7")),
    ]
    assert proxy.state == {"total": Raw(b"7")}


async def test_get_of_an_unset_key_is_journaled_as_not_found(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    response = await invoke(make_endpoint(counter()).asgi(), "Counter", "add", input=2, key="c1")
    assert output(response) == 2
    assert proxy.entries[0] == GetState(name="total", found=False)


async def test_state_keys_clear_and_clear_all(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    app = make_endpoint(counter()).asgi()
    proxy.state = {"b": Raw(b"1"), "a": Raw(b"2")}
    response = await invoke(app, "Counter", "tidy", key="c1", state=proxy.state)
    assert output(response) == [["a", "b"], ["b"], [], None]
    assert proxy.entries == [
        GetStateKeys(keys=["a", "b"]),
        ClearState(name="a"),
        GetStateKeys(keys=["b"]),
        ClearAllState(),
        GetStateKeys(keys=[]),
        GetState(name="b", found=False),
    ]
    assert proxy.state == {}

    # Replayed against the committed (now empty) state: the recorded reads come back, nothing is appended.
    journal = proxy.journal
    proxy.appends.clear()
    response = await invoke(app, "Counter", "tidy", key="c1", journal=journal, state=proxy.state)
    assert output(response) == [["a", "b"], ["b"], [], None]
    assert proxy.received[len(journal) :] == []
    assert proxy.appends == []


async def test_a_shared_handler_reads_the_state_it_was_sent(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    app = make_endpoint(counter()).asgi()
    response = await invoke(app, "Counter", "total", key="c9", state={"total": 3, "other": "x"})
    assert output(response) == ["c9", 3, ["other", "total"]]
    assert proxy.entries == [
        GetState(name="total", value=Raw(b"3"), found=True),
        GetStateKeys(keys=["other", "total"]),
    ]


async def test_set_value_that_is_not_json_leaves_no_entry(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    obj = VirtualObject("O")

    @obj.handler()
    async def handler(ctx: ObjectContext) -> str:
        with pytest.raises(TypeError):
            ctx.set("bad", object())
        ctx.set("good", {"a": [1]})
        return "ok"

    assert output(await invoke(make_endpoint(obj).asgi(), "O", "handler", key="k")) == "ok"
    assert proxy.entries == [SetState(name="good", value=Raw(b'{"a":[1]}'))]
    assert proxy.indices == [0]


# ---------------------------------------------------------------------- replay


async def test_replay_returns_recorded_values_and_does_not_apply_writes_twice(
    make_endpoint: MakeEndpoint, proxy: FakeProxy
) -> None:
    effects: list[str] = []
    app = make_endpoint(counter(effects, fail_once=True)).asgi()
    first = await invoke(app, "Counter", "bump", key="c1")  # the step fails: the attempt ends after the write
    assert isinstance(first, Retry)
    assert first.failure.message == "step 'side-effect' failed: ConnectionError: downstream hiccup"
    assert proxy.entries == [GetState(name="n", found=False), SetState(name="n", value=Raw(b"1"))]
    assert proxy.state == {"n": Raw(b"1")}

    # The next attempt replays the read (not found) and the write, whose effect the committed state holds.
    responses = await replay_until_done(app, "Counter", "bump", proxy, key="c1")
    assert output(responses[-1]) == [0, 1, "c1"]
    assert proxy.state == {"n": Raw(b"1")}
    assert proxy.entries[2:] == [Run(name="side-effect"), GetState(name="n", value=Raw(b"1"), found=True)]
    assert effects == ["bumped to 1", "bumped to 1"]


async def test_always_replay_keeps_state_consistent(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    effects: list[str] = []
    app = make_endpoint(counter(effects), always_replay=True).asgi()
    responses = await replay_until_done(app, "Counter", "bump", proxy, key="c1")
    assert [type(r).__name__ for r in responses] == ["Suspended"] * 4 + ["Completed"]
    assert output(responses[-1]) == [0, 1, "c1"]
    assert effects == ["bumped to 1"]
    assert proxy.state == {"n": Raw(b"1")}
    assert proxy.entries == [
        GetState(name="n", found=False),
        SetState(name="n", value=Raw(b"1")),
        Run(name="side-effect"),
        GetState(name="n", value=Raw(b"1"), found=True),
    ]


async def test_replayed_read_ignores_the_current_state(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    app = make_endpoint(counter()).asgi()
    journal = [recorded(GetState(name="total", value=Raw(b"40"), found=True))]
    response = await invoke(app, "Counter", "add", input=2, key="c1", journal=journal, state={"total": 99})
    assert output(response) == 42
    assert proxy.entries == [SetState(name="total", value=Raw(b"42"))]
    assert proxy.indices == [1]


@pytest.mark.parametrize(
    ("entry", "recorded_as"),
    [
        (GetState(name="count", found=False), "get_state 'count'"),
        (SetState(name="total"), "set_state 'total'"),
        (GetStateKeys(), "get_state_keys ''"),
    ],
)
async def test_read_mismatch(make_endpoint: MakeEndpoint, proxy: FakeProxy, entry: Any, recorded_as: str) -> None:
    response = await invoke(
        make_endpoint(counter()).asgi(), "Counter", "add", input=1, key="c1", journal=[recorded(entry)]
    )
    assert isinstance(response, Retry)
    assert response.failure.code == 570
    assert response.failure.message == (
        f"journal mismatch at index 0: the journal recorded {recorded_as}, the code now asks for get_state 'total'"
    )
    assert proxy.received == []


@pytest.mark.parametrize(
    ("entry", "recorded_as"),
    [
        (SetState(name="other", value=Raw(b"1")), "set_state 'other'"),
        (ClearState(name="total"), "clear_state 'total'"),
        (ClearAllState(), "clear_all_state ''"),
    ],
)
async def test_write_mismatch(make_endpoint: MakeEndpoint, proxy: FakeProxy, entry: Any, recorded_as: str) -> None:
    journal = [recorded(GetState(name="total", found=False)), recorded(entry)]
    response = await invoke(make_endpoint(counter()).asgi(), "Counter", "add", input=1, key="c1", journal=journal)
    assert isinstance(response, Retry)
    assert response.failure.code == 570
    assert response.failure.message == (
        f"journal mismatch at index 1: the journal recorded {recorded_as}, the code now asks for set_state 'total'"
    )
    assert proxy.received == []


async def test_state_that_does_not_decode_fails_the_attempt(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    response = await invoke(make_endpoint(counter()).asgi(), "Counter", "add", input=1, key="c1", state={"total": "x"})
    assert isinstance(response, Retry)
    assert response.failure.message == (
        "state entry 'total' (read at journal index 0) does not decode as <class 'int'>: Expected `int`, got `str`"
    )
    assert proxy.received == []


# ---------------------------------------------------------------------- appends in the background


async def test_get_does_not_wait_for_its_append(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    obj = VirtualObject("O")
    read = asyncio.Event()

    @obj.handler()
    async def handler(ctx: ObjectContext) -> Any:
        value = await ctx.get("v")
        read.set()
        return value

    async def hold(append: AppendRequest) -> None:
        await asyncio.wait_for(read.wait(), timeout=5)

    proxy.before_ack = hold
    response = await invoke(make_endpoint(obj).asgi(), "O", "handler", key="k", state={"v": [1]})
    assert output(response) == [1]
    assert proxy.entries == [GetState(name="v", value=Raw(b"[1]"), found=True)]


async def test_the_response_waits_for_the_writes_to_commit(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    obj = VirtualObject("O")
    acked: list[int] = []

    @obj.handler()
    async def handler(ctx: ObjectContext) -> str:
        ctx.set("a", 1)
        ctx.clear("b")
        return "returned at once"

    async def slow(append: AppendRequest) -> None:
        await asyncio.sleep(0.02)
        acked.append(append.index)

    proxy.before_ack = slow
    response = await invoke(make_endpoint(obj).asgi(), "O", "handler", key="k")
    assert output(response) == "returned at once"
    assert acked == [0, 1]


async def test_a_write_the_proxy_refuses_fails_the_attempt(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    obj = VirtualObject("O")

    @obj.handler()
    async def handler(ctx: ObjectContext) -> str:
        ctx.set("a", 1)
        return "done"

    proxy.script = [409]
    response = await invoke(make_endpoint(obj).asgi(), "O", "handler", key="k")
    assert isinstance(response, Retry)
    assert response.failure.code == 409
    assert proxy.appends == []


async def test_set_raises_the_cancellation_at_once(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    obj = VirtualObject("O")

    @obj.handler()
    async def handler(ctx: ObjectContext) -> str:
        try:
            ctx.set("a", 1)
        except InvocationCancelled:
            ctx.set("undone", True)
            raise
        return "not cancelled"

    response = await invoke(make_endpoint(obj).asgi(), "O", "handler", key="k", cancelled=True)
    assert response == Failed(failure=Failure(code=409, message="cancelled"))
    assert proxy.entries == [Cancel(), SetState(name="undone", value=Raw(b"true"))]


# ---------------------------------------------------------------------- kinds of handlers


def test_a_shared_context_has_no_writes() -> None:
    for method in ("set", "clear", "clear_all"):
        assert not hasattr(ObjectSharedContext, method)
        assert hasattr(ObjectContext, method)


async def test_a_shared_handler_cannot_write(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    obj = VirtualObject("O")

    @obj.handler(kind="shared")
    async def handler(ctx: ObjectSharedContext) -> None:
        ctx.set("a", 1)  # type: ignore[attr-defined]

    response = await invoke(make_endpoint(obj).asgi(), "O", "handler", key="k")
    assert isinstance(response, Retry)
    assert response.failure.message.startswith("AttributeError")
    assert proxy.received == []


@pytest.mark.parametrize("annotation", [ObjectContext, WorkflowContext])
def test_a_handler_annotated_with_a_richer_context_is_refused(annotation: type[Context]) -> None:
    async def handler(ctx: annotation) -> None:  # type: ignore[valid-type]
        pass

    with pytest.raises(TypeError, match="is called with a ObjectSharedContext, but its first parameter is annotated"):
        VirtualObject("O").handler(kind="shared")(handler)


def test_context_annotations_that_fit_are_accepted() -> None:
    async def plain(ctx: Context) -> None:
        pass

    async def shared(ctx: ObjectSharedContext) -> None:
        pass

    obj = VirtualObject("O")
    obj.handler(name="a")(plain)
    obj.handler(name="b")(shared)
    obj.handler(name="c", kind="shared")(shared)
    with pytest.raises(TypeError, match="annotated ObjectContext"):
        Service("S").handler()(counter().handlers["add"].fn)


def test_handler_kind_is_validated() -> None:
    with pytest.raises(ValueError, match="'exclusive' or 'shared'"):
        VirtualObject("O").handler(kind="workflow")  # type: ignore[arg-type]


async def test_a_keyed_request_without_a_key_is_refused(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    response = await post_invoke(make_endpoint(counter()).asgi(), invoke_request("Counter", "total"))
    assert response.status_code == 400
    assert response.json()["message"] == "'Counter/total' is a handler of a virtual object: the request needs a key"


# ---------------------------------------------------------------------- calling objects


async def test_object_call_and_send(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    add = counter().handlers["add"].fn
    service = Service("Caller")

    @service.handler()
    async def handler(ctx: Context) -> str:
        future = ctx.object_call(add, "c1", 2)
        await ctx.object_send(add, "c2", 3)
        with pytest.raises(TypeError, match="is a handler of a virtual object: pass the key of the virtual object"):
            ctx.service_call(add, 1)
        with pytest.raises(TypeError, match="is a handler of a virtual object, not of a workflow: use ctx.object_call"):
            ctx.workflow_call(add, "c1", 1)
        return str(await future)

    response = await invoke(make_endpoint(service).asgi(), "Caller", "handler")
    assert isinstance(response, Suspended)
    assert proxy.entries == [
        Call(service="Counter", handler="add", key="c1", input=Raw(b"2")),
        Send(service="Counter", handler="add", key="c2", input=Raw(b"3")),
    ]


async def test_workflow_call_and_send(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    flow = Workflow("Flow")

    @flow.main()
    async def run(ctx: WorkflowContext, order: str) -> str:
        return order

    service = Service("Caller")

    @service.handler()
    async def handler(ctx: Context) -> str:
        await ctx.workflow_send(run, "w2", "b")
        with pytest.raises(TypeError, match="use ctx.workflow_call"):
            ctx.object_call(run, "w1", "a")
        try:
            return await ctx.workflow_call(run, "w1", "a")
        except TerminalError as exc:
            return exc.message

    response = await invoke(make_endpoint(service).asgi(), "Caller", "handler")
    assert isinstance(response, Suspended)
    assert proxy.entries == [
        Send(service="Flow", handler="run", key="w2", input=Raw(b'"b"')),
        Call(service="Flow", handler="run", key="w1", input=Raw(b'"a"')),
    ]
