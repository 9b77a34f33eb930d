"""The load driver: a lean HTTP/1.1 keep-alive client that runs in its own process.

The orchestrator starts one driver process per measured phase
(``python -m bench.driver ...``) and reads the one JSON object it prints on
stdout. Running apart keeps the driver's CPU out of every event loop it
measures, and the client is kept small so that it costs little of the
machine: a request is one preformatted bytes buffer, a response is parsed from
its status line, ``content-length`` or chunked framing, and each concurrent
client owns one connection.

Modes:

``seq``
    ``--warmup`` requests, then ``--count`` requests one after the other on
    one connection: p50/p90/p99/max/mean latency.
``conc``
    ``--clients`` closed-loop clients for ``--duration`` seconds (or until
    ``--total`` requests were sent): invocations/s and latency percentiles.

``--url`` may be given several times (the same path on several proxy
instances): a sequential phase then sends its requests to each in turn (one
connection each), and concurrent client ``k`` sends all of its requests to
URL ``k mod n``.

A phase stops early after more than ``--max-errors`` errors, and a sequential
one after three failures in a row.

Every request body is ``--body`` with ``{i}`` replaced by a number distinct
for each request, so no deduplication can kick in. A non-2xx answer, a
refused connection or a timeout counts as an error; the first few are
reported with their body. While measuring, the driver samples the CPU time of
the processes given with ``--pid name=PID`` (with their children), of itself,
of interrupts, and of the whole machine, and reports the cores each used;
``other`` is what the rest of the machine used, which should be about 0.
With ``--pg-server PID:DATABASE``, a PostgreSQL server on this machine is
sampled too, as ``postgres``: its postmaster ``PID``'s children, except the
backends of client connections to databases other than ``DATABASE`` (a
server shared with other work does not count them as this phase's).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlsplit

from bench.stats import summarize

#: Errors whose answer is kept verbatim in the result.
KEPT_ERRORS = 5
#: A sequential phase gives up after this many failures in a row (each may have waited for the timeout).
_GIVE_UP_AFTER = 3
_CLK_TCK = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- the HTTP client


class HttpError(Exception):
    """The connection failed, or the answer could not be parsed."""


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection that carries one request at a time."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self._status = 0
        self._body_start = -1
        self._length = -1  # content-length, or -1 for chunked
        self._keep_alive = True
        self.closed = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(HttpError(f"connection closed before the answer ended ({exc})"))

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if self._waiter is None or self._waiter.done():
            return
        try:
            answer = self._parse()
        except HttpError as exc:
            self._waiter.set_exception(exc)
            return
        if answer is not None:
            self._waiter.set_result(answer)

    # the client side
    def send(self, request: bytes) -> asyncio.Future[tuple[int, bytes]]:
        assert self._transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self._buffer.clear()
        self._body_start = -1
        self._transport.write(request)
        return self._waiter

    @property
    def reusable(self) -> bool:
        return not self.closed and self._keep_alive

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def _parse(self) -> tuple[int, bytes] | None:
        buffer = self._buffer
        if self._body_start < 0:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return None
            head = bytes(buffer[:end]).decode("latin-1").split("\r\n")
            try:
                self._status = int(head[0].split(" ", 2)[1])
            except (IndexError, ValueError):
                raise HttpError(f"bad status line {head[0]!r}") from None
            self._length = 0
            self._keep_alive = True
            chunked = False
            for line in head[1:]:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                if name == "content-length":
                    self._length = int(value)
                elif name == "transfer-encoding" and "chunked" in value.lower():
                    chunked = True
                elif name == "connection" and value.strip().lower() == "close":
                    self._keep_alive = False
            if chunked:
                self._length = -1
            self._body_start = end + 4
        if self._length >= 0:
            if len(buffer) - self._body_start < self._length:
                return None
            return self._status, bytes(buffer[self._body_start : self._body_start + self._length])
        return self._parse_chunked()

    def _parse_chunked(self) -> tuple[int, bytes] | None:
        buffer = self._buffer
        position = self._body_start
        body = bytearray()
        while True:
            line_end = buffer.find(b"\r\n", position)
            if line_end < 0:
                return None
            try:
                size = int(bytes(buffer[position:line_end]).split(b";", 1)[0], 16)
            except ValueError:
                raise HttpError("bad chunk size") from None
            if size == 0:
                # The last chunk is followed by trailers (rarely any) and an empty line.
                if buffer.find(b"\r\n\r\n", line_end) < 0:
                    return None
                return self._status, bytes(body)
            start = line_end + 2
            if len(buffer) < start + size + 2:
                return None
            body += buffer[start : start + size]
            position = start + size + 2


@dataclass(slots=True)
class Target:
    """Where to send requests, and how each one looks."""

    host: str
    port: int
    path: str
    body: str
    headers: dict[str, str] = field(default_factory=dict)
    method: str = "POST"

    @classmethod
    def parse(cls, url: str, body: str, headers: dict[str, str], method: str = "POST") -> Target:
        parts = urlsplit(url)
        if parts.scheme != "http" or parts.hostname is None:
            raise ValueError(f"only http:// URLs are supported, not {url!r}")
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        return cls(parts.hostname, parts.port or 80, path, body, headers, method)

    def request_maker(self) -> Callable[[int], bytes]:
        """A function of the request number that returns the whole request, ready to write."""
        extra = "".join(f"{name}: {value}\r\n" for name, value in self.headers.items())
        head = f"{self.method} {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n{extra}".encode("latin-1")
        if "{i}" not in self.body:
            fixed = self.body.encode()
            whole = head + b"content-length: %d\r\n\r\n" % len(fixed) + fixed
            return lambda i: whole
        before, _, after = self.body.partition("{i}")
        if "{i}" in after:
            raise ValueError("the body may hold {i} once")
        prefix, suffix = before.encode(), after.encode()

        def make(i: int) -> bytes:
            body = b"%s%d%s" % (prefix, i, suffix)
            return b"%scontent-length: %d\r\n\r\n%s" % (head, len(body), body)

        return make


class Client:
    """One client: one connection at a time, reopened when the server closes it."""

    def __init__(self, target: Target, timeout_s: float) -> None:
        self._target = target
        self._timeout_s = timeout_s
        self._connection: _Connection | None = None

    async def request(self, data: bytes) -> tuple[int, bytes]:
        connection = self._connection
        if connection is None or not connection.reusable:
            if connection is not None:
                connection.close()
            loop = asyncio.get_running_loop()
            try:
                _, opened = await asyncio.wait_for(
                    loop.create_connection(_Connection, self._target.host, self._target.port), self._timeout_s
                )
            except (OSError, TimeoutError) as exc:
                raise HttpError(f"cannot connect: {exc!r}") from exc
            self._connection = connection = opened
        try:
            return await asyncio.wait_for(connection.send(data), self._timeout_s)
        except TimeoutError:
            connection.close()
            self._connection = None
            raise HttpError(f"no answer within {self._timeout_s:.0f} s") from None
        except HttpError:
            connection.close()
            self._connection = None
            raise

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


# --------------------------------------------------------------------------- CPU sampling


def _process_cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime + stime, all threads


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found.extend(int(child) for child in f.read().split())
    except OSError:
        pass
    return found


def tree_cpu_s(pid: int) -> float:
    """CPU seconds used so far by ``pid`` and its living descendants."""
    total, stack = 0.0, [pid]
    while stack:
        current = stack.pop()
        try:
            total += _process_cpu_s(current)
        except OSError:
            continue
        stack.extend(_children(current))
    return total


def machine_busy_s() -> tuple[float, float]:
    """CPU seconds the whole machine spent busy (all but idle and iowait), and of those in interrupts
    (irq and softirq, e.g. loopback traffic, which no process is charged for), from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    values = (values + [0] * 8)[:8]
    busy = (sum(values) - values[3] - values[4]) / _CLK_TCK
    return busy, (values[5] + values[6]) / _CLK_TCK


