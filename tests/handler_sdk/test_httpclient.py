"""The keep-alive HTTP/1.1 client of the two hot paths, against real sockets on loopback.

Most tests run a tiny ``asyncio.start_server`` whose script sends exact bytes,
so the framing is under the test's control, and count the connections it
accepted. One test talks to a real uvicorn server; a few feed the parser byte
by byte through a fake transport, where only that makes the case deterministic.
A selection of the socket tests runs again on uvloop, which the proxy uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import pytest
import uvicorn
import uvloop
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response as StarletteResponse, StreamingResponse
from starlette.routing import Route

from handler_sdk import httpclient
from handler_sdk.httpclient import (
    ConnectError,
    HTTPClient,
    HTTPError,
    ProtocolError,
    ReadError,
    Response,
    Timeout,
    URLError,
    _Connection,
    _Origin,
)

#: A client that waits forever for an answer it misparsed fails the test instead of hanging the run.
pytestmark = pytest.mark.timeout(10)

#: How long a test waits for something that must happen (generous: it is only reached on failure).
DEADLINE = 2.0


async def eventually(predicate: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    """Poll ``predicate`` until it holds; fail the test if it does not within ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(0.002)


# -- a scripted loopback server


@dataclass
class Received:
    """One request as the server read it off the wire."""

    head: bytes
    body: bytes

    @property
    def lines(self) -> list[str]:
        return self.head.decode("latin-1").removesuffix("\r\n\r\n").split("\r\n")

    @property
    def request_line(self) -> str:
        return self.lines[0]

    @property
    def headers(self) -> list[tuple[str, str]]:
        pairs = []
        for line in self.lines[1:]:
            name, _, value = line.partition(":")
            pairs.append((name.lower(), value.strip()))
        return pairs

    def header(self, name: str) -> str | None:
        values = [value for key, value in self.headers if key == name]
        assert len(values) <= 1, f"{name} sent {len(values)} times"
        return values[0] if values else None


