"""HTTP fuzzing of the ingress, the callback routes and the admin API, through the in-process harness.

One proxy (with its handlers: a service, a virtual object and a workflow) runs for
the whole test, on a private event loop; hypothesis generates batches of requests
with random methods, paths (keyed paths, ``/restate/...``, callback routes with
random or real invocation ids), headers (content type, ``Idempotency-Key``,
``Authorization``), query strings (``?delay=``, ``?status=``, ``?limit=``...) and
bodies (JSON values, invalid JSON, huge numbers, deep nesting, protocol messages,
some carrying a valid callback token). Every answer must be:

* a 1xx-4xx status, never a 5xx, except the two that are answers and not failures:
  the outcome of an invocation that failed with a 5xx code (it carries the
  invocation id) and 502 for a deployment that cannot be discovered;
* when it is an error, a JSON object with a ``message``; never a traceback.

After the run, the journal of every invocation (read through the admin API) is
contiguous from 0 and as long as the invocation says.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import hypothesis.strategies as st
import msgspec
import pytest
from hypothesis import given

from handler_sdk import (
    Context,
    ObjectContext,
    ObjectSharedContext,
    Service,
    TerminalError,
    VirtualObject,
    Workflow,
    WorkflowContext,
    WorkflowSharedContext,
)
from handler_sdk.protocol import INVOKE_CONTENT_TYPE, AppendRequest, AwaitRequest, json_encoder
from tests.e2e.harness import HANDLER_URI, Harness, running
from tests.properties import examples
from tests.properties.test_wire_fuzz import ENTRIES, INTS, JSON_VALUES

INGRESS_TOKEN = "ingress-secret"
ADMIN_TOKEN = "admin-secret"
ADMIN_AUTH = {"authorization": f"Bearer {ADMIN_TOKEN}"}
INGRESS_AUTH = f"Bearer {INGRESS_TOKEN}"
#: How long one request may take before the fuzzer stops waiting (an attach may rightly wait longer).
REQUEST_TIMEOUT_S = 1.5

# --------------------------------------------------------------------------- the services under fuzz


class Order(msgspec.Struct):
    customer: str
    amount_cents: int


class Node(msgspec.Struct):
    """A recursive input type: its schema refers to itself."""

    children: list[Node] = []


fuzz = Service("Fuzz")
#: Awakeable ids handed out by ``Fuzz/steps``, for the fuzzer to resolve and reject.
awakeables: list[str] = []


@fuzz.handler()
async def echo(ctx: Context, value: Any) -> Any:
    return value


@fuzz.handler()
async def typed(ctx: Context, order: Order) -> int:
    return order.amount_cents


@fuzz.handler()
async def tree(ctx: Context, node: Node) -> int:
    return len(node.children)


@fuzz.handler()
async def nothing(ctx: Context) -> str:
    return "nothing"


@fuzz.handler()
async def steps(ctx: Context, value: Any) -> Any:
    """A step, an awakeable (handed out, never awaited), a short sleep: a journal of a few kinds."""
    result = await ctx.run("step", lambda: value)
    awakeable_id, _ = ctx.awakeable()
    await ctx.run("hand-out", awakeables.append, awakeable_id)
    await ctx.sleep(timedelta(milliseconds=5))
    return result


#: Set when the fuzzing is over: the ``busy`` and ``hold`` attempts end. (Made anew on the fixture's loop.)
release = asyncio.Event()


@fuzz.handler()
async def busy(ctx: Context) -> str:
    """Runs a while (only sent, never called, by the fuzzer), so that the fuzzer finds running attempts to
    send callbacks for."""
    await ctx.run("start", lambda: None)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(release.wait(), 10.0)
    return "done"


@fuzz.handler()
async def refuse(ctx: Context, reason: str) -> None:
    raise TerminalError(f"refused: {reason}", status_code=409)


box = VirtualObject("Box")


@box.handler()
async def put(ctx: ObjectContext, value: Any) -> Any:
    ctx.set("value", value)
    return await ctx.get("value")


@box.handler(kind="shared")
async def get(ctx: ObjectSharedContext) -> Any:
    return await ctx.get("value")


@box.handler()
async def hold(ctx: ObjectContext) -> str:
    """Holds its key a while (only sent by the fuzzer): callbacks for it may change state and promises."""
    await ctx.run("start", lambda: None)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(release.wait(), 10.0)
    return "done"


flow = Workflow("Flow")


@flow.main()
async def run(ctx: WorkflowContext, value: Any) -> Any:
    ctx.set("value", value)
    return await ctx.promise("signal").peek()


@flow.handler()
async def signal(ctx: WorkflowSharedContext, value: Any) -> None:
    await ctx.promise("signal").resolve(value)


# --------------------------------------------------------------------------- the proxy, for the whole module


@dataclass
class Fuzzer:
    runner: asyncio.Runner
    harness: Harness
    #: Invocation ids seen in answers (``x-restate-id``, ``invocationId``).
    invocations: list[str] = field(default_factory=list)
    #: How many answers of each (API, method, status), printed at the end (``pytest -s``).
    statuses: Counter[tuple[str, str, int]] = field(default_factory=Counter)
    timeouts: int = 0
    invalid_urls: int = 0

    def run(self, coro: Any) -> Any:
        return self.runner.run(coro)


@pytest.fixture(scope="module")
def fuzzer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzer]:
    global release
    db: Path = tmp_path_factory.mktemp("http-fuzz") / "proxy.db"
    release = asyncio.Event()
    with asyncio.Runner() as runner:
        stack = contextlib.AsyncExitStack()
        context = running(
            db,
            [fuzz, box, flow],
            register=False,
            ingress_token=INGRESS_TOKEN,
            admin_token=ADMIN_TOKEN,
            retry_initial_interval_ms=1,
            retry_max_interval_ms=20,
            retry_max_attempts=2,
            on_max_attempts="fail",
            max_body_bytes=256 * 1024,
            sqlite_synchronous="NORMAL",
        )
        harness = runner.run(stack.enter_async_context(context))
        try:
            registered = runner.run(harness.admin.post("/deployments", json={"uri": HANDLER_URI}, headers=ADMIN_AUTH))
            assert registered.status_code == 201, registered.text
            # Attempts that run while the fuzzer sends callbacks for them.
            for path in ("/Fuzz/busy/send", "/Fuzz/busy/send", "/Box/held/hold/send", "/Box/kept/hold/send"):
                sent = runner.run(harness.ingress.post(path, headers={"authorization": INGRESS_AUTH}))
                assert sent.status_code == 202, sent.text
            yield Fuzzer(runner, harness)
        finally:
            release.set()
            runner.run(stack.aclose())
    awakeables.clear()


# --------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class Request:
    admin: bool
    method: str
    #: Segments; ``Known`` ones are filled in with a real id when the request is sent.
    path: tuple[Any, ...]
    query: tuple[tuple[str, str], ...]
    headers: tuple[tuple[str, str], ...]
    body: Any  # bytes, or a ``Callback`` rendered when sent
    #: Send the path as it is (``%`` escapes and all), not quoted segment by segment.
    raw_path: bool = False


@dataclass(frozen=True)
class Known:
    """A real id, picked when the request is sent: ``kind`` ``invocation``, ``running`` (an invocation
    running now, if there is one), ``running-box`` (one of the object ``Box``) or ``awakeable``."""

    kind: str
    pick: int


@dataclass(frozen=True)
class Callback:
    """An append or await for a real invocation, with a valid token for its current attempt (+ ``skew``)."""

    pick: int
    skew: int
    append: bool
    #: None: the next index of the journal.
    index: int | None
    entry: bytes
    indices: tuple[int, ...]
    timeout_ms: int


LATIN1 = st.text(st.characters(min_codepoint=32, max_codepoint=255, exclude_characters="\x7f"), max_size=24)
SEGMENT_TEXT = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=12)
SERVICES = st.sampled_from(["Fuzz", "Box", "Flow", "Nope", "restate", "_durable", ""]) | SEGMENT_TEXT
HANDLERS = st.sampled_from(
    ["echo", "typed", "tree", "nothing", "steps", "busy", "refuse", "put", "get", "run", "signal", "send", "x"]
)
KEYS = st.sampled_from(["k", "a/b", "ключ", " ", "k%2F"]) | SEGMENT_TEXT
IDS = (
    st.builds(Known, st.just("invocation"), st.integers(0, 1_000))
    | st.sampled_from(["inv_", "inv_00000000000000000000000000", "..", "%00", "awk_x_1"])
    | SEGMENT_TEXT
)
AWAKEABLES = (
    st.builds(Known, st.just("awakeable"), st.integers(0, 1_000))
    | st.sampled_from(["awk_", "awk_x_", "awk_x_\u00b2", "awk_x_99999999999", "awk__1", "awk_x_-1"])
    | SEGMENT_TEXT
)

INGRESS_PATHS = st.one_of(
    st.tuples(SERVICES, HANDLERS),
    st.tuples(SERVICES, HANDLERS, st.just("send")),
    st.tuples(SERVICES, KEYS, HANDLERS),
    st.tuples(SERVICES, KEYS, HANDLERS, st.just("send")),
    st.tuples(st.just("restate"), st.sampled_from(["call", "send"]), SERVICES, HANDLERS),
    st.tuples(st.just("restate"), st.sampled_from(["call", "send"]), SERVICES, KEYS, HANDLERS),
    st.tuples(st.just("restate"), st.sampled_from(["attach", "output"]), IDS),
    st.tuples(st.just("restate"), st.just("invocation"), IDS, st.sampled_from(["attach", "output", "x"])),
    st.tuples(st.just("restate"), st.just("workflow"), SERVICES, KEYS, st.sampled_from(["attach", "output"])),
    st.tuples(st.just("restate"), st.sampled_from(["attach", "output", "health", "awakeables", "a"])),
    st.tuples(
        st.just("restate"), st.sampled_from(["awakeables", "a"]), AWAKEABLES, st.sampled_from(["resolve", "reject"])
    ),
    st.tuples(
        st.just("_durable"),
        st.sampled_from(["v1", "v2"]),
        st.sampled_from(["invocations", "x"]),
        IDS,
        st.sampled_from(["journal", "await", "x"]),
    ),
    st.lists(SEGMENT_TEXT, max_size=6).map(tuple),
)
ADMIN_PATHS = st.one_of(
    st.tuples(st.sampled_from(["deployments", "services", "invocations", "health", "objects"])),
    st.tuples(st.just("deployments"), SEGMENT_TEXT),
    st.tuples(st.just("services"), SERVICES),
    st.tuples(st.just("invocations"), IDS),
    st.tuples(st.just("invocations"), IDS, st.sampled_from(["cancel", "kill", "resume", "x"])),
    st.tuples(st.just("objects"), SERVICES, KEYS),
    st.lists(SEGMENT_TEXT, max_size=5).map(tuple),
)
METHODS = st.sampled_from(["POST", "POST", "POST", "GET", "GET", "PATCH", "DELETE", "PUT", "HEAD", "OPTIONS"])
QUERIES = st.lists(
    st.tuples(
        st.sampled_from(["delay", "status", "limit", "mode", "x"]),
        st.sampled_from(
            ["", "10ms", "0", "1s", "PT0.01S", "P1D", "1h30m", "-1s", "1e400s", "9" * 40 + "d", "\u00b2s", "nan"]
            + ["running", "completed", "bogus", "1", "1000", "1001", "0", "-5", "\u00b2", "9" * 5000, "kill", "cancel"]
        )
        | LATIN1,
    ),
    max_size=3,
).map(tuple)
AUTHORIZATION = st.sampled_from(
    [None, "Bearer ingress-secret", "Bearer admin-secret", "Bearer wrong", "Bearer", "Basic eDp5", "bearer  "]
)
CONTENT_TYPES = st.sampled_from(
    [None, "application/json", INVOKE_CONTENT_TYPE, "application/vnd.durable.v\u00b2+json", "text/plain", ""]
    + ["application/vnd.durable.v" + "9" * 5000 + "+json", "application/vnd.durable.v2+json; charset=utf-8"]
)
IDEMPOTENCY_KEYS = st.sampled_from([None, "", "k1", "k2", "x" * 257, "é"]) | LATIN1


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def _tree(depth: int) -> bytes:
    return b'{"children":[' * depth + b"]}" * depth


BODIES = st.one_of(
    st.just(b""),
    JSON_VALUES.map(msgspec.json.encode),
    st.builds(lambda customer, cents: msgspec.json.encode({"customer": customer, "amount_cents": cents}), LATIN1, INTS),
    st.sampled_from(
        [
            b"{",
            b"nul",
            b"\xff\xfe",
            b'"\xff"',
            b'{"\xff": 1}',
            b"1e400",
            b"-1e400",
            b"NaN",
            b"123456789012345678901234567890",
            b'{"amount_cents": 1e400, "customer": "x"}',
            b'{"amount_cents": 18446744073709551616, "customer": "x"}',
            b'{"uri": "http://handlers"}',
            b'{"uri": "http://handlers/nowhere"}',
            b'{"uri": "ftp://x"}',
            b'{"uri": ""}',
            b'{"target": "invocation", "invocationId": "inv_x"}',
            b'{"target": "workflow", "workflowName": "Flow", "workflowKey": "k"}',
            b'{"target": "idempotentInvocation", "service": "Fuzz", "handler": "echo", "idempotencyKey": "k1"}',
            b'{"target": "workflow", "workflowName": "Fuzz", "workflowKey": "k"}',
            b"x" * (300 * 1024),
        ]
    ),
    st.sampled_from([10, 99, 100, 101, 500, 990, 1000, 5000]).map(_nested),
    st.sampled_from([10, 49, 50, 51, 300, 500]).map(_tree),
    st.builds(
        lambda attempt, token, index, entry: json_encoder.encode(
            AppendRequest(attempt=attempt, token=token, index=index, entry=msgspec.Raw(json_encoder.encode(entry)))
        ),
        INTS,
        LATIN1,
        INTS,
        ENTRIES,
    ),
    st.builds(
        lambda attempt, token, indices, timeout: json_encoder.encode(
            AwaitRequest(attempt=attempt, token=token, indices=indices, timeout_ms=timeout)
        ),
        INTS,
        LATIN1,
        st.lists(INTS, max_size=3),
        INTS,
    ),
)
CALLBACKS = st.builds(
    Callback,
    pick=st.integers(0, 1_000),
    skew=st.sampled_from([0, 0, 0, -1, 1, 2**62]),
    append=st.booleans(),
    index=st.sampled_from([None, None, None, 0, 1, 2, 3, 5, 49_999, 50_000, 2**62, 2**63 - 1]),
    entry=ENTRIES.map(json_encoder.encode) | st.sampled_from([b"{}", b'{"kind":"bogus"}', b"[]", b"1e400"]),
    indices=st.lists(st.integers(0, 5) | INTS, max_size=3).map(tuple),
    # The longest holds the fuzzer for REQUEST_TIMEOUT_S.
    timeout_ms=st.sampled_from([0, 0, 1, 1, 50, 50, -1, -1, 200, 2**63 - 1]),
)


#: What the services really serve: (service, keyed, handler).
TARGETS = [("Fuzz", False, h) for h in ("echo", "typed", "tree", "nothing", "steps", "busy", "refuse")] + [
    ("Box", True, "put"),
    ("Box", True, "get"),
    ("Box", True, "hold"),
    ("Flow", True, "run"),
    ("Flow", True, "signal"),
]


@st.composite
def submission_paths(draw: st.DrawFn) -> tuple[str, ...]:
    """A path that starts (or sends) a real handler, in one of the ingress's spellings, sometimes off by one part."""
    service, keyed, handler = draw(st.sampled_from(TARGETS))
    key = (draw(KEYS),) if keyed != (draw(st.integers(0, 9)) == 9) else ()
    send = handler in ("busy", "hold") or draw(st.booleans())  # a call to them would hold the fuzzer for seconds
    if draw(st.booleans()):
        return ("restate", "send" if send else "call", service, *key, handler)
    return (service, *key, handler, *(("send",) if send else ()))


