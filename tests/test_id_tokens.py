"""ID tokens for private Cloud Run services, from the credentials teams really use: user
credentials, a service account key, workload identity federation (CI). google-auth refreshes
each source against a local token endpoint (`token_uri` / `token_url` in the credential file)
and loop calls the IAM Credentials API's generateIdToken on a local server too
(IAMCREDENTIALS_EMULATOR_HOST): nothing leaves this machine, and nothing of loop is patched."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
from cloudrun_fake import send_json

from deployloop.deploy import gcp

INVOKER = "loop-invoker@demo-proj.iam.gserviceaccount.com"
AUDIENCE = "https://backend-abc123-ew.a.run.app"


class TokenServer:
    """OAuth token endpoint, STS and IAM Credentials generateIdToken, on 127.0.0.1."""

    def __init__(self) -> None:
        self.grants: list[str] = []
        self.id_token_calls: list[tuple[str, str, str]] = []  # (account, audience, bearer)
        self.refused: set[str] = set()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length).decode()
                if self.path == "/token":
                    grant = parse_qs(body)["grant_type"][0]
                    server.grants.append(grant)
                    kind = "user" if grant == "refresh_token" else "key"
                    self._send(200, {"access_token": f"access-{kind}", "expires_in": 3600,
                                     "token_type": "Bearer"})
                elif self.path == "/sts":
                    server.grants.append(parse_qs(body)["grant_type"][0])
                    self._send(200, {
                        "access_token": "access-wif", "expires_in": 3600, "token_type": "Bearer",
                        "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
                    })
                elif self.path.endswith(":generateIdToken"):
                    account = self.path.split("/serviceAccounts/")[1].split(":")[0]
                    bearer = self.headers.get("Authorization", "").removeprefix("Bearer ")
                    audience = json.loads(body)["audience"]
                    server.id_token_calls.append((account, audience, bearer))
                    if account in server.refused:
                        self._send(403, {"error": {"code": 403, "status": "PERMISSION_DENIED"}})
                        return
                    self._send(200, {"token": f"id:{account}:{audience}"})
                else:
                    self._send(404, {"error": "no such endpoint"})

            def _send(self, code: int, body: object) -> None:
                send_json(self, code, body)

            def log_message(self, *args: object) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        self.address = f"127.0.0.1:{self.http.server_address[1]}"


@pytest.fixture
def tokens(monkeypatch: pytest.MonkeyPatch) -> Iterator[TokenServer]:
    server = TokenServer()
    monkeypatch.setenv("NO_GCE_CHECK", "true")  # never look for a metadata server
    monkeypatch.setenv(gcp.IAM_CREDENTIALS_EMULATOR_ENV, server.address)
    monkeypatch.delenv(gcp.EMULATOR_ENV, raising=False)
    yield server
    server.http.shutdown()
    server.http.server_close()


def credentials_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, info: dict[str, Any]) -> None:
    path = tmp_path / "adc.json"
    path.write_text(json.dumps(info))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(path))


def user(server: TokenServer) -> dict[str, Any]:
    return {"type": "authorized_user", "client_id": "gcloud", "client_secret": "s",
            "refresh_token": "r", "token_uri": f"http://{server.address}/token"}


def key(server: TokenServer) -> dict[str, Any]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return {"type": "service_account", "project_id": "demo-proj", "private_key_id": "1",
            "private_key": pem, "client_email": "ci@demo-proj.iam.gserviceaccount.com",
            "client_id": "1", "token_uri": f"http://{server.address}/token"}


def workload_identity(server: TokenServer, tmp_path: Path) -> dict[str, Any]:
    subject = tmp_path / "oidc-token"
    subject.write_text("a-github-oidc-token")
    return {
        "type": "external_account",
        "audience": "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/ci"
                    "/providers/github",
        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
        "token_url": f"http://{server.address}/sts",
        "credential_source": {"file": str(subject)},
    }


def test_user_credentials_mint_the_invokers_token(tokens: TokenServer) -> None:
    # google-auth reads user credentials from an ADC file with Google's token endpoint,
    # whatever the file says: they are made here as that loading makes them, with ours.
    import google.oauth2.credentials

    credentials = google.oauth2.credentials.Credentials(  # type: ignore[no-untyped-call]
        token=None, refresh_token="r", client_id="gcloud", client_secret="s",
        token_uri=f"http://{tokens.address}/token",
    )
    assert gcp.generate_id_token(credentials, INVOKER, AUDIENCE) == f"id:{INVOKER}:{AUDIENCE}"
    assert tokens.grants == ["refresh_token"]
    assert tokens.id_token_calls == [(INVOKER, AUDIENCE, "access-user")]


@pytest.mark.parametrize(
    ("source", "grant", "access"),
    [
        ("key", "urn:ietf:params:oauth:grant-type:jwt-bearer", "access-key"),
        ("workload identity", "urn:ietf:params:oauth:grant-type:token-exchange", "access-wif"),
    ],
)
def test_every_source_mints_the_invokers_token(
    tokens: TokenServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    source: str, grant: str, access: str,
) -> None:
    info = {"key": key(tokens), "workload identity": workload_identity(tokens, tmp_path)}[source]
    credentials_file(tmp_path, monkeypatch, info)
    token = gcp.fetch_id_token(AUDIENCE, INVOKER)
    assert token == f"id:{INVOKER}:{AUDIENCE}"
    assert tokens.grants == [grant]  # google-auth refreshed the source its own way
    assert tokens.id_token_calls == [(INVOKER, AUDIENCE, access)]


def test_user_credentials_without_an_invoker_say_what_to_set(
    tokens: TokenServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    credentials_file(tmp_path, monkeypatch, user(tokens))
    with pytest.raises(gcp.CredentialsError) as caught:
        gcp.fetch_id_token(AUDIENCE)
    assert str(caught.value) == (
        f"cannot mint an ID token for {AUDIENCE}: {gcp.USER_CREDENTIALS_HINT}"
    )
    assert tokens.id_token_calls == []


def test_a_missing_token_creator_role_is_named(
    tokens: TokenServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    credentials_file(tmp_path, monkeypatch, key(tokens))
    tokens.refused.add(INVOKER)
    with pytest.raises(gcp.CredentialsError) as caught:
        gcp.fetch_id_token(AUDIENCE, INVOKER)
    assert str(caught.value) == (
        f"cannot mint an ID token as {INVOKER}: permission denied; the identity running loop"
        f" needs roles/iam.serviceAccountTokenCreator on {INVOKER}"
    )
