"""Events: the order event stream (Server-Sent Events on GET /events)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import httpx

PlaceOrder = Callable[..., dict[str, Any]]
OpenEvents = Callable[..., Any]


def test_events_require_token(backend: httpx.Client) -> None:
    assert backend.get("/events").status_code == 401


def test_events_connect(open_events: OpenEvents, headers: dict[str, str], user: str) -> None:
    with open_events(headers) as stream:
        assert stream.status_code == 200, (
            f"events stream rejected: HTTP {stream.status_code} {stream.error}"
        )
        assert stream.events() == [("hello", {"user": user}), ("end", {"sent": 0})]


def test_order_history_replayed(
    open_events: OpenEvents, place_order: PlaceOrder, headers: dict[str, str]
) -> None:
    order = place_order(headers)
    with open_events(headers) as stream:
        assert stream.status_code == 200, (
            f"events stream rejected: HTTP {stream.status_code} {stream.error}"
        )
        kinds = [(kind, data.get("id")) for kind, data in stream.events()]
    assert ("order_placed", order["id"]) in kinds


def test_live_order_events(
    backend: httpx.Client,
    open_events: OpenEvents,
    place_order: PlaceOrder,
    headers: dict[str, str],
) -> None:
    with open_events(headers, wait=2, limit=2) as stream:
        assert stream.status_code == 200, (
            f"events stream rejected: HTTP {stream.status_code} {stream.error}"
        )
        assert stream.next_event()[0] == "hello"
        order = place_order(headers)
        backend.post(f"/orders/{order['id']}/cancel", headers=headers)
        events = stream.events()
    assert [(kind, data.get("id")) for kind, data in events] == [
        ("order_placed", order["id"]),
        ("order_cancelled", order["id"]),
        ("end", None),
    ]


def test_concurrent_streams(
    open_events: OpenEvents, place_order: PlaceOrder, headers: dict[str, str]
) -> None:
    with ExitStack() as stack:
        streams = [stack.enter_context(open_events(headers, wait=2, limit=1)) for _ in range(3)]
        for stream in streams:
            assert stream.status_code == 200, (
                f"events stream rejected: HTTP {stream.status_code} {stream.error}"
            )
            assert stream.next_event()[0] == "hello"
        order = place_order(headers)
        for stream in streams:
            kind, data = stream.next_event()
            assert (kind, data["id"]) == ("order_placed", order["id"])
