import dataclasses
from typing import Any

import httpx
import msgspec
import pydantic

from handler_sdk import Context, Service
from handler_sdk.protocol import MANIFEST_CONTENT_TYPE, manifest_decoder

from .conftest import MakeEndpoint


class Order(msgspec.Struct):
    id: str
    amount: int


@dataclasses.dataclass
class Receipt:
    order_id: str


class Customer(pydantic.BaseModel):
    name: str


shop = Service("Shop")


@shop.handler()
async def place(ctx: Context, order: Order) -> Receipt:
    return Receipt(order.id)


@shop.handler(name="greet")
async def greet_customer(ctx: Context, customer: Customer) -> str:
    return customer.name


@shop.handler()
async def count(ctx: Context) -> int:
    return 1


async def test_discover(make_endpoint: MakeEndpoint) -> None:
    app = make_endpoint(shop).asgi()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sdk.test") as client:
        response = await client.get("/discover")
    assert response.status_code == 200
    assert response.headers["content-type"] == MANIFEST_CONTENT_TYPE
    manifest = manifest_decoder.decode(response.content)
    assert manifest.sdk == "handler_sdk/0.1.0"
    assert (manifest.min_protocol_version, manifest.max_protocol_version) == (1, 1)
    [service] = manifest.services
    assert service.name == "Shop"
    handlers = {h.name: h for h in service.handlers}
    assert set(handlers) == {"place", "greet", "count"}

    place_manifest = handlers["place"]
    assert place_manifest.takes_input
    assert place_manifest.input_schema is not None
    defs: Any = place_manifest.input_schema["$defs"]
    assert defs["Order"]["properties"] == {
        "id": {"type": "string"},
        "amount": {"type": "integer"},
    }
    assert place_manifest.output_schema is not None
    defs = place_manifest.output_schema["$defs"]
    assert defs["Receipt"]["required"] == ["order_id"]

    assert handlers["greet"].input_schema == Customer.model_json_schema()
    assert handlers["greet"].output_schema == {"type": "string"}

    assert not handlers["count"].takes_input
    assert handlers["count"].input_schema is None
    assert handlers["count"].output_schema == {"type": "integer"}


async def test_health(make_endpoint: MakeEndpoint) -> None:
    app = make_endpoint(shop).asgi()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sdk.test") as client:
        response = await client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_asgi_app_is_built_once(make_endpoint: MakeEndpoint) -> None:
    endpoint = make_endpoint(shop)
    assert endpoint.asgi() is endpoint.asgi()
