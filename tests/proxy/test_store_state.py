"""Keyed state: changed only by the append that commits the entry, read by claim (the JournalStore contract)."""

from __future__ import annotations

import pytest

from proxy.store.base import JournalStore, NewInvocation, StateOp
from tests.proxy.helpers import BOOM, append, claim, new, start

OBJECT = "cart"


def excl(invocation_id: str, key: str = "k1", service: str = OBJECT) -> NewInvocation:
    return new(invocation_id, service=service, handler="add", key=key, exclusive=True)


def set_(name: str, value: bytes) -> StateOp:
    return StateOp(op="set", name=name, value=value)


async def started(store: JournalStore, invocation: NewInvocation, now_ms: int = 1_000) -> int:
    await store.create_invocation(invocation, now_ms)
    return (await claim(store, invocation.id, now_ms + 1)).invocation.attempt


async def test_set_clear_and_clear_all(store: JournalStore) -> None:
    attempt = await started(store, excl("a"))
    await append(store, "a", attempt, 0, "set_state", state_op=set_("items", b'["apple"]'))
    await append(store, "a", attempt, 1, "set_state", state_op=set_("owner", b'"ann"'))
    assert await store.get_state(OBJECT, "k1") == {"items": b'["apple"]', "owner": b'"ann"'}
    result = await append(store, "a", attempt, 2, "set_state", state_op=set_("items", b'["apple","pear"]'))
    assert result.completion is None and result.effects.notified == []
    assert await store.get_state(OBJECT, "k1") == {"items": b'["apple","pear"]', "owner": b'"ann"'}
    await append(store, "a", attempt, 3, "clear_state", state_op=StateOp(op="clear", name="owner"))
    await append(store, "a", attempt, 4, "clear_state", state_op=StateOp(op="clear", name="never-set"))
    assert await store.get_state(OBJECT, "k1") == {"items": b'["apple","pear"]'}
    assert (await store.key_status(OBJECT, "k1")).state == {"items": b'["apple","pear"]'}
    await append(store, "a", attempt, 5, "clear_all_state", state_op=StateOp(op="clear_all"))
    assert await store.get_state(OBJECT, "k1") == {}


async def test_state_belongs_to_one_service_and_key(store: JournalStore) -> None:
    a = await started(store, excl("a", "k1"))
    b = await started(store, excl("b", "k2"))
    c = await started(store, excl("c", "k1", service="other"))
    await append(store, "a", a, 0, "set_state", state_op=set_("n", b"1"))
    await append(store, "b", b, 0, "set_state", state_op=set_("n", b"2"))
    await append(store, "c", c, 0, "set_state", state_op=set_("n", b"3"))
    await append(store, "a", a, 1, "clear_all_state", state_op=StateOp(op="clear_all"))
    assert await store.get_state(OBJECT, "k1") == {}
    assert await store.get_state(OBJECT, "k2") == {"n": b"2"}
    assert await store.get_state("other", "k1") == {"n": b"3"}


async def test_state_changes_only_with_an_appended_entry(store: JournalStore) -> None:
    attempt = await started(store, excl("a"))
    await append(store, "a", attempt, 0, "set_state", state_op=set_("n", b"1"))
    await append(store, "a", attempt, 1, "clear_all_state", state_op=StateOp(op="clear_all"))

    async def try_append(at_attempt: int, index: int, entry: bytes, op: StateOp) -> str:
        result = await store.append(
            "a", at_attempt, index, "set_state", f"set_state-{index}", entry, 3_000, state_op=op
        )
        return result.outcome

    # A retried append whose ack was lost: the entry is there, its effect is not applied again.
    assert await try_append(attempt, 0, b"set_state@0", set_("n", b"1")) == "duplicate"
    assert await try_append(attempt, 1, b"something else", set_("n", b"9")) == "conflict"
    assert await try_append(attempt, 5, b"set_state@5", set_("n", b"9")) == "gap"
    assert await try_append(attempt + 1, 2, b"set_state@2", set_("n", b"9")) == "fenced"
    assert await store.get_state(OBJECT, "k1") == {}
    result = await store.append("nobody", 1, 0, "set_state", "s", b"s", 3_000, state_op=set_("n", b"9"))
    assert result.outcome == "not_found"
    assert await store.get_state(OBJECT, "k1") == {}


async def test_claim_returns_the_state_of_the_key(store: JournalStore) -> None:
    attempt = await started(store, excl("a"))
    await append(store, "a", attempt, 0, "set_state", state_op=set_("count", b"1"))
    await append(store, "a", attempt, 1, "set_state", state_op=set_("label", b'"x"'))
    assert await store.backoff("a", attempt, BOOM, 5_000, 2_000)
    again = await claim(store, "a", 5_000)
    assert again.state == {"count": b"1", "label": b'"x"'}
    # A shared handler of the same key reads the same committed state.
    await store.create_invocation(new("reader", service=OBJECT, handler="get", key="k1"), 5_001)
    assert (await claim(store, "reader", 5_002)).state == {"count": b"1", "label": b'"x"'}
    # Another key has none yet, and an invocation without a key has none at all.
    await store.create_invocation(excl("other", "k2"), 5_003)
    assert (await claim(store, "other", 5_004)).state == {}
    await store.create_invocation(new("plain"), 5_005)
    assert (await claim(store, "plain", 5_006)).state == {}


async def test_a_state_op_on_an_invocation_without_a_key_writes_nothing(store: JournalStore) -> None:
    attempt = await start(store, "plain")
    with pytest.raises(ValueError, match="no key"):
        await store.append("plain", attempt, 0, "set_state", "n", b"E", 2_000, state_op=set_("n", b"1"))
    # The job was rolled back as a whole: no entry, no length bump.
    assert await store.get_journal("plain") == []
    invocation = await store.get_invocation("plain")
    assert invocation is not None and invocation.journal_len == 0
    await append(store, "plain", attempt, 0, "run")  # the journal goes on as if nothing happened


async def test_malformed_state_ops_are_refused_before_anything_is_queued(store: JournalStore) -> None:
    attempt = await started(store, excl("a"))
    for op in (StateOp(op="set", name="n"), StateOp(op="set", value=b"1"), StateOp(op="clear")):
        with pytest.raises(ValueError):
            await store.append("a", attempt, 0, "set_state", "n", b"E", 2_000, state_op=op)
    assert await store.get_journal("a") == []