@st.composite
def requests(draw: st.DrawFn) -> Request:
    """One request; the simplest draws make well-formed ones (the right token, a real target), so that the
    fuzzer gets past the first checks and into the proxy."""
    kind = draw(st.sampled_from(["submit", "submit", "ingress", "callback", "admin"]))
    admin, callback = kind == "admin", kind == "callback"
    body: Any
    if callback:
        body = draw(CALLBACKS)
        route = "journal" if body.append else "await"
        if draw(st.integers(0, 9)) == 9:
            route = draw(st.sampled_from(["journal", "await"]))  # sometimes to the other route
        path: tuple[Any, ...] = ("_durable", "v1", "invocations", Known("running", body.pick), route)
    elif kind == "submit":
        path = draw(submission_paths())
        body = draw(JSON_VALUES.map(msgspec.json.encode) | BODIES)
    else:
        path = draw(ADMIN_PATHS if admin else INGRESS_PATHS)
        body = draw(BODIES)
    headers: list[tuple[str, str]] = []
    authorization: str | None = f"Bearer {ADMIN_TOKEN if admin else INGRESS_TOKEN}"
    if draw(st.integers(0, 9)) == 9:  # mostly the right token, so that the requests get past the check
        authorization = draw(AUTHORIZATION)
    if authorization is not None:
        headers.append(("authorization", authorization))
    content_type = INVOKE_CONTENT_TYPE if callback and draw(st.integers(0, 9)) < 9 else draw(CONTENT_TYPES)
    if content_type is not None:
        headers.append(("content-type", content_type))
    idempotency_key = draw(IDEMPOTENCY_KEYS)
    if idempotency_key is not None:
        headers.append(("idempotency-key", idempotency_key))
    if draw(st.integers(0, 9)) == 9:
        headers.append((draw(st.sampled_from(["content-length", "x-custom", "traceparent"])), draw(LATIN1)))
    return Request(
        admin=admin,
        method="POST" if callback or kind == "submit" and draw(st.integers(0, 9)) < 9 else draw(METHODS),
        path=path,
        query=draw(QUERIES),
        headers=tuple(headers),
        body=body,
        raw_path=draw(st.integers(0, 9)) == 9,
    )


