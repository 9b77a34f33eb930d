"""durable-proxy under test: its processes, and the scenarios run through the driver.

A ``Stack`` is one proxy (``python -m proxy serve``), or several sharing one
database, on a store given by a ``Backend``, and the benchmark app
(``bench.app``) under uvicorn, with both of its endpoints registered once.
Scenarios only use what a stack offers (ingress and admin URLs, the PIDs to
sample, counting invocations by status), so they do not change when the
store or the number of proxy processes does: each phase spreads its requests
over every instance's ingress.

Most scenarios share one stack. Those that need a store in a given state
(empty, seeded with 100,000 completed invocations, or filled with suspended
invocations) start stacks of their own.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.app import SERVICE, SUSPENDING_SERVICE
from bench.backends import Backend
from bench.processes import (
    Process,
    StartError,
    free_port,
    http_get,
    http_post_json,
    python_env,
    rss_kib,
    run_driver,
)
from bench.stats import slope


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def app_server_args() -> tuple[list[str], dict[str, str]]:
    """uvicorn's options for the app: uvloop and httptools when they are installed."""
    args, chosen = [], {"loop": "asyncio", "http": "h11"}
    if importlib.util.find_spec("uvloop") is not None:
        args += ["--loop", "uvloop"]
        chosen["loop"] = "uvloop"
    if importlib.util.find_spec("httptools") is not None:
        args += ["--http", "httptools"]
        chosen["http"] = "httptools"
    return args, chosen


