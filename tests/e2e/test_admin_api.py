"""The admin API over HTTP: listing with filters and pages, an invocation's journal, the actions (retry
now, purge one or many), removing deployments, the OpenAPI documents of both ports, and the UI's files."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import jsonschema
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from examples.approval import approval
from examples.cart import cart
from examples.order_service import orders
from handler_sdk import Context, Endpoint, Service, TerminalError
from handler_sdk.protocol import HandlerManifest, ServiceManifest
from proxy.admin import ACTIONS, LIST_PARAMETERS, create_admin_app
from proxy.openapi import ADMIN_OPENAPI, ingress_openapi
from proxy.registry import ServiceInfo

from .harness import HANDLER_URI, Harness, handler_app_for, open_runtime, running

ops = Service("Ops")
flaky_left = {"n": 0}


def refuse(reason: str) -> str:
    raise TerminalError(f"refused: {reason}", status_code=422)


@ops.handler()
async def echo(ctx: Context, text: str) -> str:
    return text


@ops.handler()
async def no(ctx: Context, text: str) -> str:
    raise TerminalError(f"no {text}", status_code=409)


@ops.handler()
async def journey(ctx: Context, name: str) -> str:
    greeting = await ctx.run("greet", lambda: f"hi {name}")
    try:
        await ctx.run("refuse", refuse, name)
    except TerminalError:
        pass
    await ctx.sleep(timedelta(milliseconds=1), name="nap")
    echoed = await ctx.call("Ops", "echo", name, name="echo")
    try:
        await ctx.call("Ops", "no", name, name="no")
    except TerminalError:
        pass
    await ctx.send("Ops", "echo", "sent", name="fire")
    return f"{greeting}/{echoed}"


@ops.handler()
async def wait(ctx: Context) -> str:
    _, future = ctx.awakeable(name="approval")
    value: str = await future
    return value


@ops.handler()
async def flaky(ctx: Context) -> str:
    if flaky_left["n"] > 0:
        flaky_left["n"] -= 1
        raise RuntimeError("transient trouble")
    return "ok"


async def send(h: Harness, path: str, body: Any = None, **params: str) -> str:
    response = await h.ingress.post(f"{path}/send", json=body, params=params)
    assert response.status_code == 202, response.text
    invocation_id: str = response.json()["invocationId"]
    return invocation_id


async def call(h: Harness, path: str, body: Any = None) -> tuple[str, Any]:
    response = await h.ingress.post(path, json=body)
    assert response.status_code == 200, response.text
    return response.headers["x-restate-id"], response.json()


def assert_error(response: httpx.Response, status: int, code: str | None = None, *words: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"code", "message"} and body["message"], body
    if code is not None:
        assert body["code"] == code, body
    for word in words:
        assert word in body["message"], body


# --------------------------------------------------------------------------- listing


async def test_listing_filters_and_pages(tmp_path: Path) -> None:
    async with running(tmp_path / "p.db", [ops, cart, orders]) as h:
        echoed = [(await call(h, "/Ops/echo", f"e{n}"))[0] for n in range(5)]
        later = [await send(h, "/Ops/echo", f"l{n}", delay="1h") for n in range(4)]
        viewed = [(await call(h, f"/Cart/{key}/view"))[0] for key in ("ada", "bo", "ada")]

        async def listed(**params: Any) -> list[str]:
            response = await h.admin.get("/invocations", params=params)
            assert response.status_code == 200, response.text
            body = response.json()
            assert set(body) == {"invocations", "next_cursor"}
            return [i["id"] for i in body["invocations"]]

        everything = await listed()
        assert set(everything) == set(echoed + later + viewed)
        assert set(await listed(status="scheduled")) == set(later)
        assert set(await listed(status="completed,scheduled")) == set(everything)
        assert set(await listed(status=["completed", "scheduled"])) == set(everything)
        assert set(await listed(status=["completed", " pending, scheduled "])) == set(everything)
        assert await listed(status="failed") == []
        assert set(await listed(service="Cart")) == set(viewed)
        assert set(await listed(service="Ops", handler="echo", status="completed")) == set(echoed)
        assert set(await listed(service="Cart", key="ada")) == {viewed[0], viewed[2]}
        assert set(await listed(handler="view", key="bo")) == {viewed[1]}
        detail = (await h.admin.get(f"/invocations/{later[0]}")).json()
        created = detail["created_at_ms"]
        assert later[0] not in await listed(created_after_ms=created)
        assert later[0] not in await listed(created_before_ms=created)
        assert later[0] in await listed(created_after_ms=created - 1, created_before_ms=created + 1)
        assert await listed(status="") == await listed()  # empty values are no filter

        # Page by page, newest first: every invocation once, in the order of the whole listing.
        pages: list[list[str]] = []
        params: dict[str, Any] = {"limit": 5}
        while True:
            body = (await h.admin.get("/invocations", params=params)).json()
            pages.append([i["id"] for i in body["invocations"]])
            if body["next_cursor"] is None:
                break
            assert isinstance(body["next_cursor"], str)
            params["cursor"] = body["next_cursor"]
            if len(pages) == 1:
                await call(h, "/Ops/echo", "meanwhile")  # newer: never shifts the pages that follow
        assert [len(p) for p in pages] == [5, 5, 2]
        assert [i for p in pages for i in p] == everything
        # A filtered listing pages the same way.
        first = (await h.admin.get("/invocations", params={"service": "Ops", "status": "completed", "limit": 4})).json()
        second = (
            await h.admin.get(
                "/invocations",
                params={"service": "Ops", "status": "completed", "limit": 4, "cursor": first["next_cursor"]},
            )
        ).json()
        assert second["next_cursor"] is None
        assert len(first["invocations"]) == 4 and len(second["invocations"]) == 2  # five echoes and "meanwhile"


async def test_bad_listing_parameters_are_400s(tmp_path: Path) -> None:
    async with running(tmp_path / "p.db", [ops]) as h:
        for params, words in (
            ({"status": "sleeping"}, ("status must be one of", "sleeping")),
            ({"status": "pending,nope"}, ("nope",)),
            ({"limit": "0"}, ("limit",)),
            ({"limit": "1001"}, ("limit",)),
            ({"limit": "ten"}, ("limit",)),
            ({"limit": "²"}, ("limit",)),
            ({"created_after_ms": "-1"}, ("created_after_ms",)),
            ({"created_before_ms": "yesterday"}, ("created_before_ms",)),
            ({"created_before_ms": "9" * 40}, ("created_before_ms",)),
            ({"stauts": "pending"}, ("unknown query parameter 'stauts'",)),
            ({"service": ["a", "b"]}, ("service may be given once",)),
        ):
            assert_error(await h.admin.get("/invocations", params=params), 400, "bad_request", *words)
        for cursor in ("not a cursor!", "eyJ", "bm9wZQ", "WzEsMl0", "WyJhIiwiYiJd", "W-1", "x" * 2000):
            response = await h.admin.get("/invocations", params={"cursor": cursor})
            assert_error(response, 400, "invalid_cursor", "next_cursor")


# --------------------------------------------------------------------------- one invocation


async def test_an_invocation_shows_every_entry_with_its_timing_outcome_and_callee(tmp_path: Path) -> None:
    async with running(tmp_path / "p.db", [ops]) as h:
        invocation_id, result = await call(h, "/Ops/journey", "ada")
        assert result == "hi ada/ada"
        found = await h.invocation(invocation_id)
        journal = {e["name"]: e for e in found["journal"]}
        assert [e["kind"] for e in found["journal"]] == ["run", "run", "sleep", "call", "call", "send"]
        for entry in found["journal"]:
            assert entry["created_at_ms"] >= found["created_at_ms"]
            assert entry["attempt"] >= 1
        assert (journal["greet"]["result"], journal["greet"]["failure"]) == ("hi ada", None)
        assert journal["refuse"]["result"] is None
        assert journal["refuse"]["failure"] == {"code": 422, "message": "refused: ada"}
        nap = journal["nap"]
        assert nap["completed"] and nap["completed_at_ms"] >= nap["created_at_ms"] and "wake_at_ms" in nap
        echo_entry, no_entry, fire = journal["echo"], journal["no"], journal["fire"]
        assert (echo_entry["completed"], echo_entry["result"], echo_entry["failure"]) == (True, "ada", None)
        assert no_entry["failure"] == {"code": 409, "message": "no ada"}
        for entry in (echo_entry, no_entry, fire):
            callee = await h.invocation(entry["callee_id"])
            assert (callee["parent_id"], callee["parent_index"]) == (invocation_id, entry["index"])
        assert (await h.invocation(no_entry["callee_id"]))["failure"] == {"code": 409, "message": "no ada"}
        assert "callee_id" not in journal["greet"]
        assert found["attempts"][-1]["outcome"] == "completed"
        assert all(a["started_at_ms"] <= a["ended_at_ms"] for a in found["attempts"])

        waiting = await send(h, "/Ops/wait")
        found = await h.wait_for(waiting, lambda i: i["status"] == "suspended")
        (entry,) = found["journal"]
        assert (entry["kind"], entry["completed"]) == ("awakeable", False)
        resolved = await h.ingress.post(f"/restate/awakeables/{entry['awakeable_id']}/resolve", json="yes")
        assert resolved.status_code == 202
        found = await h.wait_for(waiting, lambda i: i["status"] == "completed")
        assert (found["journal"][0]["result"], found["output"]) == ("yes", "yes")


# --------------------------------------------------------------------------- retry now


async def test_retry_runs_a_backing_off_invocation_now_and_resumes_a_paused_one(tmp_path: Path) -> None:
    flaky_left["n"] = 2
    hour = 3_600_000
    policy: dict[str, Any] = {"retry_initial_interval_ms": hour, "retry_max_interval_ms": hour}
    async with running(tmp_path / "p.db", [ops], on_max_attempts="pause", retry_max_attempts=2, **policy) as h:
        invocation_id = await send(h, "/Ops/flaky")
        backing_off = await h.wait_for(invocation_id, lambda i: i["status"] == "backing_off")
        assert backing_off["next_run_at_ms"] > h.runtime.clock.now_ms() + hour // 4  # jittered
        # Retry now: the second attempt runs at once (and, the last one allowed, fails into paused).
        response = await h.admin.post(f"/invocations/{invocation_id}/retry")
        assert response.status_code == 202, response.text
        assert response.json() == {"id": invocation_id, "mode": "retry", "accepted": True, "resumed": False}
        paused = await h.wait_for(invocation_id, lambda i: i["status"] == "paused")
        assert paused["last_failure"]["message"].endswith("transient trouble")
        assert [a["outcome"] for a in paused["attempts"]] == ["retry", "paused"]
        assert all("transient trouble" in a["failure"]["message"] for a in paused["attempts"])

        # Retrying a paused invocation resumes it (PATCH works as POST).
        response = await h.admin.patch(f"/invocations/{invocation_id}/retry")
        assert response.status_code == 202, response.text
        assert response.json()["resumed"] is True
        done = await h.wait_for(invocation_id, lambda i: i["status"] == "completed")
        assert done["output"] == "ok"

        assert_error(await h.admin.post(f"/invocations/{invocation_id}/retry"), 409, "not_retryable", "completed")
        assert_error(await h.admin.post("/invocations/inv_nope/retry"), 404, "invocation_not_found")
        later = await send(h, "/Ops/echo", "x", delay="1h")
        assert_error(await h.admin.post(f"/invocations/{later}/retry"), 409, "not_retryable", "scheduled")
        assert_error(await h.admin.post(f"/invocations/{later}/pause"), 400, "bad_request", "retry", "purge")


# --------------------------------------------------------------------------- purge


async def test_purge_one_invocation(tmp_path: Path) -> None:
    async with running(tmp_path / "p.db", [ops]) as h:
        parent, _ = await call(h, "/Ops/journey", "ada")
        callees = [e["callee_id"] for e in (await h.invocation(parent))["journal"] if "callee_id" in e]
        waiting = await send(h, "/Ops/wait")
        await h.wait_for(waiting, lambda i: i["status"] == "suspended")

        assert_error(await h.admin.post(f"/invocations/{waiting}/purge"), 409, "not_ended", "suspended")
        assert_error(await h.admin.patch(f"/invocations/{parent}/purge"), 405, "method_not_allowed", "POST")
        # DELETE cancels; it never purges, and refuses to guess when asked to.
        assert_error(await h.admin.delete(f"/invocations/{waiting}?purge=true"), 400, "bad_request", "/purge")
        assert (await h.invocation(waiting))["status"] == "suspended"

        response = await h.admin.post(f"/invocations/{parent}/purge")
        assert response.status_code == 200, response.text
        assert response.json() == {"id": parent, "purged": 1}
        assert_error(await h.admin.get(f"/invocations/{parent}"), 404, "invocation_not_found")
        assert_error(await h.admin.post(f"/invocations/{parent}/purge"), 404, "invocation_not_found")
        for callee in callees:  # the callees stay, still naming their (purged) parent
            assert (await h.invocation(callee))["parent_id"] == parent


async def test_bulk_purge_in_batches(tmp_path: Path) -> None:
    async with running(tmp_path / "p.db", [ops]) as h:
        done = [(await call(h, "/Ops/echo", f"e{n}"))[0] for n in range(5)]
        failed = await h.ingress.post("/Ops/no", json="x")
        assert failed.status_code == 409
        later = await send(h, "/Ops/echo", "x", delay="1h")
        now = h.runtime.clock.now_ms() + 1

        for body, words in (
            ([], ("JSON object",)),
            ({}, ("ended_before_ms is required",)),
            ({"ended_before_ms": "now"}, ("ended_before_ms",)),
            ({"ended_before_ms": now, "status": ["completed", "pending"]}, ("only ended", "pending")),
            ({"ended_before_ms": now, "status": []}, ("status",)),
            ({"ended_before_ms": now, "status": "bogus"}, ("bogus",)),
            ({"ended_before_ms": now, "limit": 0}, ("limit",)),
            ({"ended_before_ms": now, "limit": True}, ("limit",)),
            ({"ended_before_ms": now, "service": 3}, ("service",)),
            ({"ended_before_ms": now, "servcie": "Ops"}, ("unknown field 'servcie'",)),
        ):
            assert_error(await h.admin.post("/invocations/purge", json=body), 400, "bad_request", *words)
        assert_error(await h.admin.post("/invocations/purge", content=b"{nope"), 400, "bad_request", "JSON")

        purged = await h.admin.post("/invocations/purge", json={"ended_before_ms": now, "status": "failed"})
        assert purged.json() == {"purged": 1, "more": False}
        results = []
        while True:
            response = await h.admin.post(
                "/invocations/purge", json={"ended_before_ms": now, "service": "Ops", "limit": 2}
            )
            assert response.status_code == 200, response.text
            results.append(response.json())
            if not results[-1]["more"]:
                break
        assert results == [{"purged": 2, "more": True}, {"purged": 2, "more": True}, {"purged": 1, "more": False}]
        for invocation_id in done:
            assert_error(await h.admin.get(f"/invocations/{invocation_id}"), 404, "invocation_not_found")
        remaining = (await h.admin.get("/invocations")).json()["invocations"]
        assert [i["id"] for i in remaining] == [later]


# --------------------------------------------------------------------------- deployments


class _ByHost:
    """Handler apps by the host they are registered at (the harness has one transport for all of them)."""

    def __init__(self, apps: dict[str, ASGIApp]) -> None:
        self.apps = apps

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        host = dict(scope["headers"]).get(b"host", b"").decode()
        await self.apps[host](scope, receive, send)


@asynccontextmanager
async def by_host(tmp_path: Path, hosts: dict[str, list[Service]], **settings: Any) -> AsyncIterator[Harness]:
    """A proxy and several handler endpoints, each at ``http://{host}``; none is registered yet."""
    (first, *others) = hosts.items()
    app, forward = handler_app_for(first[1])
    apps: dict[str, ASGIApp] = {first[0]: app}
    for host, services in others:
        apps[host] = Endpoint(services, callback_transport=httpx.ASGITransport(app=forward)).asgi()
    async with open_runtime(tmp_path / "p.db", _ByHost(apps), forward, **settings) as h:
        yield h


