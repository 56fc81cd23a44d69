"""Fixtures for the shop's e2e suites.

`loop run` starts the services and passes their URLs as LOOP_AUTH_URL and LOOP_BACKEND_URL.
To run these tests by hand, start the services yourself and set both variables.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

TIMEOUT = httpx.Timeout(3.0)


def _service_url(var: str) -> str:
    url = os.environ.get(var)
    if not url:
        pytest.fail(
            f"{var} is not set: run these tests under `loop run`, or start the shop services"
            f" and set {var} to the service's URL",
            pytrace=False,
        )
    return url.rstrip("/")


@pytest.fixture(scope="session")
def auth_url() -> str:
    return _service_url("LOOP_AUTH_URL")


@pytest.fixture(scope="session")
def backend_url() -> str:
    return _service_url("LOOP_BACKEND_URL")


@pytest.fixture(scope="session")
def auth(auth_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=auth_url, timeout=TIMEOUT) as client:
        yield client


@pytest.fixture(scope="session")
def backend(backend_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=backend_url, timeout=TIMEOUT) as client:
        yield client


@pytest.fixture
def user() -> str:
    """A fresh user per test, so tests running at once never share a cart."""
    return f"e2e-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def make_token(auth: httpx.Client) -> Callable[[str], str]:
    def make(user: str) -> str:
        resp = auth.post("/token", json={"user": user})
        assert resp.status_code == 200, f"token request failed: HTTP {resp.status_code}"
        token: str = resp.json()["token"]
        return token

    return make


@pytest.fixture
def token(make_token: Callable[[str], str], user: str) -> str:
    return make_token(user)


@pytest.fixture
def headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def place_order(backend: httpx.Client) -> Callable[..., dict[str, Any]]:
    """Put items in the cart and order them; returns the order."""

    def place(headers: dict[str, str], *items: tuple[str, int]) -> dict[str, Any]:
        for item_id, quantity in items or (("sku-coffee", 1),):
            resp = backend.post(
                "/cart/items", json={"item_id": item_id, "quantity": quantity}, headers=headers
            )
            assert resp.status_code == 200, f"add to cart: HTTP {resp.status_code} {resp.text}"
        resp = backend.post("/orders", headers=headers)
        assert resp.status_code == 201, f"place order: HTTP {resp.status_code} {resp.text}"
        order: dict[str, Any] = resp.json()
        return order

    return place


@dataclass
class EventStream:
    """An open GET /events response: Server-Sent Events, read one at a time."""

    response: httpx.Response
    _lines: Iterator[str] = field(init=False)

    def __post_init__(self) -> None:
        self._lines = self.response.iter_lines()

    @property
    def status_code(self) -> int:
        return self.response.status_code

    @property
    def error(self) -> str:
        """The body of a rejected stream (it is short)."""
        return self.response.read().decode(errors="replace")

    def next_event(self) -> tuple[str, dict[str, Any]]:
        kind, data = "", ""
        for line in self._lines:
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: "):
                data = line.removeprefix("data: ")
            elif not line and kind:
                return kind, json.loads(data)
        raise AssertionError("event stream ended without an 'end' event")

    def events(self) -> list[tuple[str, dict[str, Any]]]:
        """Every event up to and including 'end'."""
        out = [self.next_event()]
        while out[-1][0] != "end":
            out.append(self.next_event())
        return out


@pytest.fixture
def open_events(
    backend: httpx.Client,
) -> Callable[..., AbstractContextManager[EventStream]]:
    """`with open_events(headers, wait=1, limit=1) as stream:` opens GET /events."""

    @contextmanager
    def open_stream(headers: dict[str, str], **params: Any) -> Iterator[EventStream]:
        with backend.stream("GET", "/events", params=params, headers=headers) as resp:
            yield EventStream(resp)

    return open_stream
