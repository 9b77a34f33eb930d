"""Run the chaos suite: random programs through a proxy and two handler instances while a nemesis kills them.

    python -m tests.chaos.run --invocations 300 --seed 1 --kills 30 --max-seconds 170 [--report chaos.json]
    python -m tests.chaos.run --postgres 3 ...   # 3 proxies on one PostgreSQL database ($DURABLE_TEST_POSTGRES_DSN)

It starts the processes on loopback and submits root programs as sends with
``Idempotency-Key: chaos-<seed>-<i>``, 8 at a time: ``--invocations`` of them,
and more while fewer than ``--kills`` kills were injected, so that every kill
hits a loaded system. It attaches to each, and retries every client error
(refused, reset, timeout, 5xx) with the same key, by an attach or by the same
call again, until an answer arrives. Meanwhile it resolves the awakeables the
programs hand out, and the nemesis injects faults. Once every submission is
answered, the nemesis stops, every process is brought back, everything
drains, each key is asked once more, and the checker compares what happened
with what the programs imply. The figures are printed (and written as JSON
with ``--report``); the exit status is 0 only when the checker found nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import json
import random
import re
import secrets
import signal
import sqlite3
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from proxy.store.base import ACTIVE_STATUSES

from .app import open_ledger
from .checker import Answer, Report, RunData, Submission, check
from .nemesis import ChaosCluster, Nemesis, NemesisSettings
from .programs import Sizes, awakeable_value, generate, root_tag

#: With several proxies: how often a proxy is paused (SIGSTOP past its lease), next to ``proxy_kill``'s 3.
PROXY_PAUSE_WEIGHT = 2.0


@dataclasses.dataclass(frozen=True, slots=True)
class Config:
    invocations: int = 300
    seed: int = 1
    kills: int = 30
    max_seconds: float = 170.0
    concurrency: int = 8
    workdir: Path | None = None
    inactivity_timeout_ms: int = 1000
    #: A PostgreSQL database (empty) for the journal, shared by ``proxies`` proxy instances with leases
    #: of ``lease_ms``; None: one proxy on SQLite.
    postgres_dsn: str | None = None
    proxies: int = 1
    lease_ms: int = 2000
    sizes: Sizes = Sizes()
    nemesis: NemesisSettings = NemesisSettings()
    #: Shares of ``max_seconds``: faults stop by the first, submissions give up by the second,
    #: the drain by the third; the checker takes the rest.
    phases: tuple[float, float, float] = (0.7, 0.8, 0.9)


class Driver:
    """The clients of the run: submissions with their attaches, and the resolver of awakeables."""

    def __init__(self, config: Config, cluster: ChaosCluster, t0: float) -> None:
        self.config = config
        self.cluster = cluster
        self.t0 = t0
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(10.0, read=30.0),
            limits=httpx.Limits(max_connections=4 * config.concurrency, max_keepalive_connections=config.concurrency),
        )
        self.rng = random.Random(f"driver/{config.seed}")
        #: Picks the ingress of each request (apart from ``rng``, so one proxy leaves it as it was).
        self.ingress_rng = random.Random(f"ingress/{config.seed}")
        self.successes: list[float] = []
        self.resolved: set[str] = set()
        self.submissions: list[Submission] = []
        self.workload_s: float | None = None
        self.give_up_at = t0 + config.max_seconds * config.phases[1]

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def ingress(self) -> str:
        """The ingress of the next request: any proxy's (with several, a dead one's only costs a retry)."""
        return self.ingress_rng.choice(self.cluster.ingresses)

    def _success(self) -> None:
        self.successes.append(self.elapsed())

    async def _pause(self) -> None:
        await asyncio.sleep(self.rng.uniform(0.05, 0.3))

    # ------------------------------------------------------------------ submissions

    async def submit_all(self, more: Callable[[], bool] = lambda: False) -> None:
        """Submit the ``invocations`` root programs, ``concurrency`` at a time, and then more while ``more()``."""

        async def worker() -> None:
            while time.monotonic() < self.give_up_at:
                i = len(self.submissions)
                if i >= self.config.invocations and not more():
                    return
                sub = Submission(
                    i=i, key=root_tag(self.config.seed, i), program=generate(self.config.seed, i, self.config.sizes)
                )
                self.submissions.append(sub)
                await self.submit(sub)

        await asyncio.gather(*(worker() for _ in range(self.config.concurrency)))
        self.workload_s = self.elapsed()

    async def submit(self, sub: Submission) -> None:
        headers = {"idempotency-key": sub.key}
        while sub.invocation_id is None:
            if time.monotonic() > self.give_up_at:
                return
            send = functools.partial(
                self.client.post, f"{self.ingress()}/Chaos/run/send", json=sub.program, headers=headers
            )
            response = await self._try(sub, send)
            if response is None:
                continue
            if response.status_code == 202:
                self._success()
                sub.invocation_id = str(response.json()["invocationId"])
            else:
                sub.odd.append(f"send answered {response.status_code}: {response.text[:200]}")
                await self._pause()
        await self.attach(sub)

    async def attach(self, sub: Submission) -> None:
        """Wait for the answer; after a failed try, the next one is either an attach or the same call again
        (same key, same body), which attaches to the invocation the key already started."""
        headers = {"idempotency-key": sub.key}
        via = "attach"
        while not sub.answers and time.monotonic() < self.give_up_at:
            ingress = self.ingress()
            if via == "attach":
                get = functools.partial(self.client.get, f"{ingress}/restate/attach/{sub.invocation_id}")
                response = await self._try(sub, get)
            else:
                call = functools.partial(self.client.post, f"{ingress}/Chaos/run", json=sub.program, headers=headers)
                response = await self._try(sub, call)
            if response is not None and _final(response):
                self._success()
                sub.answers.append(_answer(response, self.elapsed(), via))
                return
            if response is not None:
                sub.odd.append(f"{via} answered {response.status_code}: {response.text[:200]}")
                await self._pause()
            via = self.rng.choice(["attach", "call"])

    async def ask_again(self, sub: Submission) -> None:
        """The same call (same key, same body) once everything settled: it must answer what the first answer
        said, at once. Only for answered submissions: a stuck one is reported, not waited for."""
        if not sub.answers:
            return
        headers = {"idempotency-key": sub.key}
        for _ in range(5):
            call = functools.partial(
                self.client.post, f"{self.ingress()}/Chaos/run", json=sub.program, headers=headers, timeout=10
            )
            response = await self._try(sub, call)
            if response is not None and _final(response):
                sub.answers.append(_answer(response, self.elapsed(), "repeat"))
                return
            if response is not None:
                sub.odd.append(f"repeated call answered {response.status_code}: {response.text[:200]}")
                await self._pause()
        sub.odd.append("the repeated call got no answer")

    async def _try(self, sub: Submission, request: Callable[[], Awaitable[httpx.Response]]) -> httpx.Response | None:
        """One request; ``None`` (after a short pause) when it met a transient error: refused, reset, timeout, 5xx."""
        try:
            response = await request()
        except httpx.HTTPError:
            sub.failed_tries += 1
            await self._pause()
            return None
        if response.status_code >= 500 and not _final(response):
            sub.failed_tries += 1
            await self._pause()
            return None
        return response

    # ------------------------------------------------------------------ awakeables

    async def resolve_awakeables(self, stop: asyncio.Event) -> None:
        """Resolve every awakeable a program handed out through the ledger, until ``stop``."""
        ledger = open_ledger(self.cluster.ledger)
        pending: dict[str, tuple[str, int]] = {}
        seen = 0
        try:
            while not stop.is_set():
                rows = await asyncio.to_thread(_handed_out, ledger, seen)
                for rowid, awakeable_id, tag, k in rows:
                    seen = max(seen, rowid)
                    pending[awakeable_id] = (tag, k)
                batch = list(pending.items())
                for chunk in range(0, len(batch), 8):
                    await asyncio.gather(*(self._resolve(a, t, k) for a, (t, k) in batch[chunk : chunk + 8]))
                for awakeable_id in self.resolved.intersection(pending):
                    del pending[awakeable_id]
                try:
                    await asyncio.wait_for(stop.wait(), 0.1)
                except TimeoutError:
                    pass
        finally:
            ledger.close()

    async def _resolve(self, awakeable_id: str, tag: str, k: int) -> None:
        url = f"{self.ingress()}/restate/awakeables/{awakeable_id}/resolve"
        try:
            response = await self.client.post(url, json=awakeable_value(tag, k), timeout=5)
        except httpx.HTTPError:
            return
        if response.status_code in (202, 409):  # 409: resolved already, by a try whose answer was lost
            self._success()
            self.resolved.add(awakeable_id)
        # 404: the awakeable's entry is not committed yet (the step that handed it out ran first): later.

    # ------------------------------------------------------------------ draining

    async def active_invocations(self) -> int | None:
        total = 0
        for status in ACTIVE_STATUSES:
            try:
                response = await self.client.get(
                    f"{self.cluster.admin}/invocations", params={"status": status, "limit": 1000}
                )
            except httpx.HTTPError:
                return None
            if response.status_code != 200:
                return None
            total += len(response.json()["invocations"])
        return total


def _handed_out(ledger: sqlite3.Connection, after_rowid: int) -> list[tuple[int, str, str, int]]:
    rows = ledger.execute(
        "SELECT rowid, awakeable_id, tag, k FROM awakeables WHERE rowid > ? ORDER BY rowid", (after_rowid,)
    ).fetchall()
    return [(int(r), str(a), str(t), int(k)) for r, a, t, k in rows]


def _final(response: httpx.Response) -> bool:
    """An answer about the invocation itself: its result, or its terminal failure ``{"code": int, ...}``."""
    if response.status_code == 200:
        return True
    try:
        body = response.json()
    except ValueError:
        return False
    return (
        isinstance(body, dict)
        and isinstance(body.get("code"), int)
        and response.status_code in (body["code"], 500)
        and "x-restate-id" in response.headers
    )


def _answer(response: httpx.Response, at_s: float, via: str) -> Answer:
    try:
        body = response.json()
    except ValueError:
        body = response.text
    return Answer(
        status=response.status_code, body=body, invocation_id=response.headers.get("x-restate-id"), at_s=at_s, via=via
    )


async def _wait(condition: Callable[[], bool], deadline: float, every: float = 0.2) -> bool:
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(every)
    return True


async def run_chaos(config: Config, log: Callable[[str], None] = print) -> Report:
    workdir = config.workdir or Path(tempfile.mkdtemp(prefix=f"chaos-{config.seed}-"))
    workdir.mkdir(parents=True, exist_ok=True)
    cluster = ChaosCluster(
        workdir,
        inactivity_timeout_ms=config.inactivity_timeout_ms,
        dsn=config.postgres_dsn,
        proxies=config.proxies,
        lease_ms=config.lease_ms,
    )
    open_ledger(cluster.ledger).close()
    store = "SQLite" if config.postgres_dsn is None else f"PostgreSQL, {config.proxies} proxies"
    log(
        f"chaos: seed {config.seed}, {config.invocations} invocations, >= {config.kills} kills ({store}); "
        f"workdir {workdir}"
    )
    stop_faults, stop_resolver = asyncio.Event(), asyncio.Event()
    extra: dict[str, Any] = {"workdir": str(workdir)}
    driver: Driver | None = None
    try:
        await asyncio.to_thread(cluster.start)
        t0 = time.monotonic()
        driver = Driver(config, cluster, t0)
        nemesis = Nemesis(cluster, config.seed, t0, config.nemesis)
        faults = asyncio.ensure_future(nemesis.run(stop_faults))
        resolver = asyncio.ensure_future(driver.resolve_awakeables(stop_resolver))
        # At least ``invocations``, and more until enough kills happened under load.
        workload = asyncio.ensure_future(driver.submit_all(lambda: nemesis.kills < config.kills))
        # Faults go on while the workload runs, and until enough kills were injected.
        await _wait(
            lambda: workload.done() and nemesis.kills >= config.kills,
            t0 + config.max_seconds * config.phases[0],
        )
        stop_faults.set()
        await faults
        await asyncio.to_thread(_heal, cluster)
        log(f"chaos: faults stopped at {driver.elapsed():.1f}s after {len(nemesis.faults)} faults; draining")
        await workload
        workload_s = driver.workload_s if driver.workload_s is not None else float("inf")
        extra["workload_s"] = round(workload_s, 2)
        extra["kills_under_load"] = sum(1 for f in nemesis.faults if f.kind == "kill" and f.at_s < workload_s)
        drain_deadline = t0 + config.max_seconds * config.phases[2]
        drained = False
        while time.monotonic() < drain_deadline:
            if await driver.active_invocations() == 0:
                drained = True
                break
            await asyncio.sleep(0.25)
        extra["drained"] = drained
        extra["drained_at_s"] = round(driver.elapsed(), 2)
        stop_resolver.set()
        await resolver
        slots = asyncio.Semaphore(2 * config.concurrency)

        async def ask_again(sub: Submission) -> None:
            async with slots:
                await driver.ask_again(sub)

        await asyncio.gather(*(ask_again(sub) for sub in driver.submissions))
        duration = driver.elapsed()
        if cluster.shared:
            extra["instances"] = await _instance_figures(driver.client, cluster)
        data = RunData(
            seed=config.seed,
            kills_wanted=config.kills,
            admin=cluster.admin,
            ledger=cluster.ledger,
            proxy_db=cluster.db,
            proxy_dsn=cluster.dsn,
            proxy_log=cluster.proxy_log(),
            submissions=driver.submissions,
            faults=nemesis.faults,
            ingress_successes=driver.successes,
            duration_s=duration,
            resolved_awakeables=len(driver.resolved),
            extra=extra,
        )
        report = await check(data)
        report.figures["check_s"] = round(driver.elapsed() - duration, 2)
        return report
    finally:
        stop_faults.set()
        stop_resolver.set()
        if driver is not None:
            await driver.client.aclose()
        await asyncio.to_thread(cluster.stop)


async def _instance_figures(client: httpx.AsyncClient, cluster: ChaosCluster) -> dict[str, Any]:
    """What the proxies of a shared database did about each other: ``GET /instance`` of each (counted
    since its last start) and the takeovers their logs tell of (since the first)."""
    current: dict[str, Any] = {}
    for proxy, admin in zip(cluster.proxies, cluster.admins, strict=True):
        try:
            response = await client.get(f"{admin}/instance", timeout=10)
            current[proxy.name] = response.json() if response.status_code == 200 else response.status_code
        except httpx.HTTPError as exc:
            current[proxy.name] = f"{type(exc).__name__}: {exc}"
    logs = cluster.proxy_log()
    taken_over = sum(int(n) for n in re.findall(r"took over (\d+) invocations", logs))
    return {"taken_over_logged": taken_over, "current": current}


def _heal(cluster: ChaosCluster) -> None:
    """Bring every process back: a paused one is resumed, a dead one started."""
    for process in cluster.processes:
        if process.paused:
            process.resume()
        if process.popen is None or process.popen.poll() is not None:
            process.start()


def run_on_postgres(config: Config, *, proxies: int, lease_ms: int, log: Callable[[str], None] = print) -> Report:
    """``run_chaos`` with ``proxies`` proxy instances on a fresh PostgreSQL database of the server
    ``DURABLE_TEST_POSTGRES_DSN`` names, dropped afterwards."""
    from tests import postgres

    if postgres.server_dsn() is None:
        raise SystemExit(f"chaos on PostgreSQL: {postgres.SKIP_REASON}")
    database = f"dp_test_chaos_{config.seed}_{secrets.token_hex(6)}"
    dsn = postgres.create_database_sync(database)
    try:
        config = dataclasses.replace(config, postgres_dsn=dsn, proxies=proxies, lease_ms=lease_ms)
        return asyncio.run(run_chaos(config, log=log))
    finally:
        postgres.drop_database_sync(database)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--invocations", type=int, default=300, help="root programs to submit (default 300)")
    parser.add_argument("--seed", type=int, default=1, help="seeds the programs and the fault schedule (default 1)")
    parser.add_argument("--kills", type=int, default=30, help="fail unless at least this many kills (default 30)")
    parser.add_argument("--max-seconds", type=float, default=170.0, help="time budget of the run (default 170)")
    parser.add_argument("--concurrency", type=int, default=8, help="submissions in flight at once (default 8)")
    parser.add_argument("--workdir", type=Path, help="where the databases and logs go (default: a new temp dir)")
    parser.add_argument("--report", type=Path, help="write the figures and violations as JSON here")
    parser.add_argument(
        "--postgres",
        type=int,
        metavar="PROXIES",
        help="run PROXIES proxy instances on a fresh PostgreSQL database on the server "
        "$DURABLE_TEST_POSTGRES_DSN names (dropped afterwards) instead of one proxy on SQLite",
    )
    parser.add_argument("--lease-ms", type=int, default=2000, help="with --postgres: the proxies' lease (2000)")
    parser.add_argument(
        "--fault-interval",
        type=float,
        nargs=2,
        default=(1.0, 3.0),
        metavar=("MIN", "MAX"),
        help="seconds between faults (default 1 3)",
    )
    args = parser.parse_args(argv)
    config = Config(
        invocations=args.invocations,
        seed=args.seed,
        kills=args.kills,
        max_seconds=args.max_seconds,
        concurrency=args.concurrency,
        workdir=args.workdir,
        nemesis=NemesisSettings(
            interval_s=(args.fault_interval[0], args.fault_interval[1]),
            proxy_pause=0.0 if args.postgres is None else PROXY_PAUSE_WEIGHT,
        ),
    )
    signal.signal(signal.SIGTERM, _interrupt)  # so that the processes are stopped on the way out
    if args.postgres is None:
        report = asyncio.run(run_chaos(config))
    else:
        report = run_on_postgres(config, proxies=args.postgres, lease_ms=args.lease_ms)
    print(report.summary())
    if args.report is not None:
        args.report.write_text(json.dumps(report.as_json(), indent=2, default=str) + "\n")
        print(f"chaos: report written to {args.report}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