def ops_v2() -> Service:
    """New code for ``Ops``: one handler more."""
    v2 = Service("Ops")

    @v2.handler(name="wait")
    async def wait_v2(ctx: Context) -> str:
        return "v2"

    @v2.handler()
    async def shout(ctx: Context, text: str) -> str:
        return text.upper()

    return v2


async def test_remove_a_deployment_only_when_nothing_needs_it(tmp_path: Path) -> None:
    async with by_host(tmp_path, {"handlers": [ops], "handlers-v2": [ops_v2()]}) as h:
        first = (await h.admin.post("/deployments", json={"uri": HANDLER_URI})).json()
        waiting = await send(h, "/Ops/wait")
        await h.wait_for(waiting, lambda i: i["status"] == "suspended")
        assert_error(
            await h.admin.delete(f"/deployments/{first['id']}"), 409, "deployment_in_use", "serves Ops", "1 unfinished"
        )
        second = await h.admin.post("/deployments", json={"uri": "http://handlers-v2"})
        assert second.status_code == 201, second.text
        assert second.json()["id"] != first["id"]
        # Ops moved to the new code, but the waiting invocation is pinned to the first deployment.
        response = await h.admin.delete(f"/deployments/{first['id']}")
        assert_error(response, 409, "deployment_in_use", "1 unfinished")
        assert "serves" not in response.json()["message"]
        found = await h.invocation(waiting)
        awakeable = found["journal"][0]["awakeable_id"]
        assert (await h.ingress.post(f"/restate/awakeables/{awakeable}/resolve", json="go")).status_code == 202
        await h.wait_for(waiting, lambda i: i["status"] == "completed")

        response = await h.admin.delete(f"/deployments/{first['id']}")
        assert response.status_code == 200, response.text
        assert response.json() == {"id": first["id"], "removed": True}
        listed = (await h.admin.get("/deployments")).json()["deployments"]
        assert [d["id"] for d in listed] == [second.json()["id"]]
        assert_error(await h.admin.get(f"/deployments/{first['id']}"), 404)
        assert_error(await h.admin.delete(f"/deployments/{first['id']}"), 404, "deployment_not_found")
        assert (await h.invocation(waiting))["deployment_id"] == first["id"]  # ended ones keep their pin
        assert (await call(h, "/Ops/shout", "hey"))[1] == "HEY"


