"""The metadata server a Cloud Run task asks for its service account's ID tokens, on
127.0.0.1: google-auth finds it through GCE_METADATA_HOST (the token endpoint) and
GCE_METADATA_IP (its "am I on Google?" ping), as it finds Google's at 169.254.169.254.

Like the real one it answers only requests that carry `Metadata-Flavor: Google`, with that
header on every answer, and an identity token is a JWT (google-auth reads its expiry from
it): here unsigned, naming the audience asked for and the account's email.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self
from urllib.parse import parse_qs, urlparse


def _part(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def fake_id_token(audience: str, email: str) -> str:
    now = int(time.time())
    claims = {"aud": audience, "email": email, "iat": now, "exp": now + 3600,
              "iss": "https://accounts.google.com", "sub": "1234"}
    return f"{_part({'alg': 'RS256', 'typ': 'JWT'})}.{_part(claims)}.c2lnbmF0dXJl"


def claims_of(token: str) -> dict[str, object]:
    payload = token.split(".")[1]
    padded = payload + "=" * (-len(payload) % 4)
    loaded: dict[str, object] = json.loads(base64.urlsafe_b64decode(padded))
    return loaded


class FakeMetadata:
    def __init__(self, email: str = "e2e-runner@p.iam.gserviceaccount.com") -> None:
        self.email = email
        self.audiences: list[str] = []  # asked for, in order
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                if self.headers.get("Metadata-Flavor") != "Google":
                    self._send(403, "Missing required header: Metadata-Flavor")
                    return
                url = urlparse(self.path)
                if url.path in ("", "/"):
                    self._send(200, "computeMetadata/\n")
                elif url.path == "/computeMetadata/v1/instance/service-accounts/default/":
                    self._send(200, json.dumps({
                        "aliases": ["default"], "email": fake.email,
                        "scopes": ["https://www.googleapis.com/auth/cloud-platform"],
                    }), "application/json")
                elif url.path == "/computeMetadata/v1/universe/universe-domain":
                    self._send(200, "googleapis.com")
                elif url.path == "/computeMetadata/v1/instance/service-accounts/default/identity":
                    audience = parse_qs(url.query).get("audience", [""])[0]
                    if not audience:
                        self._send(400, "non-empty audience parameter required")
                        return
                    fake.audiences.append(audience)
                    self._send(200, fake_id_token(audience, fake.email))
                else:
                    self._send(404, "not found")

            def _send(self, code: int, body: str, kind: str = "application/text") -> None:
                data = body.encode()
                self.send_response(code)
                self.send_header("Metadata-Flavor", "Google")
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self._server.server_address[1]}"

    def env(self) -> dict[str, str]:
        """What a task's google-auth needs to find this server (and not Google's)."""
        return {"GCE_METADATA_HOST": self.host, "GCE_METADATA_IP": self.host}

    def __enter__(self) -> Self:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
