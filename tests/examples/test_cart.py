"""examples/cart.py: a cart per key, whose checkout calls the order service and empties the cart."""

from __future__ import annotations

from pathlib import Path

import pytest

from examples import order_service
from examples.cart import cart
from examples.order_service import orders
from examples.shop import Shop
from handler_sdk.testing import InvocationFailed, TestEnvironment

REPLAY = pytest.mark.parametrize("always_replay", [False, True], ids=["live", "always-replay"])
BOOK = {"sku": "book", "quantity": 1, "price_cents": 2500}
PEN = {"sku": "pen", "quantity": 3, "price_cents": 300}
PAYMENT = {"customer_email": "ada@example.com", "card": "tok_visa"}


@pytest.fixture(autouse=True)
def shop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Shop:
    """The order service's outside world, in a ledger of this test's own."""
    fresh = Shop(tmp_path / "shop.db")
    monkeypatch.setattr(order_service, "shop", fresh)
    return fresh


@REPLAY
async def test_add_view_remove(always_replay: bool) -> None:
    async with TestEnvironment([cart, orders], always_replay=always_replay) as env:
        assert await env.call("Cart", "view", key="ada") == []
        assert await env.call("Cart", "add_item", BOOK, key="ada") == [BOOK]
        assert await env.call("Cart", "add_item", PEN, key="ada") == [BOOK, PEN]
        # The same SKU again adds to its quantity.
        assert await env.call("Cart", "add_item", BOOK, key="ada") == [{**BOOK, "quantity": 2}, PEN]
        assert await env.call("Cart", "view", key="ada") == [{**BOOK, "quantity": 2}, PEN]
        assert await env.call("Cart", "remove_item", "book", key="ada") == [PEN]
        assert await env.call("Cart", "remove_item", "nothing", key="ada") == [PEN]
        assert await env.call("Cart", "remove_item", "pen", key="ada") == []
        state = (await env.admin.get("/objects/Cart/ada")).json()
        assert state["state"] == {}, "removing the last item clears the entry"
        assert state["lock_holder"] is None and state["queue"] == []


@REPLAY
async def test_checkout_orders_the_cart_and_empties_it(always_replay: bool, shop: Shop) -> None:
    async with TestEnvironment([cart, orders], always_replay=always_replay) as env:
        await env.call("Cart", "add_item", BOOK, key="ada")
        await env.call("Cart", "add_item", PEN, key="ada")
        result = await env.call("Cart", "checkout", PAYMENT, key="ada")
        assert result["amount_cents"] == 2500 + 3 * 300
        assert result["order_id"].startswith("ord_") and result["payment_id"].startswith("ch_")
        assert await env.call("Cart", "view", key="ada") == []
        assert (await env.admin.get("/objects/Cart/ada")).json()["state"] == {}
        assert shop.count_calls("charge") == 1
        assert (shop.count("charges"), shop.count("orders"), shop.count("emails"), shop.count("reservations")) == (
            1,
            1,
            1,
            2,
        )
        listed = (await env.admin.get("/invocations", params={"limit": 100})).json()["invocations"]
        [checkout] = [i for i in listed if i["handler"] == "checkout"]
        [order] = [i for i in listed if i["service"] == "OrderService"]
        assert order["parent_id"] == checkout["id"] and order["key"] is None
        assert order["input"]["items"] == [BOOK, PEN]
        found = await env.invocation(checkout["id"])
        assert [entry["kind"] for entry in found["journal"]] == ["get_state", "call", "clear_state"]


@REPLAY
async def test_a_declined_card_keeps_the_cart(always_replay: bool, shop: Shop) -> None:
    async with TestEnvironment([cart, orders], always_replay=always_replay) as env:
        await env.call("Cart", "add_item", BOOK, key="bo")
        with pytest.raises(InvocationFailed) as failed:
            await env.call("Cart", "checkout", {**PAYMENT, "card": "declined_amex"}, key="bo")
        assert (failed.value.status_code, failed.value.message) == (402, "card declined_amex was declined")
        assert await env.call("Cart", "view", key="bo") == [BOOK]
        assert shop.count("orders") == 0
        # The failed checkout released the cart: the next one goes through.
        assert (await env.call("Cart", "checkout", PAYMENT, key="bo"))["amount_cents"] == 2500
        assert await env.call("Cart", "view", key="bo") == []


async def test_an_empty_cart_cannot_check_out(shop: Shop) -> None:
    async with TestEnvironment([cart, orders]) as env:
        with pytest.raises(InvocationFailed) as failed:
            await env.call("Cart", "checkout", PAYMENT, key="cy")
        assert (failed.value.status_code, failed.value.message) == (400, "cart cy is empty")
        with pytest.raises(InvocationFailed) as bad:
            await env.call("Cart", "add_item", {**BOOK, "quantity": 0}, key="cy")
        assert bad.value.status_code == 400
        assert shop.count_calls("charge") == 0


async def test_two_carts_are_independent() -> None:
    async with TestEnvironment([cart, orders]) as env:
        await env.call("Cart", "add_item", BOOK, key="ada")
        await env.call("Cart", "add_item", PEN, key="bo")
        await env.call("Cart", "checkout", PAYMENT, key="ada")
        assert await env.call("Cart", "view", key="ada") == []
        assert await env.call("Cart", "view", key="bo") == [PEN]
        # Keys are opaque strings: one with a slash is another cart, not another path.
        assert await env.call("Cart", "add_item", BOOK, key="team/ada") == [BOOK]
        assert await env.call("Cart", "view", key="team/ada") == [BOOK]
        assert await env.call("Cart", "view", key="team") == []


async def test_a_cart_needs_a_key() -> None:
    async with TestEnvironment([cart, orders]) as env:
        response = await env.ingress.post("/Cart/add_item", json=BOOK)
        assert response.status_code in (400, 404)
        assert "Cart is keyed: use /Cart/{key}/{handler}" in response.json()["message"]
        response = await env.ingress.post("/restate/call/Cart/add_item", json=BOOK)
        assert response.status_code in (400, 404)
        assert "address it by key" in response.json()["message"]
        assert (await env.admin.get("/invocations")).json()["invocations"] == []
