"""Signed requests to handlers, bearer tokens on the ingress and the admin API."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from handler_sdk import Context, Endpoint, Service
from handler_sdk.signing import SIGNATURE_HEADER, RequestSigner, SignatureError, SignatureVerifier
from proxy.app import Runtime
from proxy.config import Settings

from .harness import _Forward, database

OLD_KEY = "old-signing-key-0123456789"
NEW_KEY = "new-signing-key-9876543210"

svc = Service("Secure")


@svc.handler()
async def echo(ctx: Context, text: str) -> str:
    return await ctx.run("upper", str.upper, text)


async def _run(tmp_path: Path, endpoint_keys: list[str] | None, **settings: object) -> tuple[int, int, str]:
    """Register and call through a proxy with ``settings``; (register status, call status, call text)."""
    forward = _Forward()
    endpoint = Endpoint([svc], callback_transport=httpx.ASGITransport(app=forward), signing_keys=endpoint_keys or [])
    async with Runtime.open(
        Settings(db=await database(tmp_path / f"p{id(settings)}.db"), retry_max_attempts=2,
                 retry_initial_interval_ms=1, **settings),  # type: ignore[arg-type]
        transport=httpx.ASGITransport(app=endpoint.asgi()),
        callback_base="http://proxy",
    ) as rt:  # fmt: skip
        forward.target = rt.ingress
        headers = {"authorization": f"Bearer {settings['admin_token']}"} if settings.get("admin_token") else {}
        async with (
            httpx.AsyncClient(transport=httpx.ASGITransport(app=rt.admin), base_url="http://a", headers=headers) as a,
            httpx.AsyncClient(transport=httpx.ASGITransport(app=rt.ingress), base_url="http://i") as i,
        ):
            registered = await a.post("/deployments", json={"uri": "http://handlers"})
            if registered.status_code != 201:
                return registered.status_code, 0, registered.text
            token = settings.get("ingress_token")
            call = await i.post(
                "/Secure/echo", json="hi", headers={"authorization": f"Bearer {token}"} if token else {}
            )
            return registered.status_code, call.status_code, call.text


async def test_signed_requests_are_accepted_and_keys_rotate(tmp_path: Path) -> None:
    assert await _run(tmp_path, [OLD_KEY], signing_key=OLD_KEY) == (201, 200, '"HI"')
    # Rotation: endpoints hold both keys while the proxy moves from the old key to the new one.
    assert await _run(tmp_path, [NEW_KEY, OLD_KEY], signing_key=OLD_KEY) == (201, 200, '"HI"')
    assert await _run(tmp_path, [NEW_KEY, OLD_KEY], signing_key=NEW_KEY) == (201, 200, '"HI"')


async def test_an_endpoint_with_keys_refuses_unsigned_and_foreign_requests(tmp_path: Path) -> None:
    status, _, text = await _run(tmp_path, [NEW_KEY])
    assert status == 502 and "not signed" in text
    status, _, text = await _run(tmp_path, [NEW_KEY], signing_key=OLD_KEY)
    assert status == 502 and "does not hold" in text


async def test_direct_calls_to_a_protected_endpoint_are_refused() -> None:
    endpoint = Endpoint([svc], signing_keys=[NEW_KEY])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=endpoint.asgi()), base_url="http://h") as client:
        assert (await client.get("/health")).status_code == 200
        assert (await client.get("/discover")).status_code == 401
        body = (
            b'{"invocation_id":"inv_x","service":"Secure","handler":"echo","attempt":1,"token":"t","callback_url":"u"}'
        )
        signer = RequestSigner(NEW_KEY)
        tampered = signer.signature("POST", "/invoke/Secure/echo", body + b" ", 1_700_000_000_000)
        response = await client.post(
            "/invoke/Secure/echo",
            content=body,
            headers={"content-type": "application/vnd.durable.v1+json", SIGNATURE_HEADER: tampered},
        )
        assert response.status_code == 401


def test_signature_checks() -> None:
    signer, verifier = RequestSigner(NEW_KEY), SignatureVerifier([NEW_KEY], window_ms=60_000)
    now = 1_700_000_000_000
    good = signer.signature("POST", "/invoke/S/h", b"{}", now)
    verifier.verify(good, "POST", "/invoke/S/h", b"{}", now + 59_000)
    for header, method, path, body, at, needle in [
        (None, "POST", "/invoke/S/h", b"{}", now, "not signed"),
        ("garbage", "POST", "/invoke/S/h", b"{}", now, "malformed"),
        (good, "POST", "/invoke/S/h", b"{}", now + 61_000, "window"),
        (good, "POST", "/invoke/S/h", b"{ }", now, "does not match"),
        (good, "POST", "/invoke/S/other", b"{}", now, "does not match"),
        (good, "GET", "/invoke/S/h", b"{}", now, "does not match"),
    ]:
        with pytest.raises(SignatureError, match=needle):
            verifier.verify(header, method, path, body, at)
    with pytest.raises(ValueError):
        RequestSigner("short")


async def test_bearer_tokens_guard_the_ingress_and_the_admin_api(tmp_path: Path) -> None:
    # Both tokens set: everything works for a client that sends them, callbacks use attempt tokens.
    assert await _run(tmp_path, None, ingress_token="in-token", admin_token="ad-token") == (201, 200, '"HI"')
    async with Runtime.open(
        Settings(db=await database(tmp_path / "t.db"), ingress_token="in-token", admin_token="ad-token"),
        callback_base="http://proxy",
    ) as rt:
        async with (
            httpx.AsyncClient(transport=httpx.ASGITransport(app=rt.admin), base_url="http://a") as admin,
            httpx.AsyncClient(transport=httpx.ASGITransport(app=rt.ingress), base_url="http://i") as ingress,
        ):
            assert (await admin.get("/health")).status_code == 200
            missing = await admin.get("/invocations")
            assert missing.status_code == 401 and "Bearer" in missing.json()["message"]
            wrong = await admin.get("/invocations", headers={"authorization": "Bearer nope"})
            assert wrong.status_code == 401
            assert (await ingress.get("/restate/health")).status_code == 200
            refused = await ingress.post("/Secure/echo", json="hi")
            assert refused.status_code == 401


def test_the_admin_api_stays_on_loopback_unless_it_has_a_token() -> None:
    with pytest.raises(ValueError, match="admin_token"):
        Settings(admin_host="0.0.0.0")
    assert Settings(admin_host="0.0.0.0", admin_token="secret").admin_host == "0.0.0.0"
    assert "secret" not in repr(Settings(admin_token="secret", signing_key="k" * 20))
