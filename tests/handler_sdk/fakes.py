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
    ClearAllState,
    ClearState,
    Completed,
    CompletePromise,
    Completion,
    ErrorBody,
    Failure,
    GetPromise,
    InvokeRequest,
    InvokeResponse,
    JournalEntry,
    PeekPromise,
    Run,
    SetState,
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

    Waits (``/await``) are answered at once from ``await_script``, or, once it
    is used up, with the completions the fake wrote itself for the awaited
    indices (often none: a timed-out wait). ``cancelled`` is reported in
    every ack and every answer to a wait.

    Like the proxy, it applies state writes to ``state`` (the committed state
    of the one key it serves) and keeps the workflow's ``promises``
    (name -> completion), completing promise entries in the ack when the
    proxy would: a peek or a completion always, a ``get_promise`` when the
    promise is already completed. ``completions`` holds every completion it
    wrote, by index.
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
        self.state: dict[str, msgspec.Raw] = {}
        self.promises: dict[str, Completion] = {}
        self.completions: dict[int, Completion] = {}
        #: Completions to write in the ack of the append at their index (e.g. a call that cannot start).
        self.complete_in_ack: dict[int, Completion] = {}
        #: Journal indices of ``get_promise`` entries waiting for their promise, by promise name.
        self._promise_waiters: dict[str, list[int]] = {}
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
        done = self._commit(append.index, entry_decoder.decode(append.entry))
        ack = AppendAck(index=append.index, cancelled=self.cancelled, completion=done)
        return httpx.Response(200, content=json_encoder.encode(ack))

    def _commit(self, index: int, entry: JournalEntry) -> Completion | None:
        """Apply what the proxy applies with ``entry``; the completion it writes in the same commit, if any."""
        if index in self.complete_in_ack:
            return self._complete(index, self.complete_in_ack[index])
        if isinstance(entry, SetState):
            self.state[entry.name] = msgspec.Raw(bytes(entry.value))
        elif isinstance(entry, ClearState):
            self.state.pop(entry.name, None)
        elif isinstance(entry, ClearAllState):
            self.state.clear()
        elif isinstance(entry, GetPromise):
            if entry.name not in self.promises:
                self._promise_waiters.setdefault(entry.name, []).append(index)
                return None
            return self._complete(index, self.promises[entry.name])
        elif isinstance(entry, PeekPromise):
            promise = self.promises.get(entry.name)
            if promise is None:
                return self._complete(index, completion(index, {"resolved": False}))
            if promise.failure is not None:
                return self._complete(index, promise)
            peeked = b'{"resolved":true,"value":' + bytes(promise.result) + b"}"
            return self._complete(index, Completion(index=index, result=msgspec.Raw(peeked)))
        elif isinstance(entry, CompletePromise):
            if entry.name in self.promises:
                failure = Failure(code=409, message=f"promise '{entry.name}' is already completed")
                return self._complete(index, completion(index, failure=failure))
            self.resolve_promise(entry.name, entry.value, failure=entry.failure)
            return self._complete(index, completion(index))
        return None

    def resolve_promise(self, name: str, value: Any = None, *, failure: Failure | None = None) -> None:
        """Complete a promise from outside (``value`` is JSON-encoded unless it is raw), as another handler would."""
        raw = value if isinstance(value, msgspec.Raw) else msgspec.Raw(encode_json(value))
        self.promises[name] = Completion(index=-1, result=raw, failure=failure)
        for waiter in self._promise_waiters.pop(name, []):
            self._complete(waiter, self.promises[name])

    def _complete(self, index: int, done: Completion) -> Completion:
        done = Completion(index=index, result=done.result, failure=done.failure)
        self.completions[index] = done
        return done

    def _wait(self, request: httpx.Request) -> httpx.Response:
        self.awaits.append(await_request_decoder.decode(request.content))
        if self.await_script:
            action: AwaitAction = self.await_script.pop(0)
        else:
            indices = self.awaits[-1].indices
            action = AwaitResponse(completions=[self.completions[i] for i in indices if i in self.completions])
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
    key: str | None = None,
    state: dict[str, Any] | None = None,
) -> InvokeRequest:
    """An ``InvokeRequest``; ``state`` values are JSON-encoded unless they are already raw."""
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
        key=key,
        state={name: _raw(value) for name, value in (state or {}).items()},
    )


def _raw(value: Any) -> msgspec.Raw:
    return value if isinstance(value, msgspec.Raw) else msgspec.Raw(encode_json(value))


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

    Each attempt gets the committed state of ``proxy`` and the completions it
    wrote. A suspension on indices goes on only once one of them has a
    completion (in ``completions`` or written by the fake); the responses of
    all attempts are returned.
    """
    responses: list[InvokeResponse] = []
    for attempt in range(1, max_attempts + 1):
        committed = len(proxy.appends)
        known = [c for c in [*completions, *proxy.completions.values()] if c.index < committed]
        response = await invoke(
            app,
            service,
            handler,
            journal=proxy.journal,
            completions=known,
            attempt=attempt,
            state=dict(proxy.state),
            **fields,
        )
        responses.append(response)
        if not isinstance(response, Suspended):
            return responses
        available = {c.index for c in completions} | set(proxy.completions)
        if response.waiting_on and not available.intersection(response.waiting_on):
            return responses
    raise AssertionError(f"still suspended after {max_attempts} attempts: {responses[-1]}")


def output(response: InvokeResponse) -> Any:
    """The decoded output of a completed attempt."""
    assert isinstance(response, Completed), response
    return msgspec.json.decode(response.output)
