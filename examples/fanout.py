"""Fan-out / fan-in: split a job into parts, process each part in its own
invocation (in parallel, possibly on other instances), then combine the
results. Each call is journaled, so a replay never starts a part twice.
"""

from __future__ import annotations

from handler_sdk import Context, Endpoint, Service

workers = Service("Worker")
jobs = Service("FanOut")


@workers.handler()
async def square(ctx: Context, n: int) -> int:
    return await ctx.run("compute", lambda: n * n)


@jobs.handler()
async def sum_of_squares(ctx: Context, numbers: list[int]) -> int:
    calls = [ctx.service_call(square, n) for n in numbers]
    results = await ctx.gather(*calls)
    return sum(results)


app = Endpoint([workers, jobs]).asgi()
