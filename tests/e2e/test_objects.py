"""Virtual objects through the proxy: key locks and queues, keyed state, shared handlers, the admin view.

Every test runs the real proxy and the handlers in one process on the testing
kit's manual clock (``handler_sdk.testing.TestEnvironment``).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from handler_sdk import Context, ObjectContext, ObjectSharedContext, Service, TerminalError, VirtualObject
from handler_sdk.testing import InvocationFailed, TestEnvironment

from .harness import database

REPLAY = pytest.mark.parametrize("always_replay", [False, True], ids=["live", "always-replay"])

# --------------------------------------------------------------------------- services

box = VirtualObject("Box")

#: Awakeable ids handed out by ``hold`` and ``slow_put``, by object key, as a real handler would mail them.
handed_out: dict[str, list[str]] = {}


class Gate:
    """Stops the step ``slow_put`` runs until the test opens it."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.opened = threading.Event()

    def pass_through(self) -> None:
        self.entered.set()
        if not self.opened.wait(timeout=10):
            raise TimeoutError("the test never opened the gate")


gate = Gate()


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    global gate
    handed_out.clear()
    gate = Gate()
    yield
    gate.opened.set()


def hand_out(key: str, awakeable_id: str) -> None:
    handed_out.setdefault(key, []).append(awakeable_id)


def pass_gate() -> None:
    gate.pass_through()


@box.handler()
async def append(ctx: ObjectContext, item: str) -> list[str]:
    items = await ctx.get("items", type_hint=list[str]) or []
    # A durable sleep between the read and the write: were two appends of a key ever to run at
    # once, one of them would overwrite the other's item.
    await ctx.sleep(timedelta(seconds=1))
    items.append(item)
    ctx.set("items", items)
    return items


@box.handler()
async def hold(ctx: ObjectContext, note: str) -> str:
    """Hold the key's lock until the awakeable it hands out is resolved."""
    ctx.set("note", note)
    awakeable_id, released = ctx.awakeable(type_hint=str)
    await ctx.run("hand-out", hand_out, ctx.key(), awakeable_id)
    return await released


@box.handler()
async def slow_put(ctx: ObjectContext, item: str) -> str:
    """Read, run a step the test holds, write, then wait for an awakeable."""
    items = await ctx.get("items", type_hint=list[str]) or []
    await ctx.run("slow", pass_gate)
    items.append(item)
    ctx.set("items", items)
    awakeable_id, released = ctx.awakeable(type_hint=str)
    await ctx.run("hand-out", hand_out, ctx.key(), awakeable_id)
    return await released


@box.handler()
async def script(ctx: ObjectContext, ops: list[list[Any]]) -> list[Any]:
    """Apply state operations in order; returns what the reads returned."""
    reads: list[Any] = []
    for op, *args in ops:
        if op == "get":
            reads.append(await ctx.get(args[0]))
        elif op == "set":
            ctx.set(args[0], args[1])
        elif op == "clear":
            ctx.clear(args[0])
        elif op == "clear_all":
            ctx.clear_all()
        elif op == "keys":
            reads.append(await ctx.state_keys())
        else:
            raise TerminalError(f"unknown operation {op!r}", status_code=400)
    return reads


@box.handler(kind="shared")
async def snapshot(ctx: ObjectSharedContext) -> dict[str, Any]:
    return {name: await ctx.get(name) for name in await ctx.state_keys()}


front = Service("Front")


@front.handler()
async def fill(ctx: Context, key: str) -> list[str]:
    """A send and then a call to the same key: they run in that order."""
    await ctx.object_send(append, key, "sent")
    return await ctx.object_call(append, key, "called")


@front.handler()
async def call_without_key(ctx: Context) -> str:
    try:
        await ctx.call("Box", "append", "x")
    except TerminalError as exc:
        return f"{exc.status_code}: {exc.message}"
    return "called"


async def object_view(env: TestEnvironment, service: str, key: str) -> dict[str, Any]:
    response = await env.admin.get(f"/objects/{service}/{key}")
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


# --------------------------------------------------------------------------- one at a time per key


@REPLAY
async def test_fifty_concurrent_calls_on_one_key_are_all_applied(always_replay: bool) -> None:
    async with TestEnvironment([box], always_replay=always_replay) as env:
        items = [f"item-{n}" for n in range(50)]
        results = await asyncio.gather(*(env.call("Box", "append", item, key="k") for item in items))
        final = await env.call("Box", "snapshot", key="k")
        assert sorted(final["items"]) == sorted(items), "every append applied, none lost or doubled"
        # Each call saw the list as all the calls before it left it: they ran one after another.
        assert sorted(len(r) for r in results) == list(range(1, 51))
        assert all(final["items"][: len(r)] == r for r in results)
        assert env.now() - env.start >= timedelta(seconds=50), "the sleeps of one key never overlapped"
        view = await object_view(env, "Box", "k")
        assert view["lock_holder"] is None and view["queue"] == []


