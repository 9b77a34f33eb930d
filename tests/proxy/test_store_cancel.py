"""Cancel and kill, and their cascades down the calls (the JournalStore contract, every backend)."""

from __future__ import annotations

from proxy.store.base import CompletionRow, Effects, Ended, JournalStore, StoredFailure, TimerRow
from tests.proxy.helpers import BOOM, CANCELLED, append, call, claim, new, start, status_of

KILLED = StoredFailure(code=499, message="killed by the operator")


async def test_cancel_and_kill_of_unknown_or_ended_invocations(store: JournalStore) -> None:
    assert await store.cancel("unknown", 1_000) == ("not_found", Effects())
    assert await store.kill("unknown", KILLED, 1_000) == ("not_found", Effects())
    attempt = await start(store)
    assert await store.complete("inv-1", attempt, b"1", 2_000) is not None
    assert await store.cancel("inv-1", 3_000) == ("already_done", Effects())
    assert await store.kill("inv-1", KILLED, 3_000) == ("already_done", Effects())
    inv = await store.get_invocation("inv-1")
    assert inv is not None and (inv.status, inv.output, inv.cancel_requested) == ("completed", b"1", False)


async def test_an_invocation_that_never_started_ends_at_once(store: JournalStore) -> None:
    await store.create_invocation(new("pending"), 1_000)
    await store.create_invocation(new("scheduled", run_at_ms=9_000), 1_000)
    for invocation_id in ("pending", "scheduled"):
        assert await store.cancel(invocation_id, 2_000) == (
            "requested",
            Effects(ended=[Ended(invocation_id=invocation_id, failure=CANCELLED)]),
        )
        inv = await store.get_invocation(invocation_id)
        assert inv is not None and (inv.status, inv.failure, inv.completed_at_ms) == ("failed", CANCELLED, 2_000)
    assert await store.due_timers(10_000, 10) == []
    assert await store.list_runnable() == []
    assert await store.cancel("pending", 2_001) == ("already_done", Effects())


async def test_a_suspended_invocation_runs_again_to_compensate(store: JournalStore) -> None:
    attempt = await start(store)
    await append(store, "inv-1", attempt, 0, "sleep", timer_at_ms=60_000)
    assert await store.suspend("inv-1", attempt, [0], 2_500) == "suspended"
    assert await store.cancel("inv-1", 3_000) == ("requested", Effects(woken=["inv-1"]))
    inv = await store.get_invocation("inv-1")
    assert inv is not None and (inv.status, inv.cancel_requested, inv.waiting_on) == ("pending", True, None)
    assert await store.list_runnable() == ["inv-1"]
    # The sleep's own timer stays: the compensation may still wait for it.
    assert await store.due_timers(100_000, 10) == [TimerRow(invocation_id="inv-1", index=0, due_at_ms=60_000)]

    again = await claim(store, "inv-1", 3_100)
    assert again.invocation.cancel_requested
    # While a cancellation is pending, suspending means running again now.
    assert await store.suspend("inv-1", again.invocation.attempt, [0], 3_200) == "resume"


async def test_a_backing_off_invocation_runs_again_at_once(store: JournalStore) -> None:
    attempt = await start(store)
    assert await store.backoff("inv-1", attempt, BOOM, 60_000, 2_000)
    assert await store.cancel("inv-1", 3_000) == ("requested", Effects(woken=["inv-1"]))
    assert await status_of(store, "inv-1") == "pending"
    assert await store.due_timers(100_000, 10) == []
    assert await store.fire_timer("inv-1", -1, 60_000) == Effects()


async def test_a_running_invocation_gets_the_flag(store: JournalStore) -> None:
    attempt = await start(store)
    # Listed as notified: an attempt blocked on an await must re-read its state to see the flag.
    assert await store.cancel("inv-1", 2_000) == ("requested", Effects(notified=["inv-1"]))
    inv = await store.get_invocation("inv-1")
    assert inv is not None and (inv.status, inv.cancel_requested, inv.attempt) == ("running", True, attempt)
    assert (await append(store, "inv-1", attempt, 0, "cancel")).cancel_requested
    assert await store.cancel("inv-1", 2_100) == ("requested", Effects(notified=["inv-1"]))  # asking twice is fine
    # A pending one that already ran (e.g. abandoned) keeps its journal: the flag only.
    await store.abandon_running(2_200)
    assert await store.cancel("inv-1", 2_300) == ("requested", Effects())
    assert await status_of(store, "inv-1") == "pending"


async def build_call_tree(store: JournalStore) -> None:
    """root (running) calls a (suspended on its call to g1), sends s, and calls b (completed).

    a calls g1 (running) and g2 (delayed, scheduled); g1 calls g3 (pending, never started).
    """
    root = await start(store, "root", 1_000)
    await call(store, "root", root, 0, "a")
    await append(store, "root", root, 1, "send", child=new("s", parent=("root", 1)))
    await call(store, "root", root, 2, "b")
    a = (await claim(store, "a")).invocation.attempt
    await call(store, "a", a, 0, "g1")
    await call(store, "a", a, 1, "g2", run_at_ms=50_000)
    await append(store, "a", a, 2, "sleep", timer_at_ms=40_000)
    assert await store.suspend("a", a, [0], 2_100) == "suspended"
    g1 = (await claim(store, "g1")).invocation.attempt
    await call(store, "g1", g1, 0, "g3")
    b = (await claim(store, "b")).invocation.attempt
    assert await store.complete("b", b, b'"b done"', 2_200) is not None