def wait_until_quiet(max_wait_s: float, threshold_cores: float, window_s: float = 0.3) -> dict[str, float]:
    """Wait (at most ``max_wait_s``) until the machine is nearly idle: less than ``threshold_cores``
    busy over a window. Between phases the processes under test are idle, so what is busy then is
    someone else, who would disturb the measurement."""
    started = time.perf_counter()
    while True:
        before = machine_busy_s()[0]
        time.sleep(window_s)
        busy = (machine_busy_s()[0] - before) / window_s
        waited = time.perf_counter() - started
        if busy < threshold_cores or waited >= max_wait_s:
            return {"waited_s": round(waited, 2), "busy_cores": round(busy, 3)}


#: The process title of a PostgreSQL backend serving a client connection:
#: ``postgres: [cluster: ]user database host(port) state`` (or ``[local]``).
_PG_CLIENT_BACKEND = re.compile(r"^postgres: (?:\S+: )?\S+ (\S+) (?:\S+\(\d+\)|\[local\])")


def postgres_cpu_s(postmaster: int, database: str) -> dict[int, float]:
    """CPU seconds so far of each process of a PostgreSQL server serving ``database``: the postmaster,
    its auxiliary processes (WAL writer, checkpointer, ...), and the client backends of ``database``."""
    found: dict[int, float] = {}
    for pid in [postmaster, *_children(postmaster)]:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                title = f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
            match = _PG_CLIENT_BACKEND.match(title)
            if match is None or match.group(1) == database:
                found[pid] = _process_cpu_s(pid)
        except OSError:
            continue
    return found