# --------------------------------------------------------------------------- sending and checking


async def _resolve(fuzzer: Fuzzer, part: Any) -> str:
    if not isinstance(part, Known):
        return str(part)
    pool = fuzzer.invocations if part.kind == "invocation" else awakeables
    if part.kind in ("running", "running-box"):
        running = await fuzzer.harness.runtime.store.list_invocations(status="running")
        keyed = part.kind == "running-box"
        pool = [i.id for i in running if not keyed or i.service == "Box"] or fuzzer.invocations
    if not pool:
        return "inv_none" if part.kind == "invocation" else "awk_none_0"
    return pool[part.pick % len(pool)]


async def _render_callback(fuzzer: Fuzzer, invocation_id: str, callback: Callback) -> bytes:
    found = await fuzzer.harness.runtime.store.get_invocation(invocation_id)
    attempt = max(1, (found.attempt if found is not None else 1) + callback.skew)
    token = fuzzer.harness.runtime.signer.token(invocation_id, attempt)
    if callback.append:
        index = callback.index if callback.index is not None else found.journal_len if found is not None else 0
        return b'{"attempt":%d,"token":"%s","index":%d,"entry":%s}' % (attempt, token.encode(), index, callback.entry)
    request = AwaitRequest(attempt=attempt, token=token, indices=list(callback.indices), timeout_ms=callback.timeout_ms)
    return json_encoder.encode(request)