# --------------------------------------------------------------------------- OpenAPI


def _refs(value: Any) -> list[str]:
    if isinstance(value, dict):
        found = [value["$ref"]] if isinstance(value.get("$ref"), str) else []
        return found + [r for v in value.values() for r in _refs(v)]
    if isinstance(value, list):
        return [r for v in value for r in _refs(v)]
    return []


def _resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def check_openapi(document: dict[str, Any]) -> None:
    """Valid JSON with OpenAPI 3.1's required fields, every operation answering, every $ref resolving."""
    document = json.loads(json.dumps(document))
    assert document["openapi"].startswith("3.1.")
    assert document["info"]["title"] and document["info"]["version"]
    assert document["paths"]
    operation_ids: list[str] = []
    for path, item in document["paths"].items():
        assert path.startswith("/")
        templated = {part[1:-1] for part in path.split("/") if part.startswith("{")}
        for method, operation in item.items():
            if method == "parameters":
                continue
            assert method in ("get", "post", "put", "patch", "delete"), (path, method)
            assert operation["responses"], (path, method)
            operation_ids.append(operation["operationId"])
            declared = {p["name"] for p in [*item.get("parameters", []), *operation.get("parameters", [])]}
            assert templated <= declared, (path, method, templated, declared)
    assert len(operation_ids) == len(set(operation_ids)), "operationIds must be unique"
    for ref in _refs(document):
        _resolve(document, ref)
    for schema in document["components"]["schemas"].values():
        jsonschema.Draft202012Validator.check_schema(schema)