@REPLAY
async def test_a_blocked_key_queues_its_calls_in_arrival_order_and_other_keys_go_on(always_replay: bool) -> None:
    async with TestEnvironment([box], always_replay=always_replay) as env:
        holder = await env.send("Box", "hold", "busy", key="A")
        await env.settle()
        queued = [await env.send("Box", "append", f"a{n}", key="A") for n in range(5)]
        await env.settle()

        view = await object_view(env, "Box", "A")
        assert view["lock_holder"] == holder
        assert view["queue"] == queued
        assert view["state"] == {"note": "busy"}
        assert (await env.invocation(holder))["status"] == "suspended"
        for invocation_id in queued:
            found = await env.invocation(invocation_id)
            assert (found["status"], found["attempts"]) == ("queued", [])

        # Key B does not wait for key A.
        assert await env.call("Box", "append", "b0", key="B") == ["b0"]
        assert await env.call("Box", "append", "b1", key="B") == ["b0", "b1"]
        # A shared handler of key A does not wait for its lock either.
        assert await env.call("Box", "snapshot", key="A") == {"note": "busy"}
        assert (await object_view(env, "Box", "A"))["queue"] == queued

        await env.resolve_awakeable(handed_out["A"][0], "done")
        assert await env.attach(holder) == "done"
        assert await env.attach(queued[-1]) == [f"a{n}" for n in range(5)]
        for n, invocation_id in enumerate(queued):
            assert await env.attach(invocation_id) == [f"a{i}" for i in range(n + 1)]
        view = await object_view(env, "Box", "A")
        assert (view["lock_holder"], view["queue"]) == (None, [])
        assert view["state"] == {"items": [f"a{n}" for n in range(5)], "note": "busy"}


async def test_cancelling_the_lock_holder_lets_the_queue_move() -> None:
    async with TestEnvironment([box]) as env:
        holder = await env.send("Box", "hold", "stuck", key="A")
        await env.settle()
        waiting = await env.send("Box", "append", "next", key="A")
        await env.settle()
        assert (await object_view(env, "Box", "A"))["queue"] == [waiting]
        await env.cancel(holder)
        with pytest.raises(InvocationFailed) as cancelled:
            await env.attach(holder)
        assert cancelled.value.status_code == 409
        assert await env.attach(waiting) == ["next"]
        view = await object_view(env, "Box", "A")
        assert (view["lock_holder"], view["queue"]) == (None, [])


async def test_a_send_then_a_call_from_a_handler_run_in_that_order() -> None:
    async with TestEnvironment([box, front]) as env:
        assert await env.call("Front", "fill", "k") == ["sent", "called"]
        assert await env.call("Box", "snapshot", key="k") == {"items": ["sent", "called"]}


async def test_the_queue_of_a_key_survives_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "journal.db"
    async with TestEnvironment([box], database=await database(db)) as env:
        holder = await env.send("Box", "hold", "busy", key="A")
        await env.settle()
        queued = [await env.send("Box", "append", f"a{n}", key="A") for n in range(3)]
        await env.settle()
    async with TestEnvironment([box], database=await database(db)) as env:
        view = await object_view(env, "Box", "A")
        assert (view["lock_holder"], view["queue"]) == (holder, queued)
        await env.resolve_awakeable(handed_out["A"][0], "done")
        assert await env.attach(queued[-1]) == ["a0", "a1", "a2"]
        assert await env.attach(holder) == "done"


# --------------------------------------------------------------------------- shared handlers


@REPLAY
async def test_shared_handlers_run_beside_a_running_exclusive_and_see_only_committed_state(
    always_replay: bool,
) -> None:
    async with TestEnvironment([box], always_replay=always_replay) as env:
        assert await env.call("Box", "append", "a", key="K") == ["a"]
        running = await env.send("Box", "slow_put", "b", key="K")
        try:
            assert await asyncio.to_thread(gate.entered.wait, 5), "slow_put never reached its step"
            # slow_put holds the key and is inside a step: a shared read runs now and sees the committed state.
            # (No env.call here: the kit's clock-skipping waits for quiet, and the held step is not quiet.)
            read = await env.ingress.post("/Box/K/snapshot")
            assert read.status_code == 200, read.text
            assert read.json() == {"items": ["a"]}
            assert (await object_view(env, "Box", "K"))["lock_holder"] == running
            queued = await env.ingress.post("/Box/K/append/send", json="c")
            assert queued.status_code == 202
        finally:
            gate.opened.set()
        await env.settle()
        # slow_put wrote and now waits: its write is committed, so readers see it before slow_put ends.
        assert (await env.invocation(running))["status"] == "suspended"
        assert await env.call("Box", "snapshot", key="K") == {"items": ["a", "b"]}
        view = await object_view(env, "Box", "K")
        assert (view["lock_holder"], view["queue"]) == (running, [queued.json()["invocationId"]])
        await env.resolve_awakeable(handed_out["K"][0], "done")
        assert await env.attach(running) == "done"
        assert await env.attach(queued.json()["invocationId"]) == ["a", "b", "c"]