async def send(fuzzer: Fuzzer, request: Request) -> httpx.Response | None:
    """Send ``request``; None when it took longer than ``REQUEST_TIMEOUT_S`` (an attach may wait on)."""
    segments = [await _resolve(fuzzer, part) for part in request.path]
    if request.raw_path:
        path = "/" + "/".join(segments)
    else:
        path = "/" + "/".join(quote(segment, safe="") for segment in segments)
    body = request.body
    if isinstance(body, Callback):
        body = await _render_callback(fuzzer, segments[3], body)
    client = fuzzer.harness.admin if request.admin else fuzzer.harness.ingress
    try:
        return await asyncio.wait_for(
            client.request(
                request.method,
                path,
                params=list(request.query),
                # As bytes: httpx would encode str values as ASCII; HTTP headers are latin-1.
                headers=[(name.encode(), value.encode("latin-1")) for name, value in request.headers],
                content=body,
            ),
            REQUEST_TIMEOUT_S,
        )
    except TimeoutError:
        fuzzer.timeouts += 1
        return None
    except httpx.InvalidURL:
        fuzzer.invalid_urls += 1
        return None  # not a URL httpx sends (the proxy never sees it)


def check(fuzzer: Fuzzer, request: Request, response: httpx.Response) -> None:
    status = response.status_code
    text = response.content.decode("utf-8", "replace")
    fuzzer.statuses["admin" if request.admin else "/".join(map(str, request.path[:1])), request.method, status] += 1
    assert "Traceback" not in text, text[:2000]
    body: Any = None
    if response.content:
        try:
            body = msgspec.json.decode(response.content)
        except msgspec.DecodeError:
            raise AssertionError(f"{status} with a body that is not JSON: {text[:500]}") from None
    if status >= 400 and request.method != "HEAD":  # an answer to HEAD has no body
        assert isinstance(body, dict), f"{status} without a JSON object: {text[:500]}"
        assert isinstance(body.get("message"), str), f"{status} without a message: {text[:500]}"
    if status >= 500:
        body = body if isinstance(body, dict) else {}
        # An invocation that failed with a 5xx code is answered with that code: an answer, not a failure.
        outcome = "x-restate-id" in response.headers and isinstance(body.get("code"), int)
        discovery = request.admin and status == 502 and body.get("code") in ("discovery_failed", "unsupported_protocol")
        assert outcome or discovery, f"{request.method} {response.request.url} answered {status}: {text[:500]}"
    for found in (response.headers.get("x-restate-id"), body.get("invocationId") if isinstance(body, dict) else None):
        if isinstance(found, str) and found not in fuzzer.invocations:
            fuzzer.invocations.append(found)


