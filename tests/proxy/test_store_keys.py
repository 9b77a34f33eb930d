"""Key locks of virtual objects and workflows: who runs, who waits, and how the lock is handed on
(the JournalStore contract, every backend), plus the indices behind it (SQLite)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable

import pytest

from proxy.store._ops_locks import QUEUE_HEAD_SQL, QUEUE_SQL
from proxy.store.base import Effects, Ended, JournalStore, NewInvocation, StoredFailure
from proxy.store.sqlite import SQLiteStore
from tests.proxy.helpers import BOOM, CANCELLED, append, claim, new, start, status_of

OBJECT = "counter"
KILLED = StoredFailure(code=499, message="killed by the operator")
GAVE_UP = StoredFailure(code=500, message="gave up after 3 attempts")


def excl(
    invocation_id: str,
    key: str = "k1",
    *,
    parent: tuple[str, int] | None = None,
    awaits: bool = False,
    run_at_ms: int | None = None,
) -> NewInvocation:
    """An exclusive handler of the object ``counter``."""
    return new(
        invocation_id,
        service=OBJECT,
        handler="add",
        key=key,
        exclusive=True,
        parent=parent,
        awaits=awaits,
        run_at_ms=run_at_ms,
    )


def shared(invocation_id: str, key: str = "k1") -> NewInvocation:
    """A shared handler of the object ``counter``: runs beside the lock holder."""
    return new(invocation_id, service=OBJECT, handler="get", key=key)


async def lock_of(store: JournalStore, key: str = "k1") -> tuple[str | None, list[str]]:
    status = await store.key_status(OBJECT, key)
    return status.lock_holder, status.queue


async def create(store: JournalStore, *invocations: NewInvocation, now_ms: int = 1_000) -> list[str]:
    """Create each (one after the other, so in this arrival order); returns their statuses."""
    statuses: list[str] = []
    for offset, invocation in enumerate(invocations):
        created = await store.create_invocation(invocation, now_ms + offset)
        assert created.created
        statuses.append(created.invocation.status)
    return statuses


# --------------------------------------------------------------------------- taking the lock and queueing


async def test_the_first_exclusive_takes_the_lock_and_the_others_queue_in_arrival_order(store: JournalStore) -> None:
    assert await create(store, excl("a"), excl("b"), excl("c")) == ["pending", "queued", "queued"]
    assert await lock_of(store) == ("a", ["b", "c"])
    assert await store.list_runnable() == ["a"]
    assert await store.claim("b", None, 2_000) is None  # queued: not claimable
    assert [i.id for i in await store.list_invocations(status="queued")] == ["c", "b"]
    b = await store.get_invocation("b")
    assert b is not None and (b.status, b.exclusive, b.key, b.attempt, b.done) == ("queued", True, "k1", 0, False)


async def test_a_holder_keeps_the_lock_while_suspended_backing_off_and_running_again(store: JournalStore) -> None:
    await create(store, excl("a"), excl("b"))
    attempt = (await claim(store, "a")).invocation.attempt
    await append(store, "a", attempt, 0, "sleep", timer_at_ms=9_000)
    assert await store.suspend("a", attempt, [0], 2_000) == "suspended"
    assert await lock_of(store) == ("a", ["b"])
    assert await store.fire_timer("a", 0, 9_000) == Effects(woken=["a"], notified=["a"])
    attempt = (await claim(store, "a", 9_001)).invocation.attempt
    assert await store.backoff("a", attempt, BOOM, 12_000, 9_002)
    assert await lock_of(store) == ("a", ["b"])
    # The end of a backoff is not a new start: no queueing, it still holds the lock.
    assert await store.fire_timer("a", -1, 12_000) == Effects(woken=["a"])
    assert await status_of(store, "a") == "pending"
    assert await lock_of(store) == ("a", ["b"])
    attempt = (await claim(store, "a", 12_001)).invocation.attempt
    assert await store.complete("a", attempt, b"1", 12_002) == Effects(
        woken=["b"], ended=[Ended(invocation_id="a", output=b"1")]
    )
    assert await lock_of(store) == ("b", [])


# --------------------------------------------------------------------------- handing the lock on


async def _complete(store: JournalStore) -> tuple[Effects, Ended]:
    attempt = (await claim(store, "a")).invocation.attempt
    effects = await store.complete("a", attempt, b'"done"', 5_000)
    assert effects is not None
    return effects, Ended(invocation_id="a", output=b'"done"')


async def _fail(store: JournalStore) -> tuple[Effects, Ended]:
    attempt = (await claim(store, "a")).invocation.attempt
    effects = await store.fail("a", attempt, BOOM, 5_000)
    assert effects is not None
    return effects, Ended(invocation_id="a", failure=BOOM)


async def _give_up(store: JournalStore) -> tuple[Effects, Ended]:
    attempt = (await claim(store, "a")).invocation.attempt
    assert await store.backoff("a", attempt, BOOM, 3_000, 2_000)
    attempt = (await claim(store, "a", 3_000)).invocation.attempt
    effects = await store.fail("a", attempt, GAVE_UP, 5_000, attempt_failure=BOOM)
    assert effects is not None
    return effects, Ended(invocation_id="a", failure=GAVE_UP)


async def _kill_running(store: JournalStore) -> tuple[Effects, Ended]:
    await claim(store, "a")
    outcome, effects = await store.kill("a", KILLED, 5_000)
    assert outcome == "requested"
    return effects, Ended(invocation_id="a", failure=KILLED)


async def _kill_suspended(store: JournalStore) -> tuple[Effects, Ended]:
    attempt = (await claim(store, "a")).invocation.attempt
    await append(store, "a", attempt, 0, "awakeable")
    assert await store.suspend("a", attempt, [0], 2_000) == "suspended"
    outcome, effects = await store.kill("a", KILLED, 5_000)
    assert outcome == "requested"
    return effects, Ended(invocation_id="a", failure=KILLED)


async def _cancel_never_started(store: JournalStore) -> tuple[Effects, Ended]:
    outcome, effects = await store.cancel("a", 5_000)  # pending at attempt 0: ends at once
    assert outcome == "requested"
    return effects, Ended(invocation_id="a", failure=CANCELLED)


ENDINGS: dict[str, Callable[[JournalStore], Awaitable[tuple[Effects, Ended]]]] = {
    "complete": _complete,
    "fail": _fail,
    "give_up": _give_up,
    "kill_running": _kill_running,
    "kill_suspended": _kill_suspended,
    "cancel_never_started": _cancel_never_started,
}


@pytest.mark.parametrize("ending", list(ENDINGS))
async def test_every_end_of_the_holder_hands_the_lock_to_the_oldest_queued(store: JournalStore, ending: str) -> None:
    await create(store, excl("a"), excl("b"), excl("c"))
    effects, ended = await ENDINGS[ending](store)
    assert effects == Effects(woken=["b"], ended=[ended])  # exactly one is handed the lock
    assert await lock_of(store) == ("b", ["c"])
    assert [await status_of(store, i) for i in ("b", "c")] == ["pending", "queued"]
    assert await store.list_runnable() == ["b"]
    b = await store.get_invocation("b")
    assert b is not None and b.modified_at_ms == 5_000


async def test_the_last_holder_leaves_the_key_free(store: JournalStore) -> None:
    await create(store, excl("a"))
    attempt = (await claim(store, "a")).invocation.attempt
    assert await store.complete("a", attempt, b"1", 3_000) == Effects(ended=[Ended(invocation_id="a", output=b"1")])
    assert await lock_of(store) == (None, [])
    assert await create(store, excl("b"), now_ms=4_000) == ["pending"]
    assert await lock_of(store) == ("b", [])


async def test_cancelling_a_running_holder_keeps_the_lock_until_it_ends(store: JournalStore) -> None:
    await create(store, excl("a"), excl("b"))
    attempt = (await claim(store, "a")).invocation.attempt
    assert await store.cancel("a", 3_000) == ("requested", Effects(notified=["a"]))
    assert await lock_of(store) == ("a", ["b"])  # it runs its compensations first
    assert await store.fail("a", attempt, CANCELLED, 3_100) == Effects(
        woken=["b"], ended=[Ended(invocation_id="a", failure=CANCELLED)]
    )
    assert await lock_of(store) == ("b", [])


@pytest.mark.parametrize("verb", ["cancel", "kill"])
async def test_a_queued_invocation_that_is_cancelled_or_killed_leaves_the_queue(store: JournalStore, verb: str) -> None:
    await create(store, excl("a"), excl("b"), excl("c"))
    if verb == "cancel":
        outcome, effects = await store.cancel("b", 3_000)
        failure = CANCELLED
    else:
        outcome, effects = await store.kill("b", KILLED, 3_000)
        failure = KILLED
    assert (outcome, effects) == ("requested", Effects(ended=[Ended(invocation_id="b", failure=failure)]))
    b = await store.get_invocation("b")
    assert b is not None and (b.status, b.failure, b.completed_at_ms) == ("failed", failure, 3_000)
    assert await lock_of(store) == ("a", ["c"])  # it never took the lock
    attempt = (await claim(store, "a")).invocation.attempt
    assert (await store.complete("a", attempt, b"1", 4_000) or Effects()).woken == ["c"]
    assert await lock_of(store) == ("c", [])


async def test_the_last_queued_invocation_cancelled_leaves_only_the_holder(store: JournalStore) -> None:
    await create(store, excl("a"), excl("b"))
    assert (await store.cancel("b", 3_000))[0] == "requested"
    assert await lock_of(store) == ("a", [])
    attempt = (await claim(store, "a")).invocation.attempt
    assert (await store.complete("a", attempt, b"1", 4_000) or Effects()).woken == []
    assert await lock_of(store) == (None, [])


# --------------------------------------------------------------------------- who never touches the lock


async def test_shared_keyed_invocations_are_never_queued(store: JournalStore) -> None:
    assert await create(store, excl("a"), shared("s1"), excl("b"), shared("s2")) == [
        "pending",
        "pending",
        "queued",
        "pending",
    ]
    assert await lock_of(store) == ("a", ["b"])
    assert await store.list_runnable() == ["a", "s1", "s2"]
    s1 = (await claim(store, "s1")).invocation
    assert s1.exclusive is False
    assert (await store.complete("s1", s1.attempt, b"1", 3_000) or Effects()).woken == []  # no hand-over
    assert await lock_of(store) == ("a", ["b"])
    assert (await store.cancel("s2", 3_001))[1].woken == []
    assert await lock_of(store) == ("a", ["b"])


async def test_two_keys_are_independent(store: JournalStore) -> None:
    assert await create(store, excl("a1", "k1"), excl("a2", "k2"), excl("b1", "k1"), excl("b2", "k2")) == [
        "pending",
        "pending",
        "queued",
        "queued",
    ]
    assert await lock_of(store, "k1") == ("a1", ["b1"])
    assert await lock_of(store, "k2") == ("a2", ["b2"])
    # The same key in another service is another lock.
    other = new("o1", service="other", handler="add", key="k1", exclusive=True)
    assert await create(store, other) == ["pending"]
    assert (await store.key_status("other", "k1")).lock_holder == "o1"
    attempt = (await claim(store, "a2")).invocation.attempt
    assert (await store.complete("a2", attempt, b"1", 3_000) or Effects()).woken == ["b2"]
    assert await lock_of(store, "k1") == ("a1", ["b1"])
    assert await lock_of(store, "k2") == ("b2", [])


async def test_invocations_without_a_key_never_touch_locks(store: JournalStore) -> None:
    # Exclusive means nothing without a key: a plain service's handlers all run at once.
    plain = [new(f"p{i}", exclusive=True) for i in range(3)]
    assert await create(store, *plain) == ["pending", "pending", "pending"]
    assert await store.list_runnable() == ["p0", "p1", "p2"]
    attempt = (await claim(store, "p0")).invocation.attempt
    assert await store.complete("p0", attempt, b"1", 3_000) == Effects(ended=[Ended(invocation_id="p0", output=b"1")])


async def test_key_status_of_an_unknown_key(store: JournalStore) -> None:
    status = await store.key_status(OBJECT, "nobody")
    assert (status.service, status.key, status.state, status.lock_holder, status.queue, status.promises) == (
        OBJECT,
        "nobody",
        {},
        None,
        [],
        [],
    )


# --------------------------------------------------------------------------- delayed and child invocations


async def test_a_delayed_exclusive_takes_the_lock_when_its_timer_fires(store: JournalStore) -> None:
    assert await create(store, excl("later", run_at_ms=8_000)) == ["scheduled"]
    assert await lock_of(store) == (None, [])  # scheduled: does not hold the lock yet
    assert await create(store, excl("a"), now_ms=2_000) == ["pending"]
    assert await lock_of(store) == ("a", [])
    attempt = (await claim(store, "a", 2_500)).invocation.attempt
    assert await store.complete("a", attempt, b"1", 3_000) is not None
    assert await store.fire_timer("later", -1, 8_000) == Effects(woken=["later"])
    assert await lock_of(store) == ("later", [])
    assert await status_of(store, "later") == "pending"


async def test_a_delayed_exclusive_queues_at_fire_time_behind_those_already_waiting(store: JournalStore) -> None:
    # Created first, but it arrives at the key only when its timer fires.
    assert await create(store, excl("later", run_at_ms=8_000), excl("a"), excl("b")) == [
        "scheduled",
        "pending",
        "queued",
    ]
    assert await store.fire_timer("later", -1, 8_000) == Effects()  # queued: not runnable, not woken
    assert await status_of(store, "later") == "queued"
    assert await create(store, excl("c"), now_ms=9_000) == ["queued"]
    assert await lock_of(store) == ("a", ["b", "later", "c"])
    assert await store.due_timers(100_000, 10) == []


async def test_an_exclusive_child_queues_behind_the_holder(store: JournalStore) -> None:
    await create(store, excl("a"))
    parent = await start(store, "parent", 1_500)
    child = excl("child", parent=("parent", 0), awaits=True)
    assert (await append(store, "parent", parent, 0, "call", child=child)).effects == Effects()  # not woken
    assert await status_of(store, "child") == "queued"
    assert await lock_of(store) == ("a", ["child"])
    # An exclusive child on a free key takes it, and is woken as any child.
    free = excl("free", key="k2", parent=("parent", 1), awaits=True)
    assert (await append(store, "parent", parent, 1, "call", child=free)).effects == Effects(woken=["free"])
    assert await lock_of(store, "k2") == ("free", [])
    # A duplicate append creates nothing and queues nothing twice.
    again = await store.append("parent", parent, 0, "call", "call-0", b"call@0", 2_100, child=child)
    assert (again.outcome, again.effects) == ("duplicate", Effects())
    assert await lock_of(store) == ("a", ["child"])

    attempt = (await claim(store, "a")).invocation.attempt
    assert (await store.complete("a", attempt, b"1", 3_000) or Effects()).woken == ["child"]
    attempt = (await claim(store, "child", 3_001)).invocation.attempt
    effects = await store.complete("child", attempt, b'"child done"', 3_002)
    assert effects is not None and effects.notified == ["parent"]  # the call's completion, as before
    assert await lock_of(store) == (None, [])


async def test_abandon_running_keeps_the_lock(store: JournalStore) -> None:
    await create(store, excl("a"), excl("b"))
    await claim(store, "a")
    assert await store.abandon_running(2_000) == 1
    assert await status_of(store, "a") == "pending"
    assert await lock_of(store) == ("a", ["b"])
    assert await store.list_runnable() == ["a"]
    again = await claim(store, "a", 2_001)
    assert again.invocation.attempt == 2
    # Pending again, but it already ran: a cancel now only flags it, and it keeps the lock.
    await store.abandon_running(2_002)
    assert (await store.cancel("a", 2_003))[1].ended == []
    assert await lock_of(store) == ("a", ["b"])


# --------------------------------------------------------------------------- cascades


async def test_a_kill_cascade_hands_on_the_locks_of_the_callees(store: JournalStore) -> None:
    root = await start(store, "root", 500)
    await append(store, "root", root, 0, "call", child=excl("x", parent=("root", 0), awaits=True))
    assert await create(store, excl("y"), now_ms=1_100) == ["queued"]
    await claim(store, "x")
    outcome, effects = await store.kill("root", KILLED, 3_000)
    assert outcome == "requested"
    assert effects.woken == ["y"]
    assert {e.invocation_id for e in effects.ended} == {"root", "x"}
    assert await lock_of(store) == ("y", [])


async def test_a_queue_head_ended_by_the_same_cascade_is_not_woken(store: JournalStore) -> None:
    # The holder calls an exclusive handler of its own key: the callee queues behind its caller.
    assert await create(store, excl("root")) == ["pending"]
    root = (await claim(store, "root")).invocation.attempt
    await append(store, "root", root, 0, "call", child=excl("callee", parent=("root", 0), awaits=True))
    assert await create(store, excl("other"), now_ms=1_800) == ["queued"]
    assert await lock_of(store) == ("root", ["callee", "other"])

    outcome, effects = await store.kill("root", KILLED, 3_000)
    assert outcome == "requested"
    # root's end handed the lock to callee, whose own end (same cascade) handed it to other.
    assert effects.woken == ["other"]
    assert sorted(e.invocation_id for e in effects.ended) == ["callee", "root"]
    assert await lock_of(store) == ("other", [])
    assert await status_of(store, "callee") == "failed"

    # The same with cancel: root is running (flagged, keeps the lock), callee is queued (ends at once).
    assert await create(store, excl("r2", key="k2")) == ["pending"]
    r2 = (await claim(store, "r2")).invocation.attempt
    await append(store, "r2", r2, 0, "call", child=excl("c2", key="k2", parent=("r2", 0), awaits=True))
    outcome, effects = await store.cancel("r2", 4_000)
    assert (outcome, effects.woken, [e.invocation_id for e in effects.ended]) == ("requested", [], ["c2"])
    assert await lock_of(store, "k2") == ("r2", [])


# --------------------------------------------------------------------------- many on one key


async def test_100_exclusive_invocations_on_one_key_run_one_at_a_time_in_arrival_order(store: JournalStore) -> None:
    ids = [f"inv-{n:03}" for n in range(100)]
    # Concurrent creates. SQLite's one writer takes them in the order gather starts them (in few
    # commits); PostgreSQL runs them in concurrent transactions, so they arrive in the order they
    # commit. Either way the queue holds every one of them, in its order of arrival.
    created = await asyncio.gather(*(store.create_invocation(excl(i), 1_000) for i in ids))
    assert sorted(c.invocation.status for c in created) == ["pending"] + ["queued"] * 99
    holder, queue = await lock_of(store)
    assert holder is not None and sorted([holder, *queue]) == ids
    if isinstance(store, SQLiteStore):
        assert (holder, queue) == (ids[0], ids[1:])
    ids = [holder, *queue]  # the order of arrival

    ran: list[str] = []
    runnable = await store.list_runnable()
    now = 2_000
    while runnable:
        assert len(runnable) == 1, runnable  # never two at once
        (current,) = runnable
        claimed = await claim(store, current, now)
        assert claimed.invocation.attempt == 1
        assert claimed.invocation.status == "running"
        effects = await store.complete(current, claimed.invocation.attempt, current.encode(), now + 1)
        assert effects is not None
        ran.append(current)
        assert effects.woken == ids[len(ran) : len(ran) + 1]
        runnable = await store.list_runnable()
        now += 10
    assert ran == ids
    assert await lock_of(store) == (None, [])
    for invocation_id in ids:
        invocation = await store.get_invocation(invocation_id)
        assert invocation is not None
        assert (invocation.status, invocation.output, invocation.attempt) == (
            "completed",
            invocation_id.encode(),
            1,
        )
        assert len(await store.get_attempts(invocation_id)) == 1


# --------------------------------------------------------------------------- the schema behind it (SQLite)


def plan(conn: sqlite3.Connection, sql: str, *params: object) -> str:
    return " | ".join(str(row["detail"]) for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))


async def test_the_queue_is_read_through_its_index(store: JournalStore) -> None:
    if not isinstance(store, SQLiteStore):
        pytest.skip("a detail of the SQLite schema")

    def plans(conn: sqlite3.Connection) -> list[str]:
        return [plan(conn, sql, OBJECT, "k1") for sql in (QUEUE_HEAD_SQL, QUEUE_SQL)]

    for query_plan in await store.writer.run(plans):
        assert "USING INDEX key_queue_order (service=? AND key=?)" in query_plan, query_plan
        assert "TEMP B-TREE" not in query_plan and "SCAN" not in query_plan, query_plan
