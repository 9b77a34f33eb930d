"""A travel booking as a saga: book a flight, a hotel and a car, then pay.
If any step fails for good, or the booking is cancelled while it runs, the
bookings made so far are undone in reverse order. Every booking and every
compensation is a journaled step, so a crash half-way resumes the saga, and
the compensations run exactly where they are needed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import msgspec

from handler_sdk import Context, Endpoint, Service, TerminalError, current_step


class Trip(msgspec.Struct, frozen=True):
    traveller: str
    destination: str
    card: str


class Booking(msgspec.Struct, frozen=True):
    flight: str
    hotel: str
    car: str
    payment: str


class Agencies:
    """The outside world of this example: reservations keyed by idempotency key."""

    def __init__(self) -> None:
        self.reserved: dict[str, str] = {}
        self.cancelled: list[str] = []

    def reserve(self, kind: str, key: str, destination: str) -> str:
        return self.reserved.setdefault(key, f"{kind}-{destination}-{len(self.reserved) + 1}")

    def cancel(self, reservation: str) -> None:
        self.cancelled.append(reservation)


agencies = Agencies()


def book(kind: str, destination: str) -> str:
    return agencies.reserve(kind, current_step().idempotency_key, destination)


def pay(card: str) -> str:
    if card.startswith("declined"):
        raise TerminalError(f"card {card} was declined", status_code=402)
    return f"pay-{current_step().idempotency_key}"


def undo(reservation: str) -> None:
    agencies.cancel(reservation)


trips = Service("TravelService")


@trips.handler()
async def book_trip(ctx: Context, trip: Trip) -> Booking:
    compensations: list[Callable[[], Awaitable[None]]] = []
    try:
        flight = await ctx.run("book-flight", book, "flight", trip.destination)
        compensations.append(lambda: ctx.run("cancel-flight", undo, flight))
        hotel = await ctx.run("book-hotel", book, "hotel", trip.destination)
        compensations.append(lambda: ctx.run("cancel-hotel", undo, hotel))
        car = await ctx.run("book-car", book, "car", trip.destination)
        compensations.append(lambda: ctx.run("cancel-car", undo, car))
        payment = await ctx.run("pay", pay, trip.card)
        return Booking(flight=flight, hotel=hotel, car=car, payment=payment)
    except TerminalError:  # a failed step, or a cancellation (InvocationCancelled is a TerminalError)
        for compensate in reversed(compensations):
            await compensate()
        raise


app = Endpoint([trips]).asgi()
