from __future__ import annotations

import random

import pytest

from proxy.config import Settings
from proxy.ids import invocation_id, looks_like_invocation_id
from proxy.retry import RetryPolicy, next_retry_at


def test_backoff_doubles_up_to_the_cap_without_jitter() -> None:
    policy = RetryPolicy(initial_interval_ms=100, factor=2, max_interval_ms=1_000, max_attempts=10, jitter=0)
    delays = [next_retry_at(policy, attempt, 0) for attempt in range(1, 7)]
    assert delays == [100, 200, 400, 800, 1_000, 1_000]


def test_no_retry_after_the_last_attempt() -> None:
    policy = RetryPolicy(max_attempts=3, jitter=0)
    assert next_retry_at(policy, 2, 0) is not None
    assert next_retry_at(policy, 3, 0) is None


def test_jitter_only_shortens_the_delay() -> None:
    policy = RetryPolicy(initial_interval_ms=1_000, jitter=0.2)
    rng = random.Random(7)
    delays = {next_retry_at(policy, 1, 0, rng=rng) for _ in range(200)}
    assert all(delays_ms is not None and 800 <= delays_ms <= 1_000 for delays_ms in delays)
    assert len(delays) > 1


def test_the_handler_can_ask_for_a_delay() -> None:
    assert next_retry_at(RetryPolicy(), 1, 5_000, retry_after_ms=250) == 5_250


@pytest.mark.parametrize(
    "kwargs",
    [{"factor": 0.5}, {"max_attempts": 0}, {"initial_interval_ms": -1}, {"jitter": 2.0}],
)
def test_invalid_policies_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_settings_come_from_the_environment_and_flags_win() -> None:
    environ = {"DURABLE_PROXY_PORT": "9000", "DURABLE_PROXY_DB": "/tmp/x.db"}
    settings = Settings.load({"port": 9100, "host": None}, environ=environ)
    assert (settings.port, settings.db, settings.host) == (9100, "/tmp/x.db", "127.0.0.1")
    with pytest.raises(ValueError, match="port"):
        Settings.load(environ={"DURABLE_PROXY_PORT": "eighty"})
    with pytest.raises(ValueError):
        Settings.load({"retry_max_attempts": 0}, environ={})


def test_callback_base_defaults_to_the_callback_listener() -> None:
    assert Settings(host="0.0.0.0", port=8080).callback_base() == "http://127.0.0.1:9071"
    assert Settings(callback_port=9200).callback_base() == "http://127.0.0.1:9200"
    assert Settings(callback_port=9200).callback_base(bound_port=40000) == "http://127.0.0.1:40000"
    with pytest.raises(ValueError, match="callback_port"):
        Settings(callback_port=70000)
    assert Settings(advertised_url="http://proxy.internal:80/").callback_base() == "http://proxy.internal:80"


def test_invocation_ids_sort_by_creation_time() -> None:
    first, second = invocation_id(1_000), invocation_id(2_000)
    assert first < second
    assert looks_like_invocation_id(first) and len(first) == 30
    assert not looks_like_invocation_id("inv_nope")