@dataclass
class Instance:
    """One proxy process of a stack, with its own ports."""

    port: int = field(default_factory=free_port)
    admin_port: int = field(default_factory=free_port)
    callback_port: int = field(default_factory=free_port)
    process: Process | None = None

    @property
    def ingress(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"


class Stack:
    """The backend's proxies on a fresh store, and the benchmark app, registered once."""

    def __init__(self, backend: Backend, workdir: Path, label: str) -> None:
        self.backend = backend
        self.workdir = workdir
        self.label = label
        self.instances = [Instance() for _ in range(backend.instances)]
        self.app_port = free_port()
        self.app: Process | None = None
        self.seeding: dict[str, Any] = {}

    @property
    def proxy(self) -> Process | None:
        """The first proxy process."""
        return self.instances[0].process

    @property
    def ingress(self) -> str:
        return self.instances[0].ingress

    @property
    def admin(self) -> str:
        return self.instances[0].admin

    def names(self) -> list[str]:
        """The proxies' names in the CPU figures and the logs: ``proxy``, or ``proxy-1``, ``proxy-2``..."""
        if len(self.instances) == 1:
            return ["proxy"]
        return [f"proxy-{k + 1}" for k in range(len(self.instances))]

    def pids(self) -> dict[str, int]:
        pids: dict[str, int] = {}
        for name, instance in zip(self.names(), self.instances, strict=True):
            assert instance.process is not None
            pids[name] = instance.process.pid
        assert self.app is not None
        return {**pids, "app": self.app.pid}

    def url(self, service: str, handler: str, *, send: bool = False) -> str:
        """The handler's URL on the first instance's ingress."""
        return f"{self.ingress}/{service}/{handler}" + ("/send" if send else "")

    def spread(self, url: str) -> list[str]:
        """A URL of the first instance's ingress, on every instance's ingress."""
        path = url.removeprefix(self.ingress)
        return [instance.ingress + path for instance in self.instances]

    def start(self, *, seed_completed: int = 0) -> Stack:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if seed_completed:
            log(f"[ours] {self.label}: seeding {seed_completed:,} completed invocations")
        self.seeding = self.backend.prepare(self.workdir, seed_completed=seed_completed)
        # The proxy runs with its defaults: no DURABLE_PROXY_* setting leaks in from the environment.
        env = {k: v for k, v in python_env().items() if not k.startswith("DURABLE_PROXY_")}
        for k, (name, instance) in enumerate(zip(self.names(), self.instances, strict=True)):
            instance.process = Process(
                f"{name} ({self.label})",
                [sys.executable, "-m", "proxy", "serve", *self.backend.serve_args(k), "--port", str(instance.port),
                 "--admin-port", str(instance.admin_port), "--callback-port", str(instance.callback_port),
                 "--log-level", "warning"],
                self.workdir / f"{name}.log",
                env=env,
            ).spawn()  # fmt: skip
        server_args, _ = app_server_args()
        self.app = Process(
            f"app ({self.label})",
            [sys.executable, "-m", "uvicorn", "bench.app:app", "--host", "127.0.0.1", "--port", str(self.app_port),
             *server_args, "--log-level", "warning", "--no-access-log"],
            self.workdir / "app.log",
            env={k: v for k, v in python_env().items() if k != "DURABLE_SIGNING_KEYS"},
        ).spawn()  # fmt: skip
        for instance in self.instances:
            assert instance.process is not None
            instance.process.wait_healthy(f"{instance.admin}/health", timeout_s=120)
        self.app.wait_healthy(f"http://127.0.0.1:{self.app_port}/health")
        # Registered once, through the first instance; the others learn of it through the store.
        for mount in ("durable", "suspend"):
            status, answer = http_post_json(
                f"{self.admin}/deployments", {"uri": f"http://127.0.0.1:{self.app_port}/{mount}"}
            )
            if status >= 300:
                raise StartError(f"registering /{mount} failed: {status} {answer}")
        for instance in self.instances[1:]:
            self._wait_for_services(instance)
        return self

    def _wait_for_services(self, instance: Instance, timeout_s: float = 30.0) -> None:
        """Wait until ``instance`` knows the services registered through the first one."""
        deadline = time.monotonic() + timeout_s
        while True:
            status, body = http_get(f"{instance.admin}/services")
            names = {s.get("name") for s in json.loads(body).get("services", [])} if status == 200 else set()
            if {SERVICE, SUSPENDING_SERVICE} <= names:
                return
            if time.monotonic() > deadline:
                raise StartError(f"{instance.admin} did not learn of the deployments within {timeout_s:.0f} s")
            time.sleep(0.05)

    def stop(self) -> None:
        for process in (self.app, *(instance.process for instance in reversed(self.instances))):
            if process is not None:
                process.stop()
        try:
            self.backend.discard()
        except Exception as exc:  # the figures are taken; a leftover database is no failure
            log(f"[{self.backend.name}] could not remove the store of {self.label}: {exc}")


@dataclass
class Settings:
    seq: int = 500
    warmup: int = 20
    conc: int = 32
    duration_s: float = 15.0
    growth_steps: tuple[int, ...] = (1, 10, 100, 1000)
    growth_seed: int = 100_000
    memory_invocations: int = 10_000
    sleep_ms: int = 10
    chain_depth: int = 3


@dataclass
class Run:
    """What scenarios share: settings, the shared stack, and fresh stacks on demand."""

    settings: Settings
    backend_factory: Callable[[], Backend]
    workdir: Path
    #: The prefix of the progress lines.
    tag: str = "ours"
    _shared: Stack | None = None
    _numbers: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _stacks: list[Stack] = field(default_factory=list)

    def first(self) -> int:
        """A block of request numbers not used by any earlier phase."""
        return next(self._numbers) * 10_000_000

    def shared(self) -> Stack:
        if self._shared is None:
            self._shared = self.fresh("shared")
        return self._shared

    def fresh(self, label: str, *, seed_completed: int = 0) -> Stack:
        stack = Stack(self.backend_factory(), self.workdir / f"ours-{label}", label)
        self._stacks.append(stack)
        return stack.start(seed_completed=seed_completed)

    def stop(self, stack: Stack) -> None:
        stack.stop()
        if stack is self._shared:
            self._shared = None

    def drop_shared(self) -> None:
        """Stop the shared stack (after a failure it may be what broke); the next scenario starts a new one."""
        if self._shared is not None:
            self.stop(self._shared)

    def stop_all(self) -> None:
        for stack in self._stacks:
            stack.stop()
        self._shared = None

    # ---------------------------------------------------------------- phases

    def seq(self, stack: Stack, url: str, body: str, count: int, what: str) -> dict[str, Any]:
        result = run_driver(
            stack.spread(url),
            "seq",
            body=body,
            pids=stack.pids(),
            count=count,
            warmup=self.settings.warmup,
            first=self.first(),
            pg_server=stack.backend.server_process(),
        )
        log(
            f"[{self.tag}] {what}: seq p50 {_ms(result['p50_ms'])} p99 {_ms(result['p99_ms'])} "
            f"(n={result['count']}, errors {result['errors']})"
        )
        return result

    def conc(self, stack: Stack, url: str, body: str, what: str) -> dict[str, Any]:
        result = run_driver(
            stack.spread(url),
            "conc",
            body=body,
            pids=stack.pids(),
            clients=self.settings.conc,
            duration_s=self.settings.duration_s,
            warmup=2,
            first=self.first(),
            pg_server=stack.backend.server_process(),
        )
        log(
            f"[{self.tag}] {what}: {result['clients']} clients {result['invocations_per_s']} inv/s, "
            f"p50 {_ms(result['p50_ms'])} p99 {_ms(result['p99_ms'])} (errors {result['errors']}), "
            f"cores {result['cores']}"
        )
        return result


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} ms"