async def test_a_shared_handler_cannot_write_state() -> None:
    sneaky = VirtualObject("Sneaky")

    @sneaky.handler(kind="shared")
    async def write(ctx: ObjectSharedContext) -> str:
        getattr(ctx, "set")("x", 1)  # noqa: B009 - the type has no set: the point of the test
        return "wrote"

    async with TestEnvironment([sneaky], retry_max_attempts=2) as env:
        invocation_id = await env.send("Sneaky", "write", key="k")
        await env.advance(timedelta(seconds=1))  # past the retry backoff
        found = await env.invocation(invocation_id)
        assert found["status"] in ("failed", "paused"), "its attempts ran out, it never completed"
        assert "has no attribute 'set'" in found["last_failure"]["message"]
        assert found["journal"] == []
        assert (await object_view(env, "Sneaky", "k"))["state"] == {}


# --------------------------------------------------------------------------- state


@REPLAY
async def test_get_set_clear_clear_all_and_state_keys(always_replay: bool) -> None:
    async with TestEnvironment([box], always_replay=always_replay) as env:
        reads = await env.call(
            "Box",
            "script",
            [
                ["get", "a"],
                ["keys"],
                ["set", "a", 1],
                ["set", "b", {"x": [1, 2]}],
                ["get", "a"],  # a read sees the invocation's own writes at once
                ["keys"],
                ["set", "a", 2],
                ["get", "a"],
                ["clear", "a"],
                ["get", "a"],
                ["clear", "never-set"],
                ["keys"],
            ],
            key="s",
        )
        assert reads == [None, [], 1, ["a", "b"], 2, None, ["b"]]
        assert (await object_view(env, "Box", "s"))["state"] == {"b": {"x": [1, 2]}}
        # The next invocation of the key starts from what the last one committed.
        assert await env.call("Box", "script", [["keys"], ["get", "b"]], key="s") == [["b"], {"x": [1, 2]}]
        assert await env.call("Box", "snapshot", key="s") == {"b": {"x": [1, 2]}}

        reads = await env.call(
            "Box",
            "script",
            [["set", "z", "last"], ["clear_all"], ["keys"], ["get", "b"], ["set", "d", "after"], ["keys"]],
            key="s",
        )
        assert reads == [[], None, ["d"]]
        assert (await object_view(env, "Box", "s"))["state"] == {"d": "after"}
        # Every key has its own state.
        assert await env.call("Box", "script", [["keys"]], key="other") == [[]]

        invocations = (await env.admin.get("/invocations", params={"limit": 100})).json()["invocations"]
        first = next(i for i in invocations if i["handler"] == "script" and i["input"][0] == ["get", "a"])
        journal = (await env.invocation(first["id"]))["journal"]
        assert [entry["kind"] for entry in journal][:4] == ["get_state", "get_state_keys", "set_state", "set_state"]
        assert journal[4]["entry"]["value"] == 1, "the value a read returned is journaled"


async def test_a_value_set_to_null_is_set() -> None:
    async with TestEnvironment([box]) as env:
        assert await env.call("Box", "script", [["set", "n", None], ["keys"], ["get", "n"]], key="s") == [["n"], None]
        assert (await object_view(env, "Box", "s"))["state"] == {"n": None}


# --------------------------------------------------------------------------- addressing and the admin view


async def test_an_object_needs_a_key_and_a_service_refuses_one() -> None:
    async with TestEnvironment([box, front]) as env:
        response = await env.ingress.post("/Box/append", json="x")
        assert response.status_code == 404
        assert response.json()["message"] == "Box is keyed: use /Box/{key}/{handler}"
        response = await env.ingress.post("/Box/append/send", json="x")
        assert response.status_code == 404
        response = await env.ingress.post("/restate/call/Box/append", json="x")
        assert response.status_code == 400
        assert response.json()["message"] == "Box is a virtual object: address it by key, as Box/{key}/append"
        response = await env.ingress.post("/restate/call/Front/k/fill", json="x")
        assert response.status_code == 400
        assert "Front is a service, not keyed" in response.json()["message"]
        assert (await env.admin.get("/invocations")).json()["invocations"] == []
        # A handler's call without a key fails the call, not the caller.
        assert await env.call("Front", "call_without_key") == (
            "400: Box is a virtual object: address it by key, as Box/{key}/append"
        )


