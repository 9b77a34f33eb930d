"""examples/travel.py: a saga whose compensations undo the bookings in reverse order."""

from __future__ import annotations

import asyncio
import threading

import pytest

from examples import travel
from examples.travel import Agencies, trips
from handler_sdk.testing import InvocationFailed, TestEnvironment

REPLAY = pytest.mark.parametrize("always_replay", [False, True], ids=["live", "always-replay"])


@pytest.fixture(autouse=True)
def agencies(monkeypatch: pytest.MonkeyPatch) -> Agencies:
    """A fresh fake of the agencies for each test (the example keeps one at module level)."""
    fresh = Agencies()
    monkeypatch.setattr(travel, "agencies", fresh)
    return fresh


class FlakyAgencies(Agencies):
    """Agencies whose first reservation fails with a transient error (the attempt is retried)."""

    def __init__(self) -> None:
        super().__init__()
        self.failures = 1

    def reserve(self, kind: str, key: str, destination: str) -> str:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("agency unreachable")
        return super().reserve(kind, key, destination)


class SlowHotel(Agencies):
    """Agencies whose hotel reservation waits until the test lets it finish."""

    def __init__(self) -> None:
        super().__init__()
        self.hotel_started = threading.Event()
        self.finish_hotel = threading.Event()

    def reserve(self, kind: str, key: str, destination: str) -> str:
        if kind == "hotel":
            self.hotel_started.set()
            if not self.finish_hotel.wait(timeout=10):
                raise TimeoutError("the test never let the hotel reservation finish")
        return super().reserve(kind, key, destination)


def trip(card: str) -> dict[str, str]:
    return {"traveller": "ada", "destination": "lisbon", "card": card}


def names(found: dict[str, object]) -> list[str]:
    journal = found["journal"]
    assert isinstance(journal, list)
    return [entry["name"] or entry["kind"] for entry in journal]


@REPLAY
async def test_the_happy_path_books_everything(always_replay: bool, agencies: Agencies) -> None:
    async with TestEnvironment([trips], always_replay=always_replay) as env:
        invocation_id = await env.send("TravelService", "book_trip", trip("tok_visa"))
        booking = await env.attach(invocation_id)
        assert booking["flight"] == "flight-lisbon-1"
        assert booking["hotel"] == "hotel-lisbon-2"
        assert booking["car"] == "car-lisbon-3"
        assert booking["payment"].startswith("pay-")
        assert len(agencies.reserved) == 3
        assert agencies.cancelled == []
        found = await env.invocation(invocation_id)
        assert names(found) == ["book-flight", "book-hotel", "book-car", "pay"]


@REPLAY
async def test_a_declined_card_cancels_car_hotel_and_flight_in_reverse_order(
    always_replay: bool, agencies: Agencies
) -> None:
    async with TestEnvironment([trips], always_replay=always_replay) as env:
        with pytest.raises(InvocationFailed) as failed:
            await env.call("TravelService", "book_trip", trip("declined_amex"))
        assert failed.value.status_code == 402
        assert failed.value.message == "card declined_amex was declined"
        assert agencies.cancelled == ["car-lisbon-3", "hotel-lisbon-2", "flight-lisbon-1"]
        assert failed.value.invocation_id is not None
        found = await env.invocation(failed.value.invocation_id)
        assert found["status"] == "failed"
        assert names(found) == [
            "book-flight",
            "book-hotel",
            "book-car",
            "pay",
            "cancel-car",
            "cancel-hotel",
            "cancel-flight",
        ]
        assert found["journal"][3]["entry"]["failure"]["code"] == 402


@REPLAY
async def test_a_cancellation_during_a_booking_undoes_what_was_booked(
    always_replay: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow = SlowHotel()
    monkeypatch.setattr(travel, "agencies", slow)
    async with TestEnvironment([trips], always_replay=always_replay) as env:
        invocation_id = await env.send("TravelService", "book_trip", trip("tok_visa"))
        try:
            assert await asyncio.to_thread(slow.hotel_started.wait, 5), "the hotel booking never started"
            await env.cancel(invocation_id)  # while the step runs: the handler learns it when the step is journaled
        finally:
            slow.finish_hotel.set()
        with pytest.raises(InvocationFailed) as failed:
            await env.attach(invocation_id)
        assert (failed.value.status_code, failed.value.message) == (409, "cancelled")
        found = await env.invocation(invocation_id)
        assert names(found) == ["book-flight", "book-hotel", "cancel", "cancel-hotel", "cancel-flight"]
        assert slow.cancelled == ["hotel-lisbon-2", "flight-lisbon-1"]
        assert len(slow.reserved) == 2  # the car was never booked


async def test_a_cancellation_before_the_first_booking_compensates_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    flaky = FlakyAgencies()
    monkeypatch.setattr(travel, "agencies", flaky)
    async with TestEnvironment([trips]) as env:
        invocation_id = await env.send("TravelService", "book_trip", trip("tok_visa"))
        await env.settle()  # the first attempt failed before any step was journaled: it waits for its retry
        waiting = await env.invocation(invocation_id)
        assert waiting["status"] == "backing_off"
        assert waiting["journal"] == []
        await env.cancel(invocation_id)
        # The retry runs with the cancellation flag set: the first booking raises it, nothing was booked.
        with pytest.raises(InvocationFailed) as failed:
            await env.attach(invocation_id)
        assert (failed.value.status_code, failed.value.message) == (409, "cancelled")
        found = await env.invocation(invocation_id)
        assert names(found) == ["cancel"]
        assert len(found["attempts"]) == 2
        assert flaky.reserved == {}
        assert flaky.cancelled == []


async def test_a_delayed_booking_cancelled_before_it_starts_never_runs(agencies: Agencies) -> None:
    async with TestEnvironment([trips]) as env:
        response = await env.ingress.post("/TravelService/book_trip/send?delay=1h", json=trip("tok_visa"))
        invocation_id = response.json()["invocationId"]
        await env.cancel(invocation_id)
        with pytest.raises(InvocationFailed) as failed:
            await env.attach(invocation_id)
        assert failed.value.status_code == 409
        assert (await env.invocation(invocation_id))["attempts"] == []
        assert agencies.reserved == {} and agencies.cancelled == []
