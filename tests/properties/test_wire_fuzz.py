"""Fuzzing the wire decoders of ``handler_sdk.protocol`` and the small parsers of ids and headers.

Both sides of the protocol decode bytes they did not write: the proxy decodes
appends and awaits from anyone who can reach its callback routes (before it
checks their token), the SDK decodes what the proxy sends. A decoder must
therefore answer anything with a message or a ``msgspec.DecodeError``
(``msgspec.ValidationError`` is one), never another exception:

* arbitrary bytes, and arbitrary JSON values;
* every message built from its fields round-trips through encode and decode;
* valid messages mutated structurally (negative and huge numbers, wrong types,
  unknown kinds, deep nesting, long strings, NaN and Infinity, missing and
  unknown fields) decode into a message of the right type or raise ``DecodeError``.
"""

from __future__ import annotations

import math
from typing import Any, get_args

import hypothesis.strategies as st
import msgspec
import pytest
from hypothesis import event, example, given

from handler_sdk import protocol
from handler_sdk.protocol import (
    AppendAck,
    AppendRequest,
    AwaitRequest,
    AwaitResponse,
    Awakeable,
    Call,
    Cancel,
    ClearAllState,
    ClearState,
    Completed,
    CompletePromise,
    Completion,
    ErrorBody,
    Failed,
    Failure,
    GetPromise,
    GetState,
    GetStateKeys,
    HandlerManifest,
    InvokeRequest,
    Manifest,
    Now,
    PeekPromise,
    Retry,
    Run,
    Select,
    Send,
    ServiceManifest,
    SetState,
    Sleep,
    Suspended,
    json_encoder,
)
from handler_sdk.signing import SignatureError, SignatureVerifier, key_id
from proxy.errors import BadRequest
from proxy.submission import MAX_DELAY_MS, parse_delay_ms
from proxy.tokens import TokenSigner
from tests.properties import examples

# --------------------------------------------------------------------------- strategies of valid messages

#: The integers msgspec encodes and decodes as ``int`` (int64 and uint64).
INTS = st.integers(min_value=-(2**63), max_value=2**64 - 1)
TEXT = st.text(max_size=20)
JSON_VALUES: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | INTS | st.floats(allow_nan=False, allow_infinity=False) | TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(TEXT, children, max_size=4),
    max_leaves=12,
)
RAWS = JSON_VALUES.map(lambda value: msgspec.Raw(msgspec.json.encode(value)))
FAILURES = st.builds(Failure, code=INTS, message=TEXT, stacktrace=st.none() | TEXT)
NAMES = st.sampled_from(["", "step", "ünï", "a/b"]) | TEXT
INDICES = st.lists(INTS, max_size=5)

