"""The wire contract between the durable-proxy and the handler SDK.

Both sides import this module: the SDK owns it and the proxy follows it, so a
change here is a change of the protocol and must be reflected in
``docs/protocol.md``.

Evolution rules (msgspec's schema-evolution guide): a new field always has a
default, a field never changes type, and decoders never forbid unknown fields.
A change that breaks those rules bumps ``PROTOCOL_VERSION``, which is carried in
the content type of every message.

Messages
--------
* ``GET  {endpoint}/discover``                -> ``Manifest``
* ``POST {endpoint}/invoke/{service}/{handler}`` ``InvokeRequest`` -> ``InvokeResponse``
* ``POST {callback_url}/journal``              ``AppendRequest``  -> ``AppendAck`` | ``ErrorBody``
* ``POST {callback_url}/await``                ``AwaitRequest``   -> ``AwaitResponse`` | ``ErrorBody``

Payloads the proxy never interprets (handler input and output, step results)
are ``msgspec.Raw``: the proxy stores and forwards their bytes untouched.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Final, Generic, Literal, TypeVar

import msgspec

if TYPE_CHECKING:
    from typing_extensions import Buffer

T = TypeVar("T")

PROTOCOL_VERSION: Final = 1
MIN_PROTOCOL_VERSION: Final = 1
MAX_PROTOCOL_VERSION: Final = 1

INVOKE_CONTENT_TYPE: Final = f"application/vnd.durable.v{PROTOCOL_VERSION}+json"
MANIFEST_CONTENT_TYPE: Final = f"application/vnd.durable.manifest.v{PROTOCOL_VERSION}+json"

#: Error codes shared by both sides (the numbers follow Restate's service protocol).
JOURNAL_MISMATCH: Final = 570
PROTOCOL_VIOLATION: Final = 571

_NULL: Final = msgspec.Raw(b"null")


def parse_content_type_version(content_type: str | None) -> int | None:
    """The protocol version named by a ``application/vnd.durable.vN+json`` content type."""
    if not content_type:
        return None
    media = content_type.split(";", 1)[0].strip().lower()
    prefix, suffix = "application/vnd.durable.v", "+json"
    if not (media.startswith(prefix) and media.endswith(suffix)):
        return None
    digits = media[len(prefix) : -len(suffix)]
    # ASCII digits only: str.isdigit() also takes "²", which int() refuses, and no version has 10 digits.
    return int(digits) if digits.isascii() and digits.isdigit() and len(digits) < 10 else None


class Failure(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """An error as it crosses the wire: an HTTP-like status code and a message."""

    code: int = 500
    message: str
    #: Where the error came from, for operators; never shown to ingress clients.
    stacktrace: str | None = None


# --------------------------------------------------------------------------- journal


class Entry(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, tag_field="kind"):
    """One journal entry. Entries are appended in index order and never change."""

    name: str = ""


class Run(Entry, frozen=True, kw_only=True, tag="run"):
    """The outcome of a ``ctx.run`` step: a JSON ``result`` or a terminal ``failure``."""

    result: msgspec.Raw = _NULL
    failure: Failure | None = None


class Sleep(Entry, frozen=True, kw_only=True, tag="sleep"):
    """A durable timer: completed (with ``null``) by the proxy once ``wake_at_ms`` has passed."""

    wake_at_ms: int


class Call(Entry, frozen=True, kw_only=True, tag="call"):
    """A request-response call. The proxy starts the callee, whose id is
    ``callee_invocation_id(caller id, index)``, in the same transaction as this
    entry; the callee's result or failure becomes this entry's completion."""

    service: str
    handler: str
    key: str | None = None
    input: msgspec.Raw = _NULL


class Send(Entry, frozen=True, kw_only=True, tag="send"):
    """A one-way call, optionally delayed; durable once acknowledged. Never completed."""

    service: str
    handler: str
    key: str | None = None
    input: msgspec.Raw = _NULL
    delay_ms: int = 0


class Awakeable(Entry, frozen=True, kw_only=True, tag="awakeable"):
    """A promise the outside world completes through the ingress, by ``awakeable_id(invocation id, index)``."""


class Select(Entry, frozen=True, kw_only=True, tag="select"):
    """Which of several awaited entries won a race (``winner`` is its journal index), so replays pick it too."""

    winner: int


class Now(Entry, frozen=True, kw_only=True, tag="now"):
    """A reading of the clock, recorded so that replays see the same time."""

    now_ms: int


class Cancel(Entry, frozen=True, kw_only=True, tag="cancel"):
    """The handler observed a cancellation here: replays raise it at the same point.

    ``awaiting`` says which point. ``None``: the new action that took this
    index raised it instead of running. A list: an await of durable futures
    raised it, complete or not, and these are their journal indices (sorted,
    distinct). A replay raises a ``Cancel`` with ``awaiting`` at the await
    of exactly those futures that reaches this index, and one without at the
    new action that takes the index, whatever it asks for; a new action
    reaching a ``Cancel`` with ``awaiting`` is a journal mismatch.
    """

    awaiting: list[int] | None = None


# Keyed state (virtual objects and workflows). ``name`` is the state key.


class GetState(Entry, frozen=True, kw_only=True, tag="get_state"):
    """A read of one state key, with the value read (``found`` False: the key was not set)."""

    value: msgspec.Raw = _NULL
    found: bool = False


class GetStateKeys(Entry, frozen=True, kw_only=True, tag="get_state_keys"):
    """A read of the names of every state key that is set."""

    keys: list[str] = []


class SetState(Entry, frozen=True, kw_only=True, tag="set_state"):
    """Set a state key; the proxy applies it in the transaction that commits the entry."""

    value: msgspec.Raw = _NULL


class ClearState(Entry, frozen=True, kw_only=True, tag="clear_state"):
    """Remove a state key, in the transaction that commits the entry."""


class ClearAllState(Entry, frozen=True, kw_only=True, tag="clear_all_state"):
    """Remove every state key of the object or workflow, in the transaction that commits the entry."""


# Durable promises of a workflow. ``name`` is the promise name.


class GetPromise(Entry, frozen=True, kw_only=True, tag="get_promise"):
    """Wait for a promise: completed with its value (or failure) once it is resolved (or rejected)."""


class PeekPromise(Entry, frozen=True, kw_only=True, tag="peek_promise"):
    """Look at a promise without waiting: completed at once with ``{"resolved": bool, "value": ...}``,
    or with the failure of a rejected promise."""


class CompletePromise(Entry, frozen=True, kw_only=True, tag="complete_promise"):
    """Resolve (``value``) or reject (``failure``) a promise: completed at once with ``null``,
    or with a failure (409) if the promise was already completed."""

    value: msgspec.Raw = _NULL
    failure: Failure | None = None


JournalEntry = (
    Run
    | Sleep
    | Call
    | Send
    | Awakeable
    | Select
    | Now
    | Cancel
    | GetState
    | GetStateKeys
    | SetState
    | ClearState
    | ClearAllState
    | GetPromise
    | PeekPromise
    | CompletePromise
)

#: Kinds whose entries are completed by the proxy (the rest are complete when appended).
COMPLETABLE_KINDS: Final = frozenset({"sleep", "call", "awakeable", "get_promise", "peek_promise", "complete_promise"})
#: Kinds that change keyed state; only exclusive handlers (and a workflow's run) may append them.
STATE_WRITE_KINDS: Final = frozenset({"set_state", "clear_state", "clear_all_state"})


class Completion(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The result of a completable entry: JSON ``result`` or ``failure``, written once by the proxy."""

    index: int
    result: msgspec.Raw = _NULL
    failure: Failure | None = None


