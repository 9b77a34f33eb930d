"""Leases, takeover, shared timers and broadcasts: what lets several instances share one database.

The verbs run on both backends (a SQLite store leases to itself). The tests
that need two instances on one database, a lock held by another transaction,
or ``LISTEN``/``NOTIFY`` are PostgreSQL's.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from proxy.store.base import Broadcast, JournalStore
from tests import postgres
from tests.proxy.helpers import new, start

LEASE_MS = 10_000  # the stores' default


async def _attempt_outcomes(store: JournalStore, invocation_id: str) -> list[str | None]:
    return [a.outcome for a in await store.get_attempts(invocation_id)]


async def test_an_expired_lease_is_taken_over_and_its_attempt_fenced(store: JournalStore) -> None:
    attempt = await start(store, "inv-1", now_ms=1_000)  # claimed at 1_001: leased until 11_001
    assert await store.take_over_expired(11_000) == []
    assert await store.take_over_expired(11_002) == ["inv-1"]
    invocation = await store.get_invocation("inv-1")
    assert invocation is not None and invocation.status == "pending"
    assert await _attempt_outcomes(store, "inv-1") == ["abandoned"]
    # The old attempt can write nothing more, before or after the new claim.
    assert (await store.append("inv-1", attempt, 0, "run", "s", b"1", 11_003)).outcome == "fenced"
    claim = await store.claim("inv-1", "http://h2", 11_004)
    assert claim is not None and claim.invocation.attempt == attempt + 1
    assert (await store.append("inv-1", attempt, 0, "run", "s", b"1", 11_005)).outcome == "fenced"
    assert await store.complete("inv-1", attempt, b"late", 11_006) is None
    assert (await store.append("inv-1", attempt + 1, 0, "run", "s", b"1", 11_007)).outcome == "appended"
    assert await store.take_over_expired(11_008) == []  # the new lease runs until 21_004


async def test_renewing_moves_every_lease_of_this_instance_on(store: JournalStore) -> None:
    for invocation_id in ("inv-1", "inv-2"):
        await start(store, invocation_id, now_ms=1_000)
    await store.create_invocation(new("inv-3"), 1_000)  # pending: nothing to renew
    assert await store.renew_leases(9_000) == 2  # now leased until 19_000
    assert await store.take_over_expired(18_999) == []
    assert sorted(await store.take_over_expired(19_001)) == ["inv-1", "inv-2"]
    assert await store.renew_leases(19_002) == 0  # taken over: no longer this instance's


async def test_takeover_ignores_invocations_that_are_not_running(store: JournalStore) -> None:
    attempt = await start(store, "inv-1", now_ms=1_000)
    assert await store.suspend("inv-1", attempt, [], 1_500) == "resume"  # pending again
    await start(store, "inv-2", now_ms=1_000)
    assert await store.complete("inv-2", 1, b"done", 1_600) is not None
    assert await store.take_over_expired(100_000) == []


async def test_pending_invocations_nobody_claimed_are_listed_as_stale(store: JournalStore) -> None:
    await store.create_invocation(new("old"), 1_000)
    await store.create_invocation(new("new"), 5_000)
    await start(store, "running", now_ms=1_000)
    assert await store.list_stale_pending(4_000) == ["old"]
    assert await store.list_stale_pending(6_000, limit=1) == ["old"]
    assert await store.list_stale_pending(6_000) == ["old", "new"]


async def test_fire_due_timers_fires_each_due_timer_once(store: JournalStore) -> None:
    await store.create_invocation(new("later", run_at_ms=5_000), 1_000)
    await store.create_invocation(new("soon", run_at_ms=2_000), 1_000)
    attempt = await start(store, "sleeper", now_ms=1_000)
    appended = await store.append("sleeper", attempt, 0, "sleep", "nap", b"{}", 1_100, timer_at_ms=3_000)
    assert appended.outcome == "appended"
    assert await store.suspend("sleeper", attempt, [0], 1_200) == "suspended"

    fired, effects = await store.fire_due_timers(3_000)
    assert [(t.invocation_id, t.index) for t in fired] == [("soon", -1), ("sleeper", 0)]
    assert sorted(effects.woken) == ["sleeper", "soon"]
    assert effects.notified == ["sleeper"]
    again, nothing = await store.fire_due_timers(3_000)
    assert again == [] and nothing.woken == []
    fired, _ = await store.fire_due_timers(10_000, limit=5)
    assert [t.invocation_id for t in fired] == ["later"]
    assert [c.index for c in await store.get_completions("sleeper", [0])] == [0]


# --------------------------------------------------------------------------- two instances (PostgreSQL)


@pytest.fixture
async def database_url(tmp_path: object) -> AsyncIterator[str]:
    postgres.require_server()
    database = postgres.database_for_path(f"leases-{tmp_path}")
    url = await postgres.create_database(database)
    yield url
    await postgres.drop_database(database)


async def _instances(url: str, *names: str) -> list[JournalStore]:
    from proxy.store.postgres import PostgresStore

    stores: list[JournalStore] = []
    for name in names:
        store = PostgresStore(url, instance_id=name, lease_ms=LEASE_MS, pool_size=4)
        await store.open()
        stores.append(store)
    return stores


async def test_a_starting_instance_takes_back_only_its_own_or_expired_attempts(database_url: str) -> None:
    a, b = await _instances(database_url, "proxy-a", "proxy-b")
    try:
        await start(a, "on-a", now_ms=1_000)  # leased to proxy-a until 11_001
        await start(b, "on-b", now_ms=1_000)
        # proxy-a restarts under its name: its attempt is fenced at once, proxy-b's is left alone.
        assert await a.abandon_running(2_000) == 1
        assert (await a.get_invocation("on-a")).status == "pending"  # type: ignore[union-attr]
        assert (await a.get_invocation("on-b")).status == "running"  # type: ignore[union-attr]
        # A fresh instance takes nothing that is leased and current, but an expired lease is fair game.
        (c,) = await _instances(database_url, "proxy-c")
        try:
            assert await c.abandon_running(3_000) == 0
            assert await c.abandon_running(11_002) == 1
        finally:
            await c.close()
    finally:
        await a.close()
        await b.close()


async def test_a_timer_locked_by_another_instance_is_skipped_not_waited_for(database_url: str) -> None:
    import asyncpg

    a, b = await _instances(database_url, "proxy-a", "proxy-b")
    holder = await asyncpg.connect(database_url)
    try:
        await a.create_invocation(new("one", run_at_ms=2_000), 1_000)
        await a.create_invocation(new("two", run_at_ms=2_000), 1_000)
        # Another instance is in the middle of firing "one": its row is locked by that transaction.
        async with holder.transaction():
            await holder.execute("SELECT 1 FROM timers WHERE invocation_id = 'one' FOR UPDATE")
            fired, _ = await asyncio.wait_for(b.fire_due_timers(3_000), timeout=5)
            assert [t.invocation_id for t in fired] == ["two"]
        # The lock is gone (the other transaction ended without firing it): now it fires, once.
        fired, _ = await a.fire_due_timers(3_000)
        assert [t.invocation_id for t in fired] == ["one"]
        assert (await b.fire_due_timers(3_000))[0] == []
    finally:
        await holder.close()
        await a.close()
        await b.close()


async def test_concurrent_timer_firing_on_two_instances_fires_each_timer_once(database_url: str) -> None:
    a, b = await _instances(database_url, "proxy-a", "proxy-b")
    try:
        ids = [f"inv-{n:03}" for n in range(60)]
        for invocation_id in ids:
            await a.create_invocation(new(invocation_id, run_at_ms=2_000), 1_000)
        results = await asyncio.gather(*(store.fire_due_timers(3_000, limit=7) for _ in range(6) for store in (a, b)))
        fired = [t.invocation_id for rows, _ in results for t in rows]
        while True:  # whatever the rounds left
            rows, _ = await a.fire_due_timers(3_000)
            if not rows:
                break
            fired += [t.invocation_id for t in rows]
        assert sorted(fired) == ids  # every timer once, none twice
    finally:
        await a.close()
        await b.close()


async def test_instances_hear_the_ends_and_completions_committed_by_others(database_url: str) -> None:
    a, b = await _instances(database_url, "proxy-a", "proxy-b")
    heard: asyncio.Queue[Broadcast] = asyncio.Queue()
    heard_by_b: list[Broadcast] = []
    try:
        await a.subscribe(heard.put_nowait, lambda: None)
        await b.subscribe(heard_by_b.append, lambda: None)
        attempt = await start(b, "inv-1", now_ms=1_000)
        await b.append("inv-1", attempt, 0, "awakeable", "signal", b"{}", 1_100)
        outcome, _ = await b.complete_entry("inv-1", 0, 1_200, result=b"1")
        assert outcome == "completed"
        assert await b.complete("inv-1", attempt, b'"done"', 1_300) is not None
        await b.register_deployment("dp-x", "http://h9", b'{"protocol_version":1,"services":[]}', 1_400)
        assert await b.remove_endpoint("http://h9")
        assert not await b.remove_endpoint("http://h9")  # nothing changed: nothing to tell
        got = [await asyncio.wait_for(heard.get(), timeout=5) for _ in range(4)]
        assert [(m.sender, m.notified, m.ended, m.deployments) for m in got] == [
            ("proxy-b", ["inv-1"], [], False),
            ("proxy-b", [], ["inv-1"], False),
            ("proxy-b", [], [], True),
            ("proxy-b", [], [], True),
        ]
        # A commit of a's reaches b (so b is listening), and b never heard its own commits.
        await a.create_invocation(new("inv-2"), 2_000)
        assert await a.claim("inv-2", None, 2_001) is not None
        assert await a.complete("inv-2", 1, b"1", 2_002) is not None
        for _ in range(500):
            if heard_by_b:
                break
            await asyncio.sleep(0.01)
        assert [(m.sender, m.ended) for m in heard_by_b] == [("proxy-a", ["inv-2"])]
    finally:
        await a.close()
        await b.close()
