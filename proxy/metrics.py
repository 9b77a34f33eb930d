"""Prometheus metrics: a small registry, the proxy's metrics, and ``GET /metrics`` on the admin port.

The registry is hand-written (counters, gauges, histograms with labels, rendered in the
text exposition format 0.0.4) so the proxy needs no client library. Observing is meant
for the hot path: ``metric.labels(a, b)`` is one dict lookup (the children are made on
first use and kept), ``inc`` an addition, ``observe`` a ``bisect`` and two additions. No
lock: the proxy runs on one event loop, and a scrape renders between two callbacks.

What is cheap to read when scraped is read then, not counted on the way: the invocations
by status and the pending timers (from the store), the attempts running here, and the
counters the proxy already keeps (fenced writes, takeovers, timers fired).

docs/observability.md lists the metrics with their meaning and labels.
"""

from __future__ import annotations

import logging
import math
import platform
import re
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar, get_args

from starlette.requests import Request
from starlette.responses import Response

from . import __version__
from .store.base import InvocationStatus

if TYPE_CHECKING:
    from .app import Runtime

log = logging.getLogger("durable_proxy.metrics")

#: The content type of the text exposition format.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Upper bounds of the duration histograms, in seconds: a millisecond to ten minutes.
DURATION_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
)  # fmt: skip

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


def _format_value(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(value)


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _label_text(names: tuple[str, ...], values: tuple[str, ...], extra: str = "") -> str:
    pairs = [f'{name}="{_escape_label(value)}"' for name, value in zip(names, values, strict=True)]
    if extra:
        pairs.append(extra)
    return "{" + ",".join(pairs) + "}" if pairs else ""


# ---------------------------------------------------------------------- children (one per label set)


class CounterChild:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class GaugeChild:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def set(self, value: float) -> None:
        self.value = float(value)

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        self.value -= amount


class HistogramChild:
    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        #: Observations per bucket, not cumulative; the last one is ``+Inf``.
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound falls in that bound's bucket (``le`` is inclusive).
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)


C = TypeVar("C", CounterChild, GaugeChild, HistogramChild)


# ---------------------------------------------------------------------- metrics


class _Metric(Generic[C]):
    kind: ClassVar[str]

    def __init__(self, name: str, help: str, labelnames: Iterable[str] = ()) -> None:
        if not _NAME.fullmatch(name):
            raise ValueError(f"invalid metric name {name!r}")
        self.name = name
        self.help = help
        self.labelnames = tuple(labelnames)
        for label in self.labelnames:
            if not _LABEL.fullmatch(label) or label.startswith("__") or label == "le":
                raise ValueError(f"invalid label name {label!r} for {name}")
        self._children: dict[tuple[str, ...], C] = {}
        if not self.labelnames:
            self._children[()] = self._new_child()  # an unlabelled metric shows 0 before its first change

    def _new_child(self) -> C:
        raise NotImplementedError

    def labels(self, *values: str) -> C:
        """The child of this label set (label values in ``labelnames`` order), made on first use."""
        child = self._children.get(values)
        if child is None:
            if len(values) != len(self.labelnames):
                raise ValueError(f"{self.name} takes labels {self.labelnames}, got {values}")
            child = self._children[values] = self._new_child()
        return child

    def clear(self) -> None:
        """Forget every label set: no sample is rendered until the next change."""
        self._children.clear()

    def _samples(self) -> Iterator[tuple[str, str, float]]:
        """(name, label text, value) of every sample."""
        for values, child in sorted(self._children.items()):
            assert isinstance(child, CounterChild | GaugeChild)
            yield self.name, _label_text(self.labelnames, values), child.value

    def render(self, out: list[str]) -> None:
        out.append(f"# HELP {self.name} {_escape_help(self.help)}")
        out.append(f"# TYPE {self.name} {self.kind}")
        for name, labels, value in self._samples():
            out.append(f"{name}{labels} {_format_value(value)}")


class Counter(_Metric[CounterChild]):
    kind = "counter"

    def _new_child(self) -> CounterChild:
        return CounterChild()

    def inc(self, amount: float = 1.0) -> None:
        """Add to an unlabelled counter."""
        self.labels().inc(amount)


class Gauge(_Metric[GaugeChild]):
    kind = "gauge"

    def _new_child(self) -> GaugeChild:
        return GaugeChild()

    def set(self, value: float) -> None:
        """Set an unlabelled gauge."""
        self.labels().set(value)


class Histogram(_Metric[HistogramChild]):
    kind = "histogram"

    def __init__(
        self, name: str, help: str, labelnames: Iterable[str] = (), buckets: Iterable[float] = DURATION_BUCKETS
    ) -> None:
        bounds = tuple(float(b) for b in buckets)
        if not bounds or list(bounds) != sorted(set(bounds)) or math.isinf(bounds[-1]):
            raise ValueError(f"the buckets of {name} must be finite and strictly increasing")
        self.buckets = bounds
        super().__init__(name, help, labelnames)

    def _new_child(self) -> HistogramChild:
        return HistogramChild(self.buckets)

    def observe(self, value: float) -> None:
        """Observe into an unlabelled histogram."""
        self.labels().observe(value)

    def _samples(self) -> Iterator[tuple[str, str, float]]:
        bounds = [_format_value(b) for b in self.buckets] + ["+Inf"]
        for values, child in sorted(self._children.items()):
            cumulative = 0
            for bound, count in zip(bounds, child.counts, strict=True):
                cumulative += count
                yield f"{self.name}_bucket", _label_text(self.labelnames, values, f'le="{bound}"'), cumulative
            labels = _label_text(self.labelnames, values)
            yield f"{self.name}_sum", labels, child.sum
            yield f"{self.name}_count", labels, cumulative


