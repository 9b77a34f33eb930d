"""Appends: fencing, retries while the proxy is unavailable, protocol errors."""

from datetime import timedelta

import httpx
import msgspec
import pytest

from handler_sdk import Context, Service
from handler_sdk._callback import CallbackClient
from handler_sdk.errors import _AttemptFailed, _AttemptFenced
from handler_sdk.protocol import (
    INVOKE_CONTENT_TYPE,
    AppendAck,
    AppendRequest,
    AwaitRequest,
    AwaitResponse,
    Completed,
    Completion,
    Retry,
    await_request_decoder,
)

from .conftest import MakeEndpoint
from .fakes import CALLBACK_URL, FakeProxy, invoke


def two_steps(ran: list[str]) -> Service:
    service = Service("S")

    def step(name: str) -> str:
        ran.append(name)
        return name

    @service.handler()
    async def handler(ctx: Context) -> str:
        await ctx.run("first", step, "first")
        return await ctx.run("second", step, "second")

    return service


@pytest.mark.parametrize("status", [403, 404, 409])
async def test_fenced_append_stops_the_attempt(make_endpoint: MakeEndpoint, proxy: FakeProxy, status: int) -> None:
    ran: list[str] = []
    proxy.script = [status]
    response = await invoke(make_endpoint(two_steps(ran)).asgi(), "S", "handler")
    assert isinstance(response, Retry)
    assert response.failure.code == 409
    assert response.failure.message == f"the proxy refused the append (HTTP {status}): scripted answer {status}"
    assert ran == ["first"]
    assert len(proxy.received) == 1
    assert proxy.appends == []


async def test_fencing_cannot_be_swallowed(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    service = Service("S")
    ran: list[str] = []
    proxy.script = [409]

    @service.handler()
    async def handler(ctx: Context) -> str:
        try:
            await ctx.run("first", lambda: ran.append("first"))
        except Exception:
            ran.append("swallowed")
        return "done"

    response = await invoke(make_endpoint(service).asgi(), "S", "handler")
    assert isinstance(response, Retry)
    assert response.failure.code == 409
    assert ran == ["first"]


async def test_unexpected_client_error_is_a_protocol_violation(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    ran: list[str] = []
    proxy.script = [422]
    response = await invoke(make_endpoint(two_steps(ran)).asgi(), "S", "handler")
    assert isinstance(response, Retry)
    assert response.failure.code == 571
    assert "unexpected HTTP 422" in response.failure.message
    assert ran == ["first"]


async def test_append_is_retried_while_the_proxy_is_unavailable(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    ran: list[str] = []
    proxy.script = [503, httpx.ConnectError("connection refused"), 500]
    response = await invoke(make_endpoint(two_steps(ran)).asgi(), "S", "handler")
    assert isinstance(response, Completed)
    assert ran == ["first", "second"]
    assert [a.index for a in proxy.received] == [0, 0, 0, 0, 1]
    assert proxy.indices == [0, 1]


async def test_append_gives_up_after_the_deadline(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    ran: list[str] = []
    proxy.script = [503] * 1000
    endpoint = make_endpoint(two_steps(ran), append_deadline=timedelta(milliseconds=120))
    response = await invoke(endpoint.asgi(), "S", "handler")
    assert isinstance(response, Retry)
    assert response.failure.code == 503
    assert response.failure.message.startswith("the append of journal index 0 was not acknowledged within 0.12s")
    assert "HTTP 503: scripted answer 503" in response.failure.message
    assert ran == ["first"]
    assert proxy.appends == []


def request(index: int = 0) -> AppendRequest:
    return AppendRequest(attempt=1, token="t", index=index, entry=msgspec.Raw(b"{}"))


@pytest.mark.parametrize(
    ("response", "match"),
    [
        (httpx.Response(200, content=b"nonsense"), "malformed AppendAck"),
        (httpx.Response(200, json={"index": 7}), "acknowledged index 7 for an append of index 0"),
        (
            httpx.Response(200, json={"index": 0, "completion": {"index": 3}}),
            "completed index 3 in the ack of an append of index 0",
        ),
        (httpx.Response(301, text="moved"), "unexpected HTTP 301"),
    ],
)
async def test_bad_acks_are_protocol_violations(response: httpx.Response, match: str) -> None:
    client = CallbackClient(transport=httpx.MockTransport(lambda _: response))
    with pytest.raises(_AttemptFenced, match=match) as info:
        await client.append(CALLBACK_URL, request())
    assert info.value.code == 571
    await client.aclose()


async def test_bad_callback_url_is_a_protocol_violation() -> None:
    client = CallbackClient()
    with pytest.raises(_AttemptFenced, match="bad callback URL") as info:
        await client.append("ftp://proxy.test/cb", request())
    assert info.value.code == 571
    await client.aclose()


async def test_client_returns_the_ack_and_reuses_its_pool() -> None:
    client = CallbackClient(transport=httpx.MockTransport(lambda r: httpx.Response(200, json={"index": 3})))
    assert await client.append(CALLBACK_URL, request(3)) == AppendAck(index=3)
    pool = client._http()
    assert await client.append(CALLBACK_URL, request(3)) == AppendAck(index=3)
    assert client._http() is pool
    await client.aclose()


async def test_deadline_error_type() -> None:
    client = CallbackClient(
        transport=httpx.MockTransport(lambda r: httpx.Response(502)), deadline=timedelta(milliseconds=1)
    )
    with pytest.raises(_AttemptFailed, match="HTTP 502"):
        await client.append(CALLBACK_URL, request())
    await client.aclose()


def await_request() -> AwaitRequest:
    return AwaitRequest(attempt=1, token="t", indices=[2, 5], timeout_ms=100)


async def test_wait_decodes_the_answer_and_posts_to_the_given_url() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"completions": [{"index": 5, "result": [1]}], "cancelled": True})

    client = CallbackClient(transport=httpx.MockTransport(answer))
    response = await client.wait(f"{CALLBACK_URL}/await", await_request())
    assert response == AwaitResponse(completions=[Completion(index=5, result=msgspec.Raw(b"[1]"))], cancelled=True)
    assert str(seen[0].url) == f"{CALLBACK_URL}/await"
    assert seen[0].headers["content-type"] == INVOKE_CONTENT_TYPE
    assert await_request_decoder.decode(seen[0].content) == await_request()
    await client.aclose()


@pytest.mark.parametrize(
    "answer",
    [httpx.Response(500), httpx.Response(503), httpx.ConnectError("refused"), httpx.ReadTimeout("slow")],
)
async def test_wait_that_cannot_be_answered_returns_none(answer: httpx.Response | httpx.TransportError) -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        if isinstance(answer, httpx.TransportError):
            raise answer
        return answer

    client = CallbackClient(transport=httpx.MockTransport(handle))
    assert await client.wait(CALLBACK_URL, await_request()) is None
    await client.aclose()


@pytest.mark.parametrize(
    ("response", "code", "match"),
    [
        (httpx.Response(409, json={"code": "fenced", "message": "superseded"}), 409, "refused the wait.*superseded"),
        (httpx.Response(200, content=b"nonsense"), 571, "malformed AwaitResponse"),
        (httpx.Response(400, text="what"), 571, "unexpected HTTP 400 to a wait"),
    ],
)
async def test_bad_wait_answers_fence_the_attempt(response: httpx.Response, code: int, match: str) -> None:
    client = CallbackClient(transport=httpx.MockTransport(lambda _: response))
    with pytest.raises(_AttemptFenced, match=match) as info:
        await client.wait(CALLBACK_URL, await_request())
    assert info.value.code == code
    await client.aclose()