class CpuSampler:
    """CPU used between start() and stop(), in cores: by the named processes, by this driver, by
    interrupts (``irq``), by a PostgreSQL server (``postgres``, when given), and by everything
    else on the machine (``other``: the contamination check)."""

    def __init__(self, pids: dict[str, int], pg_server: tuple[int, str] | None = None) -> None:
        self._pids = pids
        self._pg_server = pg_server
        self._start: dict[str, float] = {}
        self._pg_start: dict[int, float] = {}
        self._t0 = 0.0

    def _sample(self) -> dict[str, float]:
        sample = {name: tree_cpu_s(pid) for name, pid in self._pids.items()}
        sample["driver"] = _process_cpu_s(os.getpid())
        sample["machine"], sample["irq"] = machine_busy_s()
        return sample

    def _pg_sample(self) -> dict[int, float]:
        return {} if self._pg_server is None else postgres_cpu_s(*self._pg_server)

    def start(self) -> None:
        self._pg_start = self._pg_sample()
        self._start = self._sample()
        self._t0 = time.perf_counter()

    def stop(self) -> dict[str, float]:
        end = self._sample()
        pg_end = self._pg_sample()
        elapsed = time.perf_counter() - self._t0
        cores = {name: max(0.0, (end[name] - self._start[name]) / elapsed) for name in end}
        if self._pg_server is not None:
            # A backend that connected during the phase used all of its CPU in it.
            used = sum(max(0.0, cpu - self._pg_start.get(pid, 0.0)) for pid, cpu in pg_end.items())
            cores["postgres"] = used / elapsed
        accounted = sum(value for name, value in cores.items() if name != "machine")
        cores["other"] = max(0.0, cores.pop("machine") - accounted)
        return {name: round(value, 3) for name, value in cores.items()}


# --------------------------------------------------------------------------- the modes


@dataclass
class Outcome:
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    first_errors: list[str] = field(default_factory=list)

    def error(self, text: str) -> None:
        self.errors += 1
        if len(self.first_errors) < KEPT_ERRORS:
            self.first_errors.append(text[:500])


async def _one(client: Client, data: bytes, outcome: Outcome, record: bool) -> bool:
    """Send one request; False when it failed (and was counted as an error)."""
    started = time.perf_counter_ns()
    try:
        status, body = await client.request(data)
    except HttpError as exc:
        outcome.error(str(exc))
        return False
    elapsed_ms = (time.perf_counter_ns() - started) / 1e6
    if not 200 <= status < 300:
        outcome.error(f"HTTP {status}: {body.decode('utf-8', 'replace')}")
        return False
    if record:
        outcome.latencies_ms.append(elapsed_ms)
    return True