def test_every_admin_route_is_in_the_admin_openapi_document() -> None:
    check_openapi(ADMIN_OPENAPI)
    app = create_admin_app(None)  # type: ignore[arg-type]  # the routes only; nothing runs
    paths = ADMIN_OPENAPI["paths"]
    for route in app.routes:
        if isinstance(route, Mount):
            assert f"{route.path}/{{path}}" in paths
            continue
        assert isinstance(route, Route)
        path = route.path.replace("{key:path}", "{key}")
        methods = {m.lower() for m in route.methods or ()} - {"head"}
        expanded = [path.replace("{action}", a) for a in ACTIONS] if "{action}" in path else [path]
        for concrete in expanded:
            assert concrete in paths, concrete
            wanted = {"post"} if concrete.endswith("/purge") and "{action}" in path else methods
            assert wanted <= set(paths[concrete]), (concrete, wanted)
    listing = {p["name"] for p in paths["/invocations"]["get"]["parameters"]}
    assert listing == set(LIST_PARAMETERS)


async def test_the_openapi_documents_of_both_ports(tmp_path: Path) -> None:
    async with by_host(tmp_path, {"handlers": [cart, orders], "handlers-approval": [approval]}) as h:
        assert (await h.admin.post("/deployments", json={"uri": HANDLER_URI})).status_code == 201
        admin = await h.admin.get("/openapi.json")
        assert admin.status_code == 200 and admin.headers["content-type"] == "application/json"
        assert admin.json() == json.loads(json.dumps(ADMIN_OPENAPI))

        response = await h.ingress.get("/openapi.json")
        assert response.status_code == 200, response.text
        document = response.json()
        check_openapi(document)
        paths = document["paths"]
        for path in (
            "/Cart/{key}/add_item",
            "/Cart/{key}/add_item/send",
            "/Cart/{key}/view",
            "/OrderService/process_order",
            "/OrderService/process_order/send",
        ):
            assert "post" in paths[path], path
        assert "/Cart/add_item" not in paths and "/OrderService/{key}/process_order" not in paths
        assert "/restate/invocation/{id}/attach" in paths
        add_item = paths["/Cart/{key}/add_item"]["post"]
        assert {p["name"] for p in add_item["parameters"]} >= {"key", "Idempotency-Key"}
        assert "delay" in {p["name"] for p in paths["/Cart/{key}/add_item/send"]["post"]["parameters"]}
        assert "requestBody" not in paths["/Cart/{key}/view"]["post"]  # takes no input

        # The schemas are the handlers' own, with their definitions moved into the components.
        services = {s["name"]: s for s in (await h.admin.get("/services")).json()["services"]}
        handler = next(x for x in services["Cart"]["handlers"] if x["name"] == "add_item")
        request_schema = add_item["requestBody"]["content"]["application/json"]["schema"]
        item = {"sku": "book", "quantity": 1, "price_cents": 2500}
        # The document is a schema too (its other keywords are unknown, so ignored): the refs resolve in it.
        validator = jsonschema.Draft202012Validator({**document, **request_schema})
        assert validator.is_valid(item)
        assert not validator.is_valid({"sku": 3})
        assert jsonschema.Draft202012Validator(handler["input_schema"]).is_valid(item)
        response_schema = add_item["responses"]["200"]["content"]["application/json"]["schema"]
        assert _resolve(document, response_schema["$ref"]) if "$ref" in response_schema else response_schema

        # A new deployment's services show up at once.
        registered = await h.admin.post("/deployments", json={"uri": "http://handlers-approval"})
        assert registered.status_code == 201
        refreshed = (await h.ingress.get("/openapi.json")).json()
        check_openapi(refreshed)
        assert "/Approval/{key}/run" in refreshed["paths"] and "/Approval/{key}/decide/send" in refreshed["paths"]

        assert_error(await h.ingress.post("/openapi.json"), 405)


