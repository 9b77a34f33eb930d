"""The callback endpoint: where a running attempt appends its journal entries.

``POST /_durable/v1/invocations/{id}/journal`` with an ``AppendRequest``. The
entry is acknowledged (200, ``AppendAck``) only after it is committed, and the
handler goes on only after the ack. The token must be the one the proxy gave
this attempt, and the store fences the write: an attempt that is no longer the
current one is answered 409 and writes nothing.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from handler_sdk.protocol import (
    AppendAck,
    append_request_decoder,
    entry_decoder,
    parse_content_type_version,
)

from .errors import BadRequest, Conflict, Forbidden, MethodNotAllowed, NotFound, UnsupportedMediaType
from .http import json_response, read_body

if TYPE_CHECKING:
    from .app import Runtime

log = logging.getLogger("durable_proxy.callbacks")


class Callbacks:
    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime
        #: Appends refused because their attempt was superseded (for operators and tests).
        self.fenced_appends = 0

    async def handle(self, request: Request, parts: list[str]) -> Response:
        if len(parts) != 5 or parts[1] != "v1" or parts[2] != "invocations" or parts[4] != "journal":
            raise NotFound(f"no callback route for {request.url.path}")
        if request.method != "POST":
            raise MethodNotAllowed("use POST to append journal entries")
        version = parse_content_type_version(request.headers.get("content-type"))
        if version != 1:
            raise UnsupportedMediaType(
                f"content-type '{request.headers.get('content-type')}' is not a protocol version this proxy speaks (1)"
            )
        invocation_id = parts[3]
        rt = self._rt
        body = await read_body(request, rt.settings.max_body_bytes)
        try:
            append = append_request_decoder.decode(body)
            entry = entry_decoder.decode(append.entry)
        except msgspec.DecodeError as exc:
            raise BadRequest(f"invalid append request: {exc}", code="protocol_violation") from None
        if append.index < 0 or append.attempt < 1:
            raise BadRequest("index must be >= 0 and attempt >= 1", code="protocol_violation")
        if not rt.signer.verify(invocation_id, append.attempt, append.token):
            raise Forbidden(f"the token does not authorise attempt {append.attempt} of {invocation_id}")
        kind = type(entry).__struct_config__.tag
        assert isinstance(kind, str)
        outcome = await rt.store.append(
            invocation_id, append.attempt, append.index, kind, entry.name, bytes(append.entry), rt.clock.now_ms()
        )
        match outcome:
            case "appended" | "duplicate":
                rt.invoker.touch(invocation_id, append.attempt)
                return json_response(AppendAck(index=append.index))
            case "fenced":
                self.fenced_appends += 1
                log.warning(
                    "rejected an append from superseded attempt %d of %s (index %d)",
                    append.attempt,
                    invocation_id,
                    append.index,
                )
                raise Conflict(
                    f"attempt {append.attempt} of {invocation_id} is no longer the running attempt", code="fenced"
                )
            case "gap":
                raise Conflict(f"index {append.index} of {invocation_id} leaves a gap in the journal", code="gap")
            case "conflict":
                raise Conflict(
                    f"index {append.index} of {invocation_id} already holds a different entry", code="conflict"
                )
            case "not_found":
                raise NotFound(f"invocation {invocation_id} not found", code="invocation_not_found")