async def statuses(store: JournalStore) -> dict[str, tuple[str, bool]]:
    return {i.id: (i.status, i.cancel_requested) for i in await store.list_invocations()}


async def test_cancel_cascades_down_a_call_chain(store: JournalStore) -> None:
    await build_call_tree(store)
    outcome, effects = await store.cancel("root", 3_000)
    assert outcome == "requested"
    assert effects.woken == ["a"]
    assert set(effects.notified) == {"root", "a", "g1"}  # running ones, and callers of the ended ones
    assert sorted(effects.ended, key=lambda e: e.invocation_id) == [
        Ended(invocation_id="g2", failure=CANCELLED),
        Ended(invocation_id="g3", failure=CANCELLED),
    ]
    assert await statuses(store) == {
        "root": ("running", True),
        "a": ("pending", True),
        "b": ("completed", False),  # already ended: untouched
        "s": ("pending", False),  # a send is not part of the caller
        "g1": ("running", True),
        "g2": ("failed", False),
        "g3": ("failed", False),
    }
    # The callers of the callees that never started got their failure as the completion.
    assert await store.get_completions("a", [0, 1]) == [CompletionRow(index=1, failure=CANCELLED, created_at_ms=3_000)]
    assert await store.get_completions("g1", [0]) == [CompletionRow(index=0, failure=CANCELLED, created_at_ms=3_000)]
    # a's start timer is gone (it is pending), its sleep timer is kept.
    assert [(t.invocation_id, t.index) for t in await store.due_timers(100_000, 10)] == [("a", 2)]
    assert sorted(await store.list_runnable()) == ["a", "s"]


async def test_kill_cascades_and_fences_every_attempt(store: JournalStore) -> None:
    # The root is itself called by a caller that is not killed and waits for it.
    caller = await start(store, "caller", 500)
    await call(store, "caller", caller, 0, "root")
    assert await store.suspend("caller", caller, [0], 900) == "suspended"
    await start(store, "bystander", 900)  # unrelated, stays running
    root = (await claim(store, "root", 1_000)).invocation.attempt
    await call(store, "root", root, 0, "a")
    a_attempt = (await claim(store, "a", 1_200)).invocation.attempt
    await append(store, "a", a_attempt, 0, "sleep", timer_at_ms=40_000)
    await call(store, "a", a_attempt, 1, "g1", run_at_ms=50_000)
    await append(store, "root", root, 1, "send", child=new("s", parent=("root", 1)))

    outcome, effects = await store.kill("root", KILLED, 3_000)
    assert outcome == "requested"
    assert effects.woken == ["caller"] and effects.notified == ["caller"]
    assert sorted(effects.ended, key=lambda e: e.invocation_id) == [
        Ended(invocation_id="a", failure=KILLED),
        Ended(invocation_id="g1", failure=KILLED),
        Ended(invocation_id="root", failure=KILLED),
    ]
    for killed in ("root", "a", "g1"):
        inv = await store.get_invocation(killed)
        assert inv is not None and (inv.status, inv.failure, inv.completed_at_ms) == ("failed", KILLED, 3_000)
    assert [(x.outcome, x.ended_at_ms, x.failure) for x in await store.get_attempts("root")] == [
        ("killed", 3_000, KILLED)
    ]
    assert [x.outcome for x in await store.get_attempts("a")] == ["killed"]
    assert await store.get_attempts("g1") == []
    # Only the caller outside the cascade gets a completion; the killed callers do not.
    assert await store.get_completions("caller", [0]) == [CompletionRow(index=0, failure=KILLED, created_at_ms=3_000)]
    assert await store.get_completions("root", [0]) == []
    assert await store.get_completions("a", [1]) == []
    assert await store.due_timers(100_000, 10) == []
    assert await status_of(store, "caller") == "pending"
    assert await status_of(store, "s") == "pending"
    assert await status_of(store, "bystander") == "running"

    # The killed attempts are fenced.
    assert (await store.append("root", root, 2, "run", "x", b"X", 3_100)).outcome == "fenced"
    assert await store.complete("a", a_attempt, b"1", 3_100) is None
    assert await store.suspend("a", a_attempt, [0], 3_100) == "fenced"
    assert await store.fire_timer("a", 0, 40_000) == Effects()


async def test_a_cycle_in_the_parent_links_does_not_loop(store: JournalStore) -> None:
    # Not something the proxy creates, but the walk must end anyway.
    await store.create_invocation(new("x", parent=("y", 0), awaits=True), 1_000)
    await store.create_invocation(new("y", parent=("x", 0), awaits=True), 1_000)
    outcome, effects = await store.cancel("x", 2_000)
    assert outcome == "requested"
    assert {e.invocation_id for e in effects.ended} == {"x", "y"}
    assert await status_of(store, "x") == "failed" and await status_of(store, "y") == "failed"