class Registry:
    """The metrics to render, in the order they were made."""

    def __init__(self) -> None:
        self._metrics: dict[str, _Metric[Any]] = {}

    def _add(self, metric: _Metric[C]) -> None:
        if metric.name in self._metrics:
            raise ValueError(f"a metric named {metric.name} already exists")
        self._metrics[metric.name] = metric

    def counter(self, name: str, help: str, labelnames: Iterable[str] = ()) -> Counter:
        metric = Counter(name, help, labelnames)
        self._add(metric)
        return metric

    def gauge(self, name: str, help: str, labelnames: Iterable[str] = ()) -> Gauge:
        metric = Gauge(name, help, labelnames)
        self._add(metric)
        return metric

    def histogram(
        self, name: str, help: str, labelnames: Iterable[str] = (), buckets: Iterable[float] = DURATION_BUCKETS
    ) -> Histogram:
        metric = Histogram(name, help, labelnames, buckets)
        self._add(metric)
        return metric

    def render(self) -> str:
        """Every metric in the text exposition format 0.0.4."""
        out: list[str] = []
        for metric in self._metrics.values():
            metric.render(out)
        out.append("")
        return "\n".join(out)


# ---------------------------------------------------------------------- the proxy's metrics


class ProxyMetrics:
    """The metrics of one running proxy (one ``Runtime``)."""

    def __init__(self) -> None:
        r = self.registry = Registry()
        self.build_info = r.gauge(
            "durable_build_info", "Always 1; the labels say which proxy runs.", ("version", "python")
        )
        self.build_info.labels(__version__, platform.python_version()).set(1)
        self.invocations = r.gauge(
            "durable_invocations",
            "Invocations in the journal by status, read from the store at scrape time (the whole database: "
            "every instance sharing it reports the same numbers).",
            ("status",),
        )
        self.pending_timers = r.gauge(
            "durable_pending_timers", "Timers (sleeps, delayed starts, retry backoffs) not fired yet, in the store."
        )
        self.attempts_running = r.gauge("durable_attempts_running", "Attempts running on this instance now.")
        self.invocations_started = r.counter(
            "durable_invocations_started_total",
            "Invocations whose first attempt this instance started.",
            ("service",),
        )
        self.invocations_ended = r.counter(
            "durable_invocations_ended_total",
            "Invocations whose end this instance committed (by its attempts, a kill or a cancellation).",
            ("outcome",),
        )
        self.invocation_duration = r.histogram(
            "durable_invocation_duration_seconds",
            "From an invocation's creation to its end, for invocations ended by an attempt run here.",
            ("service",),
        )
        self.attempts = r.counter(
            "durable_attempts_total",
            "Attempts that ended on this instance: completed, failed, suspended, retry (the handler asked for "
            "a retry or failed unexpectedly), abandoned (no progress, or ran too long), unreachable (the "
            "handler could not be reached).",
            ("service", "outcome"),
        )
        self.retries = r.counter("durable_retries_total", "Attempts followed by a retry after a backoff.", ("service",))
        self.step_duration = r.histogram(
            "durable_step_duration_seconds",
            "Time from an attempt's previous journal activity (its start, an append, an await) to the commit "
            "of its next entry: what a step costs the invocation, handler work included.",
            ("service", "kind"),
        )
        self.append_duration = r.histogram(
            "durable_append_duration_seconds",
            "From the arrival of an append at the proxy to its commit: what the handler waits for, the network aside.",
        )
        self.store_write_duration = r.histogram(
            "durable_store_write_duration_seconds",
            "Duration of the store's write transactions, by verb (committed ones only).",
            ("verb",),
        )
        #: The store calls it after each committed write (``JournalStore.write_observer``).
        self.observe_store_write = lambda verb, seconds: self.store_write_duration.labels(verb).observe(seconds)
        self.fenced_writes = r.counter(
            "durable_fenced_writes_total",
            "Writes refused because their attempt had been superseded: appends and awaits (append), ends (end).",
            ("kind",),
        )
        self.takeovers = r.counter(
            "durable_takeovers_total",
            "Invocations this instance took over from an instance that stopped renewing its leases.",
        )
        self.timers_fired = r.counter("durable_timers_fired_total", "Timers this instance fired.")
        self.scrape_errors = r.counter(
            "durable_metrics_store_errors_total",
            "Scrapes that could not read the store: durable_invocations and durable_pending_timers had no samples.",
        )

    async def collect(self, runtime: Runtime) -> None:
        """Read what is read at scrape time."""
        try:
            counts = await runtime.store.invocation_counts()
            timers = await runtime.store.pending_timer_count()
        except Exception as exc:
            log.warning("metrics: reading the store failed: %s", exc)
            self.scrape_errors.inc()
            self.invocations.clear()
            self.pending_timers.clear()
        else:
            for status in get_args(InvocationStatus):
                self.invocations.labels(status).set(counts.get(status, 0))
            self.pending_timers.set(timers)
        self.attempts_running.set(runtime.invoker.attempts_running())
        self.fenced_writes.labels("append").value = runtime.callbacks.fenced_appends
        self.fenced_writes.labels("end").value = runtime.invoker.superseded_ends
        self.takeovers.labels().value = 0 if runtime.cluster is None else runtime.cluster.taken_over
        self.timers_fired.labels().value = runtime.timers.fired

    def render(self) -> str:
        return self.registry.render()


def metrics_endpoint(runtime: Runtime) -> Callable[[Request], Awaitable[Response]]:
    """The admin route ``GET /metrics``."""

    async def metrics(request: Request) -> Response:
        await runtime.metrics.collect(runtime)
        return Response(runtime.metrics.render(), media_type=CONTENT_TYPE)

    return metrics
