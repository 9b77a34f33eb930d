"""examples/fanout.py: one invocation per part, combined with ctx.gather."""

from __future__ import annotations

import pytest

from examples.fanout import jobs, workers
from handler_sdk.testing import TestEnvironment

REPLAY = pytest.mark.parametrize("always_replay", [False, True], ids=["live", "always-replay"])


@REPLAY
async def test_sum_of_squares_runs_one_invocation_per_part(always_replay: bool) -> None:
    numbers = [3, 1, 4, 1, 5]
    async with TestEnvironment([workers, jobs], always_replay=always_replay) as env:
        invocation_id = await env.send("FanOut", "sum_of_squares", numbers)
        assert await env.attach(invocation_id) == sum(n * n for n in numbers)
        found = await env.invocation(invocation_id)
        assert [entry["kind"] for entry in found["journal"]] == ["call"] * len(numbers)
        assert [entry["entry"]["input"] for entry in found["journal"]] == numbers
        listed = (await env.admin.get("/invocations", params={"limit": 100})).json()["invocations"]
        parts = sorted((i for i in listed if i["parent_id"] == invocation_id), key=lambda i: i["parent_index"])
        assert [(p["service"], p["handler"], p["input"], p["output"]) for p in parts] == [
            ("Worker", "square", n, n * n) for n in numbers
        ]
        assert [p["parent_index"] for p in parts] == list(range(len(numbers)))
        assert all(p["status"] == "completed" for p in parts)
        # Each part ran once: one attempt unless the test replays every step.
        for part in parts:
            attempts = (await env.invocation(part["id"]))["attempts"]
            assert len(attempts) == (2 if always_replay else 1)


async def test_an_empty_job_sums_to_zero() -> None:
    async with TestEnvironment([workers, jobs]) as env:
        assert await env.call("FanOut", "sum_of_squares", []) == 0
        assert (await env.admin.get("/invocations")).json()["invocations"][0]["journal_length"] == 0