def test_the_ingress_document_moves_the_handlers_definitions_into_its_components() -> None:
    node: dict[str, object] = {"type": "object", "properties": {"children": {"type": "array", "items": {"$ref": "#"}}}}
    item_a: dict[str, object] = {"type": "object", "properties": {"a": {"type": "integer"}}}
    item_b: dict[str, object] = {"type": "object", "properties": {"b": {"type": "string"}}}
    manifest = ServiceManifest(
        name="Shop",
        handlers=[
            HandlerManifest(name="tree", input_schema=node, output_schema={"type": "integer"}),
            HandlerManifest(name="one", input_schema={"$ref": "#/$defs/Item", "$defs": {"Item": item_a}}),
            HandlerManifest(name="two", input_schema={"$ref": "#/$defs/Item", "$defs": {"Item": item_a}}),
            HandlerManifest(name="three", input_schema={"$ref": "#/$defs/Item", "$defs": {"Item": item_b}}),
            HandlerManifest(name="nothing", takes_input=False),
        ],
    )
    document = ingress_openapi([ServiceInfo(manifest, "dp_1")])
    check_openapi(document)
    schemas = document["components"]["schemas"]

    def body(handler: str) -> Any:
        return document["paths"][f"/Shop/{handler}"]["post"]["requestBody"]["content"]["application/json"]["schema"]

    # A recursive reference to the handler's own schema points at its component.
    tree = _resolve(document, body("tree")["$ref"])
    assert tree["properties"]["children"]["items"] == body("tree")
    # The same definition is shared by the service's handlers; a different one with its name gets another.
    assert schemas["Shop.Item"] == item_a
    assert _resolve(document, body("one")["$ref"]) == _resolve(document, body("two")["$ref"]) == _ref("Shop.Item")
    three = _resolve(document, _resolve(document, body("three")["$ref"])["$ref"])
    assert three == item_b
    assert "requestBody" not in document["paths"]["/Shop/nothing"]["post"]
    assert set(document["paths"]) >= {"/Shop/tree", "/Shop/tree/send", "/Shop/nothing/send"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


async def raw_get(app: ASGIApp, path: str) -> int:
    """The status of a GET of ``path`` exactly as given (HTTP clients would normalise the dots away)."""
    sent: list[Message] = []
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"admin")],
        "server": ("admin", 80),
        "client": ("127.0.0.1", 1),
    }

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    status: int = sent[0]["status"]
    return status


