"""Priority 1: the paths without which the shop is down."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx


def test_auth_health(auth: httpx.Client) -> None:
    resp = auth.get("/health")
    assert resp.status_code == 200
    assert resp.json()["status"] == "ok"


def test_backend_health(backend: httpx.Client) -> None:
    resp = backend.get("/health")
    assert resp.status_code == 200
    assert resp.json()["status"] == "ok"


def test_issue_token(auth: httpx.Client, user: str) -> None:
    resp = auth.post("/token", json={"user": user})
    assert resp.status_code == 200, f"token request failed: HTTP {resp.status_code} {resp.text}"
    body = resp.json()
    assert body["token_type"] == "Bearer"
    assert body["token"].count(".") == 1


def test_verify_token(auth: httpx.Client, user: str, headers: dict[str, str]) -> None:
    resp = auth.get("/verify", headers=headers)
    assert resp.status_code == 200, f"token rejected: HTTP {resp.status_code} {resp.text}"
    assert resp.json()["sub"] == user


def test_list_items(backend: httpx.Client) -> None:
    resp = backend.get("/items")
    assert resp.status_code == 200
    items = resp.json()["items"]
    assert items, "the catalog is empty"
    assert all(item["price_cents"] > 0 for item in items)


def test_cart_requires_token(backend: httpx.Client) -> None:
    resp = backend.get("/cart")
    assert resp.status_code == 401, f"cart without a token: HTTP {resp.status_code}"


def test_place_order(place_order: Callable[..., dict[str, Any]], headers: dict[str, str]) -> None:
    order = place_order(headers, ("sku-coffee", 2), ("sku-filter", 1))
    assert order["status"] == "placed"
    assert order["total_cents"] == 2 * 1800 + 450


def test_event_stream_authenticated(
    open_events: Callable[..., Any], headers: dict[str, str]
) -> None:
    with open_events(headers) as stream:
        assert stream.status_code == 200, (
            f"events stream rejected: HTTP {stream.status_code} {stream.error}"
        )
        kind, _ = stream.next_event()
        assert kind == "hello"
