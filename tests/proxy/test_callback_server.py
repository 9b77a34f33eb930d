"""The proxy's callback listener (``proxy.callback_server``), against real sockets on loopback.

Most tests serve a ``FakeCallbacks``: the real ``Callbacks.route`` (it reads
nothing from the runtime) with a scripted ``respond`` that records its calls,
can be held on an event, and notices being cancelled. The tests talk to the
server with raw asyncio streams, so every byte on the wire is under their
control, and with the SDK's own ``HTTPClient``. Where only the server's side
can tell (how many writes an answer took, which bytes arrived in which
``data_received``), the ``wires`` fixture records it. The last test runs the
real runtime and a real handler endpoint whose steps come back over the socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import httpx
import pytest

from handler_sdk import Context, Endpoint, Service
from handler_sdk.httpclient import HTTPClient
from handler_sdk.protocol import INVOKE_CONTENT_TYPE, error_body_decoder, json_encoder
from proxy import callback_server
from proxy.app import Runtime
from proxy.callback_server import CallbackServer, _CallbackProtocol
from proxy.callbacks import Callbacks
from proxy.config import Settings

#: A server that never answers fails the test instead of hanging the run.
pytestmark = pytest.mark.timeout(10)

#: How long a test waits for something that must happen (generous: it is only reached on failure).
DEADLINE = 2.0
CT = INVOKE_CONTENT_TYPE
MAX_BODY = 1024
#: The server's limit on a request head (``proxy.callback_server._MAX_HEAD_BYTES``), restated.
MAX_HEAD = 16 * 1024


# -- the fake Callbacks


@dataclass(frozen=True)
class Call:
    invocation_id: str
    verb: str
    body: bytes


def answer_for(invocation_id: str, verb: str, body: bytes) -> bytes:
    """What ``FakeCallbacks.respond`` answers by default: everything it was given, echoed."""
    return json_encoder.encode({"id": invocation_id, "verb": verb, "body": body.decode("latin-1")})


class FakeCallbacks(Callbacks):
    """The real routing with a scripted ``respond``.

    ``gate(id)`` holds the answer to ``id`` until the returned event is set;
    ``entered[id]`` is set once it is held, ``cancelled[id]`` if the server
    cancelled it meanwhile. ``raises`` names the ids ``respond`` fails on.
    ``hold_until(n)`` holds every answer until ``n`` requests are being answered at once.
    """

    def __init__(self) -> None:
        super().__init__(cast(Runtime, None))  # route() uses no runtime; respond() is replaced
        self.calls: list[Call] = []
        self.gates: dict[str, asyncio.Event] = {}
        self.entered: dict[str, asyncio.Event] = {}
        self.cancelled: dict[str, asyncio.Event] = {}
        self.raises: set[str] = set()
        self._hold = 0
        self._arrived = 0
        self._all_in = asyncio.Event()

    def gate(self, invocation_id: str) -> asyncio.Event:
        self.entered[invocation_id] = asyncio.Event()
        self.cancelled[invocation_id] = asyncio.Event()
        self.gates[invocation_id] = gate = asyncio.Event()
        return gate

    def hold_until(self, n: int) -> None:
        self._hold, self._arrived, self._all_in = n, 0, asyncio.Event()

    @property
    def ids(self) -> list[str]:
        return [call.invocation_id for call in self.calls]

    async def respond(self, invocation_id: str, verb: str, body: bytes) -> tuple[int, bytes]:
        self.calls.append(Call(invocation_id, verb, body))
        if invocation_id in self.raises:
            raise RuntimeError(f"respond failed for {invocation_id}")
        if self._hold:
            self._arrived += 1
            if self._arrived >= self._hold:
                self._all_in.set()
            await self._all_in.wait()
        gate = self.gates.get(invocation_id)
        if gate is not None:
            self.entered[invocation_id].set()
            try:
                await gate.wait()
            except asyncio.CancelledError:
                self.cancelled[invocation_id].set()
                raise
        return 200, answer_for(invocation_id, verb, body)


# -- wire helpers


def request(
    invocation_id: str = "inv_1",
    body: bytes = b"{}",
    *,
    verb: str = "journal",
    method: str = "POST",
    path: str | None = None,
    version: str = "HTTP/1.1",
    content_type: str | None = CT,
    headers: Iterable[str] = (),
) -> bytes:
    """A request with a content-length, as the SDK's client would send it (plus ``headers``)."""
    target = path if path is not None else f"/_durable/v1/invocations/{invocation_id}/{verb}"
    lines = [f"{method} {target} {version}", "host: 127.0.0.1"]
    if content_type is not None:
        lines.append(f"content-type: {content_type}")
    lines.append(f"content-length: {len(body)}")
    lines.extend(headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def response(body: bytes, status: str = "200 OK", *, close: bool = False) -> bytes:
    """The exact bytes of the server's answer."""
    connection = "connection: close\r\n" if close else ""
    head = f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n{connection}\r\n"
    return head.encode("latin-1") + body


def ok(invocation_id: str = "inv_1", body: bytes = b"{}", *, verb: str = "journal", close: bool = False) -> bytes:
    return response(answer_for(invocation_id, verb, body), close=close)


@dataclass
class Answer:
    status: int
    reason: str
    headers: dict[str, str]
    body: bytes
    raw: bytes


async def read_answer(reader: asyncio.StreamReader) -> Answer:
    """One answer, framed by its content-length (which the server must always send)."""
    async with asyncio.timeout(DEADLINE):
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head[:-4].decode("latin-1").split("\r\n")
        version, status, reason = lines[0].split(" ", 2)
        assert version == "HTTP/1.1", lines[0]
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            assert sep, f"invalid header line {line!r}"
            assert name.lower() not in headers, f"{name} sent twice"
            headers[name.lower()] = value.strip()
        body = await reader.readexactly(int(headers["content-length"]))
    return Answer(int(status), reason, headers, body, head + body)


async def assert_closed(reader: asyncio.StreamReader) -> None:
    """The server closed the connection cleanly, sending nothing more."""
    async with asyncio.timeout(DEADLINE):
        rest = await reader.read()
    assert rest == b"", f"expected EOF, got {rest[:200]!r}"


def assert_error(answer: Answer, status: int, code: str) -> None:
    assert answer.status == status, answer.raw
    assert answer.headers["content-type"] == "application/json"
    error = error_body_decoder.decode(answer.body)
    assert error.code == code, answer.raw
    assert error.message


def listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.setblocking(False)
    return sock


async def eventually(predicate: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(0.002)


async def wait(event: asyncio.Event | Awaitable[Any], what: str) -> None:
    try:
        async with asyncio.timeout(DEADLINE):
            await (event.wait() if isinstance(event, asyncio.Event) else event)
    except TimeoutError:
        raise AssertionError(f"timed out after {DEADLINE:g}s waiting for {what}") from None


# -- fixtures


@pytest.fixture
async def loop_errors() -> AsyncIterator[list[dict[str, Any]]]:
    """What reached the event loop's exception handler (a protocol callback that raised, a lost task error)."""
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    try:
        yield errors
    finally:
        loop.set_exception_handler(previous)
    assert not errors, f"errors reached the event loop: {errors}"


@dataclass
class Served:
    fake: FakeCallbacks
    server: CallbackServer
    port: int
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writers.append(writer)
        return reader, writer

    async def exchange(self, data: bytes) -> tuple[Answer, asyncio.StreamReader, asyncio.StreamWriter]:
        """Send ``data`` on a new connection and read one answer."""
        reader, writer = await self.connect()
        writer.write(data)
        return await read_answer(reader), reader, writer


@pytest.fixture
async def served(loop_errors: list[dict[str, Any]]) -> AsyncIterator[Served]:
    fake = FakeCallbacks()
    server = CallbackServer(fake, max_body_bytes=MAX_BODY)
    sock = listening_socket()
    running = Served(fake, server, sock.getsockname()[1])
    await server.start(sock)
    try:
        yield running
    finally:
        await server.close()
        for writer in running.writers:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


@dataclass
class Wire:
    """One connection as the server saw it: the bytes of each ``data_received`` and of each write."""

    chunks: list[bytes] = field(default_factory=list)
    writes: list[bytes] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    #: Whether the server stopped reading from the connection, and how often it did.
    paused: bool = False
    pauses: int = 0

    @property
    def received(self) -> int:
        return sum(map(len, self.chunks))

    async def wait_received(self, n: int) -> None:
        async with asyncio.timeout(DEADLINE):
            while self.received < n:
                self.changed.clear()
                await self.changed.wait()


class _RecordingTransport:
    def __init__(self, inner: asyncio.Transport, wire: Wire) -> None:
        self._inner = inner
        self._wire = wire

    def write(self, data: bytes) -> None:
        self._wire.writes.append(bytes(data))
        self._inner.write(data)

    def pause_reading(self) -> None:
        self._wire.paused = True
        self._wire.pauses += 1
        self._inner.pause_reading()

    def resume_reading(self) -> None:
        self._wire.paused = False
        self._inner.resume_reading()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@pytest.fixture
def wires(monkeypatch: pytest.MonkeyPatch) -> list[Wire]:
    """Records every connection the callback server accepts from now on, in order."""
    recorded: list[Wire] = []
    by_protocol: dict[int, Wire] = {}
    made = _CallbackProtocol.connection_made
    received = _CallbackProtocol.data_received

    def connection_made(self: _CallbackProtocol, transport: asyncio.BaseTransport) -> None:
        wire = Wire()
        recorded.append(wire)
        by_protocol[id(self)] = wire
        made(self, cast(asyncio.Transport, _RecordingTransport(cast(asyncio.Transport, transport), wire)))

    def data_received(self: _CallbackProtocol, data: bytes) -> None:
        wire = by_protocol[id(self)]
        wire.chunks.append(bytes(data))
        wire.changed.set()
        received(self, data)

    monkeypatch.setattr(_CallbackProtocol, "connection_made", connection_made)
    monkeypatch.setattr(_CallbackProtocol, "data_received", data_received)
    return recorded


# -- valid requests


async def test_append_is_routed_and_answered_with_exact_bytes_in_one_write(served: Served, wires: list[Wire]) -> None:
    body = '{"index":0,"attempt":1,"token":"t","entry":{"kind":"run","name":"café"}}'.encode()
    answer, _, _ = await served.exchange(request("inv_abc", body))
    assert served.fake.calls == [Call("inv_abc", "journal", body)]
    expected = ok("inv_abc", body)
    assert answer.raw == expected
    assert answer.headers == {"content-type": "application/json", "content-length": str(len(answer.body))}
    assert len(wires) == 1
    assert wires[0].writes == [expected]  # head and body in one system call


async def test_await_route_and_query_string(served: Served) -> None:
    path = "/_durable/v1/invocations/inv_2/await?attempt=3"
    answer, _, _ = await served.exchange(request(path=path, body=b'{"indices":[1]}'))
    assert served.fake.calls == [Call("inv_2", "await", b'{"indices":[1]}')]
    assert answer.raw == ok("inv_2", b'{"indices":[1]}', verb="await")


async def test_content_type_with_parameters_and_header_case(served: Served) -> None:
    data = request(content_type=None, headers=[f"Content-Type: {CT.upper()}; charset=utf-8", "X-Other:  v "])
    answer, _, _ = await served.exchange(data)
    assert answer.raw == ok()


async def test_empty_body_and_a_body_at_the_limit(served: Served) -> None:
    reader, writer = await served.connect()
    writer.write(request("empty", b""))
    assert (await read_answer(reader)).raw == ok("empty", b"")
    at_limit = b"x" * MAX_BODY
    writer.write(request("full", at_limit))
    assert (await read_answer(reader)).raw == ok("full", at_limit)
    assert served.fake.calls == [Call("empty", "journal", b""), Call("full", "journal", at_limit)]


async def test_a_head_at_the_limit_is_accepted(served: Served) -> None:
    data = request(headers=["x-pad: "])
    pad = MAX_HEAD - (data.index(b"\r\n\r\n") + 4)
    data = request(headers=["x-pad: " + "p" * pad])
    assert data.index(b"\r\n\r\n") + 4 == MAX_HEAD
    answer, _, _ = await served.exchange(data)
    assert answer.raw == ok()


# -- keep-alive and pipelining


async def test_one_hundred_requests_on_one_connection(served: Served, wires: list[Wire]) -> None:
    reader, writer = await served.connect()
    for i in range(100):
        body = f'{{"i":{i}}}'.encode()
        writer.write(request(f"inv_{i}", body))
        answer = await read_answer(reader)
        assert answer.raw == ok(f"inv_{i}", body)
        assert "connection" not in answer.headers
    assert served.fake.ids == [f"inv_{i}" for i in range(100)]
    assert len(wires) == 1
    assert len(wires[0].writes) == 100


async def test_pipelined_requests_are_answered_one_at_a_time_in_order(served: Served) -> None:
    release = served.fake.gate("first")
    reader, writer = await served.connect()
    writer.write(request("first", b'{"n":1}') + request("second", b'{"n":2}'))
    await wait(served.fake.entered["first"], "the first request to be served")
    assert served.fake.ids == ["first"]  # the second waits for the first's answer
    release.set()
    assert (await read_answer(reader)).raw == ok("first", b'{"n":1}')
    assert (await read_answer(reader)).raw == ok("second", b'{"n":2}')
    assert served.fake.ids == ["first", "second"]
    writer.write(request("third"))  # and the connection goes on
    assert (await read_answer(reader)).raw == ok("third")


async def test_pipelined_error_between_requests_keeps_the_order(served: Served) -> None:
    reader, writer = await served.connect()
    writer.write(request("a") + request(path="/nowhere", body=b"skip me") + request("b", method="GET") + request("c"))
    assert (await read_answer(reader)).raw == ok("a")
    assert_error(await read_answer(reader), 404, "not_found")
    assert_error(await read_answer(reader), 405, "method_not_allowed")
    assert (await read_answer(reader)).raw == ok("c")
    assert served.fake.ids == ["a", "c"]


async def test_pipelined_malformed_request_after_a_valid_one(served: Served) -> None:
    reader, writer = await served.connect()
    writer.write(request("a") + b"NONSENSE\r\n\r\n" + request("b"))
    assert (await read_answer(reader)).raw == ok("a")
    assert_error(await read_answer(reader), 400, "bad_request")
    await assert_closed(reader)
    assert served.fake.ids == ["a"]


# -- errors


def _raw(*lines: str, body: bytes = b"") -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


_PATH = "/_durable/v1/invocations/inv_1/journal"

#: (request, status, code): answered, and the connection stays usable.
KEPT_ERRORS = [
    pytest.param(request(path="/nope"), 404, "not_found", id="unknown-path"),
    pytest.param(request(path="/_durable/v1/invocations/inv_1/other"), 404, "not_found", id="unknown-verb"),
    pytest.param(request(path=_PATH + "/more"), 404, "not_found", id="too-deep"),
    pytest.param(request(path="/_durable/v2/invocations/inv_1/journal"), 404, "not_found", id="other-version"),
    pytest.param(request(method="GET", body=b""), 405, "method_not_allowed", id="get"),
    pytest.param(request(method="PUT"), 405, "method_not_allowed", id="put"),
    pytest.param(request(content_type="application/json"), 415, "unsupported_media_type", id="json"),
    pytest.param(
        request(content_type="application/vnd.durable.v2+json"), 415, "unsupported_media_type", id="protocol-v2"
    ),
    pytest.param(request(content_type=None), 415, "unsupported_media_type", id="no-content-type"),
]


@pytest.mark.parametrize(("data", "status", "code"), KEPT_ERRORS)
async def test_refused_route_keeps_the_connection(served: Served, data: bytes, status: int, code: str) -> None:
    answer, reader, writer = await served.exchange(data)
    assert_error(answer, status, code)
    assert "connection" not in answer.headers
    assert served.fake.calls == []
    writer.write(request("after"))  # the refused request's body was consumed: the next one parses
    assert (await read_answer(reader)).raw == ok("after")
    assert served.fake.ids == ["after"]


#: (request, status, code): answered, then the server closes the connection.
CLOSING_ERRORS = [
    pytest.param(
        _raw(f"POST {_PATH} HTTP/1.1", f"content-type: {CT}", f"content-length: {MAX_BODY + 1}"),
        413,
        "payload_too_large",
        id="body-over-limit",
    ),
    pytest.param(
        _raw(
            f"POST {_PATH} HTTP/1.1", f"content-type: {CT}", "transfer-encoding: chunked", body=b"2\r\n{}\r\n0\r\n\r\n"
        ),
        400,
        "bad_request",
        id="chunked",
    ),
    pytest.param(
        _raw(f"POST {_PATH} HTTP/1.1", f"content-type: {CT}", "Transfer-Encoding: identity", "content-length: 2")
        + b"{}",
        400,
        "bad_request",
        id="any-transfer-encoding",
    ),
    pytest.param(_raw(f"POST {_PATH}", "content-length: 0"), 400, "bad_request", id="request-line-two-parts"),
    pytest.param(_raw(f"POST  {_PATH} HTTP/1.1", "content-length: 0"), 400, "bad_request", id="request-line-spaces"),
    pytest.param(
        "POST /_durable/v1/invocations/inv_é/journal HTTP/1.1\r\ncontent-length: 0\r\n\r\n".encode(),
        400,
        "bad_request",
        id="request-line-not-ascii",
    ),
    pytest.param(b"NONSENSE\r\n\r\n", 400, "bad_request", id="garbage-line"),
    pytest.param(b"\r\n\r\n", 400, "bad_request", id="empty-head"),
    pytest.param(request(headers=["no colon here"]), 400, "bad_request", id="header-without-colon"),
    pytest.param(request(headers=["x-a : 1"]), 400, "bad_request", id="space-before-colon"),
    pytest.param(request(headers=[": 1"]), 400, "bad_request", id="empty-header-name"),
    pytest.param(request(headers=[" folded"]), 400, "bad_request", id="folded-line"),
    pytest.param(
        _raw(f"POST {_PATH} HTTP/1.1", f"content-type: {CT}", "content-length: abc"),
        400,
        "bad_request",
        id="content-length-letters",
    ),
    pytest.param(
        _raw(f"POST {_PATH} HTTP/1.1", f"content-type: {CT}", "content-length: -1"),
        400,
        "bad_request",
        id="content-length-negative",
    ),
    pytest.param(
        _raw(f"POST {_PATH} HTTP/1.1", f"content-type: {CT}", "content-length: +2"),
        400,
        "bad_request",
        id="content-length-plus",
    ),
    pytest.param(request(version="HTTP/2.0"), 400, "bad_request", id="http2"),
    pytest.param(request(version="HTTP/2"), 400, "bad_request", id="http2-short"),
    pytest.param(request(version="HTTP/1.2"), 400, "bad_request", id="http1.2"),
    pytest.param(request(version="http/1.1"), 400, "bad_request", id="lowercase-version"),
    pytest.param(request(version="GARBAGE"), 400, "bad_request", id="garbage-version"),
    pytest.param(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400, "bad_request", id="http2-preface"),
]


@pytest.mark.parametrize(("data", "status", "code"), CLOSING_ERRORS)
async def test_refused_request_closes_the_connection(served: Served, data: bytes, status: int, code: str) -> None:
    answer, reader, _ = await served.exchange(data)
    assert_error(answer, status, code)
    assert answer.headers["connection"] == "close"
    await assert_closed(reader)
    assert served.fake.calls == []


async def test_head_over_the_limit_without_its_end_is_refused_431(served: Served) -> None:
    head = request().split(b"\r\n\r\n")[0] + b"\r\nx-pad: "
    data = head + b"p" * (MAX_HEAD + 1 - len(head))
    answer, reader, _ = await served.exchange(data)
    assert_error(answer, 431, "bad_request")
    assert answer.reason == "Request Header Fields Too Large"
    assert answer.headers["connection"] == "close"
    await assert_closed(reader)
    assert served.fake.calls == []


async def test_complete_head_over_the_limit_is_refused_431(served: Served) -> None:
    data = request(headers=["x-pad: " + "p" * (MAX_HEAD + 4096)])
    answer, reader, _ = await served.exchange(data)
    assert served.fake.calls == []
    assert answer.status == 431, answer.raw[:200]
    await assert_closed(reader)


async def test_conflicting_content_lengths_are_refused(served: Served) -> None:
    data = _raw(f"POST {_PATH} HTTP/1.1", f"content-type: {CT}", "content-length: 2", "content-length: 0", body=b"{}")
    answer, reader, _ = await served.exchange(data)
    assert served.fake.calls == []
    assert_error(answer, 400, "bad_request")
    await assert_closed(reader)


async def test_body_over_the_limit_sent_in_full_gets_413_on_the_sdk_client(served: Served) -> None:
    """The server refuses on the content-length, while the client is still sending the body."""
    client = HTTPClient(connect_timeout=DEADLINE)
    try:
        answer = await client.post(served.url + _PATH, b"x" * (1 << 20), [("content-type", CT)], timeout=DEADLINE)
    finally:
        await client.aclose()
    assert answer.status == 413
    assert answer.headers["connection"] == "close"
    assert error_body_decoder.decode(answer.body).code == "payload_too_large"
    assert served.fake.calls == []


async def test_a_blocking_client_still_writing_its_body_reads_the_413(served: Served) -> None:
    """The refusal is not lost under a reset: the server stops writing and drops what still comes."""
    body = b"x" * (8 << 20)
    head = request(body=b"").replace(b"content-length: 0", f"content-length: {len(body)}".encode())

    def post() -> bytes:
        with socket.create_connection(("127.0.0.1", served.port), timeout=DEADLINE) as sock:
            sock.sendall(head + body)  # a reset would make this raise ECONNRESET/EPIPE
            sock.shutdown(socket.SHUT_WR)
            received = b""
            while chunk := sock.recv(65536):
                received += chunk
            return received

    received = await asyncio.to_thread(post)
    assert received.startswith(b"HTTP/1.1 413 "), received[:200]
    assert b"payload_too_large" in received
    assert served.fake.calls == []


async def test_a_request_that_never_finishes_arriving_is_dropped_after_the_idle_timeout(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(callback_server, "IDLE_TIMEOUT_S", 0.1)
    reader, writer = await served.connect()
    writer.write(request()[:30])  # part of the request line, and nothing more
    await assert_closed(reader)
    assert served.fake.calls == []


async def test_reading_pauses_while_pipelined_requests_pile_up(served: Served, wires: list[Wire]) -> None:
    release = served.fake.gate("busy")
    reader, writer = await served.connect()
    writer.write(request("busy"))
    await wait(served.fake.entered["busy"], "the first request to be served")
    backlog = b"".join(request(f"inv_{i}", b"y" * MAX_BODY) for i in range(1500))  # about 1.7 MiB behind it
    writer.write(backlog)
    await eventually(lambda: wires[0].paused, "the server to stop reading")
    release.set()
    assert (await read_answer(reader)).raw == ok("busy")
    for i in range(1500):
        assert (await read_answer(reader)).status == 200, i
    assert not wires[0].paused
    assert wires[0].pauses >= 1


# -- connection: close and HTTP/1.0


@pytest.mark.parametrize(
    ("version", "headers"),
    [
        ("HTTP/1.1", ["connection: close"]),
        ("HTTP/1.1", ["Connection: Close"]),
        ("HTTP/1.1", ["connection: keep-alive, close"]),
        ("HTTP/1.0", []),
    ],
)
async def test_close_requested_is_answered_then_closed(served: Served, version: str, headers: list[str]) -> None:
    reader, writer = await served.connect()
    # A second request in the same write is not served: the connection ends with the first answer.
    writer.write(request("one", version=version, headers=headers) + request("two"))
    answer = await read_answer(reader)
    assert answer.raw == ok("one", close=True)
    await assert_closed(reader)
    assert served.fake.ids == ["one"]


async def test_http10_keep_alive_stays_open(served: Served) -> None:
    reader, writer = await served.connect()
    writer.write(request("one", version="HTTP/1.0", headers=["connection: keep-alive"]))
    assert (await read_answer(reader)).raw == ok("one")
    writer.write(request("two"))
    assert (await read_answer(reader)).raw == ok("two")


# -- framing across TCP writes


async def _send_in_pieces(writer: asyncio.StreamWriter, wire: Wire, pieces: list[bytes]) -> None:
    """Send each piece only once the server received the previous one: each is its own ``data_received``."""
    sent = wire.received
    for piece in pieces:
        writer.write(piece)
        sent += len(piece)
        await wire.wait_received(sent)


async def test_request_split_in_head_and_body_is_assembled(served: Served, wires: list[Wire]) -> None:
    body = b'{"index":7,"entry":"' + b"e" * 200 + b'"}'
    data = request("inv_split", body)
    end = data.index(b"\r\n\r\n")
    cuts = [0, 3, 30, end - 5, end + 2, end + 4 + 10, end + 4 + 150, len(data)]  # mid-line, mid-terminator, body
    pieces = [data[a:b] for a, b in zip(cuts, cuts[1:], strict=False)]
    reader, writer = await served.connect()
    await eventually(lambda: len(wires) == 1, "the server to accept the connection")
    await _send_in_pieces(writer, wires[0], pieces[:-1])
    assert served.fake.calls == []  # nothing is served before the whole body is in
    await _send_in_pieces(writer, wires[0], pieces[-1:])
    assert (await read_answer(reader)).raw == ok("inv_split", body)
    assert served.fake.calls == [Call("inv_split", "journal", body)]
    assert wires[0].chunks == pieces


async def test_requests_sent_byte_by_byte(served: Served, wires: list[Wire]) -> None:
    data = request("a", b'{"x":1}') + request("b", b"[]")
    reader, writer = await served.connect()
    await eventually(lambda: len(wires) == 1, "the server to accept the connection")
    await _send_in_pieces(writer, wires[0], [data[i : i + 1] for i in range(len(data))])
    assert (await read_answer(reader)).raw == ok("a", b'{"x":1}')
    assert (await read_answer(reader)).raw == ok("b", b"[]")
    assert len(wires[0].chunks) == len(data)


async def test_next_request_arriving_with_the_end_of_the_previous_body(served: Served) -> None:
    first, second = request("a", b"0123456789"), request("b", b"abc")
    reader, writer = await served.connect()
    writer.write(first[:-4])
    writer.write(first[-4:] + second[:20])
    writer.write(second[20:])
    assert (await read_answer(reader)).raw == ok("a", b"0123456789")
    assert (await read_answer(reader)).raw == ok("b", b"abc")


# -- failures while serving


@pytest.mark.parametrize("hang_up", ["close", "abort"])
async def test_client_gone_while_respond_waits_cancels_it(
    served: Served, hang_up: str, caplog: pytest.LogCaptureFixture
) -> None:
    served.fake.gate("slow")
    reader, writer = await served.connect()
    writer.write(request("slow"))
    await wait(served.fake.entered["slow"], "respond to be called")
    if hang_up == "close":
        writer.close()
    else:
        writer.transport.abort()
    await wait(served.fake.cancelled["slow"], "the request's task to be cancelled")
    answer, _, _ = await served.exchange(request("other"))  # the server goes on
    assert answer.raw == ok("other")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_respond_raising_is_answered_500_and_the_connection_goes_on(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    served.fake.raises.add("boom")
    with caplog.at_level(logging.ERROR, logger="durable_proxy.callbacks"):
        answer, reader, writer = await served.exchange(request("boom"))
    assert answer.status == 500
    assert answer.headers["content-type"] == "application/json"
    assert "connection" not in answer.headers
    assert error_body_decoder.decode(answer.body).code == "internal"
    assert "RuntimeError" not in answer.body.decode()  # no traceback for the client
    [record] = [r for r in caplog.records if r.name == "durable_proxy.callbacks"]
    assert record.exc_info is not None and isinstance(record.exc_info[1], RuntimeError)
    writer.write(request("fine"))
    assert (await read_answer(reader)).raw == ok("fine")


# -- closing the server and idle connections


async def test_close_ends_connections_and_stops_accepting(served: Served) -> None:
    idle = [await served.exchange(request(f"idle_{i}")) for i in range(2)]
    release = served.fake.gate("busy")
    busy_reader, busy_writer = await served.connect()
    busy_writer.write(request("busy"))
    await wait(served.fake.entered["busy"], "the busy request to be served")
    await wait(served.server.close(), "the server to close")
    for _, reader, _ in idle:
        await assert_closed(reader)
    await assert_closed(busy_reader)  # its answer is lost
    await wait(served.fake.cancelled["busy"], "the busy request to be cancelled")
    release.set()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", served.port)


async def test_idle_connections_time_out_but_not_one_being_served(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    timeout = 0.1
    monkeypatch.setattr(callback_server, "IDLE_TIMEOUT_S", timeout)
    loop = asyncio.get_running_loop()
    release = served.fake.gate("busy")
    busy_reader, busy_writer = await served.connect()
    busy_writer.write(request("busy"))
    await wait(served.fake.entered["busy"], "the busy request to be served")
    opened = loop.time()
    silent_reader, _ = await served.connect()  # never sends a byte
    answer, used_reader, _ = await served.exchange(request("once"))  # idle after one answer
    assert answer.raw == ok("once")
    await assert_closed(silent_reader)
    await assert_closed(used_reader)
    assert loop.time() - opened >= timeout * 0.9, "closed before the idle timeout"
    # Both were opened after the busy request started and are closed by now; it still gets its answer.
    assert not busy_reader.at_eof()
    assert not served.fake.cancelled["busy"].is_set()
    release.set()
    assert (await read_answer(busy_reader)).raw == ok("busy")
    await assert_closed(busy_reader)  # and it is idle from then on


# -- the SDK's client


async def test_sdk_client_twenty_concurrent_posts(served: Served, wires: list[Wire]) -> None:
    client = HTTPClient(connect_timeout=DEADLINE)
    headers = [("content-type", CT)]

    async def post(i: int) -> tuple[int, bytes]:
        url = f"{served.url}/_durable/v1/invocations/inv_{i}/journal"
        answer = await client.post(url, f'{{"i":{i}}}'.encode(), headers, timeout=DEADLINE)
        return answer.status, answer.body

    try:
        for _ in range(2):
            served.fake.hold_until(20)  # every answer waits until all twenty are being served at once
            results = await asyncio.gather(*(post(i) for i in range(20)))
            assert results == [(200, answer_for(f"inv_{i}", "journal", f'{{"i":{i}}}'.encode())) for i in range(20)]
    finally:
        await client.aclose()
    assert sorted(served.fake.ids) == sorted([f"inv_{i}" for i in range(20)] * 2)
    assert len(wires) == 20  # the second round reused the first round's connections


async def test_sdk_client_sees_errors_and_reconnects_after_close(served: Served, wires: list[Wire]) -> None:
    client = HTTPClient(connect_timeout=DEADLINE)
    try:
        refused = await client.post(served.url + "/elsewhere", b"{}", [("content-type", CT)], timeout=DEADLINE)
        assert refused.status == 404
        assert error_body_decoder.decode(refused.body).code == "not_found"
        closing = await client.post(
            served.url + _PATH, b"{}", [("content-type", CT), ("connection", "close")], timeout=DEADLINE
        )
        assert (closing.status, closing.headers["connection"], closing.body) == (
            200,
            "close",
            answer_for("inv_1", "journal", b"{}"),
        )
        again = await client.post(served.url + _PATH, b"[]", [("content-type", CT)], timeout=DEADLINE)
        assert (again.status, again.body) == (200, answer_for("inv_1", "journal", b"[]"))
    finally:
        await client.aclose()
    assert len(wires) == 2  # one connection until the close, a new one after it


# -- end to end: the real runtime, a real handler endpoint, steps over the socket


async def test_end_to_end_steps_are_journaled_through_the_socket(
    tmp_path: Path, wires: list[Wire], loop_errors: list[dict[str, Any]]
) -> None:
    steps = 5
    service = Service("Steps")

    def square(i: int) -> int:
        return i * i

    @service.handler()
    async def squares(ctx: Context, n: int) -> list[int]:
        return [await ctx.run(f"step-{i}", square, i) for i in range(n)]

    # No callback_transport: the SDK posts its steps with its own HTTPClient to callback_base.
    endpoint = Endpoint([service], append_deadline=timedelta(seconds=2))
    sock = listening_socket()
    port = sock.getsockname()[1]
    settings = Settings(db=str(tmp_path / "proxy.db"))
    async with (
        asyncio.timeout(8),
        Runtime.open(
            settings, transport=httpx.ASGITransport(app=endpoint.asgi()), callback_base=f"http://127.0.0.1:{port}"
        ) as runtime,
    ):
        server = CallbackServer(runtime.callbacks, settings.max_body_bytes)
        await server.start(sock)
        try:
            async with (
                httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=runtime.ingress), base_url="http://proxy"
                ) as ingress,
                httpx.AsyncClient(transport=httpx.ASGITransport(app=runtime.admin), base_url="http://admin") as admin,
            ):
                registered = await admin.post("/deployments", json={"uri": "http://handlers"})
                assert registered.status_code == 201, registered.text
                answer = await ingress.post("/Steps/squares", json=steps)
                assert answer.status_code == 200, answer.text
                assert answer.json() == [i * i for i in range(steps)]
                invocation_id = answer.headers["x-restate-id"]
                found = (await admin.get(f"/invocations/{invocation_id}")).json()
        finally:
            await endpoint.aclose()
            await server.close()
    assert found["status"] == "completed"
    assert [(e["index"], e["kind"], e["name"]) for e in found["journal"]] == [
        (i, "run", f"step-{i}") for i in range(steps)
    ]
    assert [e["entry"]["result"] for e in found["journal"]] == [i * i for i in range(steps)]
    # Every step came through this server, on one keep-alive connection.
    received = b"".join(b"".join(wire.chunks) for wire in wires)
    assert received.count(b"POST /_durable/v1/invocations/") == steps
    assert received.count(f"POST /_durable/v1/invocations/{invocation_id}/journal HTTP/1.1\r\n".encode()) == steps
    assert len(wires) == 1
