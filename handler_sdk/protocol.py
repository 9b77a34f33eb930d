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
* ``POST {callback_url}``                      ``AppendRequest``  -> ``AppendAck`` | ``ErrorBody``

Payloads the proxy never interprets (handler input and output, step results)
are ``msgspec.Raw``: the proxy stores and forwards their bytes untouched.
"""

from __future__ import annotations

from typing import Final, Literal

import msgspec

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
    return int(digits) if digits.isdigit() else None


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


JournalEntry = Run

# --------------------------------------------------------------------------- discovery


class HandlerManifest(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    input_schema: dict[str, object] | None = None
    output_schema: dict[str, object] | None = None
    #: False when the handler takes no argument besides the context.
    takes_input: bool = True


class ServiceManifest(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    kind: Literal["service"] = "service"
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
    callback_url: str
    input: msgspec.Raw = _NULL
    journal: list[msgspec.Raw] = []
    key: str | None = None
    random_seed: int = 0
    headers: dict[str, str] = {}


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


InvokeResponse = Completed | Failed | Retry


# --------------------------------------------------------------------------- callbacks


class AppendRequest(msgspec.Struct, frozen=True, kw_only=True):
    """A new journal entry reported by an attempt; acknowledged only once committed."""

    attempt: int
    token: str
    index: int
    entry: msgspec.Raw


class AppendAck(msgspec.Struct, frozen=True, kw_only=True):
    index: int


class ErrorBody(msgspec.Struct, frozen=True, kw_only=True):
    """The body of every 4xx/5xx answer of the proxy and the SDK endpoint."""

    code: str
    message: str


# --------------------------------------------------------------------------- codecs

json_encoder: Final = msgspec.json.Encoder()
entry_decoder: Final = msgspec.json.Decoder(JournalEntry)
manifest_decoder: Final = msgspec.json.Decoder(Manifest)
invoke_request_decoder: Final = msgspec.json.Decoder(InvokeRequest)
invoke_response_decoder: Final = msgspec.json.Decoder(InvokeResponse)
append_request_decoder: Final = msgspec.json.Decoder(AppendRequest)
append_ack_decoder: Final = msgspec.json.Decoder(AppendAck)
error_body_decoder: Final = msgspec.json.Decoder(ErrorBody)
