"""A per-user rate limiter as a virtual object: at most ``LIMIT`` hits per
``WINDOW`` for each key (a user id), with no database and no lock of your own.

``hit`` is exclusive, so the hits of one user are counted one at a time and
none is lost or counted twice; different users proceed in parallel. The
window is a list of the times of the allowed hits, read from ``ctx.now()``,
which is journaled: a replay sees the time the first execution saw.

Run it beside the proxy::

    uvicorn examples.rate_limiter:app --port 9083
    durable-proxy register http://127.0.0.1:9083
    curl -X POST localhost:8080/Counter/ada/hit      # {"allowed": true, "count": 1, "remaining": 4}
    curl -X POST localhost:8080/Counter/ada/count    # 1
"""

from __future__ import annotations

from datetime import datetime, timedelta

import msgspec

from handler_sdk import Endpoint, ObjectContext, ObjectSharedContext, VirtualObject

#: Hits allowed per key within any ``WINDOW``.
LIMIT = 5
WINDOW = timedelta(minutes=1)
#: The state entry holding the times (epoch milliseconds) of the allowed hits in the window.
HITS = "hits"


class Verdict(msgspec.Struct, frozen=True):
    allowed: bool
    count: int  # allowed hits in the window, this one included
    remaining: int


def _in_window(hits: list[int], now: datetime) -> list[int]:
    start_ms = round((now - WINDOW).timestamp() * 1000)
    return [at_ms for at_ms in hits if at_ms > start_ms]


limiter = VirtualObject("Counter")


@limiter.handler()
async def hit(ctx: ObjectContext) -> Verdict:
    now = await ctx.now()
    hits = _in_window(await ctx.get(HITS, type_hint=list[int]) or [], now)
    allowed = len(hits) < LIMIT
    if allowed:
        hits.append(round(now.timestamp() * 1000))
    ctx.set(HITS, hits)  # the pruned window, even when refused: the state never grows past LIMIT
    return Verdict(allowed=allowed, count=len(hits), remaining=LIMIT - len(hits))


@limiter.handler(kind="shared")
async def count(ctx: ObjectSharedContext) -> int:
    """The allowed hits of the key in the current window."""
    now = await ctx.now()
    return len(_in_window(await ctx.get(HITS, type_hint=list[int]) or [], now))


app = Endpoint([limiter]).asgi()