ENTRIES = st.one_of(
    st.builds(Run, name=NAMES, result=RAWS, failure=st.none() | FAILURES),
    st.builds(Sleep, name=NAMES, wake_at_ms=INTS),
    st.builds(Call, name=NAMES, service=TEXT, handler=TEXT, key=st.none() | TEXT, input=RAWS),
    st.builds(Send, name=NAMES, service=TEXT, handler=TEXT, key=st.none() | TEXT, input=RAWS, delay_ms=INTS),
    st.builds(Awakeable, name=NAMES),
    st.builds(Select, name=NAMES, winner=INTS),
    st.builds(Now, name=NAMES, now_ms=INTS),
    st.builds(Cancel, name=NAMES, awaiting=st.none() | INDICES),
    st.builds(GetState, name=NAMES, value=RAWS, found=st.booleans()),
    st.builds(GetStateKeys, name=NAMES, keys=st.lists(TEXT, max_size=4)),
    st.builds(SetState, name=NAMES, value=RAWS),
    st.builds(ClearState, name=NAMES),
    st.builds(ClearAllState, name=NAMES),
    st.builds(GetPromise, name=NAMES),
    st.builds(PeekPromise, name=NAMES),
    st.builds(CompletePromise, name=NAMES, value=RAWS, failure=st.none() | FAILURES),
)
COMPLETIONS = st.builds(Completion, index=INTS, result=RAWS, failure=st.none() | FAILURES)
SCHEMAS = st.none() | st.dictionaries(TEXT, JSON_VALUES, max_size=3)
MANIFESTS = st.builds(
    Manifest,
    min_protocol_version=INTS,
    max_protocol_version=INTS,
    sdk=TEXT,
    services=st.lists(
        st.builds(
            ServiceManifest,
            name=TEXT,
            kind=st.sampled_from(["service", "object", "workflow"]),
            handlers=st.lists(
                st.builds(
                    HandlerManifest,
                    name=TEXT,
                    kind=st.sampled_from([None, "exclusive", "shared", "workflow"]),
                    input_schema=SCHEMAS,
                    output_schema=SCHEMAS,
                    takes_input=st.booleans(),
                ),
                max_size=3,
            ),
        ),
        max_size=3,
    ),
)
INVOKE_REQUESTS = st.builds(
    InvokeRequest,
    invocation_id=TEXT,
    service=TEXT,
    handler=TEXT,
    attempt=INTS,
    token=TEXT,
    callback_url=TEXT,
    input=RAWS,
    journal=st.lists(ENTRIES.map(lambda entry: msgspec.Raw(json_encoder.encode(entry))), max_size=4),
    completions=st.lists(COMPLETIONS, max_size=3),
    key=st.none() | TEXT,
    random_seed=INTS,
    headers=st.dictionaries(TEXT, TEXT, max_size=3),
    cancelled=st.booleans(),
    state=st.dictionaries(TEXT, RAWS, max_size=3),
)
INVOKE_RESPONSES = st.one_of(
    st.builds(Completed, output=RAWS),
    st.builds(Failed, failure=FAILURES),
    st.builds(Retry, failure=FAILURES, retry_after_ms=st.none() | INTS),
    st.builds(Suspended, waiting_on=INDICES),
)

#: Every module-level decoder of the protocol, with what it decodes and how to build valid messages of it.
DECODERS: dict[str, tuple[Any, st.SearchStrategy[Any]]] = {
    "json_value_decoder": (protocol.json_value_decoder, JSON_VALUES),
    "entry_decoder": (protocol.entry_decoder, ENTRIES),
    "manifest_decoder": (protocol.manifest_decoder, MANIFESTS),
    "invoke_request_decoder": (protocol.invoke_request_decoder, INVOKE_REQUESTS),
    "invoke_response_decoder": (protocol.invoke_response_decoder, INVOKE_RESPONSES),
    "append_request_decoder": (
        protocol.append_request_decoder,
        st.builds(
            AppendRequest,
            attempt=INTS,
            token=TEXT,
            index=INTS,
            entry=ENTRIES.map(lambda entry: msgspec.Raw(json_encoder.encode(entry))),
        ),
    ),
    "append_ack_decoder": (
        protocol.append_ack_decoder,
        st.builds(AppendAck, index=INTS, cancelled=st.booleans(), completion=st.none() | COMPLETIONS),
    ),
    "await_request_decoder": (
        protocol.await_request_decoder,
        st.builds(AwaitRequest, attempt=INTS, token=TEXT, indices=INDICES, timeout_ms=INTS),
    ),
    "await_response_decoder": (
        protocol.await_response_decoder,
        st.builds(AwaitResponse, completions=st.lists(COMPLETIONS, max_size=3), cancelled=st.booleans()),
    ),
    "error_body_decoder": (protocol.error_body_decoder, st.builds(ErrorBody, code=TEXT, message=TEXT)),
}
DECODER_NAMES = sorted(DECODERS)
ANY_MESSAGE = st.sampled_from(DECODER_NAMES).flatmap(
    lambda name: st.tuples(st.just(name), DECODERS[name][1]),
)


def _decode(name: str, data: bytes) -> Any:
    """Decode with the named decoder; anything but a message or ``DecodeError`` fails the test."""
    decoder = DECODERS[name][0]
    try:
        return decoder.decode(data)
    except msgspec.DecodeError:  # ValidationError included
        return None


def _check_message(value: Any) -> None:
    """A decoded message is whole: it encodes again, and ``json_value_decoder`` takes every ``Raw``
    in it or refuses it with ``DecodeError`` (a ``Raw`` is checked for syntax only: ``1e400`` is one,
    but no Python value; and the value decoder refuses what nests too deeply)."""
    if value is None:
        return
    json_encoder.encode(value)
    for raw in _raws(value):
        try:
            protocol.json_value_decoder.decode(raw)
        except msgspec.DecodeError:
            pass


