"""durable-proxy under test: its processes, and the scenarios run through the driver.

A ``Stack`` is one proxy (``python -m proxy serve``) on a store given by a
``Backend``, and the benchmark app (``bench.app``) under uvicorn, with both of
its endpoints registered. Scenarios only use what a stack offers (ingress and
admin URLs, the PIDs to sample, counting invocations by status), so they do
not change when the store or the number of proxy processes does.

Most scenarios share one stack. Those that need a store in a given state
(empty, seeded with 100,000 completed invocations, or filled with suspended
invocations) start stacks of their own.
"""

from __future__ import annotations

import importlib.util
import itertools
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


class Stack:
    """One proxy on a fresh store, and the benchmark app, registered."""

    def __init__(self, backend: Backend, workdir: Path, label: str) -> None:
        self.backend = backend
        self.workdir = workdir
        self.label = label
        self.port = free_port()
        self.admin_port = free_port()
        self.callback_port = free_port()
        self.app_port = free_port()
        self.proxy: Process | None = None
        self.app: Process | None = None
        self.seeding: dict[str, Any] = {}

    @property
    def ingress(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def pids(self) -> dict[str, int]:
        assert self.proxy is not None and self.app is not None
        return {"proxy": self.proxy.pid, "app": self.app.pid}

    def url(self, service: str, handler: str, *, send: bool = False) -> str:
        return f"{self.ingress}/{service}/{handler}" + ("/send" if send else "")

    def start(self, *, seed_completed: int = 0) -> Stack:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if seed_completed:
            log(f"[ours] {self.label}: seeding {seed_completed:,} completed invocations")
        self.seeding = self.backend.prepare(self.workdir, seed_completed=seed_completed)
        # The proxy runs with its defaults: no DURABLE_PROXY_* setting leaks in from the environment.
        env = {k: v for k, v in python_env().items() if not k.startswith("DURABLE_PROXY_")}
        self.proxy = Process(
            f"proxy ({self.label})",
            [sys.executable, "-m", "proxy", "serve", *self.backend.serve_args(), "--port", str(self.port),
             "--admin-port", str(self.admin_port), "--callback-port", str(self.callback_port),
             "--log-level", "warning"],
            self.workdir / "proxy.log",
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
        self.proxy.wait_healthy(f"{self.admin}/health", timeout_s=120)
        self.app.wait_healthy(f"http://127.0.0.1:{self.app_port}/health")
        for mount in ("durable", "suspend"):
            status, answer = http_post_json(
                f"{self.admin}/deployments", {"uri": f"http://127.0.0.1:{self.app_port}/{mount}"}
            )
            if status >= 300:
                raise StartError(f"registering /{mount} failed: {status} {answer}")
        return self

    def stop(self) -> None:
        for process in (self.app, self.proxy):
            if process is not None:
                process.stop()


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
            url, "seq", body=body, pids=stack.pids(), count=count, warmup=self.settings.warmup, first=self.first()
        )
        log(
            f"[ours] {what}: seq p50 {_ms(result['p50_ms'])} p99 {_ms(result['p99_ms'])} "
            f"(n={result['count']}, errors {result['errors']})"
        )
        return result

    def conc(self, stack: Stack, url: str, body: str, what: str) -> dict[str, Any]:
        result = run_driver(
            url,
            "conc",
            body=body,
            pids=stack.pids(),
            clients=self.settings.conc,
            duration_s=self.settings.duration_s,
            warmup=2,
            first=self.first(),
        )
        log(
            f"[ours] {what}: {result['clients']} clients {result['invocations_per_s']} inv/s, "
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
)
SCENARIO_NAMES = tuple(scenario.name for scenario in SCENARIOS)


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
    settings: Settings, backend_factory: Callable[[], Backend], workdir: Path, only: list[str]
) -> dict[str, Any]:
    """Run the chosen scenarios; a scenario that fails is recorded with its error and the others still run."""
    _, server = app_server_args()
    results: dict[str, Any] = {
        "backend": backend_factory().describe(),
        "app_server": {"server": "uvicorn", **server, "processes": 1},
        "scenarios": {},
        "failed": [],
    }
    run = Run(settings, backend_factory, workdir)
    try:
        for scenario in SCENARIOS:
            if scenario.name not in only:
                continue
            log(f"[ours] {scenario.name}: {scenario.summary}")
            try:
                results["scenarios"][scenario.name] = scenario.run(run)
            except Exception as exc:
                log(f"[ours] {scenario.name} failed: {exc}\n{traceback.format_exc()}")
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