async def _send_and_check(fuzzer: Fuzzer, batch: list[Request]) -> None:
    for request in batch:
        response = await send(fuzzer, request)
        if response is not None:
            check(fuzzer, request, response)


async def _journals_are_contiguous(fuzzer: Fuzzer) -> int:
    admin = fuzzer.harness.admin
    listed = await admin.get("/invocations", params={"limit": "1000"}, headers=ADMIN_AUTH)
    assert listed.status_code == 200, listed.text
    invocations = listed.json()["invocations"]
    for summary in invocations:
        found = await admin.get(f"/invocations/{summary['id']}", headers=ADMIN_AUTH)
        assert found.status_code == 200, found.text
        detail = found.json()
        indices = [entry["index"] for entry in detail["journal"]]
        assert indices == list(range(len(indices))), (summary["id"], indices)
        assert detail["journal_length"] == len(indices), detail
        attempts = [a["attempt"] for a in detail["attempts"]]
        assert attempts == list(range(1, detail["attempt"] + 1)), detail
    return len(invocations)


def _request(
    path: tuple[Any, ...], body: bytes | Callback, *, admin: bool = False, content_type: str | None = None
) -> Request:
    headers = [("authorization", f"Bearer {ADMIN_TOKEN if admin else INGRESS_TOKEN}")]
    if content_type is not None:
        headers.append(("content-type", content_type))
    return Request(admin, "POST", path, (), tuple(headers), body)