def _raws(value: Any) -> list[msgspec.Raw]:
    if isinstance(value, msgspec.Raw):
        return [value]
    if isinstance(value, msgspec.Struct):
        return [raw for field in value.__struct_fields__ for raw in _raws(getattr(value, field))]
    if isinstance(value, list):
        return [raw for item in value for raw in _raws(item)]
    if isinstance(value, dict):
        return [raw for item in value.values() for raw in _raws(item)]
    return []


def test_json_values_nest_at_most_max_json_depth() -> None:
    deepest = b"[" * protocol.MAX_JSON_DEPTH + b"]" * protocol.MAX_JSON_DEPTH
    assert protocol.json_value_decoder.decode(deepest) is not None
    for too_deep in (b"[" + deepest + b"]", b'{"a":' + deepest + b"}", b"[" * 5000 + b"]" * 5000):
        with pytest.raises(msgspec.DecodeError, match="nested too deeply"):
            protocol.json_value_decoder.decode(too_deep)
    # Brackets in strings do not count.
    assert protocol.json_value_decoder.decode(b'["' + b"[" * 1000 + b'"]') == ["[" * 1000]
    # Nor may the schemas of a manifest nest deeper (the proxy validates inputs against them).
    manifest = b'{"services":[{"name":"s","handlers":[{"name":"h","input_schema":{"a":%s}}]}]}'
    assert protocol.manifest_decoder.decode(manifest % deepest[2:-2]).services[0].name == "s"
    with pytest.raises(msgspec.DecodeError, match="nested too deeply"):
        protocol.manifest_decoder.decode(manifest % deepest)


def test_every_module_level_decoder_is_fuzzed() -> None:
    found = {name for name, value in vars(protocol).items() if isinstance(value, protocol.Decoder)}
    assert found == set(DECODERS), "a new decoder in protocol.py: add it to DECODERS"
    for name, (decoder, _) in DECODERS.items():
        assert decoder is getattr(protocol, name)


# --------------------------------------------------------------------------- arbitrary input


@pytest.mark.parametrize("name", DECODER_NAMES)
@examples(60)
@given(data=st.binary(max_size=64 * 1024))
@example(data=b"")
@example(data=b"\xff\xfe")
@example(data=b"[" * 5_000)
@example(data=b'{"kind":' * 5_000)
def test_arbitrary_bytes_decode_or_raise_decode_error(name: str, data: bytes) -> None:
    _check_message(_decode(name, data))


@pytest.mark.parametrize("name", DECODER_NAMES)
@examples(60)
@given(value=JSON_VALUES)
def test_arbitrary_json_values_decode_or_raise_decode_error(name: str, value: Any) -> None:
    _check_message(_decode(name, msgspec.json.encode(value)))


# --------------------------------------------------------------------------- valid messages


@examples(150)
@given(message=ANY_MESSAGE)
def test_valid_messages_round_trip(message: tuple[str, Any]) -> None:
    name, value = message
    encoded = json_encoder.encode(value)
    decoded = DECODERS[name][0].decode(encoded)
    assert decoded == value
    assert json_encoder.encode(decoded) == encoded


# --------------------------------------------------------------------------- structured mutations


class Token:
    """Text put into the JSON as it is (NaN, a number too large for any type, deep nesting...)."""

    def __init__(self, text: bytes) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"Token({self.text[:40]!r}{'...' if len(self.text) > 40 else ''})"


def _nested(depth: int) -> Token:
    return Token(b"[" * depth + b"]" * depth)


