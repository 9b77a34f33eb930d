"""The proxy's outbound client: the httpx-transport adapter maps answers and errors like the fast client."""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest

from handler_sdk.httpclient import ConnectError, HTTPError, ProtocolError, ReadError, Response, Timeout
from proxy.outbound import Outbound


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (httpx.ConnectError("[Errno 111] Connection refused"), ConnectError),
        (httpx.ConnectTimeout("connect timed out"), Timeout),
        (httpx.ReadTimeout("read timed out"), Timeout),
        (httpx.WriteTimeout("write timed out"), Timeout),
        (httpx.PoolTimeout("no connection available"), Timeout),
        (httpx.RemoteProtocolError("peer closed connection without sending complete message body"), ReadError),
        (httpx.ReadError("[Errno 104] Connection reset by peer"), ReadError),
        (httpx.WriteError("[Errno 32] Broken pipe"), ReadError),
        (httpx.LocalProtocolError("illegal header"), ProtocolError),
        (httpx.UnsupportedProtocol("Request URL has an unsupported protocol 'ftp://'"), ProtocolError),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else value.__name__,
)
async def test_httpx_errors_map_to_httpclient_errors(error: httpx.HTTPError, expected: type[HTTPError]) -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        raise error

    outbound = Outbound(connect_timeout=1.0, transport=httpx.MockTransport(handle))
    try:
        with pytest.raises(expected) as raised:
            await outbound.request("POST", "http://handler.test/invoke", b"{}")
    finally:
        await outbound.aclose()
    assert type(raised.value) is expected
    assert str(raised.value) == str(error)
    assert raised.value.__cause__ is None and raised.value.__suppress_context__


async def test_an_error_without_a_message_is_named_by_its_type() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("")

    outbound = Outbound(connect_timeout=1.0, transport=httpx.MockTransport(handle))
    try:
        with pytest.raises(Timeout, match="^ReadTimeout$"):
            await outbound.request("GET", "http://handler.test/discover")
    finally:
        await outbound.aclose()


async def test_an_answer_maps_status_headers_and_body() -> None:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            201, headers=[("X-Thing", "Value"), ("Content-Type", "application/json")], content=b'{"ok":true}'
        )

    outbound = Outbound(connect_timeout=1.0, transport=httpx.MockTransport(handle))
    try:
        response = await outbound.request(
            "POST", "http://handler.test/invoke/S/h?x=1", b'{"in":1}', {"X-Request-Id": "r1"}
        )
    finally:
        await outbound.aclose()
    assert response == Response(
        201,
        "Created",
        {"x-thing": "Value", "content-type": "application/json", "content-length": "11"},
        b'{"ok":true}',
    )
    [request] = seen
    assert (request.method, str(request.url), request.content) == (
        "POST",
        "http://handler.test/invoke/S/h?x=1",
        b'{"in":1}',
    )
    assert request.headers["x-request-id"] == "r1"


async def test_without_a_transport_it_uses_the_keep_alive_client() -> None:
    connections = 0
    finished = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                body = await reader.readexactly(length)
                writer.write(b"HTTP/1.1 200 OK\r\nX-Echo: yes\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client closed the connection
        finally:
            writer.close()
            finished.set()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    outbound = Outbound(connect_timeout=1.0)
    try:
        first = await outbound.request("POST", f"http://127.0.0.1:{port}/invoke", b"one", {"x-a": "1"})
        second = await outbound.request("POST", f"http://127.0.0.1:{port}/invoke", b"two")
    finally:
        await outbound.aclose()
        server.close()
        await server.wait_closed()
    await asyncio.wait_for(finished.wait(), 2.0)  # aclose() closed the pooled connection
    assert (first.status, first.headers["x-echo"], first.body, second.body) == (200, "yes", b"one", b"two")
    assert connections == 1


async def test_without_a_transport_a_closed_port_is_a_connect_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    outbound = Outbound(connect_timeout=1.0)
    try:
        with pytest.raises(ConnectError, match=f"127.0.0.1:{port}"):
            await outbound.request("POST", f"http://127.0.0.1:{port}/invoke", b"{}")
    finally:
        await outbound.aclose()
