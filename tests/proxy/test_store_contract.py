"""The JournalStore contract, run against every backend (see conftest.py), plus SQLite writer specifics."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable

import msgspec
import pytest

from handler_sdk.protocol import HandlerManifest, Manifest, ServiceManifest
from proxy.store import open_store
from proxy.store._sqlite_writer import SQLiteWriter, StoreClosedError
from proxy.store.base import AppendResult, Effects, Ended, IdempotencyConflict, JournalStore, TimerRow
from proxy.store.postgres import PostgresStore
from proxy.store.sqlite import SQLiteStore
from tests.proxy.conftest import StoreFactory
from tests.proxy.helpers import BOOM, new, start


def writer_of(store: JournalStore) -> SQLiteWriter:
    if not isinstance(store, SQLiteStore):
        pytest.skip("group commit is a detail of the SQLite writer")
    return store.writer


# --------------------------------------------------------------------------- create


async def test_create_inserts_a_pending_invocation(store: JournalStore) -> None:
    created = await store.create_invocation(new(), 1_000)
    assert created.created
    inv = created.invocation
    assert (inv.status, inv.attempt, inv.journal_len, inv.input) == ("pending", 0, 0, b'"world"')
    assert (inv.headers, inv.created_at_ms, inv.modified_at_ms, inv.completed_at_ms) == (
        {"x-trace": "abc"},
        1_000,
        1_000,
        None,
    )
    assert await store.get_invocation("inv-1") == inv
    assert await store.get_invocation("nope") is None


async def test_idempotency_key_returns_the_existing_invocation_or_conflicts(store: JournalStore) -> None:
    first = await store.create_invocation(new("a", idempotency_key="k1"), 1_000)
    again = await store.create_invocation(new("b", idempotency_key="k1"), 2_000)
    assert not again.created and again.invocation == first.invocation
    with pytest.raises(IdempotencyConflict) as conflict:
        await store.create_invocation(new("c", idempotency_key="k1", input=b'"other"'), 3_000)
    assert conflict.value.existing.id == "a"
    # The scope is (service, handler, key): another handler or key is a new invocation.
    other_handler = await store.create_invocation(new("d", handler="wave", idempotency_key="k1"), 4_000)
    other_key = await store.create_invocation(new("e", key="user-7", idempotency_key="k1"), 5_000)
    assert other_handler.created and other_key.created
    assert {i.id for i in await store.list_invocations()} == {"a", "d", "e"}


# --------------------------------------------------------------------------- claim and append


async def test_claim_starts_a_new_attempt_with_the_journal(store: JournalStore) -> None:
    await store.create_invocation(new(), 1_000)
    claim = await store.claim("inv-1", "http://h1", 1_001)
    assert claim is not None and claim.journal == []
    assert (claim.invocation.status, claim.invocation.attempt) == ("running", 1)
    assert await store.claim("inv-1", "http://h1", 1_002) is None  # already running
    assert await store.claim("unknown", None, 1_002) is None
    assert (await store.append("inv-1", 1, 0, "run", "a", b"A", 1_003)).outcome == "appended"
    assert (await store.append("inv-1", 1, 1, "run", "b", b"B", 1_004)).outcome == "appended"
    assert await store.backoff("inv-1", 1, BOOM, 5_000, 1_005)
    again = await store.claim("inv-1", "http://h2", 5_000)
    assert again is not None
    assert (again.invocation.attempt, again.invocation.journal_len, again.invocation.next_run_at_ms) == (2, 2, None)
    assert [(r.index, r.name, r.entry, r.attempt) for r in again.journal] == [(0, "a", b"A", 1), (1, "b", b"B", 1)]
    assert again.journal == await store.get_journal("inv-1")
    attempts = await store.get_attempts("inv-1")
    assert [(a.attempt, a.endpoint, a.outcome, a.failure) for a in attempts] == [
        (1, "http://h1", "retry", BOOM),
        (2, "http://h2", None, None),
    ]


async def test_append_outcomes(store: JournalStore) -> None:
    attempt = await start(store)
    assert (await store.append("inv-1", attempt, 0, "run", "s", b"A", 2_000)).outcome == "appended"
    assert (await store.append("inv-1", attempt, 0, "run", "s", b"A", 2_001)).outcome == "duplicate"
    assert (await store.append("inv-1", attempt, 0, "run", "s", b"X", 2_002)).outcome == "conflict"
    assert (await store.append("inv-1", attempt, 2, "run", "s", b"C", 2_003)).outcome == "gap"
    assert (await store.append("inv-1", attempt + 1, 1, "run", "s", b"B", 2_004)).outcome == "fenced"
    assert (await store.append("nope", attempt, 0, "run", "s", b"A", 2_005)).outcome == "not_found"
    assert [r.entry for r in await store.get_journal("inv-1")] == [b"A"]
    inv = await store.get_invocation("inv-1")
    assert inv is not None and inv.journal_len == 1
    # An entry written by an earlier attempt is not a duplicate of the same bytes from a new attempt.
    assert await store.abandon_running(3_000) == 1
    assert (await store.claim("inv-1", None, 3_001)) is not None
    assert (await store.append("inv-1", attempt + 1, 0, "run", "s", b"A", 3_002)).outcome == "conflict"
    assert (await store.append("inv-1", attempt + 1, 1, "run", "s", b"B", 3_003)).outcome == "appended"


async def test_a_stale_attempt_is_fenced_everywhere(store: JournalStore) -> None:
    stale = await start(store)
    await store.abandon_running(2_000)
    current = await store.claim("inv-1", None, 2_001)
    assert current is not None and current.invocation.attempt == stale + 1
    assert (await store.append("inv-1", stale, 0, "run", "s", b"A", 2_002)).outcome == "fenced"
    assert await store.complete("inv-1", stale, b"1", 2_003) is None
    assert await store.fail("inv-1", stale, BOOM, 2_004) is None
    assert not await store.backoff("inv-1", stale, BOOM, 9_000, 2_005)
    inv = await store.get_invocation("inv-1")
    assert inv is not None and (inv.status, inv.attempt, inv.journal_len) == ("running", stale + 1, 0)


# --------------------------------------------------------------------------- endings


async def test_complete_fail_and_backoff(store: JournalStore) -> None:
    for invocation_id in ("ok", "bad", "retry"):
        await start(store, invocation_id)
    assert await store.complete("ok", 1, b'"hi"', 2_000) == Effects(ended=[Ended(invocation_id="ok", output=b'"hi"')])
    assert await store.fail("bad", 1, BOOM, 2_001) == Effects(ended=[Ended(invocation_id="bad", failure=BOOM)])
    assert await store.backoff("retry", 1, BOOM, 7_000, 2_002)
    ok, bad, retry = [await store.get_invocation(i) for i in ("ok", "bad", "retry")]
    assert ok is not None and (ok.status, ok.output, ok.completed_at_ms, ok.done) == ("completed", b'"hi"', 2_000, True)
    assert bad is not None and (bad.status, bad.failure, bad.completed_at_ms, bad.done) == ("failed", BOOM, 2_001, True)
    assert retry is not None and not retry.done
    assert (retry.status, retry.last_failure, retry.next_run_at_ms, retry.failure) == ("backing_off", BOOM, 7_000, None)
    assert [(a.outcome, a.ended_at_ms, a.failure) for a in await store.get_attempts("bad")] == [("failed", 2_001, BOOM)]
    assert [(a.outcome, a.ended_at_ms) for a in await store.get_attempts("ok")] == [("completed", 2_000)]
    for finished in ("ok", "bad"):
        assert await store.claim(finished, None, 3_000) is None
        assert await store.complete(finished, 1, b"again", 3_000) is None
    assert await store.list_runnable() == []
    assert await store.due_timers(10_000, 10) == [TimerRow(invocation_id="retry", index=-1, due_at_ms=7_000)]


async def test_abandon_running_fences_and_makes_claimable(store: JournalStore) -> None:
    await start(store, "a")
    await start(store, "b")
    await store.create_invocation(new("c"), 1_500)
    assert await store.complete("b", 1, b"1", 1_600) is not None
    assert await store.abandon_running(2_000) == 1
    assert (await store.append("a", 1, 0, "run", "s", b"A", 2_001)).outcome == "fenced"
    assert [(a.outcome, a.ended_at_ms) for a in await store.get_attempts("a")] == [("abandoned", 2_000)]
    assert await store.list_runnable() == ["a", "c"]
    claim = await store.claim("a", None, 2_002)
    assert claim is not None and claim.invocation.attempt == 2
    assert await store.abandon_running(2_003) == 1


# --------------------------------------------------------------------------- durability and concurrency


async def test_everything_survives_close_and_reopen(store_factory: StoreFactory) -> None:
    store = await store_factory()
    secret = await store.secret()
    assert len(secret) == 32
    await start(store, "a")
    await store.append("a", 1, 0, "run", "s", b"A", 2_000)
    await start(store, "b")
    await store.complete("b", 1, b"out", 2_001)
    journal = await store.get_journal("a")
    await store.close()
    await store.close()  # closing twice is fine
    with pytest.raises(StoreClosedError):
        await store.get_invocation("a")

    reopened = await store_factory()
    assert await reopened.secret() == secret
    assert await reopened.get_journal("a") == journal
    a, b = await reopened.get_invocation("a"), await reopened.get_invocation("b")
    assert a is not None and (a.status, a.attempt, a.journal_len) == ("running", 1, 1)
    assert b is not None and (b.status, b.output) == ("completed", b"out")


async def test_concurrent_appends_all_land_in_fewer_commits(store: JournalStore) -> None:
    ids = [f"inv-{i}" for i in range(200)]
    await asyncio.gather(*(store.create_invocation(new(i), 1_000) for i in ids))
    claims = await asyncio.gather(*(store.claim(i, None, 1_001) for i in ids))
    assert all(c is not None and c.invocation.attempt == 1 for c in claims)
    writer = store.writer if isinstance(store, SQLiteStore) else None
    commits_before = writer.commits if writer else 0
    results = await asyncio.gather(*(store.append(i, 1, 0, "run", "s", i.encode(), 2_000) for i in ids))
    assert [r.outcome for r in results] == ["appended"] * len(ids)
    for i in ids:
        assert [r.entry for r in await store.get_journal(i)] == [i.encode()]
    if writer is not None:
        print(f"group commit: {writer.commits - commits_before} commits for {len(ids)} appends")
        assert writer.commits - commits_before < len(ids)


async def test_close_finishes_the_writes_already_queued(store_factory: StoreFactory) -> None:
    store = await store_factory()
    ids = [f"inv-{i}" for i in range(20)]
    for i in ids:
        await start(store, i)
    # gather starts its tasks in order: every append is queued before close() is.
    *outcomes, _ = await asyncio.gather(*(store.append(i, 1, 0, "run", "s", b"A", 2_000) for i in ids), store.close())
    assert [r.outcome for r in outcomes if isinstance(r, AppendResult)] == ["appended"] * len(ids)
    reopened = await store_factory()
    assert [len(await reopened.get_journal(i)) for i in ids] == [1] * len(ids)


async def _hold_writer(writer: SQLiteWriter) -> tuple[asyncio.Future[None], threading.Event]:
    """Occupy the writer with a job that waits for the returned event, so the next jobs form one batch."""
    loop = asyncio.get_running_loop()
    started: asyncio.Future[None] = loop.create_future()
    release = threading.Event()

    def blocker(conn: sqlite3.Connection) -> None:
        loop.call_soon_threadsafe(started.set_result, None)
        assert release.wait(30)

    held = writer.submit(blocker)
    await started  # the writer took the blocker alone; everything submitted from now on queues behind it
    return held, release


async def test_a_failing_job_does_not_spoil_its_batch(store: JournalStore) -> None:
    writer = writer_of(store)

    def insert(key: str, fail: bool = False) -> Callable[[sqlite3.Connection], str]:
        def job(conn: sqlite3.Connection) -> str:
            conn.execute("INSERT INTO meta (key, value) VALUES (?, x'00')", (key,))
            if fail:
                raise RuntimeError(f"{key} failed")
            return key

        return job

    held, release = await _hold_writer(writer)
    commits = writer.commits
    futures = [writer.submit(insert("k1")), writer.submit(insert("k2", fail=True)), writer.submit(insert("k3"))]
    release.set()
    await held
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert results[0] == "k1" and results[2] == "k3"
    assert isinstance(results[1], RuntimeError)
    assert writer.commits == commits + 2  # the blocker alone, then the three jobs together
    keys = await writer.run(lambda conn: {r[0] for r in conn.execute("SELECT key FROM meta WHERE key LIKE 'k%'")})
    assert keys == {"k1", "k3"}  # the failed job's insert was rolled back to its savepoint


async def test_a_failed_commit_fails_every_job_of_the_batch(store: JournalStore) -> None:
    writer = writer_of(store)
    await writer.run(
        lambda conn: conn.execute(
            "CREATE TABLE child (parent TEXT REFERENCES meta (key) DEFERRABLE INITIALLY DEFERRED)"
        )
    )
    held, release = await _hold_writer(writer)
    good = writer.submit(lambda conn: conn.execute("INSERT INTO meta (key, value) VALUES ('good', x'00')").rowcount)
    # A deferred foreign key is only checked at COMMIT, so this job succeeds but makes the COMMIT fail.
    poison = writer.submit(lambda conn: conn.execute("INSERT INTO child VALUES ('missing')").rowcount)
    release.set()
    await held
    results = await asyncio.gather(good, poison, return_exceptions=True)
    assert all(isinstance(r, sqlite3.IntegrityError) for r in results)
    assert (
        await writer.run(lambda conn: conn.execute("SELECT count(*) FROM meta WHERE key = 'good'").fetchone()[0]) == 0
    )


# --------------------------------------------------------------------------- listing


async def test_list_invocations_most_recent_first(store: JournalStore) -> None:
    for n, invocation_id in enumerate(["a", "b", "c", "d"]):
        await store.create_invocation(new(invocation_id), 1_000 + n)
    await store.claim("c", None, 2_000)
    await store.complete("c", 1, b"1", 2_001)
    assert [i.id for i in await store.list_invocations()] == ["d", "c", "b", "a"]
    assert [i.id for i in await store.list_invocations(limit=2)] == ["d", "c"]
    assert [i.id for i in await store.list_invocations(status="pending")] == ["d", "b", "a"]
    assert [i.id for i in await store.list_invocations(status="completed")] == ["c"]
    assert await store.list_invocations(status="failed") == []
    assert await store.list_runnable() == ["a", "b", "d"]


# --------------------------------------------------------------------------- deployments


def manifest(*services: str, sdk: str = "v1") -> bytes:
    return msgspec.json.encode(
        Manifest(sdk=sdk, services=[ServiceManifest(name=s, handlers=[HandlerManifest(name="run")]) for s in services])
    )


async def test_deployments_group_endpoints_by_manifest(store: JournalStore) -> None:
    v1 = manifest("greeter", "billing")
    first = await store.register_deployment("dp-1", "http://h1", v1, 1_000)
    assert (first.id, first.endpoints) == ("dp-1", ["http://h1"])
    assert await store.register_deployment("dp-x", "http://h1", v1, 1_500) == first  # idempotent
    joined = await store.register_deployment("dp-2", "http://h2", v1, 2_000)
    assert (joined.id, joined.endpoints) == ("dp-1", ["http://h1", "http://h2"])
    services = await store.list_services()
    assert [(s.name, s.deployment_id) for s in services] == [("billing", "dp-1"), ("greeter", "dp-1")]
    assert msgspec.json.decode(services[1].manifest, type=ServiceManifest).name == "greeter"

    # New code at h2: a new deployment, and the services it names move to it.
    v2 = manifest("greeter", sdk="v2")
    moved = await store.register_deployment("dp-3", "http://h2", v2, 3_000)
    assert (moved.id, moved.endpoints, moved.manifest) == ("dp-3", ["http://h2"], v2)
    assert [(s.name, s.deployment_id) for s in await store.list_services()] == [
        ("billing", "dp-1"),
        ("greeter", "dp-3"),
    ]
    assert [(d.id, d.endpoints) for d in await store.list_deployments()] == [
        ("dp-1", ["http://h1"]),
        ("dp-3", ["http://h2"]),
    ]
    assert await store.remove_endpoint("http://h1")
    assert not await store.remove_endpoint("http://h1")
    kept = await store.get_deployment("dp-1")
    assert kept is not None and kept.endpoints == []  # kept: invocations may still be pinned to it
    assert await store.get_deployment("nope") is None


async def test_an_invalid_manifest_is_rejected_before_writing(store: JournalStore) -> None:
    with pytest.raises(msgspec.ValidationError):
        await store.register_deployment("dp-1", "http://h1", b'{"services": 3}', 1_000)
    assert await store.list_deployments() == []


# --------------------------------------------------------------------------- opening


def test_open_store_accepts_paths_sqlite_and_postgresql_urls() -> None:
    assert isinstance(open_store("journal.db"), SQLiteStore)
    url_store = open_store("sqlite:////var/lib/proxy/journal.db")
    assert isinstance(url_store, SQLiteStore) and url_store.path == "/var/lib/proxy/journal.db"
    assert not url_store.shared
    for url in ("postgresql://localhost/proxy", "postgres://u:p@db:5433/proxy?sslmode=require"):
        pg_store = open_store(url, instance_id="proxy-1", lease_ms=5_000)
        assert isinstance(pg_store, PostgresStore) and pg_store.shared
        assert (pg_store.instance_id, pg_store.lease_ms) == ("proxy-1", 5_000)
    unnamed = open_store("postgresql://localhost/proxy")
    assert unnamed.instance_id and unnamed.instance_id != open_store("postgresql://localhost/proxy").instance_id
    with pytest.raises(ValueError, match="lease_ms"):
        open_store("postgresql://localhost/proxy", lease_ms=0)
    for bad in ("mysql://localhost/db", "sqlite://", ":memory:", ""):
        with pytest.raises(ValueError):
            open_store(bad)
    with pytest.raises(ValueError, match="synchronous"):
        SQLiteStore("x.db", synchronous="OFF")  # type: ignore[arg-type]


async def test_a_lone_write_commits_on_the_event_loop(store: JournalStore) -> None:
    writer = writer_of(store)
    inline, commits = writer.inline_commits, writer.commits

    def insert(conn: sqlite3.Connection) -> int:
        conn.execute("INSERT INTO meta (key, value) VALUES ('lone', x'00')")
        return threading.get_ident()

    assert await writer.run(insert) == threading.get_ident(), "no hop to the writer thread"
    assert (writer.inline_commits, writer.commits) == (inline + 1, commits + 1)
    seen = await writer.run(lambda conn: conn.execute("SELECT count(*) FROM meta WHERE key = 'lone'").fetchone()[0])
    assert seen == 1


async def test_writes_gathered_in_one_loop_pass_share_a_commit_on_the_writer_thread(store: JournalStore) -> None:
    writer = writer_of(store)
    loop_thread = threading.get_ident()
    inline, commits = writer.inline_commits, writer.commits

    def insert(key: str) -> Callable[[sqlite3.Connection], int]:
        def job(conn: sqlite3.Connection) -> int:
            conn.execute("INSERT INTO meta (key, value) VALUES (?, x'00')", (key,))
            return threading.get_ident()

        return job

    threads = await asyncio.gather(*(writer.run(insert(f"g{i}")) for i in range(10)))
    assert loop_thread not in threads, "several writes at once go to the writer thread"
    assert writer.inline_commits == inline
    assert writer.commits == commits + 1, "and share one commit"


async def test_a_lone_write_that_fails_rolls_back_alone(store: JournalStore) -> None:
    writer = writer_of(store)

    def half_then_fail(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO meta (key, value) VALUES ('half', x'00')")
        raise RuntimeError("the job failed")

    with pytest.raises(RuntimeError, match="the job failed"):
        await writer.run(half_then_fail)
    assert (
        await writer.run(lambda conn: conn.execute("SELECT count(*) FROM meta WHERE key = 'half'").fetchone()[0]) == 0
    )
    assert await writer.run(lambda conn: conn.in_transaction) is True  # the next job runs in a transaction of its own