@dataclass
class Peer:
    """The server's end of one accepted connection."""

    index: int
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    requests: list[Received] = field(default_factory=list)
    #: Set once the server read EOF (or a reset): the client closed or aborted the connection.
    eof: asyncio.Event = field(default_factory=asyncio.Event)
    #: The server closed the connection itself.
    closed: bool = False
    #: Bytes that arrived after the script stopped reading requests.
    unexpected: bytearray = field(default_factory=bytearray)

    async def read_request(self) -> Received | None:
        """The next request, or ``None`` when the client closed the connection."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
            request = Received(head, b"")
            length = request.header("content-length")
            body = await self.reader.readexactly(int(length)) if length is not None else b""
        except (asyncio.IncompleteReadError, ConnectionError):
            self.eof.set()
            return None
        request.body = body
        self.requests.append(request)
        return request

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()
        self.closed = True

    async def read_until_eof(self) -> None:
        while True:
            try:
                data = await self.reader.read(65536)
            except ConnectionError:
                data = b""
            if not data:
                self.eof.set()
                return
            self.unexpected += data


Script = Callable[[Peer], Awaitable[None]]


class RawServer:
    """Runs ``script`` on every accepted connection; once it returns, reads until the client closes."""

    def __init__(self, script: Script) -> None:
        self._script = script
        self.peers: list[Peer] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._errors: list[BaseException] = []

    @property
    def accepted(self) -> int:
        return len(self.peers)

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def where(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.append(task)
        peer = Peer(len(self.peers), reader, writer)
        self.peers.append(peer)
        try:
            await self._script(peer)
            if not peer.closed:
                await peer.read_until_eof()
        except ConnectionError:
            peer.eof.set()
        except asyncio.CancelledError:
            pass  # stopped by __aexit__: end normally, or asyncio's stream callback logs the cancellation as an error
        except Exception as exc:  # a broken script must fail the test, not vanish in a task
            self._errors.append(exc)
        finally:
            writer.close()

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, limit=1 << 22)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()
        if exc_type is None and self._errors:
            raise self._errors[0]


@contextlib.asynccontextmanager
async def http_client(**options: Any) -> AsyncIterator[HTTPClient]:
    client = HTTPClient(connect_timeout=DEADLINE, **options)
    try:
        yield client
    finally:
        await client.aclose()


def answer(body: bytes = b"", *headers: str, status: str = "200 OK", version: str = "HTTP/1.1") -> bytes:
    """A complete answer with a content-length."""
    head = f"{version} {status}\r\ncontent-length: {len(body)}\r\n" + "".join(f"{h}\r\n" for h in headers)
    return head.encode("latin-1") + b"\r\n" + body


def echo(request: Received) -> bytes:
    return answer(request.body, f"x-request-line: {request.request_line}")


def serve_each(make: Callable[[Received], bytes]) -> Script:
    """Answer every request on the connection with ``make(request)``."""

    async def script(peer: Peer) -> None:
        while (request := await peer.read_request()) is not None:
            await peer.send(make(request))

    return script


def serve_once(data: bytes) -> Script:
    """Read one request, send ``data``, then keep the connection open until the client closes it."""

    async def script(peer: Peer) -> None:
        assert await peer.read_request() is not None
        await peer.send(data)

    return script


def per_connection(*scripts: Script) -> Script:
    """The n-th accepted connection runs the n-th script (the last one for all further connections)."""

    async def script(peer: Peer) -> None:
        await scripts[min(peer.index, len(scripts) - 1)](peer)

    return script


async def answer_then_drop(peer: Peer) -> None:
    """Answer the first request; close the connection on the second without a byte of answer."""
    assert await peer.read_request() is not None
    await peer.send(answer(b"first"))
    assert await peer.read_request() is not None
    await peer.close()


async def drop_without_answer(peer: Peer) -> None:
    assert await peer.read_request() is not None
    await peer.close()


async def never_answer(peer: Peer) -> None:
    assert await peer.read_request() is not None  # then the server reads on until the client hangs up


# -- bodies


async def test_content_length_body() -> None:
    data = (
        b"HTTP/1.1 404 Not Found Here\r\nContent-Length: 9\r\nX-Mixed-Case: Some Value\r\n"
        b"x-repeated: one\r\nx-repeated: two\r\nx-empty:\r\n\r\nnot found"
    )
    async with RawServer(serve_once(data)) as server, http_client() as client:
        response = await client.get(server.url())
    assert response == Response(
        404,
        "Not Found Here",
        {"content-length": "9", "x-mixed-case": "Some Value", "x-repeated": "two", "x-empty": ""},
        b"not found",
    )
    assert response.text == "not found"


async def test_status_line_without_reason_and_empty_body() -> None:
    async with RawServer(serve_once(b"HTTP/1.1 201\r\ncontent-length: 0\r\n\r\n")) as server, http_client() as client:
        response = await client.post(server.url(), b"x")
    assert (response.status, response.reason, response.body) == (201, "", b"")


async def test_text_replaces_invalid_utf8() -> None:
    async with RawServer(serve_once(answer(b"caf\xc3\xa9 \xff"))) as server, http_client() as client:
        response = await client.get(server.url())
    assert response.text == "café \ufffd"


async def test_chunked_body_with_extensions_and_trailers_then_reuse() -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nx-before: 1\r\n\r\n"
        b"5\r\nhello\r\n"
        b"1;name=value\r\n \r\n"
        b"A;a=1;b\r\n0123456789\r\n"
        b"1a\r\nabcdefghijklmnopqrstuvwxyz\r\n"
        b"0;last=yes\r\nx-trailer: t\r\nx-other-trailer: u\r\n\r\n"
    )
    answers = iter([chunked, answer(b"second")])
    async with RawServer(serve_each(lambda _: next(answers))) as server, http_client() as client:
        first = await client.get(server.url())
        second = await client.get(server.url())
        assert server.accepted == 1  # the trailers were consumed exactly: the connection stayed usable
    assert first.status == 200
    assert first.body == b"hello 0123456789abcdefghijklmnopqrstuvwxyz"
    assert first.headers["x-before"] == "1"
    assert second.body == b"second"


async def test_chunked_body_without_trailers_sent_in_pieces() -> None:
    async def script(peer: Peer) -> None:
        assert await peer.read_request() is not None
        for piece in [
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n",
            b"\r\n3\r",
            b"\nabc",
            b"\r\n0\r\n",
            b"\r\n",
        ]:
            await peer.send(piece)

    async with RawServer(script) as server, http_client() as client:
        response = await client.get(server.url())
    assert response.body == b"abc"


async def test_body_until_close() -> None:
    async def script(peer: Peer) -> None:
        assert await peer.read_request() is not None
        await peer.send(b"HTTP/1.1 200 OK\r\nx-a: 1\r\n\r\npart one, ")
        await peer.send(b"part two")
        await peer.close()

    async with RawServer(per_connection(script, serve_each(echo))) as server, http_client() as client:
        first = await client.get(server.url())
        second = await client.post(server.url(), b"again")
        assert server.accepted == 2
    assert (first.status, first.headers, first.body) == (200, {"x-a": "1"}, b"part one, part two")
    assert second.body == b"again"


async def test_empty_body_until_close() -> None:
    async def script(peer: Peer) -> None:
        assert await peer.read_request() is not None
        await peer.send(b"HTTP/1.0 200 OK\r\n\r\n")
        await peer.close()

    async with RawServer(script) as server, http_client() as client:
        response = await client.get(server.url())
    assert (response.status, response.body) == (200, b"")


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\ncontent-length: 5\r\n\r\n",
        b"HTTP/1.1 304 Not Modified\r\ncontent-length: 12\r\n\r\n",
        b"HTTP/1.1 304 Not Modified\r\ntransfer-encoding: chunked\r\n\r\n",
    ],
)
async def test_no_body_statuses(head: bytes) -> None:
    """The answer ends with its head (not at close): the next request reuses the connection."""
    answers = iter([head, answer(b"next")])
    async with RawServer(serve_each(lambda _: next(answers))) as server, http_client() as client:
        first = await client.get(server.url())
        second = await client.get(server.url())
        assert server.accepted == 1
    assert first.body == b""
    assert first.status in (204, 304)
    assert second.body == b"next"


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\nx-a: 1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nx-a: 1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nx-a: 1\r\n\r\n",
    ],
    ids=["content-length", "chunked", "no-length"],
)
async def test_head_request_has_no_body(head: bytes) -> None:
    answers = iter([head, answer(b"next")])
    async with RawServer(serve_each(lambda _: next(answers))) as server, http_client() as client:
        first = await client.request("HEAD", server.url("/h"))
        second = await client.get(server.url())
        assert server.accepted == 1
        sent = server.peers[0].requests[0]
    assert sent.request_line == "HEAD /h HTTP/1.1"
    assert sent.header("content-length") is None
    assert (first.status, first.headers["x-a"], first.body) == (200, "1", b"")
    assert second.body == b"next"


async def test_informational_answers_are_skipped() -> None:
    async def script(peer: Peer) -> None:
        assert await peer.read_request() is not None
        await peer.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        await peer.send(b"HTTP/1.1 103 Early Hints\r\nlink: </style.css>\r\n\r\nHTTP/1.1 200 OK\r\n")
        await peer.send(b"content-length: 4\r\n\r\nreal")

    async with RawServer(script) as server, http_client() as client:
        response = await client.post(server.url(), b"body")
    assert (response.status, response.reason, response.headers, response.body) == (
        200,
        "OK",
        {"content-length": "4"},
        b"real",
    )


# -- keep-alive


async def test_sequential_requests_reuse_one_connection() -> None:
    async with RawServer(serve_each(echo)) as server, http_client() as client:
        bodies = [(await client.post(server.url(f"/{i}"), f"body {i}".encode())).body for i in range(5)]
        assert server.accepted == 1
        assert [r.request_line for r in server.peers[0].requests] == [f"POST /{i} HTTP/1.1" for i in range(5)]
    assert bodies == [f"body {i}".encode() for i in range(5)]


@pytest.mark.parametrize(
    "answer_head",
    [
        answer(b"bye", "connection: close"),
        answer(b"bye", "Connection: Close"),
        answer(b"bye", status="200 OK", version="HTTP/1.0"),
        answer(b"bye", "connection: keep-alive", version="HTTP/1.0"),
        answer(b"bye", "connection: keep-alive, close"),
    ],
    ids=["close", "Close", "http-1.0", "http-1.0-keep-alive", "token-list"],
)
async def test_answer_that_ends_the_connection_is_not_reused(answer_head: bytes) -> None:
    """The server keeps its end open: the client must close it, and open a new one for the next request."""
    first_connection = serve_each(lambda _: answer_head)
    async with RawServer(per_connection(first_connection, serve_each(echo))) as server, http_client() as client:
        first = await client.get(server.url())
        second = await client.post(server.url(), b"second")
        assert second.body == b"second"  # not b"bye": it went to a new connection
        assert server.accepted == 2
        assert len(server.peers[0].requests) == 1
        await eventually(server.peers[0].eof.is_set, "the client to close the first connection")
    assert first.body == b"bye"


async def test_bytes_after_the_answer_make_the_connection_unusable() -> None:
    """Two answers to one request: the first is returned, the connection is not reused."""
    doubled = answer(b"one") + answer(b"two")
    async with RawServer(per_connection(serve_once(doubled), serve_each(echo))) as server, http_client() as client:
        first = await client.get(server.url())
        second = await client.post(server.url(), b"fresh")
        assert server.accepted == 2
    assert first.body == b"one"
    assert second.body == b"fresh"


async def test_unsolicited_bytes_on_an_idle_connection_close_it() -> None:
    async def script(peer: Peer) -> None:
        assert await peer.read_request() is not None
        await peer.send(answer(b"one"))
        await peer.send(b"HTTP/1.1 200 OK\r\n")  # nobody asked

    async with RawServer(per_connection(script, serve_each(echo))) as server, http_client() as client:
        first = await client.get(server.url())
        await eventually(server.peers[0].eof.is_set, "the client to close the connection with stray bytes")
        second = await client.post(server.url(), b"fresh")
        assert server.accepted == 2
    assert first.body == b"one"
    assert second.body == b"fresh"


async def test_most_recently_returned_connection_is_reused_first() -> None:
    release = asyncio.Event()

    async def script(peer: Peer) -> None:
        while (request := await peer.read_request()) is not None:
            if request.body == b"hold":
                await release.wait()
            await peer.send(answer(str(peer.index).encode()))

    async with RawServer(script) as server, http_client() as client:
        assert (await client.get(server.url())).body == b"0"
        held = asyncio.create_task(client.post(server.url(), b"hold"))  # takes connection 0
        await eventually(lambda: len(server.peers[0].requests) == 2, "the held request to arrive")
        assert (await client.post(server.url(), b"quick")).body == b"1"  # a new connection, returned first
        release.set()
        assert (await held).body == b"0"  # connection 0 returned last: the most recent
        assert (await client.get(server.url())).body == b"0"
        assert (await client.get(server.url())).body == b"0"
        assert server.accepted == 2


# -- connections the server closed


async def test_idle_connection_closed_by_server_then_new_connection() -> None:
    async def close_after_one(peer: Peer) -> None:
        assert await peer.read_request() is not None
        await peer.send(answer(b"first"))
        await peer.close()

    async with RawServer(per_connection(close_after_one, serve_each(echo))) as server, http_client() as client:
        assert (await client.get(server.url())).body == b"first"
        await eventually(lambda: server.peers[0].closed, "the server to close the idle connection")
        second = await client.post(server.url(), b"second")
        assert server.accepted == 2
        assert [r.body for r in server.peers[1].requests] == [b"second"]
    assert second.body == b"second"


async def test_request_resent_once_when_reused_connection_closes_without_answer() -> None:
    async with RawServer(per_connection(answer_then_drop, serve_each(echo))) as server, http_client() as client:
        assert (await client.get(server.url())).body == b"first"
        second = await client.post(server.url("/again"), b"second", [("x-id", "2")])
        assert server.accepted == 2
        dropped, resent = server.peers[0].requests[1], server.peers[1].requests[0]
    assert second.body == b"second"
    assert resent.head == dropped.head  # the very same request, on a new connection
    assert resent.body == dropped.body == b"second"
    assert len(server.peers[1].requests) == 1


class HandClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


async def test_request_not_resent_when_the_connection_is_lost_after_the_resend_window() -> None:
    """Lost long after it was sent, the request may have been worked on: an error, not a second delivery."""
    clock = HandClock()
    working = asyncio.Event()
    release = asyncio.Event()

    async def answer_then_hold_then_drop(peer: Peer) -> None:
        assert await peer.read_request() is not None
        await peer.send(answer(b"first"))
        assert await peer.read_request() is not None
        working.set()
        await release.wait()
        await peer.close()

    async with (
        RawServer(per_connection(answer_then_hold_then_drop, serve_each(echo))) as server,
        http_client(clock=clock) as client,
    ):
        assert (await client.get(server.url())).body == b"first"
        second = asyncio.ensure_future(client.post(server.url(), b"second"))
        await eventually(working.is_set, "the server to be working on the second request")
        clock.now += httpclient._RESEND_WINDOW_S + 0.001  # "working on it" for longer than the window
        release.set()
        with pytest.raises(ReadError, match=server.where):
            await second
        assert server.accepted == 1, "not sent again"


async def test_request_not_resent_twice() -> None:
    async with (
        RawServer(per_connection(answer_then_drop, drop_without_answer, serve_each(echo))) as server,
        http_client() as client,
    ):
        await client.get(server.url())
        with pytest.raises(ReadError, match=server.where):
            await client.post(server.url(), b"second")
        assert server.accepted == 2


async def test_fresh_connection_closed_without_answer_is_not_resent() -> None:
    async with RawServer(per_connection(drop_without_answer, serve_each(echo))) as server, http_client() as client:
        with pytest.raises(ReadError, match=f"connection to {server.where} was closed"):
            await client.post(server.url(), b"once")
        assert server.accepted == 1
        # the failed connection is gone, the client still works
        assert (await client.post(server.url(), b"then")).body == b"then"
        assert server.accepted == 2


@pytest.mark.parametrize(
    "partial",
    [
        b"HTTP/1.1 200 O",
        b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhel",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n",
    ],
    ids=["head", "content-length", "chunk", "last-chunk-missing"],
)
async def test_close_after_part_of_the_answer_raises_read_error(partial: bytes) -> None:
    """Part of the answer arrived: the server saw the request, so it is not sent again."""

    async def script(peer: Peer) -> None:
        assert await peer.read_request() is not None
        await peer.send(answer(b"first"))
        assert await peer.read_request() is not None
        await peer.send(partial)
        await peer.close()

    async with RawServer(per_connection(script, serve_each(echo))) as server, http_client() as client:
        assert (await client.get(server.url())).body == b"first"
        with pytest.raises(ReadError, match=server.where):
            await client.post(server.url(), b"second")
        assert server.accepted == 1


# -- idle timeout, timeout, cancellation


async def test_connection_idle_past_idle_timeout_is_not_reused() -> None:
    clock = HandClock()
    async with (
        RawServer(serve_each(echo)) as server,
        http_client(idle_timeout=4.0, clock=clock) as client,
    ):
        await client.post(server.url(), b"one")
        clock.now += 3.9
        assert (await client.post(server.url(), b"two")).body == b"two"
        assert server.accepted == 1, "idle for less than idle_timeout: reused"
        clock.now += 4.1
        third = await client.post(server.url(), b"three")
        assert server.accepted == 2, "idle for longer: a new connection"
        await eventually(server.peers[0].eof.is_set, "the client to close the stale connection")
    assert third.body == b"three"


async def test_timeout_when_the_server_never_answers() -> None:
    async with RawServer(per_connection(never_answer, serve_each(echo))) as server, http_client() as client:
        url = server.url("/slow")
        started = time.monotonic()
        with pytest.raises(Timeout) as raised:
            await client.post(url, b"x", timeout=0.2)
        elapsed = time.monotonic() - started
        assert 0.19 <= elapsed < 1.5
        assert str(raised.value) == f"POST {url} took longer than 0.2s"
        await eventually(server.peers[0].eof.is_set, "the client to abort the timed-out connection")
        assert (await client.post(url, b"after")).body == b"after"
        assert server.accepted == 2


async def test_timeout_on_a_reused_connection_discards_it() -> None:
    async def script(peer: Peer) -> None:
        assert await peer.read_request() is not None
        await peer.send(answer(b"first"))
        assert await peer.read_request() is not None  # and no answer

    async with RawServer(per_connection(script, serve_each(echo))) as server, http_client() as client:
        await client.get(server.url())
        with pytest.raises(Timeout):
            await client.get(server.url(), timeout=0.1)
        await eventually(server.peers[0].eof.is_set, "the client to abort the timed-out connection")
        assert (await client.post(server.url(), b"after")).body == b"after"
        assert server.accepted == 2


async def test_timeout_during_a_resend_closes_the_new_connection() -> None:
    async with (
        RawServer(per_connection(answer_then_drop, never_answer, serve_each(echo))) as server,
        http_client() as client,
    ):
        await client.get(server.url())
        with pytest.raises(Timeout):
            await client.post(server.url(), b"resent", timeout=0.1)
        assert server.accepted == 2 and server.peers[1].requests[0].body == b"resent"
        await eventually(server.peers[1].eof.is_set, "the client to abort the timed-out connection", timeout=0.2)


async def test_cancelled_request_aborts_its_connection() -> None:
    async with RawServer(per_connection(never_answer, serve_each(echo))) as server, http_client() as client:
        task = asyncio.create_task(client.post(server.url(), b"x"))
        await eventually(lambda: server.accepted == 1 and len(server.peers[0].requests) == 1, "the request")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await eventually(server.peers[0].eof.is_set, "the client to abort the cancelled connection")
        assert (await client.post(server.url(), b"after")).body == b"after"
        assert server.accepted == 2


# -- errors


async def test_connect_error_names_host_and_port() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with http_client() as client:
        with pytest.raises(ConnectError, match=f"could not connect to 127.0.0.1:{port}"):
            await client.get(f"http://127.0.0.1:{port}/")


@pytest.mark.parametrize(
    "url",
    ["ftp://x", "http://", "http://host:notaport/", "http://host:99999/", "/relative", "example.com/path", ""],
)
async def test_bad_urls(url: str) -> None:
    async with http_client() as client:
        with pytest.raises(URLError, match="invalid URL"):
            await client.post(url, b"x")


def bad_chunk(size_line: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + size_line + b"\r\nok\r\n0\r\n\r\n"


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"HTTP/2 200 OK\r\ncontent-length: 0\r\n\r\n", id="version-2"),
        pytest.param(b"SSH-2.0-OpenSSH_9.6\r\n\r\n", id="not-http"),
        pytest.param(b"HTTP/1.1 2000 OK\r\ncontent-length: 0\r\n\r\n", id="four-digit-status"),
        pytest.param(b"HTTP/1.1 2x0 OK\r\ncontent-length: 0\r\n\r\n", id="status-not-digits"),
        pytest.param(b"HTTP/1.1\r\ncontent-length: 0\r\n\r\n", id="no-status"),
        pytest.param(b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", id="header-without-colon"),
        pytest.param(b"HTTP/1.1 200 OK\r\nx-a : 1\r\n\r\n", id="space-before-colon"),
        pytest.param(b"HTTP/1.1 200 OK\r\n: 1\r\n\r\n", id="empty-header-name"),
        pytest.param(b"HTTP/1.1 200 OK\r\nx-a: 1\r\n folded\r\n\r\n", id="obs-fold"),
        pytest.param(b"HTTP/1.1 200 OK\r\ncontent-length: abc\r\n\r\n", id="content-length-letters"),
        pytest.param(b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n", id="content-length-negative"),
        pytest.param(b"HTTP/1.1 200 OK\r\ncontent-length: +2\r\n\r\nok", id="content-length-plus"),
        pytest.param(b"HTTP/1.1 200 OK\r\ncontent-length: 2, 2\r\n\r\nok", id="content-length-list"),
        pytest.param(b"HTTP/1.1 200 OK\r\ncontent-length: 1e3\r\n\r\n", id="content-length-float"),
        pytest.param(b"HTTP/1.1 200 OK\r\ncontent-length: \xd9\xa3\r\n\r\n", id="content-length-non-ascii"),
        pytest.param(bad_chunk(b"zz"), id="chunk-size-not-hex"),
        pytest.param(bad_chunk(b""), id="chunk-size-empty"),
        pytest.param(bad_chunk(b"-2"), id="chunk-size-negative"),
        pytest.param(bad_chunk(b";ext"), id="chunk-size-only-extension"),
        pytest.param(bad_chunk(b"0x2"), id="chunk-size-0x-prefix"),
        pytest.param(bad_chunk(b"+2"), id="chunk-size-plus"),
        pytest.param(bad_chunk(b"0_2"), id="chunk-size-underscore"),
        pytest.param(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nokXY0\r\n\r\n",
            id="chunk-data-without-crlf",
        ),
        pytest.param(b"HTTP/1.1 200 OK\r\nx-big: " + b"a" * (70 * 1024), id="head-over-64KiB-unfinished"),
    ],
)
async def test_protocol_errors(data: bytes) -> None:
    """An invalid answer raises ProtocolError; the connection is aborted and never reused."""
    async with RawServer(per_connection(serve_once(data), serve_each(echo))) as server, http_client() as client:
        with pytest.raises(ProtocolError, match=server.where):
            await client.get(server.url())
        await eventually(server.peers[0].eof.is_set, "the client to abort the connection")
        assert (await client.post(server.url(), b"next")).body == b"next"
        assert server.accepted == 2


# -- what goes on the wire


async def test_request_framing() -> None:
    async with RawServer(serve_each(echo)) as server, http_client() as client:
        response = await client.post(
            server.url("/path?q=1#fragment"),
            b'{"a": 1}',
            [("x-one", "1"), ("Content-Type", "application/json"), ("x-spaces", "a b  c")],
        )
        sent = server.peers[0].requests[0]
    assert response.headers["x-request-line"] == "POST /path?q=1 HTTP/1.1"
    assert sent.request_line == "POST /path?q=1 HTTP/1.1"
    assert sorted(sent.headers) == sorted(
        [
            ("host", server.where),
            ("content-length", "8"),
            ("x-one", "1"),
            ("content-type", "application/json"),
            ("x-spaces", "a b  c"),
        ]
    )
    assert sent.lines[1] == f"host: {server.where}"  # host comes first
    assert sent.body == b'{"a": 1}'


async def test_get_without_path_sends_no_content_length_and_no_body() -> None:
    async with RawServer(serve_each(echo)) as server, http_client() as client:
        await client.get(f"http://127.0.0.1:{server.port}", [("accept", "*/*")])
        await client.post(server.url("/empty"), b"")
        await client.request("PUT", server.url("/put"))
        get, post, put = server.peers[0].requests
    assert get.request_line == "GET / HTTP/1.1"
    assert get.header("content-length") is None
    assert get.header("accept") == "*/*"
    assert get.body == b""
    assert (post.request_line, post.header("content-length")) == ("POST /empty HTTP/1.1", "0")
    assert (put.request_line, put.header("content-length")) == ("PUT /put HTTP/1.1", "0")
    assert server.peers[0].unexpected == b""


async def test_userinfo_is_not_sent_in_the_host_header() -> None:
    async with RawServer(serve_each(echo)) as server, http_client() as client:
        await client.get(f"http://user:secret@127.0.0.1:{server.port}/")
        sent = server.peers[0].requests[0]
    assert sent.header("host") == server.where
    assert b"secret" not in sent.head


@pytest.mark.parametrize(
    "header",
    [
        ("x-a", "1\r\nx-injected: 1"),
        ("x-a", "1\nx-injected: 1"),
        ("x-a", "1\rx-injected: 1"),
        ("x-a\r\nx-injected", "1"),
        ("x-a: 1\r\nx-injected", "1"),
        ("x-a:b", "1"),
    ],
)
async def test_header_with_line_break_raises_before_anything_is_sent(header: tuple[str, str]) -> None:
    async with RawServer(serve_each(echo)) as server, http_client() as client:
        with pytest.raises(ValueError, match="line break or colon"):
            await client.post(server.url(), b"x", [header])
        assert server.accepted == 0
        await client.get(server.url())
        with pytest.raises(ValueError):
            await client.post(server.url(), b"x", [("x-ok", "1"), header])
        assert (await client.post(server.url(), b"after")).body == b"after"  # the pooled connection is intact
        assert server.accepted == 1
        assert [r.request_line for r in server.peers[0].requests] == ["GET / HTTP/1.1", "POST / HTTP/1.1"]
        assert all(b"injected" not in r.head for r in server.peers[0].requests)


# -- concurrency and the pool


async def test_concurrent_requests_each_get_their_answer() -> None:
    async def script(peer: Peer) -> None:
        while (request := await peer.read_request()) is not None:
            # answer out of order across connections: the later requests first
            number = int(request.body.split(b"-")[1])
            for _ in range(20 - number):
                await asyncio.sleep(0)
            await peer.send(answer(request.body.upper(), f"x-path: {request.request_line.split()[1]}"))

    async with RawServer(script) as server, http_client() as client:

        async def one(i: int) -> Response:
            return await client.post(server.url(f"/{i}"), f"request-{i}".encode())

        responses = await asyncio.gather(*(one(i) for i in range(20)))
        assert server.accepted == 20  # nothing was pooled while all 20 were in flight
        assert [(r.body, r.headers["x-path"]) for r in responses] == [
            (f"REQUEST-{i}".encode(), f"/{i}") for i in range(20)
        ]

        again = await asyncio.gather(*(one(i) for i in range(20)))
        assert server.accepted == 20  # all 20 connections were pooled and reused
        assert [r.body for r in again] == [f"REQUEST-{i}".encode() for i in range(20)]
        assert sum(len(peer.requests) for peer in server.peers) == 40

        more = await asyncio.gather(*(one(i) for i in range(21)))
        assert server.accepted == 21  # no more than those 20 were pooled
        assert [r.body for r in more] == [f"REQUEST-{i}".encode() for i in range(21)]


async def test_max_idle_caps_the_pool() -> None:
    async with RawServer(serve_each(echo)) as server, http_client(max_idle=5) as client:
        urls = [server.url(f"/{i}") for i in range(20)]
        await asyncio.gather(*(client.post(url, b"x") for url in urls))
        assert server.accepted == 20
        await eventually(lambda: sum(p.eof.is_set() for p in server.peers) == 15, "15 surplus connections closed")
        await asyncio.gather(*(client.post(url, b"y") for url in urls))
        assert server.accepted == 20 + 15  # 5 pooled ones reused, 15 new


async def test_pools_are_per_origin() -> None:
    async with (
        RawServer(serve_each(lambda r: answer(b"a"))) as a,
        RawServer(serve_each(lambda r: answer(b"b"))) as b,
        http_client() as client,
    ):
        bodies = [(await client.get(server.url())).body for server in (a, b, a, b)]
        assert (a.accepted, b.accepted) == (1, 1)
        # "localhost" is another origin than "127.0.0.1", even on the same port
        localhost = await client.get(f"http://localhost:{a.port}/")
        assert (localhost.body, a.accepted) == (b"a", 2)
    assert bodies == [b"a", b"b", b"a", b"b"]


# -- large bodies


async def test_large_bodies_round_trip() -> None:
    rng = random.Random(7)
    request_body = rng.randbytes(1 << 20)
    response_body = rng.randbytes(2 << 20)

    def chunked(body: bytes) -> bytes:
        pieces = [b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"]
        for start in range(0, len(body), 100_000):
            piece = body[start : start + 100_000]
            pieces.append(b"%x\r\n%s\r\n" % (len(piece), piece))
        return b"".join(pieces) + b"0\r\n\r\n"

    def make(request: Received) -> bytes:
        if request.request_line.startswith("POST"):
            return answer(request.body)
        return chunked(response_body) if "chunked" in request.request_line else answer(response_body)

    async with RawServer(serve_each(make)) as server, http_client() as client:
        echoed = await client.post(server.url(), request_body)
        plain = await client.get(server.url("/plain"))
        chunked_answer = await client.get(server.url("/chunked"))
        assert server.accepted == 1
        assert server.peers[0].requests[0].body == request_body
    assert echoed.body == request_body
    assert plain.body == response_body
    assert chunked_answer.body == response_body


# -- closing the client


async def test_aclose_closes_pooled_connections_and_refuses_requests() -> None:
    async with RawServer(serve_each(echo)) as server:
        client = HTTPClient()
        await asyncio.gather(client.get(server.url()), client.get(server.url()))
        assert server.accepted == 2
        await client.aclose()
        await eventually(lambda: all(p.eof.is_set() for p in server.peers), "EOF on both pooled connections")
        with pytest.raises(HTTPError, match="closed") as raised:
            await client.post(server.url(), b"late")
        assert type(raised.value) is HTTPError
        assert server.accepted == 2


async def test_aclose_during_a_request_closes_its_connection_afterwards() -> None:
    release = asyncio.Event()

    async def script(peer: Peer) -> None:
        assert await peer.read_request() is not None
        await release.wait()
        await peer.send(answer(b"late"))

    async with RawServer(script) as server:
        client = HTTPClient()
        task = asyncio.create_task(client.get(server.url()))
        await eventually(lambda: server.accepted == 1 and len(server.peers[0].requests) == 1, "the request")
        await client.aclose()
        release.set()
        with contextlib.suppress(HTTPError):
            await task  # whether the answer is returned or not, the connection must not outlive the client
        await eventually(server.peers[0].eof.is_set, "the client to close its last connection", timeout=0.2)


# -- a real server


async def test_against_uvicorn_keep_alive() -> None:
    async def echo_endpoint(request: Request) -> StarletteResponse:
        assert request.client is not None
        body = await request.body()
        return StarletteResponse(
            body[::-1],
            media_type="application/octet-stream",
            headers={"x-client-port": str(request.client.port), "x-query": request.url.query},
        )

    async def hello(request: Request) -> PlainTextResponse:
        assert request.client is not None
        return PlainTextResponse("hello", headers={"x-client-port": str(request.client.port)})

    async def stream(request: Request) -> StreamingResponse:
        async def parts() -> AsyncIterator[bytes]:
            for i in range(5):
                yield f"part {i};".encode()

        return StreamingResponse(parts(), media_type="text/plain")

    app = Starlette(
        routes=[
            Route("/echo", echo_endpoint, methods=["POST"]),
            Route("/hello", hello, methods=["GET"]),
            Route("/stream", stream, methods=["GET"]),
        ]
    )
    # IPPROTO_TCP, not the default 0: asyncio sets TCP_NODELAY on accepted connections only when the listening
    # socket says it is TCP, and uvicorn's answers (head and body written apart) would wait 40 ms on delayed ACKs.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await eventually(lambda: server.started or serving.done(), "uvicorn to start")
        assert server.started
        async with http_client() as client:
            client_ports = set()
            for i in range(50):
                if i % 2:
                    response = await client.get(f"http://127.0.0.1:{port}/hello")
                    assert (response.status, response.body) == (200, b"hello")
                    assert response.headers["content-type"].startswith("text/plain")
                else:
                    body = f"request {i}".encode() * 10
                    response = await client.post(f"http://127.0.0.1:{port}/echo?i={i}", body, [("x-n", str(i))])
                    assert (response.status, response.body) == (200, body[::-1])
                    assert response.headers["x-query"] == f"i={i}"
                client_ports.add(response.headers["x-client-port"])
            assert len(client_ports) == 1  # one connection for all 50 requests
            streamed = await client.get(f"http://127.0.0.1:{port}/stream")
            assert streamed.headers["transfer-encoding"] == "chunked"
            assert streamed.body == b"part 0;part 1;part 2;part 3;part 4;"
            missing = await client.get(f"http://127.0.0.1:{port}/nowhere")
            assert (missing.status, missing.reason) == (404, "Not Found")
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, DEADLINE)
        sock.close()


# -- the parser, fed byte by byte through a fake transport


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview[Any]) -> None:
        self.written += data

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview[Any]]) -> None:
        for data in list_of_data:
            self.write(data)

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def fake_connection() -> tuple[_Connection, FakeTransport]:
    connection = _Connection(_Origin("http", "example.test", 80))
    transport = FakeTransport()
    connection.connection_made(transport)
    return connection, transport


def one_byte_at_a_time(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


@pytest.mark.parametrize(
    ("data", "body"),
    [
        (answer(b"hello world", "x-a: 1"), b"hello world"),
        (
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nx-a: 1\r\n\r\n"
            b"3;x=y\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nx-t: 1\r\n\r\n",
            b"abc0123456789abcdef",
        ),
    ],
    ids=["content-length", "continue-then-chunked"],
)
async def test_parser_byte_by_byte(data: bytes, body: bytes) -> None:
    connection, transport = fake_connection()
    waiter = connection.send(b"GET / HTTP/1.1\r\n\r\n", head_only=False)
    assert transport.written == b"GET / HTTP/1.1\r\n\r\n"
    for piece in one_byte_at_a_time(data):
        assert not waiter.done()
        connection.data_received(piece)
    assert waiter.done()
    response = waiter.result()
    assert (response.status, response.headers["x-a"], response.body) == (200, "1", body)
    assert not transport.closed and not connection.closed  # ready for the next exchange
    second = connection.send(b"GET / HTTP/1.1\r\n\r\n", head_only=False)
    connection.data_received(answer(b"again"))
    assert second.result().body == b"again"


async def test_parser_closes_on_bytes_nobody_asked_for() -> None:
    connection, transport = fake_connection()
    connection.data_received(b"HTTP/1.1 200 OK\r\n")
    assert connection.closed and transport.closed


async def test_parser_rejects_a_complete_head_over_64KiB() -> None:
    connection, transport = fake_connection()
    waiter = connection.send(b"GET / HTTP/1.1\r\n\r\n", head_only=False)
    connection.data_received(answer(b"ok", "x-big: " + "a" * (100 * 1024)))
    with pytest.raises(ProtocolError, match="over 65536 bytes"):
        waiter.result()
    assert transport.closed


async def test_parser_reset_during_a_body_until_close_is_a_read_error() -> None:
    connection, _ = fake_connection()
    waiter = connection.send(b"GET / HTTP/1.1\r\n\r\n", head_only=False)
    connection.data_received(b"HTTP/1.1 200 OK\r\n\r\npart of the bo")
    connection.connection_lost(ConnectionResetError(104, "Connection reset by peer"))
    with pytest.raises(ReadError):
        waiter.result()


async def test_parser_orderly_close_ends_a_body_until_close() -> None:
    connection, _ = fake_connection()
    waiter = connection.send(b"GET / HTTP/1.1\r\n\r\n", head_only=False)
    connection.data_received(b"HTTP/1.1 200 OK\r\n\r\nthe whole bo")
    connection.data_received(b"dy")
    assert not waiter.done()
    connection.eof_received()
    assert waiter.result().body == b"the whole body"
    assert connection.closed


# -- the same socket tests on uvloop

UVLOOP_SCENARIOS: list[Callable[[], Awaitable[None]]] = [
    test_content_length_body,
    test_chunked_body_with_extensions_and_trailers_then_reuse,
    test_body_until_close,
    test_informational_answers_are_skipped,
    test_sequential_requests_reuse_one_connection,
    test_unsolicited_bytes_on_an_idle_connection_close_it,
    test_idle_connection_closed_by_server_then_new_connection,
    test_request_resent_once_when_reused_connection_closes_without_answer,
    test_fresh_connection_closed_without_answer_is_not_resent,
    test_timeout_when_the_server_never_answers,
    test_cancelled_request_aborts_its_connection,
    test_connect_error_names_host_and_port,
    test_concurrent_requests_each_get_their_answer,
    test_large_bodies_round_trip,
    test_aclose_closes_pooled_connections_and_refuses_requests,
]


@pytest.mark.parametrize("scenario", UVLOOP_SCENARIOS, ids=lambda scenario: scenario.__name__.removeprefix("test_"))
def test_on_uvloop(scenario: Callable[[], Awaitable[None]]) -> None:
    async def run() -> None:
        await scenario()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(run())