#: What a mutation puts in place of a value.
REPLACEMENTS: st.SearchStrategy[Any] = st.one_of(
    st.sampled_from(
        [
            -1,
            0,
            -(2**63),
            -(2**63) - 1,
            2**63 - 1,
            2**63,
            2**64,
            10**30,
            1.5,
            -0.0,
            Token(b"1e400"),
            Token(b"-1e400"),
            Token(b"NaN"),
            Token(b"Infinity"),
            Token(b"-Infinity"),
            Token(b"1" * 5000),
            Token(b'"\\ud800"'),  # a lone surrogate
            Token(b'"\xff\xfe"'),  # invalid UTF-8
            Token(b'"\\u0000"'),
            "",
            "bogus",
            "x" * 100_000,
            None,
            True,
            [],
            {},
            {"kind": "bogus"},
            {"status": "bogus"},
        ]
    ),
    st.sampled_from([10, 64, 500, 999, 1000, 5000, 100_000]).map(_nested),
    st.sampled_from([b"{", b"[", b"}", b"]", b",", b":", b""]).map(Token),  # broken syntax
    JSON_VALUES,
)
#: Values of the fields that pick a variant (``kind`` of an entry, ``status`` of a response).
TAGS = st.sampled_from(["", "RUN", "run ", "bogus", "completed", "sleep", "call", "failed", "retry", "suspended"])


