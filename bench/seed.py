"""Fill a journal store with completed invocations before the proxy starts on it.

Running 100,000 invocations through HTTP would take minutes, so the growth
scenario seeds the store directly, through the store's own public verbs
(``JournalStore.create_invocation``, ``claim``, ``complete``): every row is
exactly what the proxy itself writes for a ``noop`` invocation that ran once
and completed, journal-less, with one attempt. The verbs are issued many at a
time so that the store's group commit shares each ``COMMIT`` among hundreds
of them. The store is opened with ``synchronous=NORMAL`` while seeding (a
power loss during seeding does not matter); the proxy later opens the same
file with its own setting.

Run it alone with ``python -m bench.seed --db FILE --count N``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from proxy.ids import invocation_id
from proxy.store import NewInvocation, open_store

#: Invocations in flight at once while seeding: several group commits' worth.
_WINDOW = 1024


async def seed_completed(
    db: str, count: int, *, service: str = "Bench", handler: str = "noop", deployment_id: str = "dp_seeded"
) -> dict[str, Any]:
    """Add ``count`` completed invocations of ``service/handler`` to the store in ``db``.

    ``deployment_id`` need not exist: a completed invocation is never sent to its deployment again.
    Returns how many were written and how long it took.
    """
    store = open_store(db, synchronous="NORMAL")
    await store.open()
    started = time.perf_counter()
    try:

        async def one(i: int) -> None:
            now = int(time.time() * 1000)
            new = NewInvocation(
                id=invocation_id(now),
                service=service,
                handler=handler,
                input=b"%d" % i,
                deployment_id=deployment_id,
            )
            await store.create_invocation(new, now)
            claim = await store.claim(new.id, None, now)
            assert claim is not None, f"the seeded invocation {new.id} could not be claimed"
            effects = await store.complete(new.id, claim.invocation.attempt, b"%d" % i, now)
            assert effects is not None, f"the seeded invocation {new.id} could not be completed"

        for start in range(0, count, _WINDOW):
            await asyncio.gather(*(one(i) for i in range(start, min(count, start + _WINDOW))))
    finally:
        await store.close()
    elapsed = time.perf_counter() - started
    return {"invocations": count, "seconds": round(elapsed, 2), "method": "JournalStore verbs"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.seed", description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", required=True, help="the SQLite file of the store (created if missing)")
    parser.add_argument("--count", type=int, default=100_000)
    args = parser.parse_args(argv)
    print(asyncio.run(seed_completed(args.db, args.count)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
