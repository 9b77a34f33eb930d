import dataclasses
from typing import Any

import httpx
import msgspec
import pydantic

from handler_sdk import (
    Context,
    ObjectContext,
    ObjectSharedContext,
    Service,
    VirtualObject,
    Workflow,
    WorkflowContext,
    WorkflowSharedContext,
)
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
    assert service.kind == "service"
    handlers = {h.name: h for h in service.handlers}
    assert set(handlers) == {"place", "greet", "count"}
    assert {h.kind for h in service.handlers} == {None}

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


cart = VirtualObject("Cart")


@cart.handler()
async def add(ctx: ObjectContext, item: str) -> int:
    return 1


@cart.handler(kind="shared")
async def items(ctx: ObjectSharedContext) -> list[str]:
    return []


signup = Workflow("Signup")


@signup.main()
async def run_signup(ctx: WorkflowContext, email: str) -> bool:
    return True


@signup.handler()
async def verify(ctx: WorkflowSharedContext, code: str) -> None:
    pass


async def test_discover_kinds(make_endpoint: MakeEndpoint) -> None:
    app = make_endpoint(shop, cart, signup).asgi()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sdk.test") as client:
        response = await client.get("/discover")
    manifest = manifest_decoder.decode(response.content)
    kinds = {s.name: (s.kind, {h.name: h.kind for h in s.handlers}) for s in manifest.services}
    assert kinds == {
        "Shop": ("service", {"place": None, "greet": None, "count": None}),
        "Cart": ("object", {"add": "exclusive", "items": "shared"}),
        "Signup": ("workflow", {"run": "workflow", "verify": "shared"}),
    }
    signup_handlers = {h.name: h for s in manifest.services for h in s.handlers if s.name == "Signup"}
    assert signup_handlers["run"].input_schema == {"type": "string"}
    assert signup_handlers["run"].output_schema == {"type": "boolean"}
    assert not {h.name: h for h in manifest.services[1].handlers}["items"].takes_input
    assert b'"kind":"object"' in response.content
