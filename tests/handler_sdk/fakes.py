"""A scripted stand-in for the proxy's callbacks, request builders, and a manual clock."""

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import httpx
import msgspec
from starlette.types import ASGIApp

from handler_sdk.protocol import (
    INVOKE_CONTENT_TYPE,
    AppendAck,
    AppendRequest,
    AwaitRequest,
    AwaitResponse,
    Completed,
    Completion,
    ErrorBody,
    Failure,
    InvokeRequest,
    InvokeResponse,
    JournalEntry,
    Run,
    Suspended,
    append_request_decoder,
    await_request_decoder,
    entry_decoder,
    invoke_response_decoder,
    json_encoder,
)
from handler_sdk.serde import encode_json

CALLBACK_URL = "http://proxy.test/callbacks/inv-1"
START_MS = 1_700_000_000_000

#: What the fake proxy does with one append: answer this status, or raise this error.
Action = int | httpx.TransportError
#: What the fake proxy answers to one wait: a response, a status, or a transport error.
AwaitAction = AwaitResponse | int | httpx.TransportError


class FakeProxy:
    """Acks appends like the proxy, unless ``script`` says otherwise for the next ones.

    Waits (``/await``) are answered at once from ``await_script``, or with an
    empty (timed out) response once it is used up. ``cancelled`` is reported
    in every ack and every answer to a wait.
    """

    def __init__(self) -> None:
        self.appends: list[AppendRequest] = []
        self.received: list[AppendRequest] = []
        self.content_types: list[str] = []
        self.script: list[Action] = []
        self.before_ack: Callable[[AppendRequest], Awaitable[None]] | None = None
        self.awaits: list[AwaitRequest] = []
        self.await_script: list[AwaitAction] = []
        self.cancelled = False
        self.transport = httpx.MockTransport(self._handle)

    async def _handle(self, request: httpx.Request) -> httpx.Response:
        assert request.url.host == "proxy.test"
        if request.url.path.endswith("/await"):
            return self._wait(request)
        assert request.url.path.endswith("/journal"), request.url
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
        ack = AppendAck(index=append.index, cancelled=self.cancelled)
        return httpx.Response(200, content=json_encoder.encode(ack))

    def _wait(self, request: httpx.Request) -> httpx.Response:
        self.awaits.append(await_request_decoder.decode(request.content))
        action: AwaitAction = self.await_script.pop(0) if self.await_script else AwaitResponse()
        if isinstance(action, httpx.TransportError):
            raise action
        if isinstance(action, int):
            body = ErrorBody(code="scripted", message=f"scripted answer {action}")
            return httpx.Response(action, content=json_encoder.encode(body))
        if self.cancelled:
            action = AwaitResponse(completions=action.completions, cancelled=True)
        return httpx.Response(200, content=json_encoder.encode(action))

    @property
    def entries(self) -> list[JournalEntry]:
        """The committed entries, decoded."""
        return [entry_decoder.decode(append.entry) for append in self.appends]

    @property
    def indices(self) -> list[int]:
        return [append.index for append in self.appends]

    @property
    def journal(self) -> list[msgspec.Raw]:
        """The committed entries as the proxy would send them back in the next ``InvokeRequest``."""
        return [msgspec.Raw(append.entry) for append in self.appends]


class ManualClock:
    """A clock that moves only when told to."""

    def __init__(self, now_ms: int = START_MS) -> None:
        self.now = now_ms

    def now_ms(self) -> int:
        return self.now


def recorded(entry: JournalEntry) -> msgspec.Raw:
    """Any journal entry as the proxy would send it back."""
    return msgspec.Raw(json_encoder.encode(entry))


def completion(index: int, result: Any = None, *, failure: Failure | None = None) -> Completion:
    """The completion of the entry at ``index``: a JSON result, or a failure."""
    if failure is not None:
        return Completion(index=index, failure=failure)
    return Completion(index=index, result=msgspec.Raw(encode_json(result)))


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
    completions: Sequence[Completion] = (),
    cancelled: bool = False,
    random_seed: int = 0,
    invocation_id: str = "inv-1",
    attempt: int = 1,
    token: str = "token-1",
    headers: dict[str, str] | None = None,
) -> InvokeRequest:
    return InvokeRequest(
        invocation_id=invocation_id,
        service=service,
        handler=handler,
        attempt=attempt,
        token=token,
        callback_url=CALLBACK_URL,
        input=msgspec.Raw(raw_input if raw_input is not None else encode_json(input)),
        journal=list(journal),
        completions=list(completions),
        cancelled=cancelled,
        random_seed=random_seed,
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


async def replay_until_done(
    app: ASGIApp,
    service: str,
    handler: str,
    proxy: FakeProxy,
    *,
    completions: Sequence[Completion] = (),
    max_attempts: int = 50,
    **fields: Any,
) -> list[InvokeResponse]:
    """Invoke like the proxy: re-invoke with the committed journal while the attempt suspends.

    A suspension on indices goes on only once one of them has a completion in
    ``completions``; the responses of all attempts are returned.
    """
    responses: list[InvokeResponse] = []
    for attempt in range(1, max_attempts + 1):
        committed = len(proxy.appends)
        known = [c for c in completions if c.index < committed]
        response = await invoke(
            app, service, handler, journal=proxy.journal, completions=known, attempt=attempt, **fields
        )
        responses.append(response)
        if not isinstance(response, Suspended):
            return responses
        available = {c.index for c in completions}
        if response.waiting_on and not available.intersection(response.waiting_on):
            return responses
    raise AssertionError(f"still suspended after {max_attempts} attempts: {responses[-1]}")


def output(response: InvokeResponse) -> Any:
    """The decoded output of a completed attempt."""
    assert isinstance(response, Completed), response
    return msgspec.json.decode(response.output)