async def run_seq(
    targets: list[Target],
    count: int,
    warmup: int,
    timeout_s: float,
    pids: dict[str, int],
    first: int,
    max_errors: int,
    pg_server: tuple[int, str] | None = None,
) -> dict[str, Any]:
    """One request at a time; with several targets, request ``i`` goes to target ``i mod n``."""
    makers = [target.request_maker() for target in targets]
    pool = [Client(target, timeout_s) for target in targets]
    warm, outcome = Outcome(), Outcome()
    sent = 0
    try:
        failed_in_a_row = 0
        for k, i in enumerate(range(first, first + warmup)):
            client, make = pool[k % len(pool)], makers[k % len(pool)]
            failed_in_a_row = 0 if await _one(client, make(i), warm, record=False) else failed_in_a_row + 1
            if failed_in_a_row >= _GIVE_UP_AFTER:
                break
        sampler = CpuSampler(pids, pg_server)
        sampler.start()
        started = time.perf_counter()
        if failed_in_a_row < _GIVE_UP_AFTER:
            for k, i in enumerate(range(first + warmup, first + warmup + count)):
                client, make = pool[k % len(pool)], makers[k % len(pool)]
                sent += 1
                failed_in_a_row = 0 if await _one(client, make(i), outcome, record=True) else failed_in_a_row + 1
                if outcome.errors > max_errors or failed_in_a_row >= _GIVE_UP_AFTER:
                    break
        elapsed = time.perf_counter() - started
        cores = sampler.stop()
    finally:
        for client in pool:
            client.close()
    if sent < count:
        outcome.error(f"the phase stopped after {sent} of {count} requests: the target kept failing")
    return {
        "mode": "seq",
        "targets": len(targets),
        **summarize(outcome.latencies_ms),
        "requests": sent,
        "warmup": warmup,
        "warmup_errors": warm.errors,
        "elapsed_s": round(elapsed, 3),
        "errors": outcome.errors,
        "first_errors": (outcome.first_errors + warm.first_errors)[:KEPT_ERRORS],
        "cores": cores,
        "cpu_ms_per_request": {name: round(value * elapsed * 1000 / max(sent, 1), 3) for name, value in cores.items()},
    }


async def run_conc(
    targets: list[Target],
    clients: int,
    duration_s: float,
    total: int | None,
    warmup: int,
    timeout_s: float,
    pids: dict[str, int],
    first: int,
    max_errors: int,
    pg_server: tuple[int, str] | None = None,
) -> dict[str, Any]:
    """Closed-loop clients; with several targets, client ``k`` sends to target ``k mod n``."""
    makers = [target.request_maker() for target in targets]
    outcome = Outcome()
    warm = Outcome()
    counter = iter(range(first, 1 << 62))
    pool = [(Client(targets[k % len(targets)], timeout_s), makers[k % len(targets)]) for k in range(clients)]
    state = {"deadline": 0.0, "sent": 0}

    async def warm_up(client: Client, make: Callable[[int], bytes]) -> None:
        for _ in range(warmup):
            await _one(client, make(next(counter)), warm, record=False)

    async def loop(client: Client, make: Callable[[int], bytes]) -> None:
        while time.perf_counter() < state["deadline"] and outcome.errors <= max_errors:
            if total is not None:
                if state["sent"] >= total:
                    return
                state["sent"] += 1
            await _one(client, make(next(counter)), outcome, record=True)

    try:
        await asyncio.gather(*(warm_up(client, make) for client, make in pool))
        sampler = CpuSampler(pids, pg_server)
        sampler.start()
        started = time.perf_counter()
        state["deadline"] = started + duration_s
        await asyncio.gather(*(loop(client, make) for client, make in pool))
        elapsed = time.perf_counter() - started
        cores = sampler.stop()
    finally:
        for client, _ in pool:
            client.close()
    done = len(outcome.latencies_ms)
    return {
        "mode": "conc",
        "clients": clients,
        "targets": len(targets),
        "duration_s": round(elapsed, 3),
        "invocations_per_s": round(done / elapsed, 1) if elapsed > 0 else 0.0,
        **summarize(outcome.latencies_ms),
        "warmup_errors": warm.errors,
        "errors": outcome.errors,
        "first_errors": outcome.first_errors + warm.first_errors[: max(0, KEPT_ERRORS - len(outcome.first_errors))],
        "cores": cores,
    }


