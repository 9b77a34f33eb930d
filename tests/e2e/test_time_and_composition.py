from datetime import timedelta
import pytest
from handler_sdk import Context, Service
from handler_sdk.testing import TestEnvironment

svc = Service("S")

@svc.handler()
async def nap(ctx: Context, days: int) -> int:
    await ctx.sleep(timedelta(days=days))
    return days

@pytest.mark.parametrize("always_replay", [False, True])
async def test_nap(always_replay: bool) -> None:
    async with TestEnvironment([svc], always_replay=always_replay) as env:
        r = await env.call("S", "nap", 30)
        assert r == 30
        assert env.now() - env.start >= timedelta(days=30)