def entry_kind(entry: Entry) -> str:
    tag = type(entry).__struct_config__.tag
    assert isinstance(tag, str)
    return tag


_B32 = "0123456789abcdefghjkmnpqrstvwxyz"


def callee_invocation_id(invocation_id: str, index: int) -> str:
    """The id of the invocation started by the call or send at ``index``: the same on every replay."""
    digest = int.from_bytes(hashlib.sha256(f"{invocation_id}/{index}".encode()).digest()[:17], "big")
    chars = []
    for _ in range(26):
        chars.append(_B32[digest & 31])
        digest >>= 5
    return "inv_" + "".join(chars)


def awakeable_id(invocation_id: str, index: int) -> str:
    """The public id of the awakeable at ``index``, as handed to whoever will resolve it."""
    return f"awk_{invocation_id.removeprefix('inv_')}_{index}"


def parse_awakeable_id(value: str) -> tuple[str, int] | None:
    """(invocation id, journal index) of an awakeable id, or None if it is not one."""
    if not value.startswith("awk_"):
        return None
    body, _, index = value[4:].rpartition("_")
    if not body or not (index.isascii() and index.isdigit()) or len(index) > 9:
        return None
    return "inv_" + body, int(index)


# --------------------------------------------------------------------------- discovery


ServiceKind = Literal["service", "object", "workflow"]
#: ``exclusive``: one at a time per key, may write state. ``shared``: concurrent, reads only.
#: ``workflow``: a workflow's ``run``, once per key. Handlers of a plain service have no kind.
HandlerKind = Literal["exclusive", "shared", "workflow"]


