"""Auth: tokens are issued, verified and refused the way clients expect."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest


@pytest.mark.parametrize("user", ["alice", "carol@example.com"])
def test_token_names_its_user(auth: httpx.Client, user: str) -> None:
    token = auth.post("/token", json={"user": user}).json()["token"]
    resp = auth.get("/verify", headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 200, f"token rejected: HTTP {resp.status_code} {resp.text}"
    claims = resp.json()
    assert claims["sub"] == user
    assert "auth" in claims["aud"]


@pytest.mark.parametrize(
    "body",
    [{}, {"user": ""}, {"user": 42}, {"user": "x" * 65}],
    ids=["missing", "empty", "not-a-string", "too-long"],
)
def test_token_refuses_bad_user(auth: httpx.Client, body: dict[str, Any]) -> None:
    resp = auth.post("/token", json=body)
    assert resp.status_code == 400, f"bad user {body!r} got a token: HTTP {resp.status_code}"


def test_verify_requires_bearer(auth: httpx.Client) -> None:
    assert auth.get("/verify").status_code == 401


def test_tokens_are_unique(make_token: Callable[[str], str], user: str) -> None:
    assert make_token(user) != make_token(user)
