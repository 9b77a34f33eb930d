"""The proxy's HTTP client towards handler endpoints: attempts and discovery.

Requests go over ``handler_sdk.httpclient``'s keep-alive pools: an attempt is
one POST per invocation (and one per resumption), so the client's own cost is
paid on every invocation. An httpx transport can be given instead, which is
how tests run endpoints in-process.
"""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from handler_sdk.httpclient import ConnectError, HTTPClient, HTTPError, ProtocolError, ReadError, Response, Timeout

__all__ = ["HTTPError", "Outbound", "Response"]


class Outbound:
    def __init__(self, *, connect_timeout: float, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._fast = HTTPClient(connect_timeout=connect_timeout) if transport is None else None
        self._httpx = (
            None
            if transport is None
            else httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(None, connect=connect_timeout))
        )

    async def request(
        self, method: str, url: str, body: bytes = b"", headers: Mapping[str, str] | None = None
    ) -> Response:
        """The whole answer; ``HTTPError`` (with a readable message) when none came back."""
        pairs = list((headers or {}).items())
        if self._fast is not None:
            return await self._fast.request(method, url, body, pairs)
        assert self._httpx is not None
        try:
            answer = await self._httpx.request(method, url, content=body, headers=pairs)
        except httpx.TimeoutException as exc:
            raise Timeout(_describe(exc)) from None
        except httpx.ConnectError as exc:
            raise ConnectError(_describe(exc)) from None
        except (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError) as exc:
            raise ReadError(_describe(exc)) from None
        except httpx.HTTPError as exc:
            raise ProtocolError(_describe(exc)) from None
        return Response(answer.status_code, answer.reason_phrase, dict(answer.headers.items()), answer.content)

    async def aclose(self) -> None:
        if self._fast is not None:
            await self._fast.aclose()
        if self._httpx is not None:
            await self._httpx.aclose()


def _describe(exc: httpx.HTTPError) -> str:
    return str(exc) or type(exc).__name__
