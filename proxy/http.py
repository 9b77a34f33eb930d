"""Small HTTP helpers shared by the ingress, admin and callback apps."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from handler_sdk.protocol import ErrorBody, json_encoder, json_value_decoder

from .errors import BadRequest, PayloadTooLarge, ProxyError

JSON = "application/json"


def json_response(value: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json_encoder.encode(value), status_code=status_code, media_type=JSON, headers=headers)


def raw_json_response(body: bytes, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(body, status_code=status_code, media_type=JSON, headers=headers)


def error_response(error: ProxyError, headers: dict[str, str] | None = None) -> Response:
    return json_response(ErrorBody(code=error.code, message=error.message), error.status_code, headers)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, or ``PayloadTooLarge`` as soon as it passes ``limit`` bytes."""
    return await read_asgi_body(request.scope, request.receive, limit)


async def read_asgi_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The body of an ASGI request, or ``PayloadTooLarge`` as soon as it passes ``limit`` bytes."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            # ASCII digits only; past 18 digits it is over any limit, and int() may refuse it.
            if value.isdigit() and (len(value) > 18 or int(value) > limit):
                raise PayloadTooLarge(f"request body of {value.decode()} bytes exceeds the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise BadRequest("the client went away before sending the whole body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def decode_json(body: bytes, what: str = "request body") -> Any:
    try:
        return json_value_decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise BadRequest(f"{what} is not valid JSON: {exc}") from None


Endpoint = Callable[[Request], Awaitable[Response]]


def handle_errors(endpoint: Endpoint) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """Turn an endpoint into an ASGI app that answers ``ProxyError`` as a JSON error."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        try:
            response = await endpoint(request)
        except ProxyError as exc:
            response = error_response(exc)
        await response(scope, receive, send)

    return app