# --------------------------------------------------------------------------- command line


def _pairs(values: list[str], sep: str, what: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for value in values:
        name, found, rest = value.partition(sep)
        if not found or not name:
            raise SystemExit(f"--{what} takes NAME{sep}VALUE, not {value!r}")
        pairs[name.strip()] = rest.strip()
    return pairs


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.driver", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--url",
        action="append",
        required=True,
        help="http://host:port/path; repeat it to spread the requests over several servers",
    )
    parser.add_argument("--body", default="{i}", help="request body; {i} becomes a distinct number per request")
    parser.add_argument("--method", default="POST")
    parser.add_argument("--header", action="append", default=[], help="NAME: VALUE (repeatable)")
    parser.add_argument("--mode", choices=["seq", "conc"], required=True)
    parser.add_argument("--count", type=int, default=500, help="seq: measured requests")
    parser.add_argument("--warmup", type=int, default=20, help="seq: requests before measuring; conc: per client")
    parser.add_argument("--clients", type=int, default=32, help="conc: closed-loop clients")
    parser.add_argument("--duration", type=float, default=15.0, help="conc: seconds (with --total: the most)")
    parser.add_argument("--total", type=int, default=None, help="conc: stop after this many requests")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds one request may take")
    parser.add_argument("--max-errors", type=int, default=20, help="stop the phase after more errors than this")
    parser.add_argument("--first", type=int, default=0, help="the number of the first request's body")
    parser.add_argument("--pid", action="append", default=[], help="NAME=PID to sample CPU of (repeatable)")
    parser.add_argument(
        "--pg-server",
        metavar="PID:DATABASE",
        help="sample a local PostgreSQL server as `postgres`: its postmaster PID, and the database measured",
    )
    parser.add_argument(
        "--quiet-wait", type=float, default=0.0, help="first wait up to this many seconds for an idle machine"
    )
    parser.add_argument("--quiet-cores", type=float, default=0.25, help="what counts as idle: cores busy")
    return parser.parse_args(argv)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    quiet = wait_until_quiet(args.quiet_wait, args.quiet_cores) if args.quiet_wait > 0 else None
    result = await _run(args)
    if quiet is not None:
        result["quiet_before"] = quiet
    return result


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    headers = {"content-type": "application/json", **_pairs(args.header, ":", "header")}
    targets = [Target.parse(url, args.body, headers, args.method) for url in args.url]
    pids = {name: int(pid) for name, pid in _pairs(args.pid, "=", "pid").items()}
    pg_server: tuple[int, str] | None = None
    if args.pg_server:
        pid, found, database = args.pg_server.partition(":")
        if not found or not pid.isdigit() or not database:
            raise SystemExit(f"--pg-server takes PID:DATABASE, not {args.pg_server!r}")
        pg_server = (int(pid), database)
    if args.mode == "seq":
        return await run_seq(
            targets, args.count, args.warmup, args.timeout, pids, args.first, args.max_errors, pg_server
        )
    return await run_conc(
        targets,
        args.clients,
        args.duration,
        args.total,
        args.warmup,
        args.timeout,
        pids,
        args.first,
        args.max_errors,
        pg_server,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(main_async(args))
        loop_name = "asyncio"
    else:
        result = uvloop.run(main_async(args))
        loop_name = "uvloop"
    result["driver_loop"] = loop_name
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
