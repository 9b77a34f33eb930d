import dataclasses
from typing import Any

import httpx
import msgspec
import pydantic
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.routing import Mount

from handler_sdk import Context, Service, TerminalError
from handler_sdk.protocol import (
    INVOKE_CONTENT_TYPE,
    Completed,
    Failed,
    Failure,
    Retry,
    error_body_decoder,
    json_encoder,
)

from .conftest import MakeEndpoint
from .fakes import FakeProxy, invoke, invoke_request, post_invoke


class Order(msgspec.Struct):
    id: str
    amount: int


@dataclasses.dataclass
class Receipt:
    order_id: str
    total: int


class Customer(pydantic.BaseModel):
    name: str
    age: int


svc = Service("Orders")


@svc.handler()
async def place(ctx: Context, order: Order) -> Receipt:
    return Receipt(order.id, order.amount * 2)


@svc.handler()
async def echo_struct(ctx: Context, order: Order) -> Order:
    return order


@svc.handler()
async def adult(ctx: Context, customer: Customer) -> Customer:
    return customer.model_copy(update={"age": customer.age + 18})


@svc.handler()
async def ping(ctx: Context) -> str:
    return "pong"


@svc.handler()
async def about(ctx: Context) -> dict[str, Any]:
    return {"id": ctx.invocation_id, "attempt": ctx.attempt, "headers": ctx.headers}


@svc.handler()
async def refuse(ctx: Context) -> None:
    raise TerminalError("out of stock", status_code=409)


@svc.handler()
async def crash(ctx: Context) -> None:
    raise ValueError("boom")


@svc.handler()
async def unencodable(ctx: Context) -> Any:
    return object()


def output(response: Any) -> Any:
    assert isinstance(response, Completed), response
    return msgspec.json.decode(response.output)


async def test_struct_input_dataclass_output(make_endpoint: MakeEndpoint) -> None:
    app = make_endpoint(svc).asgi()
    response = await invoke(app, "Orders", "place", input={"id": "o1", "amount": 21})
    assert output(response) == {"order_id": "o1", "total": 42}


async def test_struct_output(make_endpoint: MakeEndpoint) -> None:
    app = make_endpoint(svc).asgi()
    response = await invoke(app, "Orders", "echo_struct", input={"id": "o1", "amount": 1})
    assert output(response) == {"id": "o1", "amount": 1}


async def test_pydantic_input_and_output(make_endpoint: MakeEndpoint) -> None:
    app = make_endpoint(svc).asgi()
    response = await invoke(app, "Orders", "adult", input={"name": "Ann", "age": 2})
    assert output(response) == {"name": "Ann", "age": 20}


async def test_input_validation_error_fails_with_400_and_the_path(make_endpoint: MakeEndpoint) -> None:
    app = make_endpoint(svc).asgi()
    response = await invoke(app, "Orders", "place", input={"id": "o1", "amount": "many"})
    assert response == Failed(failure=Failure(code=400, message="Expected `int`, got `str` - at `$.amount`"))


async def test_pydantic_validation_error_fails_with_400(make_endpoint: MakeEndpoint) -> None:
    app = make_endpoint(svc).asgi()
    response = await invoke(app, "Orders", "adult", input={"name": "Ann"})
    assert isinstance(response, Failed)
    assert response.failure.code == 400
    assert "at `$.age`" in response.failure.message


@pytest.mark.parametrize("raw_input", [b"null", b" null "])
async def test_no_input_handler_accepts_null(make_endpoint: MakeEndpoint, raw_input: bytes) -> None:
    app = make_endpoint(svc).asgi()
    assert output(await invoke(app, "Orders", "ping", raw_input=raw_input)) == "pong"


async def test_no_input_handler_rejects_a_value(make_endpoint: MakeEndpoint) -> None:
    app = make_endpoint(svc).asgi()
    response = await invoke(app, "Orders", "ping", input={"x": 1})
    assert isinstance(response, Failed)
    assert response.failure.code == 400
    assert "takes no input" in response.failure.message


async def test_context_exposes_the_invocation(make_endpoint: MakeEndpoint) -> None:
    app = make_endpoint(svc).asgi()
    response = await invoke(app, "Orders", "about", attempt=4, headers={"x-user": "ann"})
    assert output(response) == {"id": "inv-1", "attempt": 4, "headers": {"x-user": "ann"}}


async def test_terminal_error_fails_the_invocation(make_endpoint: MakeEndpoint) -> None:
    app = make_endpoint(svc).asgi()
    response = await invoke(app, "Orders", "refuse")
    assert response == Failed(failure=Failure(code=409, message="out of stock"))


