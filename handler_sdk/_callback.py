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


def _describe(response: httpx.Response) -> str:
    """The message of an ``ErrorBody`` answer, or a short excerpt of whatever came back."""
    try:
        return error_body_decoder.decode(response.content).message
    except msgspec.DecodeError:
        return response.text[:200] or response.reason_phrase


class CallbackClient:
    """Posts appends and waits over one shared keep-alive connection pool."""

    def __init__(
        self,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        deadline: timedelta = timedelta(seconds=30),
    ) -> None:
        self._transport = transport
        self._deadline = deadline.total_seconds()
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _http(self) -> httpx.AsyncClient:
        # Created lazily: the ASGI app may be built before any event loop runs, and
        # a pool is tied to the loop that opened its connections.
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client = httpx.AsyncClient(transport=self._transport)
            self._loop = loop
        return self._client

    async def aclose(self) -> None:
        """Close the connection pool; a later append opens a new one."""
        client, self._client, self._loop = self._client, None, None
        if client is not None:
            await client.aclose()

    async def append(self, url: str, request: AppendRequest) -> AppendAck:
        """Send ``request`` and return the proxy's acknowledgement that it is committed."""
        body = json_encoder.encode(request)
        headers = {"content-type": INVOKE_CONTENT_TYPE}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._deadline
        backoff = _FIRST_BACKOFF
        while True:
            remaining = max(deadline - loop.time(), 0.001)
            try:
                response = await self._http().post(url, content=body, headers=headers, timeout=remaining)
            except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
                raise _AttemptFenced(f"bad callback URL {url!r}: {exc}", code=PROTOCOL_VIOLATION) from None
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                status = response.status_code
                if status == 200:
                    crash_point("sdk.append.after_send")
                    return self._acked(response, request.index)
                if status in _FENCED_STATUSES:
                    raise _AttemptFenced(f"the proxy refused the append (HTTP {status}): {_describe(response)}")
                if status < 500:
                    message = f"unexpected HTTP {status} to an append: {_describe(response)}"
                    raise _AttemptFenced(message, code=PROTOCOL_VIOLATION)
                problem = f"HTTP {status}: {_describe(response)}"
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
        headers = {"content-type": INVOKE_CONTENT_TYPE}
        timeout = request.timeout_ms / 1000 + _AWAIT_GRACE
        try:
            response = await self._http().post(url, content=body, headers=headers, timeout=timeout)
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            raise _AttemptFenced(f"bad callback URL {url!r}: {exc}", code=PROTOCOL_VIOLATION) from None
        except httpx.TransportError:
            return None
        status = response.status_code
        if status in _FENCED_STATUSES:
            raise _AttemptFenced(f"the proxy refused the wait (HTTP {status}): {_describe(response)}")
        if status >= 500:
            return None
        if status != 200:
            raise _AttemptFenced(f"unexpected HTTP {status} to a wait: {_describe(response)}", code=PROTOCOL_VIOLATION)
        try:
            return await_response_decoder.decode(response.content)
        except msgspec.DecodeError as exc:
            raise _AttemptFenced(f"malformed AwaitResponse: {exc}", code=PROTOCOL_VIOLATION) from None

    @staticmethod
    def _acked(response: httpx.Response, index: int) -> AppendAck:
        try:
            ack = append_ack_decoder.decode(response.content)
        except msgspec.DecodeError as exc:
            raise _AttemptFenced(f"malformed AppendAck: {exc}", code=PROTOCOL_VIOLATION) from None
        if ack.index != index:
            message = f"the proxy acknowledged index {ack.index} for an append of index {index}"
            raise _AttemptFenced(message, code=PROTOCOL_VIOLATION)
        if ack.completion is not None and ack.completion.index != index:
            message = f"the proxy completed index {ack.completion.index} in the ack of an append of index {index}"
            raise _AttemptFenced(message, code=PROTOCOL_VIOLATION)
        return ack
