"""Orders: cart totals, placing, listing, privacy and cancelling."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import httpx
import pytest

PlaceOrder = Callable[..., dict[str, Any]]


@pytest.mark.parametrize(
    ("items", "total_cents"),
    [
        ([("sku-coffee", 1)], 1800),
        ([("sku-mug", 2), ("sku-filter", 2)], 2 * 1200 + 2 * 450),
        ([("sku-grinder", 1), ("sku-coffee", 3)], 5900 + 3 * 1800),
    ],
    ids=["one-item", "two-lines", "grinder-bundle"],
)
def test_order_total(
    place_order: PlaceOrder,
    headers: dict[str, str],
    items: list[tuple[str, int]],
    total_cents: int,
) -> None:
    assert place_order(headers, *items)["total_cents"] == total_cents


def test_order_empties_cart(
    backend: httpx.Client, place_order: PlaceOrder, headers: dict[str, str]
) -> None:
    place_order(headers)
    assert backend.get("/cart", headers=headers).json()["items"] == []


def test_remove_from_cart(backend: httpx.Client, headers: dict[str, str]) -> None:
    backend.post("/cart/items", json={"item_id": "sku-mug", "quantity": 1}, headers=headers)
    resp = backend.delete("/cart/items/sku-mug", headers=headers)
    assert resp.status_code == 200
    assert resp.json()["total_cents"] == 0


def test_orders_are_listed(
    backend: httpx.Client, place_order: PlaceOrder, headers: dict[str, str]
) -> None:
    ids = {place_order(headers)["id"], place_order(headers)["id"]}
    listed = {o["id"] for o in backend.get("/orders", headers=headers).json()["orders"]}
    assert listed == ids


def test_orders_are_private(
    backend: httpx.Client,
    place_order: PlaceOrder,
    make_token: Callable[[str], str],
    headers: dict[str, str],
    user: str,
) -> None:
    order = place_order(headers)
    other = {"Authorization": f"Bearer {make_token(user + '-other')}"}
    resp = backend.get(f"/orders/{order['id']}", headers=other)
    assert resp.status_code == 404, f"another user read the order: HTTP {resp.status_code}"


def test_cancel_order_once(
    backend: httpx.Client, place_order: PlaceOrder, headers: dict[str, str]
) -> None:
    order = place_order(headers)
    first = backend.post(f"/orders/{order['id']}/cancel", headers=headers)
    assert first.status_code == 200
    assert first.json()["status"] == "cancelled"
    again = backend.post(f"/orders/{order['id']}/cancel", headers=headers)
    assert again.status_code == 409


@pytest.mark.skipif(
    "LOOP_PAYMENTS_URL" not in os.environ,
    reason="no payments service in this env (LOOP_PAYMENTS_URL is not set)",
)
def test_order_is_charged(place_order: PlaceOrder, headers: dict[str, str]) -> None:
    order = place_order(headers)
    resp = httpx.get(f"{os.environ['LOOP_PAYMENTS_URL']}/charges/{order['id']}", timeout=3)
    assert resp.status_code == 200
    assert resp.json()["amount_cents"] == order["total_cents"]
