from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Protocol

import httpx
import pytest

from handler_sdk import Clock, Endpoint, Service

from .fakes import FakeProxy, ManualClock


class MakeEndpoint(Protocol):
    def __call__(
        self,
        *services: Service,
        callback_transport: httpx.AsyncBaseTransport | None = None,
        append_deadline: timedelta = ...,
        suspend_after: timedelta = ...,
        always_replay: bool = ...,
        clock: Clock | None = None,
    ) -> Endpoint: ...


@pytest.fixture
def proxy() -> FakeProxy:
    return FakeProxy()


@pytest.fixture
async def make_endpoint(proxy: FakeProxy) -> AsyncIterator[MakeEndpoint]:
    """Endpoints wired to the fake proxy, closed after the test."""
    endpoints: list[Endpoint] = []

    def make(
        *services: Service,
        callback_transport: httpx.AsyncBaseTransport | None = None,
        append_deadline: timedelta = timedelta(seconds=30),
        suspend_after: timedelta = timedelta(seconds=1),
        always_replay: bool = False,
        clock: Clock | None = None,
    ) -> Endpoint:
        endpoint = Endpoint(
            list(services),
            callback_transport=callback_transport or proxy.transport,
            append_deadline=append_deadline,
            suspend_after=suspend_after,
            always_replay=always_replay,
            clock=clock or ManualClock(),
        )
        endpoints.append(endpoint)
        return endpoint

    yield make
    for endpoint in endpoints:
        await endpoint.aclose()
