"""Smoke tests of the staging services: each answers, private ones with an ID token."""

from __future__ import annotations

import os

import httpx
import pytest

SERVICES = ["auth", "backend", "frontend"]


def headers(name: str) -> dict[str, str]:
    # Set by loop for services that are not public (absent against an emulator).
    token = os.environ.get(f"LOOP_{name.upper()}_ID_TOKEN")
    return {"Authorization": f"Bearer {token}"} if token else {}


@pytest.mark.parametrize("name", SERVICES)
def test_service_is_healthy(name: str) -> None:
    url = os.environ[f"LOOP_{name.upper()}_URL"]
    response = httpx.get(url + "/health", headers=headers(name), timeout=10)
    assert response.status_code == 200, f"{name}: HTTP {response.status_code}"