async def test_openapi_and_ui_need_no_admin_token_but_the_api_does(tmp_path: Path) -> None:
    async with running(tmp_path / "p.db", [ops], register=False, admin_token="ad", ingress_token="in") as h:
        assert (await h.admin.get("/health")).status_code == 200
        assert (await h.admin.get("/openapi.json")).status_code == 200
        home = await h.admin.get("/")
        assert (home.status_code, home.headers["location"]) == (307, "/ui/")
        ui = await h.admin.get("/ui/")
        assert ui.status_code == 200 and "text/html" in ui.headers["content-type"]
        assert (await h.admin.get("/ui/index.html")).status_code == 200
        assert (await h.admin.get("/ui", follow_redirects=True)).status_code == 200
        assert_error(await h.admin.get("/ui/no-such-file.js"), 404)
        for path in ("/invocations", "/uix", "/deployments", "/metrics"):
            assert_error(await h.admin.get(path), 401, "unauthorized")
        # A path under /ui/ that climbs out of it reaches the UI's files only (which refuse it), never the API.
        for path in ("/ui/../invocations", "/ui/../../etc/passwd"):
            assert await raw_get(h.runtime.admin, path) == 404
        authorised = await h.admin.get("/invocations", headers={"authorization": "Bearer ad"})
        assert authorised.status_code == 200
        # The ingress's document lists what is registered: it needs the ingress token.
        assert_error(await h.ingress.get("/openapi.json"), 401, "unauthorized")
        document = (await h.ingress.get("/openapi.json", headers={"authorization": "Bearer in"})).json()
        assert document["security"] == [{"bearerAuth": []}]
        assert not any(p.startswith("/Ops") for p in document["paths"])  # nothing registered yet
