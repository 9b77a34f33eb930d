"""Races between concurrent writes: the store must behave as if they took turns.

On SQLite they do take turns (one writer); on PostgreSQL they run in
concurrent transactions that lock what they decide on. Each test fires many
racing writes at once, several times over, and checks the outcome every
serial order would give.
"""

from __future__ import annotations

import asyncio

from proxy.store.base import JournalStore, PromiseOp
from tests.proxy.helpers import new, start

ROUNDS = 30


async def test_a_completion_racing_a_suspension_always_wakes_the_invocation(store: JournalStore) -> None:
    # The lost wake-up: the suspension reads "not completed yet" while the completion reads "not
    # suspended yet", and each commits believing the other will act.
    for n in range(ROUNDS):
        invocation_id = f"inv-{n}"
        attempt = await start(store, invocation_id)
        assert (await store.append(invocation_id, attempt, 0, "awakeable", "a", b"{}", 1_100)).outcome == "appended"
        suspended, (completed, effects) = await asyncio.gather(
            store.suspend(invocation_id, attempt, [0], 1_200),
            store.complete_entry(invocation_id, 0, 1_200, result=b"1"),
        )
        assert completed == "completed"
        invocation = await store.get_invocation(invocation_id)
        assert invocation is not None
        assert invocation.status == "pending", (n, suspended, effects)  # never left suspended
        assert suspended == "resume" or invocation_id in effects.woken


async def test_one_entry_completed_by_many_at_once_is_completed_once(store: JournalStore) -> None:
    for n in range(ROUNDS):
        invocation_id = f"inv-{n}"
        attempt = await start(store, invocation_id)
        await store.append(invocation_id, attempt, 0, "awakeable", "a", b"{}", 1_100)
        outcomes = await asyncio.gather(
            *(store.complete_entry(invocation_id, 0, 1_200, result=str(i).encode()) for i in range(6))
        )
        assert sorted(o for o, _ in outcomes) == ["already_completed"] * 5 + ["completed"]
        (completion,) = await store.get_completions(invocation_id, [0])
        winner = next(i for i, (o, _) in enumerate(outcomes) if o == "completed")
        assert completion.result == str(winner).encode()


async def test_a_key_lock_is_handed_on_however_ends_and_arrivals_interleave(store: JournalStore) -> None:
    # Holders ending while newcomers queue: every invocation of the key must run, one at a time.
    ran: list[str] = []
    arrivals = [f"inv-{n:03}" for n in range(ROUNDS)]
    now = 1_000

    async def run_holders() -> None:
        nonlocal now
        idle = 0
        while len(ran) < len(arrivals) and idle < 2_000:
            runnable = await store.list_runnable()
            assert len(runnable) <= 1, runnable  # never two holders
            if not runnable:
                idle += 1
                await asyncio.sleep(0.001)
                continue
            idle = 0
            claim = await store.claim(runnable[0], None, now)
            assert claim is not None
            assert await store.complete(runnable[0], claim.invocation.attempt, b"1", now + 1) is not None
            ran.append(runnable[0])
            now += 2

    async def arrive() -> None:
        for invocation_id in arrivals:
            await store.create_invocation(new(invocation_id, key="k", service="counter", exclusive=True), 1_000)

    await asyncio.gather(run_holders(), arrive())
    assert sorted(ran) == arrivals
    status = await store.key_status("counter", "k")
    assert (status.lock_holder, status.queue) == (None, [])


async def test_a_promise_waited_on_while_it_is_resolved_is_never_missed(store: JournalStore) -> None:
    for n in range(ROUNDS):
        key = f"wf-{n}"
        waiter, resolver = f"{key}-waiter", f"{key}-resolver"
        for invocation_id in (waiter, resolver):
            await store.create_invocation(new(invocation_id, service="flow", key=key), 1_000)
        w = await store.claim(waiter, None, 1_001)
        r = await store.claim(resolver, None, 1_001)
        assert w is not None and r is not None
        got, resolved = await asyncio.gather(
            store.append(waiter, 1, 0, "get_promise", "p", b"{}", 1_100, promise_op=PromiseOp(op="get", name="p")),
            store.append(
                resolver,
                1,
                0,
                "complete_promise",
                "p",
                b"{}",
                1_100,
                promise_op=PromiseOp(op="complete", name="p", value=b'"yes"'),
            ),
        )
        assert (got.outcome, resolved.outcome) == ("appended", "appended")
        # Either the get saw the resolved promise, or the resolution completed the get's entry.
        (completion,) = await store.get_completions(waiter, [0])
        assert completion.result == b'"yes"'


async def test_the_first_uses_of_an_idempotency_key_make_one_invocation(store: JournalStore) -> None:
    for n in range(ROUNDS):
        created = await asyncio.gather(
            *(store.create_invocation(new(f"inv-{n}-{i}", idempotency_key=f"key-{n}"), 1_000) for i in range(5))
        )
        assert len({c.invocation.id for c in created}) == 1
        assert sum(c.created for c in created) == 1
