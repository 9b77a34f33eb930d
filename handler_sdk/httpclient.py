"""A small HTTP/1.1 client for the two hot paths: SDK appends and proxy invocations.

Each step of a handler is one POST from the SDK to the proxy, and each attempt
is one POST from the proxy to the handler, so the client's own cost is paid
per step. General-purpose clients spend most of a step's budget on
abstractions these exchanges do not need (sniffing the async library, layered
streams, cookie and redirect handling). This one does only what the two paths
use:

* ``POST``/``GET`` with a body held in memory, answered by a body held in memory;
* keep-alive connections, pooled per origin and reused most recent first;
  a connection idle for longer than ``idle_timeout`` is closed rather than
  reused, since the server may be closing it at the same moment;
* ``content-length``, chunked, and read-until-close response bodies;
* ``http`` and ``https`` (with the default certificate checks);
* a per-request timeout covering connect, send and receive.

A request that fails on a reused connection before any byte of the answer
arrived, within a second of being sent, is sent once more on a new
connection: the server closed the idle connection as the request went out,
so it never saw it. A connection lost later is an error: the server may
have been working on the request. Both paths are safe to repeat in any case
(an append names its journal index, an attempt is fenced).

Errors are ``HTTPError`` subclasses whose message says what went wrong where.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import NamedTuple, cast
from urllib.parse import urlsplit

__all__ = [
    "ConnectError",
    "HTTPClient",
    "HTTPError",
    "ProtocolError",
    "ReadError",
    "Response",
    "Timeout",
    "URLError",
    "no_delay",
]

_MAX_HEAD_BYTES = 64 * 1024
_HEX_DIGITS = b"0123456789abcdefABCDEF"
#: A reused connection lost this soon after the request went out was closed by the server while idle:
#: the request is sent again. Lost later, the server may have been working on it: that is an error.
_RESEND_WINDOW_S = 1.0
_NO_BODY_STATUSES = frozenset({204, 304})


class HTTPError(Exception):
    """The exchange failed: no usable answer came back."""


class URLError(HTTPError):
    """The URL is not an absolute ``http://`` or ``https://`` URL."""


class ConnectError(HTTPError):
    """No connection could be opened."""


class ReadError(HTTPError):
    """The connection was lost before the whole answer arrived."""


class ProtocolError(HTTPError):
    """The server's answer is not valid HTTP/1.1."""


class Timeout(HTTPError):
    """The exchange took longer than its timeout."""


class Response(NamedTuple):
    status: int
    reason: str
    #: Header names in lower case; a repeated header keeps its last value.
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def no_delay(transport: asyncio.BaseTransport) -> asyncio.Transport:
    """Turn Nagle's algorithm off on a TCP transport: each message goes out as soon as it is written.

    Returns it as an ``asyncio.Transport`` (uvloop's transports do not subclass it).
    """
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
    return cast(asyncio.Transport, transport)


class _Origin(NamedTuple):
    scheme: str
    host: str
    port: int


class _Target(NamedTuple):
    origin: _Origin
    host_header: str
    path: str