async def test_other_exception_asks_for_a_retry_without_leaking_the_traceback(make_endpoint: MakeEndpoint) -> None:
    app = make_endpoint(svc).asgi()
    response = await invoke(app, "Orders", "crash")
    assert isinstance(response, Retry)
    assert response.failure.code == 500
    assert response.failure.message == "ValueError: boom"
    assert response.failure.stacktrace is not None
    assert "Traceback" in response.failure.stacktrace
    assert 'raise ValueError("boom")' in response.failure.stacktrace


async def test_unencodable_output_asks_for_a_retry(make_endpoint: MakeEndpoint) -> None:
    app = make_endpoint(svc).asgi()
    response = await invoke(app, "Orders", "unencodable")
    assert isinstance(response, Retry)
    assert response.failure.message.startswith("the handler output cannot be encoded as JSON: TypeError")


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/vnd.durable.v2+json", "application/vnd.durable.vx+json"]
)
async def test_unsupported_content_type_is_415(make_endpoint: MakeEndpoint, content_type: str) -> None:
    app = make_endpoint(svc).asgi()
    response = await post_invoke(app, invoke_request("Orders", "ping"), content_type=content_type)
    assert response.status_code == 415
    assert error_body_decoder.decode(response.content).code == "unsupported_protocol"


async def test_content_type_parameters_are_accepted(make_endpoint: MakeEndpoint) -> None:
    app = make_endpoint(svc).asgi()
    content_type = "application/vnd.durable.v1+json; charset=utf-8"
    response = await post_invoke(app, invoke_request("Orders", "ping"), content_type=content_type)
    assert response.status_code == 200


async def test_malformed_invoke_request_is_400(make_endpoint: MakeEndpoint) -> None:
    app = make_endpoint(svc).asgi()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sdk.test") as client:
        response = await client.post(
            "/invoke/Orders/ping",
            content=b'{"service": "Orders"}',
            headers={"content-type": INVOKE_CONTENT_TYPE},
        )
    assert response.status_code == 400
    body = error_body_decoder.decode(response.content)
    assert body.code == "bad_request"
    assert "invocation_id" in body.message


@pytest.mark.parametrize(("service", "handler"), [("Orders", "nope"), ("Nope", "ping")])
async def test_unknown_handler_is_404(make_endpoint: MakeEndpoint, service: str, handler: str) -> None:
    app = make_endpoint(svc).asgi()
    response = await post_invoke(app, invoke_request(service, handler))
    assert response.status_code == 404
    body = error_body_decoder.decode(response.content)
    assert body.code == "not_found"
    assert f"{service}/{handler}" in body.message


async def test_path_and_body_must_agree(make_endpoint: MakeEndpoint) -> None:
    app = make_endpoint(svc).asgi()
    request = invoke_request("Orders", "ping")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sdk.test") as client:
        response = await client.post(
            "/invoke/Orders/about",
            content=json_encoder.encode(request),
            headers={"content-type": INVOKE_CONTENT_TYPE},
        )
    assert response.status_code == 400


def test_duplicate_service_names_are_rejected(make_endpoint: MakeEndpoint) -> None:
    with pytest.raises(ValueError, match="two services are named 'Orders'"):
        make_endpoint(svc, Service("Orders"))


@pytest.mark.parametrize("framework", ["fastapi", "starlette"])
async def test_mounted_under_a_prefix(make_endpoint: MakeEndpoint, proxy: FakeProxy, framework: str) -> None:
    charges = Service("Charges")

    @charges.handler()
    async def charge(ctx: Context, amount: int) -> int:
        return await ctx.run("double", lambda: amount * 2)

    endpoint = make_endpoint(charges)
    app: Starlette
    if framework == "fastapi":
        app = FastAPI()

        @app.get("/hello")
        async def hello() -> dict[str, str]:
            return {"hello": "world"}

        app.mount("/durable", endpoint.asgi())
    else:
        app = Starlette(routes=[Mount("/durable", app=endpoint.asgi())])

    response = await invoke(app, "Charges", "charge", input=21, prefix="/durable")
    assert output(response) == 42
    assert proxy.indices == [0]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app.test") as client:
        assert (await client.get("/durable/health")).json() == {"status": "ok"}
        assert (await client.get("/durable/discover")).status_code == 200
        if framework == "fastapi":
            assert (await client.get("/hello")).json() == {"hello": "world"}