def _steps_body(n: int) -> str:
    return '{"n": ' + str(n) + ', "i": {i}}'


NOOP_BODY = "{i}"
STEPS3_BODY = _steps_body(3)


# --------------------------------------------------------------------------- scenarios


def latency(run: Run) -> dict[str, Any]:
    """Sequential latency of handlers with 0, 3, 10 and 100 steps, and of 3 steps run in worker threads."""
    stack, seq = run.shared(), run.settings.seq
    return {
        "noop": run.seq(stack, stack.url(SERVICE, "noop"), NOOP_BODY, seq, "noop"),
        "steps3": run.seq(stack, stack.url(SERVICE, "steps"), STEPS3_BODY, seq, "steps n=3"),
        "steps10": run.seq(stack, stack.url(SERVICE, "steps"), _steps_body(10), seq, "steps n=10"),
        "steps100": run.seq(stack, stack.url(SERVICE, "steps"), _steps_body(100), max(seq // 5, 5), "steps n=100"),
        "steps_sync3": run.seq(stack, stack.url(SERVICE, "steps_sync"), STEPS3_BODY, seq, "steps_sync n=3"),
    }


def three_steps(run: Run, *, seq: bool = True, conc: bool = True) -> dict[str, Any]:
    """The 3-step workload alone: sequential, and closed-loop concurrent clients."""
    stack = run.shared()
    url = stack.url(SERVICE, "steps")
    results: dict[str, Any] = {}
    if seq:
        results["seq"] = run.seq(stack, url, STEPS3_BODY, run.settings.seq, "steps n=3")
    if conc:
        results["conc"] = run.conc(stack, url, STEPS3_BODY, "steps n=3")
    return results


def throughput(run: Run) -> dict[str, Any]:
    """Closed-loop concurrent clients on 3 steps and on no step: invocations/s and latency."""
    stack = run.shared()
    return {
        "steps3": run.conc(stack, stack.url(SERVICE, "steps"), STEPS3_BODY, "steps n=3"),
        "noop": run.conc(stack, stack.url(SERVICE, "noop"), NOOP_BODY, "noop"),
    }


def sleep(run: Run) -> dict[str, Any]:
    """A short durable sleep: suspended and re-invoked by the proxy, or waited for in-process."""
    stack, ms = run.shared(), run.settings.sleep_ms
    body = '{"ms": ' + str(ms) + ', "i": {i}}'
    count = max(run.settings.seq // 2, 5)
    results: dict[str, Any] = {"sleep_ms": ms}
    for name, service in (("suspended", SUSPENDING_SERVICE), ("in_process", SERVICE)):
        result = run.seq(stack, stack.url(service, "sleep"), body, count, f"sleep {ms} ms ({name})")
        result["overhead_p50_ms"] = None if result["p50_ms"] is None else round(result["p50_ms"] - ms, 3)
        result["overhead_p99_ms"] = None if result["p99_ms"] is None else round(result["p99_ms"] - ms, 3)
        results[name] = result
    return results


def chain(run: Run) -> dict[str, Any]:
    """A handler calling itself to a depth of 3: four invocations, each waiting for the next."""
    stack, depth = run.shared(), run.settings.chain_depth
    body = '{"depth": ' + str(depth) + ', "i": {i}}'
    result = run.seq(stack, stack.url(SERVICE, "chain"), body, max(run.settings.seq // 2, 5), f"chain depth {depth}")
    return {"depth": depth, "invocations_per_call": depth + 1, "seq": result}


def growth(run: Run) -> dict[str, Any]:
    """Cost per step as the journal grows, and noop latency on an empty store vs a store full of invocations."""
    settings = run.settings
    stack = run.shared()
    series: dict[str, Any] = {}
    points: list[tuple[float, float]] = []
    previous: tuple[int, float] | None = None
    for n in settings.growth_steps:
        count = max(settings.seq // (2 if n < 10 else 4 if n < 100 else 10 if n < 1000 else 100), 3)
        result = run.seq(stack, stack.url(SERVICE, "steps"), _steps_body(n), count, f"growth: steps n={n}")
        p50 = result["p50_ms"]
        if p50 is not None:
            result["p50_per_step_ms"] = round(p50 / n, 4)
            if previous is not None:
                result["marginal_per_step_ms"] = round((p50 - previous[1]) / (n - previous[0]), 4)
            previous = (n, p50)
            points.append((n, p50))
        series[f"n{n}"] = result
    fitted = slope(points)
    store: dict[str, Any] = {}
    # The two stores are measured on stacks started alike, one after the other.
    for label, seeded in (("empty", 0), ("seeded", settings.growth_seed)):
        fresh = run.fresh(f"growth-{label}", seed_completed=seeded)
        try:
            result = run.seq(fresh, fresh.url(SERVICE, "noop"), NOOP_BODY, settings.seq, f"noop, {label} store")
            result["completed_invocations_before"] = seeded
            if seeded:
                result["seeding"] = fresh.seeding
            store[label] = result
        finally:
            run.stop(fresh)
    empty, seeded_result = store["empty"].get("p50_ms"), store["seeded"].get("p50_ms")
    return {
        "steps": series,
        "slope_ms_per_step": None if fitted is None else round(fitted, 4),
        "store": store,
        "seeded_vs_empty_p50": None if not empty or seeded_result is None else round(seeded_result / empty, 3),
    }


def memory(run: Run) -> dict[str, Any]:
    """The proxy's RSS with many suspended invocations (1-hour sleeps on the suspending endpoint)."""
    settings = run.settings
    n = settings.memory_invocations
    stack = run.fresh("memory")
    try:
        time.sleep(1.0)
        assert stack.proxy is not None and stack.app is not None
        rss_idle = rss_kib(stack.proxy.pid)
        url = stack.url(SUSPENDING_SERVICE, "sleep", send=True)
        started = time.perf_counter()
        sends = run_driver(
            url,
            "conc",
            body='{"ms": 3600000, "i": {i}}',
            pids=stack.pids(),
            clients=settings.conc,
            duration_s=600.0,
            total=n,
            warmup=0,
            first=run.first(),
        )
        log(f"[ours] memory: sent {sends['count']:,} in {sends['duration_s']:.1f} s (errors {sends['errors']})")
        deadline = time.monotonic() + max(60.0, n / 50)
        suspended = stack.backend.count_invocations("suspended")
        while suspended < sends["count"] and time.monotonic() < deadline:
            time.sleep(0.5)
            suspended = stack.backend.count_invocations("suspended")
        all_suspended_s = time.perf_counter() - started
        time.sleep(1.0)
        rss = rss_kib(stack.proxy.pid)
        log(f"[ours] memory: {suspended:,} suspended after {all_suspended_s:.1f} s; proxy RSS {rss / 1024:.1f} MiB")
        return {
            "invocations": n,
            "sends": sends,
            "suspended": suspended,
            "complete": suspended >= n,
            "seconds_until_all_suspended": round(all_suspended_s, 2),
            "proxy_rss_idle_mib": round(rss_idle / 1024, 1),
            "proxy_rss_mib": round(rss / 1024, 1),
            "proxy_rss_per_suspended_kib": round((rss - rss_idle) / max(suspended, 1), 2),
            "app_rss_mib": round(rss_kib(stack.app.pid) / 1024, 1),
            "errors": sends["errors"],
        }
    finally:
        run.stop(stack)


@dataclass(frozen=True)
class Scenario:
    name: str
    run: Callable[[Run], dict[str, Any]]
    summary: str


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("latency", latency, "sequential p50/p90/p99 of 0, 3, 10, 100 steps (and 3 sync steps)"),
    Scenario("throughput", throughput, "invocations/s and p50/p99 with concurrent clients, 3 steps and 0 steps"),
    Scenario("sleep", sleep, "a 10 ms sleep: suspended and re-invoked, vs waited in-process"),
    Scenario("chain", chain, "a call chain of depth 3 (4 invocations)"),
    Scenario("growth", growth, "cost per step for 1..1000 steps; noop on an empty vs a seeded store"),
    Scenario("memory", memory, "proxy RSS with many suspended invocations"),
    Scenario("steps3", three_steps, "3 steps alone: sequential, and concurrent clients (within latency,throughput)"),
)
SCENARIO_NAMES = tuple(scenario.name for scenario in SCENARIOS)
#: What runs when ``--only`` is not given: ``steps3`` is already part of latency and throughput.
DEFAULT_SCENARIOS = tuple(name for name in SCENARIO_NAMES if name != "steps3")


def three_step_phases(only: list[str]) -> Scenario | None:
    """The 3-step part of the chosen scenarios, as run on the other stores (None when there is none):
    its sequential phase with ``latency`` or ``steps3``, its concurrent one with ``throughput`` or ``steps3``."""
    seq = "latency" in only or "steps3" in only
    conc = "throughput" in only or "steps3" in only
    if not seq and not conc:
        return None
    parts = " and ".join(part for part, chosen in (("sequential", seq), ("concurrent", conc)) if chosen)
    return Scenario("steps3", lambda run: three_steps(run, seq=seq, conc=conc), f"3 steps: {parts}")


def derive(scenarios: dict[str, Any]) -> dict[str, Any]:
    """Figures computed from several scenarios: the cost of one step."""
    derived: dict[str, Any] = {}
    latency_results = scenarios.get("latency", {})
    noop, steps10 = latency_results.get("noop", {}), latency_results.get("steps10", {})
    if noop.get("p50_ms") is not None and steps10.get("p50_ms") is not None:
        derived["per_step_ms_from_steps10"] = round((steps10["p50_ms"] - noop["p50_ms"]) / 10, 4)
    steps3, sync3 = latency_results.get("steps3", {}), latency_results.get("steps_sync3", {})
    if steps3.get("p50_ms") is not None and sync3.get("p50_ms") is not None:
        derived["thread_hop_per_step_ms"] = round((sync3["p50_ms"] - steps3["p50_ms"]) / 3, 4)
    growth_results = scenarios.get("growth", {})
    if growth_results.get("slope_ms_per_step") is not None:
        derived["per_step_ms_from_growth_slope"] = growth_results["slope_ms_per_step"]
    return derived


def run_ours(
    settings: Settings,
    backend_factory: Callable[[], Backend],
    workdir: Path,
    only: list[str],
    *,
    scenarios: tuple[Scenario, ...] = SCENARIOS,
    tag: str = "ours",
) -> dict[str, Any]:
    """Run the chosen scenarios; a scenario that fails is recorded with its error and the others still run."""
    _, server = app_server_args()
    results: dict[str, Any] = {
        "backend": backend_factory().describe(),
        "app_server": {"server": "uvicorn", **server, "processes": 1},
        "scenarios": {},
        "failed": [],
    }
    run = Run(settings, backend_factory, workdir, tag)
    try:
        for scenario in scenarios:
            if scenario.name not in only:
                continue
            log(f"[{tag}] {scenario.name}: {scenario.summary}")
            try:
                results["scenarios"][scenario.name] = scenario.run(run)
            except Exception as exc:
                log(f"[{tag}] {scenario.name} failed: {exc}\n{traceback.format_exc()}")
                message = f"{type(exc).__name__}: {exc}"
                results["scenarios"][scenario.name] = {"error": message.splitlines()[0], "detail": message}
                results["failed"].append(scenario.name)
                run.drop_shared()
    finally:
        run.stop_all()
    results["derived"] = derive(results["scenarios"])
    results["errors"] = count_errors(results["scenarios"])
    return results


def count_errors(value: Any) -> int:
    """The driver errors found anywhere in a result tree."""
    if isinstance(value, dict):
        errors = value.get("errors")
        own = errors if isinstance(errors, int) and "mode" in value else 0
        return own + sum(count_errors(v) for k, v in value.items() if k != "errors")
    if isinstance(value, list):
        return sum(count_errors(v) for v in value)
    return 0
