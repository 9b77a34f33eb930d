"""The SDK's calls to the proxy's callback URL: appends and brief waits.

An append is acknowledged only once the proxy committed it, and the handler
waits for that ack before going on. A proxy that is restarting is waited for
(with backoff, up to a deadline); a proxy that refuses the append because the
attempt was superseded fences the attempt off immediately.

A wait (``/await``) is only an optimisation over suspending: when it cannot
be answered, the handler suspends instead, so it is never retried.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
import msgspec

from ._crashpoints import crash_point
from .errors import _AttemptFailed, _AttemptFenced
from .httpclient import HTTPClient, HTTPError, URLError
from .protocol import (
    INVOKE_CONTENT_TYPE,
    PROTOCOL_VIOLATION,
    AppendAck,
    AppendRequest,
    AwaitRequest,
    AwaitResponse,
    Failure,
    append_ack_decoder,
    await_response_decoder,
    error_body_decoder,
    json_encoder,
)

_FIRST_BACKOFF = 0.05
_MAX_BACKOFF = 1.0
_FENCED_STATUSES = frozenset({403, 404, 409})
#: How much longer than the requested wait the SDK gives the proxy to answer it.
_AWAIT_GRACE = 5.0


def _describe(status: int, content: bytes) -> str:
    """The message of an ``ErrorBody`` answer, or a short excerpt of whatever came back."""
    try:
        return error_body_decoder.decode(content).message
    except msgspec.DecodeError:
        return content[:200].decode("utf-8", "replace") or f"HTTP {status}"


class _BadURL(Exception):
    """The callback URL cannot be used at all."""


class _Unreachable(Exception):
    """No answer came back from the proxy."""


_HEADERS = (("content-type", INVOKE_CONTENT_TYPE),)


class CallbackClient:
    """Posts appends and waits over keep-alive connections to the proxy.

    The connections belong to the event loop that opened them, so they are
    opened lazily and again when the loop changes. ``transport`` routes the
    requests through an httpx transport instead (tests pass an in-process one).
    """

    def __init__(
        self,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        deadline: timedelta = timedelta(seconds=30),
    ) -> None:
        self._transport = transport
        self._deadline = deadline.total_seconds()
        self._client: HTTPClient | httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _http(self) -> HTTPClient | httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client = HTTPClient() if self._transport is None else httpx.AsyncClient(transport=self._transport)
            self._loop = loop
        return self._client

    async def _post(self, url: str, body: bytes, timeout: float) -> tuple[int, bytes]:
        """POST ``body``: the answer's status and content."""
        client = self._http()
        if isinstance(client, HTTPClient):
            try:
                response = await client.post(url, body, _HEADERS, timeout=timeout)
            except URLError as exc:
                raise _BadURL(f"bad callback URL: {exc}") from None
            except HTTPError as exc:
                raise _Unreachable(f"{type(exc).__name__}: {exc}") from None
            return response.status, response.body
        try:
            answer = await client.post(url, content=body, headers=dict(_HEADERS), timeout=timeout)
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            raise _BadURL(f"bad callback URL {url!r}: {exc}") from None
        except httpx.TransportError as exc:
            raise _Unreachable(f"{type(exc).__name__}: {exc}") from None
        return answer.status_code, answer.content

    async def aclose(self) -> None:
        """Close the connections; a later append opens new ones."""
        client, self._client, self._loop = self._client, None, None
        if client is not None:
            await client.aclose()

    async def append(self, url: str, request: AppendRequest) -> AppendAck:
        """Send ``request`` and return the proxy's acknowledgement that it is committed."""
        body = json_encoder.encode(request)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._deadline
        backoff = _FIRST_BACKOFF
        while True:
            remaining = max(deadline - loop.time(), 0.001)
            try:
                status, content = await self._post(url, body, remaining)
            except _BadURL as exc:
                raise _AttemptFenced(str(exc), code=PROTOCOL_VIOLATION) from None
            except _Unreachable as exc:
                problem = str(exc)
            else:
                if status == 200:
                    crash_point("sdk.append.after_send")
                    return self._acked(content, request.index)
                if status in _FENCED_STATUSES:
                    raise _AttemptFenced(f"the proxy refused the append (HTTP {status}): {_describe(status, content)}")
                if status < 500:
                    message = f"unexpected HTTP {status} to an append: {_describe(status, content)}"
                    raise _AttemptFenced(message, code=PROTOCOL_VIOLATION)
                problem = f"HTTP {status}: {_describe(status, content)}"
            remaining = deadline - loop.time()
            if remaining <= 0:
                message = (
                    f"the append of journal index {request.index} was not acknowledged "
                    f"within {self._deadline:g}s; last problem: {problem}"
                )
                raise _AttemptFailed(Failure(code=503, message=message))
            await asyncio.sleep(min(backoff, remaining))
            backoff = min(backoff * 2, _MAX_BACKOFF)

    async def wait(self, url: str, request: AwaitRequest) -> AwaitResponse | None:
        """Ask the proxy to answer once any of ``request.indices`` completes or the wait times out.

        ``None`` means the proxy could not answer (unreachable, restarting): the
        caller suspends, which is always safe. A refusal because the attempt was
        superseded fences the attempt, as for an append.
        """
        body = json_encoder.encode(request)
        timeout = request.timeout_ms / 1000 + _AWAIT_GRACE
        try:
            status, content = await self._post(url, body, timeout)
        except _BadURL as exc:
            raise _AttemptFenced(str(exc), code=PROTOCOL_VIOLATION) from None
        except _Unreachable:
            return None
        if status in _FENCED_STATUSES:
            raise _AttemptFenced(f"the proxy refused the wait (HTTP {status}): {_describe(status, content)}")
        if status >= 500:
            return None
        if status != 200:
            raise _AttemptFenced(
                f"unexpected HTTP {status} to a wait: {_describe(status, content)}", code=PROTOCOL_VIOLATION
            )
        try:
            return await_response_decoder.decode(content)
        except msgspec.DecodeError as exc:
            raise _AttemptFenced(f"malformed AwaitResponse: {exc}", code=PROTOCOL_VIOLATION) from None

    @staticmethod
    def _acked(content: bytes, index: int) -> AppendAck:
        try:
            ack = append_ack_decoder.decode(content)
        except msgspec.DecodeError as exc:
            raise _AttemptFenced(f"malformed AppendAck: {exc}", code=PROTOCOL_VIOLATION) from None
        if ack.index != index:
            message = f"the proxy acknowledged index {ack.index} for an append of index {index}"
            raise _AttemptFenced(message, code=PROTOCOL_VIOLATION)
        if ack.completion is not None and ack.completion.index != index:
            message = f"the proxy completed index {ack.completion.index} in the ack of an append of index {index}"
            raise _AttemptFenced(message, code=PROTOCOL_VIOLATION)
        return ack
