"""A scripted stand-in for the proxy's callback endpoint, and request builders."""

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import httpx
import msgspec
from starlette.types import ASGIApp

from handler_sdk.protocol import (
    INVOKE_CONTENT_TYPE,
    AppendAck,
    AppendRequest,
    ErrorBody,
    Failure,
    InvokeRequest,
    InvokeResponse,
    Run,
    append_request_decoder,
    entry_decoder,
    invoke_response_decoder,
    json_encoder,
)
from handler_sdk.serde import encode_json

CALLBACK_URL = "http://proxy.test/callbacks/inv-1"

#: What the fake proxy does with one append: answer this status, or raise this error.
Action = int | httpx.TransportError


class FakeProxy:
    """Acks appends like the proxy, unless ``script`` says otherwise for the next ones."""

    def __init__(self) -> None:
        self.appends: list[AppendRequest] = []
        self.received: list[AppendRequest] = []
        self.content_types: list[str] = []
        self.script: list[Action] = []
        self.before_ack: Callable[[AppendRequest], Awaitable[None]] | None = None
        self.transport = httpx.MockTransport(self._handle)

    async def _handle(self, request: httpx.Request) -> httpx.Response:
        append = append_request_decoder.decode(request.content)
        self.received.append(append)
        self.content_types.append(request.headers["content-type"])
        if self.script:
            action = self.script.pop(0)
            if isinstance(action, httpx.TransportError):
                raise action
            if action != 200:
                body = ErrorBody(code="scripted", message=f"scripted answer {action}")
                return httpx.Response(action, content=json_encoder.encode(body))
        if self.before_ack is not None:
            await self.before_ack(append)
        self.appends.append(append)
        return httpx.Response(200, content=json_encoder.encode(AppendAck(index=append.index)))

    @property
    def entries(self) -> list[Run]:
        """The committed entries, decoded."""
        return [entry_decoder.decode(append.entry) for append in self.appends]

    @property
    def indices(self) -> list[int]:
        return [append.index for append in self.appends]


def recorded_run(name: str, result: Any = None, *, failure: Failure | None = None) -> msgspec.Raw:
    """A journal entry as the proxy would send it back."""
    if failure is not None:
        entry = Run(name=name, failure=failure)
    else:
        entry = Run(name=name, result=msgspec.Raw(encode_json(result)))
    return msgspec.Raw(json_encoder.encode(entry))


def invoke_request(
    service: str,
    handler: str,
    *,
    input: Any = None,
    raw_input: bytes | None = None,
    journal: Sequence[msgspec.Raw] = (),
    attempt: int = 1,
    token: str = "token-1",
    headers: dict[str, str] | None = None,
) -> InvokeRequest:
    return InvokeRequest(
        invocation_id="inv-1",
        service=service,
        handler=handler,
        attempt=attempt,
        token=token,
        callback_url=CALLBACK_URL,
        input=msgspec.Raw(raw_input if raw_input is not None else encode_json(input)),
        journal=list(journal),
        headers=headers or {},
    )


async def post_invoke(
    app: ASGIApp,
    request: InvokeRequest,
    *,
    prefix: str = "",
    content_type: str = INVOKE_CONTENT_TYPE,
) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sdk.test") as client:
        return await client.post(
            f"{prefix}/invoke/{request.service}/{request.handler}",
            content=json_encoder.encode(request),
            headers={"content-type": content_type},
        )


async def invoke(app: ASGIApp, service: str, handler: str, *, prefix: str = "", **fields: Any) -> InvokeResponse:
    """Run one attempt through the ASGI app and decode its ``InvokeResponse``."""
    response = await post_invoke(app, invoke_request(service, handler, **fields), prefix=prefix)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == INVOKE_CONTENT_TYPE
    decoded: InvokeResponse = invoke_response_decoder.decode(response.content)
    return decoded