class HandlerManifest(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    kind: HandlerKind | None = None
    input_schema: dict[str, object] | None = None
    output_schema: dict[str, object] | None = None
    #: False when the handler takes no argument besides the context.
    takes_input: bool = True


class ServiceManifest(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    kind: ServiceKind = "service"
    handlers: list[HandlerManifest] = []


class Manifest(msgspec.Struct, frozen=True, kw_only=True):
    min_protocol_version: int = MIN_PROTOCOL_VERSION
    max_protocol_version: int = MAX_PROTOCOL_VERSION
    sdk: str = ""
    services: list[ServiceManifest] = []


# --------------------------------------------------------------------------- invoke


class InvokeRequest(msgspec.Struct, frozen=True, kw_only=True):
    """Sent by the proxy to start one attempt of an invocation.

    ``journal`` holds the encoded entries recorded so far, in index order; the
    SDK replays them before running anything new. ``attempt`` and ``token``
    authorise appends for this attempt only.
    """

    invocation_id: str
    service: str
    handler: str
    attempt: int
    token: str
    #: Base URL of this invocation's callbacks: ``{callback_url}/journal`` and ``{callback_url}/await``.
    callback_url: str
    input: msgspec.Raw = _NULL
    journal: list[msgspec.Raw] = []
    #: Completions of completable entries in ``journal`` (any order).
    completions: list[Completion] = []
    key: str | None = None
    #: Seeds ``ctx.random()`` and ``ctx.uuid4()``: the same for every attempt of the invocation.
    random_seed: int = 0
    headers: dict[str, str] = {}
    #: The invocation was cancelled: the handler raises at its next journaled action or await (``Cancel``).
    cancelled: bool = False
    #: The committed state of the object or workflow key (``key``), for keyed handlers.
    state: dict[str, msgspec.Raw] = {}


class Completed(msgspec.Struct, frozen=True, kw_only=True, tag_field="status", tag="completed"):
    """The handler returned; ``output`` is its JSON result."""

    output: msgspec.Raw = _NULL


class Failed(msgspec.Struct, frozen=True, kw_only=True, tag_field="status", tag="failed"):
    """The handler raised a terminal error: the invocation ends failed, no retry."""

    failure: Failure


class Retry(msgspec.Struct, frozen=True, kw_only=True, tag_field="status", tag="retry"):
    """The attempt failed with a transient error: the proxy retries the invocation."""

    failure: Failure
    retry_after_ms: int | None = None


class Suspended(msgspec.Struct, frozen=True, kw_only=True, tag_field="status", tag="suspended"):
    """The handler waits for one of ``waiting_on`` (journal indices) to complete.

    The proxy re-invokes it, with the longer journal, as soon as any of them is
    completed; an empty list means "re-invoke me now" (the always-replay test mode).
    """

    waiting_on: list[int] = []


InvokeResponse = Completed | Failed | Retry | Suspended


# --------------------------------------------------------------------------- callbacks


class AppendRequest(msgspec.Struct, frozen=True, kw_only=True):
    """A new journal entry reported by an attempt; acknowledged only once committed."""

    attempt: int
    token: str
    index: int
    entry: msgspec.Raw


class AppendAck(msgspec.Struct, frozen=True, kw_only=True):
    index: int
    #: The invocation was cancelled meanwhile: the handler raises at its next journaled action or await.
    cancelled: bool = False
    #: The completion of this entry when the proxy completed it in the same commit
    #: (a promise peek or completion, a call that could not start).
    completion: Completion | None = None


class AwaitRequest(msgspec.Struct, frozen=True, kw_only=True):
    """Wait up to ``timeout_ms`` for any of ``indices`` to complete, instead of suspending at once."""

    attempt: int
    token: str
    indices: list[int]
    timeout_ms: int


class AwaitResponse(msgspec.Struct, frozen=True, kw_only=True):
    """The completions of the awaited indices that exist now (empty if the wait timed out)."""

    completions: list[Completion] = []
    cancelled: bool = False


class ErrorBody(msgspec.Struct, frozen=True, kw_only=True):
    """The body of every 4xx/5xx answer of the proxy and the SDK endpoint."""

    code: str
    message: str


# --------------------------------------------------------------------------- codecs


class Decoder(Generic[T]):
    """A ``msgspec.json.Decoder`` whose only failure is ``msgspec.DecodeError``.

    msgspec raises ``RecursionError`` for JSON nested deeper than the interpreter's
    recursion limit allows, and ``UnicodeDecodeError`` for a string that is not
    UTF-8. What a peer sends must never become an internal error of the side that
    reads it, so those are reported as the invalid input they are.
    """

    __slots__ = ("_decoder",)

    def __init__(self, decoder: msgspec.json.Decoder[T]) -> None:
        self._decoder = decoder

    def decode(self, data: Buffer | str) -> T:
        try:
            return self._decoder.decode(data)
        except RecursionError:
            raise msgspec.DecodeError("JSON nested too deeply") from None
        except UnicodeDecodeError as exc:
            raise msgspec.DecodeError(f"JSON is malformed: a string is not UTF-8 ({exc.reason})") from None


#: The deepest nesting of arrays and objects in a JSON value that the proxy takes from a client or a
#: handler and turns into Python values (a handler's input, an awakeable's result, a call's input).
#: Far below the interpreter's recursion limit, so that anything accepted can be validated against a
#: recursive schema and encoded again without a ``RecursionError``.
MAX_JSON_DEPTH: Final = 100


class ValueDecoder(Decoder[object]):
    """Any JSON value, nested at most ``MAX_JSON_DEPTH`` deep; ``msgspec.DecodeError`` otherwise."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(msgspec.json.Decoder())

    def decode(self, data: Buffer | str) -> object:
        value = super().decode(data)
        # Fewer brackets than the limit cannot nest deeper than it: no walk (the common case).
        if _brackets(data) > MAX_JSON_DEPTH and _deeper_than(value, MAX_JSON_DEPTH):
            raise msgspec.DecodeError(f"JSON nested too deeply: at most {MAX_JSON_DEPTH} levels of arrays and objects")
        return value


def _brackets(data: Buffer | str) -> int:
    if isinstance(data, str):
        return data.count("[") + data.count("{")
    raw = data if isinstance(data, bytes) else bytes(data)
    return raw.count(b"[") + raw.count(b"{")


def _deeper_than(value: object, limit: int) -> bool:
    """Whether arrays and objects nest more than ``limit`` deep in ``value`` (without recursing)."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


class ManifestDecoder(Decoder[Manifest]):
    """A ``Manifest`` whose schemas nest at most ``MAX_JSON_DEPTH`` deep; ``msgspec.DecodeError`` otherwise."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(msgspec.json.Decoder(Manifest))

    def decode(self, data: Buffer | str) -> Manifest:
        manifest = super().decode(data)
        if _brackets(data) > MAX_JSON_DEPTH:
            for service in manifest.services:
                for handler in service.handlers:
                    for schema in (handler.input_schema, handler.output_schema):
                        if _deeper_than(schema, MAX_JSON_DEPTH):
                            raise msgspec.DecodeError(
                                f"the schema of {service.name}/{handler.name} is nested too deeply: "
                                f"at most {MAX_JSON_DEPTH} levels of arrays and objects"
                            )
        return manifest


json_encoder: Final = msgspec.json.Encoder()
#: Any JSON value (a handler's input or output, a step's result), at most ``MAX_JSON_DEPTH`` deep.
json_value_decoder: Final[Decoder[object]] = ValueDecoder()
entry_decoder: Final[Decoder[JournalEntry]] = Decoder(msgspec.json.Decoder(JournalEntry))
manifest_decoder: Final = ManifestDecoder()
invoke_request_decoder: Final = Decoder(msgspec.json.Decoder(InvokeRequest))
invoke_response_decoder: Final[Decoder[InvokeResponse]] = Decoder(msgspec.json.Decoder(InvokeResponse))
append_request_decoder: Final = Decoder(msgspec.json.Decoder(AppendRequest))
append_ack_decoder: Final = Decoder(msgspec.json.Decoder(AppendAck))
await_request_decoder: Final = Decoder(msgspec.json.Decoder(AwaitRequest))
await_response_decoder: Final = Decoder(msgspec.json.Decoder(AwaitResponse))
error_body_decoder: Final = Decoder(msgspec.json.Decoder(ErrorBody))
