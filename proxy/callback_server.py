"""The listener for handler callbacks: a small HTTP/1.1 server that does only that.

Every step of every handler is one ``POST {callback_url}/journal``, so what the
server costs per request is paid per step. A general ASGI server spends more
on the exchange than the append itself (building a scope, dispatching through
middleware, and writing the head and the body of each answer in two system
calls). This one reads a request straight from the socket, hands its body to
``Callbacks``, and writes the whole answer in one call.

It speaks what the SDK's client sends: ``POST`` with a ``content-length`` body,
keep-alive, one request at a time per connection (pipelined requests are
answered in order). Anything else gets a clear 4xx and the connection is
closed. The ingress port still accepts the same callback routes, for setups
that can expose only one port (``advertised_url`` pointing at the ingress).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from http import HTTPStatus

from handler_sdk.httpclient import no_delay

from .callbacks import Callbacks, error_answer
from .errors import BadRequest, PayloadTooLarge, ProxyError

log = logging.getLogger("durable_proxy.callbacks")

_MAX_HEAD_BYTES = 16 * 1024
#: A connection with no complete request for this long is closed (handler instances reconnect when they need to).
IDLE_TIMEOUT_S = 75.0
#: Bytes of pipelined requests read ahead while one is served, before reading pauses.
_MAX_BUFFERED_BYTES = 1024 * 1024
#: How long a refused client may go on sending before its connection is closed.
_REFUSAL_GRACE_S = 2.0


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


class _Request:
    __slots__ = ("body_length", "close", "content_type", "method", "path")

    def __init__(self, method: str, path: str, content_type: str | None, body_length: int, close: bool) -> None:
        self.method = method
        self.path = path
        self.content_type = content_type
        self.body_length = body_length
        self.close = close


class _CallbackProtocol(asyncio.Protocol):
    def __init__(self, callbacks: Callbacks, max_body_bytes: int, connections: set[_CallbackProtocol]) -> None:
        self._callbacks = callbacks
        self._max_body = max_body_bytes
        self._connections = connections
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._request: _Request | None = None
        self._task: asyncio.Task[None] | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._closing = False

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = no_delay(transport)
        self._connections.add(self)
        self._arm_idle()

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return  # after a refusal: what the client still sends is read and dropped
        self._buffer += data
        if self._task is None:
            self._advance()
        elif len(self._buffer) > _MAX_BUFFERED_BYTES and self._transport is not None:
            self._transport.pause_reading()  # pipelined requests piling up behind the one being served

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self._connections.discard(self)
        if self._idle is not None:
            self._idle.cancel()
        if self._task is not None:
            # An append that reached the store still commits; only its answer is lost, as with any lost ack.
            self._task.cancel()

    # -- requests

    def _advance(self) -> None:
        """Parse what is buffered; start serving the next complete request."""
        while not self._closing and self._task is None:
            if self._request is None:
                end = self._buffer.find(b"\r\n\r\n")
                if end > _MAX_HEAD_BYTES or (end < 0 and len(self._buffer) > _MAX_HEAD_BYTES):
                    self._refuse(BadRequest(f"request head over {_MAX_HEAD_BYTES} bytes"), status=431)
                    return
                if end < 0:
                    return
                head = bytes(self._buffer[:end])
                del self._buffer[: end + 4]
                try:
                    self._request = self._parse_head(head)
                except ProxyError as exc:
                    self._refuse(exc)
                    return
            request = self._request
            if len(self._buffer) < request.body_length:
                return
            body = bytes(self._buffer[: request.body_length])
            del self._buffer[: request.body_length]
            self._request = None
            if self._idle is not None:
                self._idle.cancel()
                self._idle = None
            self._task = asyncio.get_running_loop().create_task(self._serve(request, body))

    def _parse_head(self, head: bytes) -> _Request:
        lines = head.split(b"\r\n")
        try:
            method, target, version = lines[0].decode("ascii").split(" ")
        except (UnicodeDecodeError, ValueError):
            raise BadRequest(f"invalid request line {lines[0][:100]!r}") from None
        if version not in ("HTTP/1.1", "HTTP/1.0"):
            raise BadRequest(f"unsupported protocol {version[:20]!r}; use HTTP/1.1")
        content_type: str | None = None
        length: int | None = None
        close = version == "HTTP/1.0"
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep or not name or name != name.strip():
                raise BadRequest(f"invalid header line {line[:100]!r}")
            key = name.lower()
            if key == b"content-length":
                text = value.strip()
                if not text.isdigit() or len(text) > 18:
                    raise BadRequest(f"invalid content-length {text[:40]!r}")
                if length is not None and length != int(text):
                    raise BadRequest("conflicting content-length headers")
                length = int(text)
            elif key == b"content-type":
                content_type = value.strip().decode("latin-1")
            elif key == b"transfer-encoding":
                raise BadRequest("chunked request bodies are not accepted on callbacks; send a content-length")
            elif key == b"connection":
                tokens = value.lower()
                close = b"close" in tokens or (close and b"keep-alive" not in tokens)
        if length is None:
            length = 0
        if length > self._max_body:
            raise PayloadTooLarge(f"request body of {length} bytes exceeds the limit of {self._max_body} bytes")
        return _Request(method, target.split("?", 1)[0], content_type, length, close)

    async def _serve(self, request: _Request, body: bytes) -> None:
        callbacks = self._callbacks
        try:
            invocation_id, verb = callbacks.route(request.method, request.path, request.content_type)
        except ProxyError as exc:
            status, payload = error_answer(exc)
        else:
            try:
                status, payload = await callbacks.respond(invocation_id, verb, body)
            except Exception:
                log.exception("callback %s %s failed", request.method, request.path)
                status, payload = 500, b'{"code":"internal","message":"internal error in the proxy; see its log"}'
        self._write(status, payload, request.close)
        self._task = None
        if request.close:
            self.close()
        else:
            self._arm_idle()
            if self._transport is not None:
                self._transport.resume_reading()
            self._advance()

    def _write(self, status: int, payload: bytes, close: bool) -> None:
        if self._transport is None or self._transport.is_closing():
            return
        connection = "connection: close\r\n" if close else ""
        head = (
            f"HTTP/1.1 {status} {_reason(status)}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(payload)}\r\n{connection}\r\n"
        ).encode("latin-1")
        self._transport.write(head + payload)

    def _refuse(self, error: ProxyError, status: int | None = None) -> None:
        """Answer an unusable request, then close without resetting the connection under the answer.

        Closing with unread bytes queued would send a reset, and a client still writing its body could
        lose the answer: stop writing instead, drop what still comes, and close once the client did
        (or after a short grace period).
        """
        code, payload = error_answer(error)
        self._write(status or code, payload, close=True)
        self._closing = True
        self._buffer.clear()
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if transport.can_write_eof():
            transport.write_eof()
            asyncio.get_running_loop().call_later(_REFUSAL_GRACE_S, transport.close)
        else:
            transport.close()

    def _arm_idle(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
        self._idle = asyncio.get_running_loop().call_later(IDLE_TIMEOUT_S, self._close_if_idle)

    def _close_if_idle(self) -> None:
        # Idle, or still sending the same request after all this time: either way it is dropped.
        if self._task is None:
            self.close()

    def close(self) -> None:
        self._closing = True
        if self._transport is not None:
            self._transport.close()


class CallbackServer:
    """Serves ``Callbacks`` on a listening socket until closed."""

    def __init__(self, callbacks: Callbacks, max_body_bytes: int) -> None:
        self._callbacks = callbacks
        self._max_body = max_body_bytes
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[_CallbackProtocol] = set()

    async def start(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _CallbackProtocol(self._callbacks, self._max_body, self._connections), sock=sock
        )

    async def close(self) -> None:
        """Stop accepting, and close every connection (requests being served lose their answer)."""
        if self._server is not None:
            self._server.close()
        for connection in list(self._connections):
            connection.close()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