async def test_the_admin_view_of_a_key() -> None:
    async with TestEnvironment([box, front]) as env:
        view = await object_view(env, "Box", "nobody")
        assert view == {
            "service": "Box",
            "key": "nobody",
            "kind": "object",
            "state": {},
            "lock_holder": None,
            "queue": [],
            "promises": [],
        }
        await env.call("Box", "script", [["set", "b", 2], ["set", "a", [1]]], key="team/ada")
        view = await object_view(env, "Box", "team/ada")
        assert (view["key"], view["state"]) == ("team/ada", {"a": [1], "b": 2})
        response = await env.admin.get("/objects/Front/k")
        assert response.status_code == 400
        assert "Front is a service" in response.json()["message"]
        response = await env.admin.get("/objects/Nope/k")
        assert response.status_code == 404


# --------------------------------------------------------------------------- the queue and the lifecycle


async def test_a_cancelled_or_killed_queued_invocation_leaves_the_queue() -> None:
    async with TestEnvironment([box]) as env:
        holder = await env.send("Box", "hold", "busy", key="A")
        await env.settle()
        first, cancelled, killed, last = [await env.send("Box", "append", f"a{n}", key="A") for n in range(4)]
        await env.settle()
        await env.cancel(cancelled)
        await env.kill(killed)
        await env.settle()
        assert (await object_view(env, "Box", "A"))["queue"] == [first, last]
        for invocation_id in (cancelled, killed):
            with pytest.raises(InvocationFailed) as failed:
                await env.attach(invocation_id)
            assert failed.value.status_code == 409
            assert (await env.invocation(invocation_id))["attempts"] == [], "it never ran"
        await env.kill(holder)
        assert await env.attach(last) == ["a0", "a3"]
        view = await object_view(env, "Box", "A")
        assert (view["lock_holder"], view["queue"]) == (None, [])


async def test_a_delayed_send_takes_the_lock_only_when_it_is_due() -> None:
    async with TestEnvironment([box]) as env:
        response = await env.ingress.post("/Box/A/append/send?delay=1h", json="later")
        assert response.status_code == 202
        delayed = response.json()["invocationId"]
        view = await object_view(env, "Box", "A")
        assert (view["lock_holder"], view["queue"]) == (None, [])
        assert await env.call("Box", "append", "now", key="A") == ["now"]
        assert env.now() - env.start < timedelta(hours=1)
        assert await env.attach(delayed) == ["now", "later"]
        assert env.now() - env.start >= timedelta(hours=1)


async def test_idempotency_keys_are_per_object_key() -> None:
    async with TestEnvironment([box]) as env:
        headers = {"idempotency-key": "once"}
        first = await env.ingress.post("/Box/A/append/send", json="x", headers=headers)
        again = await env.ingress.post("/Box/A/append/send", json="x", headers=headers)
        other_key = await env.ingress.post("/Box/B/append/send", json="x", headers=headers)
        assert (first.json()["status"], again.json()["status"], other_key.json()["status"]) == (
            "Accepted",
            "PreviouslyAccepted",
            "Accepted",
        )
        assert again.json()["invocationId"] == first.json()["invocationId"]
        assert other_key.json()["invocationId"] != first.json()["invocationId"]
        call = await env.call("Box", "append", "x", key="A", idempotency_key="once")
        assert call == ["x"], "a call with the key attaches to the invocation it names"
        assert await env.call("Box", "snapshot", key="A") == {"items": ["x"]}
        assert await env.call("Box", "snapshot", key="B") == {"items": ["x"]}
        conflict = await env.ingress.post("/Box/A/append", json="y", headers=headers)
        assert conflict.status_code == 422


@box.handler()
async def append_and_look(ctx: ObjectContext, item: str) -> dict[str, Any]:
    """An exclusive handler calling a shared handler of its own key: shared handlers never wait for the lock."""
    ctx.set("items", [*(await ctx.get("items", type_hint=list[str]) or []), item])
    return await ctx.object_call(snapshot, ctx.key())


@box.handler()
async def copy_to(ctx: ObjectContext, other: str) -> list[str]:
    """Append this key's items to another key of the same object, through an exclusive call."""
    items = await ctx.get("items", type_hint=list[str]) or []
    result: list[str] = []
    for item in items:
        result = await ctx.object_call(append, other, item)
    return result


@REPLAY
async def test_handlers_call_their_own_key_shared_and_other_keys_exclusive(always_replay: bool) -> None:
    async with TestEnvironment([box], always_replay=always_replay) as env:
        assert await env.call("Box", "append_and_look", "a", key="A") == {"items": ["a"]}
        assert await env.call("Box", "append_and_look", "b", key="A") == {"items": ["a", "b"]}
        assert await env.call("Box", "copy_to", "B", key="A") == ["a", "b"]
        assert await env.call("Box", "snapshot", key="B") == {"items": ["a", "b"]}
