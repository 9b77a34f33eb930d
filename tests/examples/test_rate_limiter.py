"""examples/rate_limiter.py: at most 5 hits a minute per user, counted one at a time per key."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from examples.rate_limiter import LIMIT, WINDOW, limiter
from handler_sdk.testing import TestEnvironment

REPLAY = pytest.mark.parametrize("always_replay", [False, True], ids=["live", "always-replay"])


def verdict(allowed: bool, count: int) -> dict[str, object]:
    return {"allowed": allowed, "count": count, "remaining": LIMIT - count}


@REPLAY
async def test_five_hits_are_allowed_then_refused_until_the_window_moves(always_replay: bool) -> None:
    async with TestEnvironment([limiter], always_replay=always_replay) as env:
        for n in range(1, LIMIT + 1):
            assert await env.call("Counter", "hit", key="ada") == verdict(True, n)
        assert await env.call("Counter", "hit", key="ada") == verdict(False, LIMIT)
        assert await env.call("Counter", "count", key="ada") == LIMIT
        await env.advance(WINDOW - timedelta(seconds=1))
        assert await env.call("Counter", "hit", key="ada") == verdict(False, LIMIT)
        await env.advance(timedelta(seconds=1))
        assert await env.call("Counter", "count", key="ada") == 0
        assert await env.call("Counter", "hit", key="ada") == verdict(True, 1)
        assert env.now() - env.start == WINDOW


async def test_the_window_slides() -> None:
    async with TestEnvironment([limiter]) as env:
        for _ in range(3):
            await env.call("Counter", "hit", key="ada")
        await env.advance(timedelta(seconds=30))
        for _ in range(2):
            await env.call("Counter", "hit", key="ada")
        assert await env.call("Counter", "hit", key="ada") == verdict(False, LIMIT)
        await env.advance(timedelta(seconds=30))  # the first three leave the window, the last two stay
        assert await env.call("Counter", "count", key="ada") == 2
        assert await env.call("Counter", "hit", key="ada") == verdict(True, 3)


async def test_users_are_limited_separately() -> None:
    async with TestEnvironment([limiter]) as env:
        for _ in range(LIMIT):
            await env.call("Counter", "hit", key="ada")
        assert (await env.call("Counter", "hit", key="ada"))["allowed"] is False
        assert await env.call("Counter", "hit", key="bo") == verdict(True, 1)
        assert await env.call("Counter", "count", key="cy") == 0


@REPLAY
async def test_concurrent_hits_are_counted_one_at_a_time(always_replay: bool) -> None:
    async with TestEnvironment([limiter], always_replay=always_replay) as env:
        verdicts = await asyncio.gather(*(env.call("Counter", "hit", key="ada") for _ in range(20)))
        assert sorted((v["allowed"], v["count"]) for v in verdicts) == sorted(
            [(True, n) for n in range(1, LIMIT + 1)] + [(False, LIMIT)] * (20 - LIMIT)
        )
        state = (await env.admin.get("/objects/Counter/ada")).json()
        assert len(state["state"]["hits"]) == LIMIT
        assert env.now() == env.start
