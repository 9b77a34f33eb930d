from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Protocol

import httpx
import pytest

from handler_sdk import Endpoint, Service

from .fakes import FakeProxy


class MakeEndpoint(Protocol):
    def __call__(
        self,
        *services: Service,
        callback_transport: httpx.AsyncBaseTransport | None = None,
        append_deadline: timedelta = ...,
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
    ) -> Endpoint:
        endpoint = Endpoint(
            list(services),
            callback_transport=callback_transport or proxy.transport,
            append_deadline=append_deadline,
        )
        endpoints.append(endpoint)
        return endpoint

    yield make
    for endpoint in endpoints:
        await endpoint.aclose()
