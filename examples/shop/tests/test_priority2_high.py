"""Priority 2: bad input and bad credentials are refused cleanly."""

from __future__ import annotations

from typing import Any

import httpx
import pytest


@pytest.mark.parametrize(
    "authorization",
    ["Bearer garbage", "Bearer a.b", "Basic dXNlcjpwYXNz"],
    ids=["garbage", "bad-signature", "basic-auth"],
)
def test_bad_credentials_rejected(backend: httpx.Client, authorization: str) -> None:
    resp = backend.get("/cart", headers={"Authorization": authorization})
    assert resp.status_code == 401, f"bad credentials accepted: HTTP {resp.status_code}"


def test_tampered_token_rejected(backend: httpx.Client, token: str) -> None:
    payload, signature = token.split(".")
    tampered = f"{payload}.{signature[::-1]}"
    resp = backend.get("/cart", headers={"Authorization": f"Bearer {tampered}"})
    assert resp.status_code == 401


def test_unknown_item_is_404(backend: httpx.Client) -> None:
    assert backend.get("/items/sku-does-not-exist").status_code == 404


@pytest.mark.parametrize("quantity", [0, 11, "two"])
def test_cart_rejects_bad_quantity(
    backend: httpx.Client, headers: dict[str, str], quantity: Any
) -> None:
    resp = backend.post(
        "/cart/items", json={"item_id": "sku-mug", "quantity": quantity}, headers=headers
    )
    assert resp.status_code == 400, f"quantity {quantity!r} accepted: HTTP {resp.status_code}"


def test_malformed_json_is_400(backend: httpx.Client, headers: dict[str, str]) -> None:
    resp = backend.post(
        "/cart/items",
        content=b"{not json",
        headers={**headers, "Content-Type": "application/json"},
    )
    assert resp.status_code == 400


def test_empty_cart_cannot_order(backend: httpx.Client, headers: dict[str, str]) -> None:
    resp = backend.post("/orders", headers=headers)
    assert resp.status_code == 409, f"ordered an empty cart: HTTP {resp.status_code}"
