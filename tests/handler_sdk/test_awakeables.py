"""Awakeables: ids, resolution and rejection as completions, replay."""

from typing import Any

import msgspec

from handler_sdk import Context, Service, TerminalError
from handler_sdk.protocol import (
    AwaitResponse,
    Awakeable,
    Failure,
    Retry,
    Run,
    Suspended,
    awakeable_id,
    parse_awakeable_id,
)

from .conftest import MakeEndpoint
from .fakes import FakeProxy, completion, invoke, output, recorded, recorded_run


class Approval(msgspec.Struct):
    approved: bool
    by: str


def approvals(handed_out: list[str]) -> Service:
    service = Service("Approvals")

    @service.handler()
    async def handler(ctx: Context) -> str:
        awk_id, promise = ctx.awakeable(Approval, name="approval")
        await ctx.run("ask", lambda: handed_out.append(awk_id))
        try:
            approval = await promise
        except TerminalError as exc:
            return f"rejected: {exc.message}"
        return f"approved by {approval.by}" if approval.approved else "denied"

    return service


async def test_awakeable_id_names_the_invocation_and_index(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    handed_out: list[str] = []
    app = make_endpoint(approvals(handed_out)).asgi()
    response = await invoke(app, "Approvals", "handler", invocation_id="inv_7abc")
    assert response == Suspended(waiting_on=[0])
    assert handed_out == ["awk_7abc_0"] == [awakeable_id("inv_7abc", 0)]
    assert parse_awakeable_id(handed_out[0]) == ("inv_7abc", 0)
    assert proxy.entries[0] == Awakeable(name="approval")
    assert isinstance(proxy.entries[1], Run)
    assert [a.indices for a in proxy.awaits] == [[0]]


async def test_resolved_awakeable_decodes_its_value(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    handed_out: list[str] = []
    app = make_endpoint(approvals(handed_out)).asgi()
    journal = [recorded(Awakeable(name="approval")), recorded_run("ask")]
    resolved = completion(0, {"approved": True, "by": "ada"})
    response = await invoke(app, "Approvals", "handler", journal=journal, completions=[resolved])
    assert output(response) == "approved by ada"
    assert handed_out == []
    assert proxy.received == []


async def test_awakeable_resolved_during_the_brief_wait(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    proxy.await_script = [AwaitResponse(completions=[completion(0, {"approved": False, "by": "bo"})])]
    response = await invoke(make_endpoint(approvals([])).asgi(), "Approvals", "handler")
    assert output(response) == "denied"


async def test_rejected_awakeable_raises(make_endpoint: MakeEndpoint) -> None:
    app = make_endpoint(approvals([])).asgi()
    journal = [recorded(Awakeable(name="approval")), recorded_run("ask")]
    rejected = completion(0, failure=Failure(code=400, message="not today"))
    response = await invoke(app, "Approvals", "handler", journal=journal, completions=[rejected])
    assert output(response) == "rejected: not today"


async def test_awakeable_mismatch(make_endpoint: MakeEndpoint, proxy: FakeProxy) -> None:
    app = make_endpoint(approvals([])).asgi()
    response = await invoke(app, "Approvals", "handler", journal=[recorded(Awakeable(name="payment"))])
    assert isinstance(response, Retry)
    assert response.failure.message == (
        "journal mismatch at index 0: the journal recorded awakeable 'payment', "
        "the code now asks for awakeable 'approval'"
    )
    assert proxy.received == []


async def test_untyped_awakeable(make_endpoint: MakeEndpoint) -> None:
    service = Service("S")
    ids: list[str] = []

    @service.handler()
    async def handler(ctx: Context) -> Any:
        awk_id, promise = ctx.awakeable()
        ids.append(awk_id)
        return await promise

    response = await invoke(make_endpoint(service).asgi(), "S", "handler", completions=[completion(0, [1, "x"])])
    assert output(response) == [1, "x"]
    assert ids == ["awk_inv-1_0"]