def _callback(entry: bytes) -> Request:
    """An append of ``entry`` at the next index, by the running attempt of a ``Box`` invocation."""
    body = Callback(pick=0, skew=0, append=True, index=None, entry=entry, indices=(), timeout_ms=0)
    return _request(
        ("_durable", "v1", "invocations", Known("running-box", 0), "journal"), body, content_type=INVOKE_CONTENT_TYPE
    )


#: Requests that once got a 500 (or a traceback), by what was wrong.
REGRESSIONS = {
    # JSON nested deeper than the recursion limit allows: RecursionError while decoding or encoding it.
    "deep-input": _request(("Fuzz", "echo"), _nested(990)),
    "very-deep-input": _request(("Fuzz", "echo"), _nested(5000)),
    "deep-recursive-input": _request(("Fuzz", "tree"), _tree(300)),
    "deep-awakeable-result": _request(("restate", "awakeables", Known("awakeable", 0), "resolve"), _nested(990)),
    "deep-admin-body": _request(("deployments",), _nested(5000), admin=True),
    # A string that is not UTF-8: UnicodeDecodeError while decoding it.
    "not-utf8-input": _request(("Fuzz", "echo"), b'"\xff"'),
    "not-utf8-entry-kind": _request(
        ("_durable", "v1", "invocations", "inv_x", "journal"),
        b'{"attempt":1,"token":"t","index":0,"entry":{"kind":"\xff"}}',
        content_type=INVOKE_CONTENT_TYPE,
    ),
    # Digits that str.isdigit() takes and int() refuses.
    "digit-in-awakeable-id": _request(("restate", "awakeables", "awk_x_\u00b2", "resolve"), b"1"),
    "digit-in-limit": Request(
        True, "GET", ("invocations",), (("limit", "\u00b2"),), (("authorization", f"Bearer {ADMIN_TOKEN}"),), b""
    ),
    "digit-in-content-type": _request(
        ("_durable", "v1", "invocations", "inv_x", "journal"),
        b"{}",
        content_type="application/vnd.durable.v\u00b2+json",
    ),
    # Appends (with a valid token) the store refuses with a ValueError or an OverflowError.
    "state-without-name": _callback(b'{"kind":"set_state","value":1}'),
    "promise-failure-code-too-large": _callback(
        b'{"kind":"complete_promise","name":"p","failure":{"code":18446744073709551615,"message":"x"}}'
    ),
    # A token with characters that hmac.compare_digest refuses in a str (TypeError).
    "non-ascii-token": _request(
        ("_durable", "v1", "invocations", "inv_x", "await"),
        b'{"attempt":1,"token":"\xc3\xa9","indices":[],"timeout_ms":0}',
        content_type=INVOKE_CONTENT_TYPE,
    ),
}


@pytest.mark.parametrize("name", list(REGRESSIONS))
def test_requests_that_once_failed(fuzzer: Fuzzer, name: str) -> None:
    response = fuzzer.run(send(fuzzer, REGRESSIONS[name]))
    assert response is not None
    check(fuzzer, REGRESSIONS[name], response)
    assert 400 <= response.status_code < 500, response.text


def test_http_fuzz_answers_every_request_without_a_server_error(fuzzer: Fuzzer) -> None:
    @examples(150)
    @given(batch=st.lists(requests(), min_size=1, max_size=8))
    def fuzz_batch(batch: list[Request]) -> None:
        fuzzer.run(_send_and_check(fuzzer, batch))

    fuzz_batch()
    answers = sum(fuzzer.statuses.values())
    print(f"\n{answers} answers, {fuzzer.timeouts} timeouts, {fuzzer.invalid_urls} URLs httpx refused to send:")
    for (api, method, status), count in sorted(fuzzer.statuses.items()):
        print(f"  {api:>12} {method:>7} {status}: {count}")
    assert answers > 0
    # Let what the requests started settle a little, then check every journal.
    fuzzer.run(asyncio.sleep(0.5))
    assert fuzzer.run(_journals_are_contiguous(fuzzer)) > 0
