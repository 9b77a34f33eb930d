"""The metrics registry, its exposition format, and the timing of the store's writes."""

from __future__ import annotations

import math
import timeit
from pathlib import Path

import pytest

from proxy.metrics import DURATION_BUCKETS, ProxyMetrics, Registry
from proxy.store.base import NewInvocation
from proxy.store.sqlite import SQLiteStore

from .metrics_text import parse


def test_counters_gauges_and_labels_render_in_the_text_format() -> None:
    registry = Registry()
    requests = registry.counter("app_requests_total", "Requests.", ("method", "code"))
    temperature = registry.gauge("app_temperature", "Degrees,\nrounded \\ roughly.")
    plain = registry.counter("app_plain_total", "Never incremented.")
    requests.labels("GET", "200").inc()
    requests.labels("GET", "200").inc(2)
    requests.labels('we"ird\\', "line\nbreak").inc()
    temperature.set(21.5)
    text = registry.render()
    assert "# HELP app_temperature Degrees,\\nrounded \\\\ roughly.\n" in text
    assert 'app_requests_total{method="GET",code="200"} 3\n' in text
    assert 'app_requests_total{method="we\\"ird\\\\",code="line\\nbreak"} 1\n' in text
    families = parse(text)
    assert families["app_requests_total"].type == "counter"
    assert families["app_requests_total"].value(method='we"ird\\', code="line\nbreak") == 1
    assert families["app_temperature"].value() == 21.5
    assert families["app_plain_total"].value() == 0, "an unlabelled metric shows 0 before its first change"
    assert plain.labels() is plain.labels()


def test_histogram_buckets_are_cumulative_with_inclusive_bounds() -> None:
    registry = Registry()
    latency = registry.histogram("op_seconds", "Op latency.", ("op",), buckets=(0.1, 1.0, 10.0))
    for value in (0.05, 0.1, 0.5, 1.0, 3.0, 100.0):
        latency.labels("read").observe(value)
    family = parse(registry.render())["op_seconds"]
    assert family.buckets(op="read") == [(0.1, 2), (1.0, 4), (10.0, 5), (math.inf, 6)]
    assert family.value("_count", op="read") == 6
    assert family.value("_sum", op="read") == pytest.approx(104.65)


def test_the_default_buckets_span_milliseconds_to_minutes() -> None:
    assert DURATION_BUCKETS[0] == 0.001 and DURATION_BUCKETS[-1] == 600.0
    assert list(DURATION_BUCKETS) == sorted(set(DURATION_BUCKETS))


def test_bad_names_labels_and_buckets_are_refused() -> None:
    registry = Registry()
    registry.counter("ok_total", "x")
    with pytest.raises(ValueError, match="already exists"):
        registry.gauge("ok_total", "x")
    with pytest.raises(ValueError, match="invalid metric name"):
        registry.counter("1bad", "x")
    with pytest.raises(ValueError, match="invalid label name"):
        registry.histogram("h", "x", ("le",))
    with pytest.raises(ValueError, match="strictly increasing"):
        registry.histogram("h2", "x", buckets=(1.0, 0.5))
    with pytest.raises(ValueError, match="takes labels"):
        registry.counter("c_total", "x", ("a", "b")).labels("only-one")


def test_every_proxy_metric_renders_before_anything_happened() -> None:
    families = parse(ProxyMetrics().render())
    assert all(name.startswith("durable_") for name in families)
    (labels,) = families["durable_build_info"].label_sets()
    assert families["durable_build_info"].value(**labels) == 1 and labels["version"]


def test_observing_is_cheap() -> None:
    """The hot path's observations: a few dict and list operations, far under a microsecond or two."""
    metrics = ProxyMetrics()
    step = metrics.step_duration
    attempts = metrics.attempts
    seconds = min(timeit.repeat(lambda: step.labels("Shop", "run").observe(0.003), number=20_000, repeat=5))
    assert seconds / 20_000 < 5e-6
    seconds = min(timeit.repeat(lambda: attempts.labels("Shop", "completed").inc(), number=20_000, repeat=5))
    assert seconds / 20_000 < 5e-6


async def test_store_writes_are_timed_by_verb(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "journal.db")
    await store.open()
    try:
        metrics = ProxyMetrics()
        store.write_observer = metrics.observe_store_write
        new = NewInvocation(id="inv-1", service="S", handler="h", input=b"null", deployment_id="dp")
        await store.create_invocation(new, 1_000)
        await store.claim("inv-1", "http://x", 1_001)
        await store.get_invocation("inv-1")  # a read: not timed
        family = parse(metrics.render())["durable_store_write_duration_seconds"]
        assert {labels["verb"] for labels in family.label_sets("_count")} == {"create_invocation", "claim"}
        assert family.value("_count", verb="create_invocation") == 1
        assert family.value("_count", verb="claim") == 1
        store.write_observer = None
        await store.claim("inv-1", "http://x", 1_002)
        assert parse(metrics.render())["durable_store_write_duration_seconds"].value("_count", verb="claim") == 1
    finally:
        await store.close()