def _parse_url(url: str) -> _Target:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise URLError(f"invalid URL {url!r}: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise URLError(f"invalid URL {url!r}: expected an absolute http:// or https:// URL")
    default = 443 if parts.scheme == "https" else 80
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    netloc = parts.netloc.rpartition("@")[2]
    return _Target(_Origin(parts.scheme, parts.hostname, port or default), netloc, path)


class _Connection(asyncio.Protocol):
    """One keep-alive connection: at most one exchange at a time, parsed as bytes arrive."""

    def __init__(self, origin: _Origin, clock: Callable[[], float] = time.monotonic) -> None:
        self.origin = origin
        self._clock = clock
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = clock()
        self.reused = False
        self.sent_at = 0.0
        self._buffer = bytearray()
        self._waiter: asyncio.Future[Response] | None = None
        self._head_only = False
        self._status = 0
        self._reason = ""
        self._headers: dict[str, str] = {}
        self._state = "idle"  # idle | head | length | chunk_size | chunk_data | trailer | until_close
        self._remaining = 0
        self._body = bytearray()
        self._keep_alive = True
        self.received_any = False

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = no_delay(transport)

    def data_received(self, data: bytes) -> None:
        if self._state == "idle":
            # Bytes nobody asked for: the connection cannot be trusted for another exchange.
            self._close()
            return
        self.received_any = True
        self._buffer += data
        try:
            self._parse()
        except ProtocolError as exc:
            self._fail(exc)

    def eof_received(self) -> bool | None:
        if self._state == "until_close":
            self._finish()
        self.closed = True
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._state == "until_close" and exc is None:
            self._finish()  # a clean close is how such an answer ends; a reset is not
            return
        if self._waiter is not None and not self._waiter.done():
            reason = f": {exc}" if exc else ""
            self._waiter.set_exception(ReadError(f"the connection to {self._where()} was closed{reason}"))
        self._state = "idle"

    # -- exchange

    def send(self, data: bytes | list[bytes], head_only: bool) -> asyncio.Future[Response]:
        assert self.transport is not None and self._state == "idle"
        self._waiter = asyncio.get_running_loop().create_future()
        self._head_only = head_only
        self._state = "head"
        self.received_any = False
        self.sent_at = self._clock()
        if isinstance(data, list):
            self.transport.writelines(data)
        else:
            self.transport.write(data)
        return self._waiter

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def _close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _where(self) -> str:
        return f"{self.origin.host}:{self.origin.port}"

    def _fail(self, exc: HTTPError) -> None:
        self._state = "idle"
        self.abort()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)

    def _finish(self) -> None:
        response = Response(self._status, self._reason, self._headers, bytes(self._body))
        self._state = "idle"
        self._body = bytearray()
        if self._buffer:
            self._keep_alive = False  # the server sent more than one answer
        if not self._keep_alive:
            self._close()
        self.idle_since = self._clock()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(response)

    def _parse(self) -> None:
        buffer = self._buffer
        while True:
            state = self._state
            if state == "head":
                end = buffer.find(b"\r\n\r\n")
                if end > _MAX_HEAD_BYTES or (end < 0 and len(buffer) > _MAX_HEAD_BYTES):
                    raise ProtocolError(f"{self._where()} sent a response head over {_MAX_HEAD_BYTES} bytes")
                if end < 0:
                    return
                head = bytes(buffer[:end])
                del buffer[: end + 4]
                if not self._read_head(head):
                    continue  # an informational (1xx) answer: the real one follows
            elif state == "length":
                if len(buffer) < self._remaining:
                    return
                self._body += buffer[: self._remaining]
                del buffer[: self._remaining]
                self._finish()
                return
            elif state == "chunk_size":
                end = buffer.find(b"\r\n")
                if end < 0:
                    return
                line = bytes(buffer[:end]).split(b";", 1)[0].strip()
                del buffer[: end + 2]
                if not line or line.strip(_HEX_DIGITS) or len(line) > 16:
                    raise ProtocolError(f"{self._where()} sent an invalid chunk size {line[:40]!r}")
                size = int(line, 16)
                if size == 0:
                    self._state = "trailer"
                else:
                    self._remaining = size
                    self._state = "chunk_data"
            elif state == "chunk_data":
                if len(buffer) < self._remaining + 2:
                    return
                if buffer[self._remaining : self._remaining + 2] != b"\r\n":
                    raise ProtocolError(f"{self._where()} sent a chunk longer than its size")
                self._body += buffer[: self._remaining]
                del buffer[: self._remaining + 2]
                self._state = "chunk_size"
            elif state == "trailer":
                end = buffer.find(b"\r\n")
                if end < 0:
                    return
                del buffer[: end + 2]
                if end == 0:
                    self._finish()
                    return
            elif state == "until_close":
                self._body += buffer
                buffer.clear()
                return
            else:
                return

    def _read_head(self, head: bytes) -> bool:
        """Parse a response head; False when it was an informational answer to skip."""
        lines = head.split(b"\r\n")
        status_line = lines[0].decode("latin-1")
        version, _, rest = status_line.partition(" ")
        code, _, reason = rest.partition(" ")
        if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
            raise ProtocolError(f"{self._where()} sent an invalid status line {status_line[:100]!r}")
        status = int(code)
        if 100 <= status < 200:
            return False
        headers: dict[str, str] = {}
        for raw in lines[1:]:
            name, sep, value = raw.partition(b":")
            if not sep or not name or name != name.strip():
                raise ProtocolError(f"{self._where()} sent an invalid header line {raw[:100]!r}")
            headers[name.decode("latin-1").lower()] = value.strip().decode("latin-1")
        self._status, self._reason, self._headers = status, reason, headers
        connection = {token.strip() for token in headers.get("connection", "").lower().split(",")}
        self._keep_alive = version == "HTTP/1.1" and "close" not in connection
        if self._head_only or status in _NO_BODY_STATUSES:
            self._finish()
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            self._state = "chunk_size"
        elif "content-length" in headers:
            length = headers["content-length"]
            if not (length.isascii() and length.isdigit()):
                raise ProtocolError(f"{self._where()} sent an invalid content-length {length[:40]!r}")
            self._remaining = int(length)
            self._state = "length"
        else:
            self._keep_alive = False
            self._state = "until_close"
        return True