def _paths(value: Any, path: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    paths = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            paths.extend(_paths(item, (*path, key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            paths.extend(_paths(item, (*path, index)))
    return paths


def _replace(value: Any, path: tuple[str | int, ...], new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {**value, head: _replace(value[head], rest, new)}
    assert isinstance(value, list) and isinstance(head, int)
    return [*value[:head], _replace(value[head], rest, new), *value[head + 1 :]]


def _delete(value: Any, path: tuple[str | int, ...]) -> Any:
    """``value`` without the member at ``path`` (a dict's key or a list's item)."""
    if len(path) == 1:
        if isinstance(value, dict):
            return {k: v for k, v in value.items() if k != path[0]}
        return [item for index, item in enumerate(value) if index != path[0]]
    head = path[0]
    if isinstance(value, dict):
        return {**value, head: _delete(value[head], path[1:])}
    assert isinstance(head, int)
    return [*value[:head], _delete(value[head], path[1:]), *value[head + 1 :]]


def _dump(value: Any) -> bytes:
    """JSON text of ``value``, with ``Token`` text as it is and ints of any size."""
    if isinstance(value, Token):
        return value.text
    if isinstance(value, DuplicateKey):
        again = msgspec.json.encode(value.key) + b":" + _dump(value.again)
        return _dump(value.members)[:-1] + b"," + again + b"}"
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return msgspec.json.encode(value)
    if isinstance(value, int):
        return str(value).encode()
    if isinstance(value, float):
        return repr(value).encode() if math.isfinite(value) else b"NaN"
    if isinstance(value, list):
        return b"[" + b",".join(_dump(item) for item in value) + b"]"
    assert isinstance(value, dict)
    return b"{" + b",".join(msgspec.json.encode(str(k)) + b":" + _dump(v) for k, v in value.items()) + b"}"


class DuplicateKey:
    """An object with one key twice (the second time with ``again``), rendered by hand."""

    def __init__(self, members: dict[str, Any], key: str, again: Any) -> None:
        self.members, self.key, self.again = members, key, again


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, bytes]:
    """A valid message of some decoder, changed in one to three places; and that decoder's name."""
    name, message = draw(ANY_MESSAGE)
    value: Any = msgspec.json.decode(json_encoder.encode(message))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        paths = _paths(value)
        path = draw(st.sampled_from(paths))
        node = _get(value, path)
        how = draw(st.sampled_from(["replace", "replace", "tag", "delete", "add", "duplicate_key"]))
        if how == "tag":
            tagged = [p for p in paths if p and p[-1] in ("kind", "status")]
            value = _replace(value, draw(st.sampled_from(tagged)) if tagged else path, draw(TAGS))
        elif how == "delete" and path:
            value = _delete(value, path)
        elif how in ("add", "duplicate_key") and isinstance(node, dict) and node:
            key = draw(st.sampled_from([*node, "unknown", "kind", "status", "index"]) | TEXT)
            if how == "add":
                value = _replace(value, path, {**node, key: draw(REPLACEMENTS)})
            else:
                value = _replace(value, path, DuplicateKey(node, draw(st.sampled_from(list(node))), draw(REPLACEMENTS)))
                break  # the duplicate is rendered as it is: no path goes into it
        else:
            value = _replace(value, path, draw(REPLACEMENTS))
        if isinstance(value, Token):
            break
    return name, _dump(value)


def _get(value: Any, path: tuple[str | int, ...]) -> Any:
    for part in path:
        value = value[part]
    return value


#: The types each decoder may answer with.
EXPECTED: dict[str, tuple[type, ...]] = {
    "json_value_decoder": (object,),
    "entry_decoder": tuple(get_args(protocol.JournalEntry)),
    "manifest_decoder": (Manifest,),
    "invoke_request_decoder": (InvokeRequest,),
    "invoke_response_decoder": (Completed, Failed, Retry, Suspended),
    "append_request_decoder": (AppendRequest,),
    "append_ack_decoder": (AppendAck,),
    "await_request_decoder": (AwaitRequest,),
    "await_response_decoder": (AwaitResponse,),
    "error_body_decoder": (ErrorBody,),
}


@examples(300)
@given(case=mutated())
def test_mutated_messages_decode_or_raise_decode_error(case: tuple[str, bytes]) -> None:
    name, data = case
    decoded = _decode(name, data)
    if decoded is not None:
        assert isinstance(decoded, EXPECTED[name]), decoded
    _check_message(decoded)
    event(f"{name}: {'decoded' if decoded is not None else 'DecodeError'}")


# --------------------------------------------------------------------------- ids and headers


@examples(300)
@given(text=st.text(max_size=60) | st.from_regex(r"awk_[a-z0-9_]{0,20}_[0-9\u00b2\u0663\uff11]{0,12}", fullmatch=True))
@example(text="awk_abc_\u00b2")
@example(text="awk_abc_" + "9" * 5000)
def test_awakeable_ids_parse_or_are_refused(text: str) -> None:
    parsed = protocol.parse_awakeable_id(text)
    if parsed is not None:
        invocation_id, index = parsed
        assert invocation_id.startswith("inv_") and 0 <= index < 10**9
        assert protocol.parse_awakeable_id(protocol.awakeable_id(invocation_id, index)) == parsed


@examples(300)
@given(
    text=st.text(max_size=60)
    | st.from_regex(r"application/vnd\.durable\.v[0-9\u00b2\u0663]{0,6}\+json(;.*)?", fullmatch=True)
)
@example(text="application/vnd.durable.v\u00b2+json")
@example(text="application/vnd.durable.v" + "9" * 5000 + "+json")
def test_content_types_parse_or_are_refused(text: str) -> None:
    version = protocol.parse_content_type_version(text)
    assert version is None or (isinstance(version, int) and version >= 0)


_VERIFIER = SignatureVerifier(["k" * 32])
_KID = key_id(b"k" * 32)


@examples(300)
@given(
    header=st.none()
    | st.text(max_size=80)
    | st.builds(
        lambda t, sig: f"v1,t={t},kid={_KID},sig={sig}",
        st.text(max_size=12) | st.sampled_from(["\u00b2", "9" * 5000, "-1", "1.5"]),
        st.text(max_size=12),
    )
)
def test_signature_headers_verify_or_raise_signature_error(header: str | None) -> None:
    try:
        _VERIFIER.verify(header, "POST", "/invoke/a/b", b"{}", 1_000)
    except SignatureError:
        pass


@examples(200)
@given(invocation_id=st.text(max_size=30), attempt=INTS, token=st.text(max_size=40))
def test_callback_tokens_verify_to_a_bool(invocation_id: str, attempt: int, token: str) -> None:
    signer = TokenSigner(b"s" * 32)
    assert signer.verify(invocation_id, attempt, token) is (token == signer.token(invocation_id, attempt))
    assert signer.verify(invocation_id, attempt, signer.token(invocation_id, attempt))


@examples(300)
@given(
    text=st.text(max_size=30)
    | st.from_regex(r"[Pp]?[Tt]?([0-9\u00b2\u0663.]{0,400}(ms|s|m|min|h|d|D|H|M|S)?){1,3}", fullmatch=True)
)
@example(text="9" * 400 + "d")
@example(text="PT" + "9" * 400 + "S")
@example(text="1e400s")
@example(text="nan")
@example(text="\u00b2s")
def test_delays_parse_to_a_duration_or_a_bad_request(text: str) -> None:
    try:
        delay = parse_delay_ms(text)
    except BadRequest as exc:
        assert exc.message
    else:
        assert 0 <= delay <= MAX_DELAY_MS