class HTTPClient:
    """Keep-alive connection pools per origin, for one event loop.

    ``connect_timeout`` bounds opening a connection; ``idle_timeout`` is how
    long an unused connection is kept (under the servers' own keep-alive
    timeout, five seconds for uvicorn); ``max_idle`` connections are kept per
    origin. ``clock`` (seconds, monotonic) is what idle and resend times are
    measured with; tests pass one they move by hand.
    """

    def __init__(
        self,
        *,
        connect_timeout: float = 5.0,
        idle_timeout: float = 4.0,
        max_idle: int = 100,
        ssl_context: ssl.SSLContext | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._connect_timeout = connect_timeout
        self._idle_timeout = idle_timeout
        self._max_idle = max_idle
        self._ssl_context = ssl_context
        self._idle: dict[_Origin, deque[_Connection]] = {}
        self._targets: dict[str, _Target] = {}
        self._closed = False

    async def post(
        self, url: str, body: bytes, headers: Iterable[tuple[str, str]] = (), *, timeout: float | None = None
    ) -> Response:
        return await self.request("POST", url, body, headers, timeout=timeout)

    async def get(self, url: str, headers: Iterable[tuple[str, str]] = (), *, timeout: float | None = None) -> Response:
        return await self.request("GET", url, b"", headers, timeout=timeout)

    async def request(
        self,
        method: str,
        url: str,
        body: bytes = b"",
        headers: Iterable[tuple[str, str]] = (),
        *,
        timeout: float | None = None,
    ) -> Response:
        """Send one request and return the whole answer; ``HTTPError`` if none came back."""
        if self._closed:
            raise HTTPError("the client is closed")
        target = self._target(url)
        lines = [f"{method} {target.path} HTTP/1.1\r\nhost: {target.host_header}\r\n"]
        if body or method not in ("GET", "HEAD"):
            lines.append(f"content-length: {len(body)}\r\n")
        for name, value in headers:
            if "\r" in value or "\n" in value or "\r" in name or "\n" in name or ":" in name:
                raise ValueError(f"header {name!r} has a line break or colon where none may be")
            lines.append(f"{name}: {value}\r\n")
        lines.append("\r\n")
        head = "".join(lines).encode("latin-1")
        data: bytes | list[bytes] = head + body if len(body) < 65536 else [head, body]
        try:
            async with asyncio.timeout(timeout):
                return await self._exchange(target.origin, data, method == "HEAD")
        except TimeoutError:
            raise Timeout(f"{method} {url} took longer than {timeout:g}s") from None

    async def _exchange(self, origin: _Origin, data: bytes | list[bytes], head_only: bool) -> Response:
        connection = self._checkout(origin)
        fresh = connection is None
        if connection is None:
            connection = await self._connect(origin)
        try:
            try:
                response = await connection.send(data, head_only)
            except ReadError:
                if fresh or connection.received_any or self._clock() - connection.sent_at > _RESEND_WINDOW_S:
                    raise
                # The server closed this idle connection as the request went out: it never saw it.
                connection = await self._connect(origin)
                response = await connection.send(data, head_only)
        except BaseException:
            connection.abort()  # failed, cancelled or timed out mid-exchange: its state is unknown
            raise
        self._checkin(connection)
        return response

    def _target(self, url: str) -> _Target:
        target = self._targets.get(url)
        if target is None:
            target = _parse_url(url)
            if len(self._targets) > 1024:
                self._targets.clear()
            self._targets[url] = target
        return target

    def _checkout(self, origin: _Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        now = self._clock()
        while idle:
            connection = idle.pop()
            if not connection.closed and now - connection.idle_since < self._idle_timeout:
                connection.reused = True
                return connection
            connection.abort()
        return None

    def _checkin(self, connection: _Connection) -> None:
        if connection.closed:
            return
        if self._closed:
            connection.abort()
            return
        idle = self._idle.setdefault(connection.origin, deque())
        if len(idle) >= self._max_idle:
            idle.popleft().abort()
        idle.append(connection)

    async def _connect(self, origin: _Origin) -> _Connection:
        loop = asyncio.get_running_loop()
        tls: ssl.SSLContext | None = None
        if origin.scheme == "https":
            if self._ssl_context is None:
                self._ssl_context = ssl.create_default_context()
            tls = self._ssl_context
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, protocol = await loop.create_connection(
                    lambda: _Connection(origin, self._clock),
                    origin.host,
                    origin.port,
                    ssl=tls,
                    server_hostname=origin.host if tls else None,
                )
        except TimeoutError:
            raise ConnectError(
                f"could not connect to {origin.host}:{origin.port} within {self._connect_timeout:g}s"
            ) from None
        except (OSError, ssl.SSLError) as exc:
            raise ConnectError(f"could not connect to {origin.host}:{origin.port}: {exc}") from None
        return protocol

    async def aclose(self) -> None:
        """Close every pooled connection; requests after this raise ``HTTPError``."""
        self._closed = True
        for idle in self._idle.values():
            while idle:
                idle.pop().abort()
        self._idle.clear()
