"""The shop's auth service: issues and verifies signed bearer tokens.

    POST /token   {"user": "alice"}  -> {"token": ..., "token_type": "Bearer", "audiences": [...]}
    GET  /verify  (Authorization: Bearer ...) -> {"sub": ..., "aud": [...], "exp": ...} or 401
    GET  /health  -> {"status": "ok"}

Tokens are `<payload>.<signature>`: base64url JSON claims, signed with HMAC-SHA256 under a
secret made at start (so a restart invalidates old tokens, as a redeploy does).

The bug this example is about: tokens are issued for the audience "auth" only, while the
backend's event stream accepts only tokens meant for "backend". An optional override file,
examples/shop/fixes/auth.json (written by fix.py), changes the audiences, e.g.
{"audiences": ["auth", "backend"]}. It is read once, at start.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import sys
import time
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

from jsonhttp import JsonHandler, parse_address, serve

FIX_FILE = Path(__file__).resolve().parent / "fixes" / "auth.json"
DEFAULT_AUDIENCES = ["auth"]  # the bug: the backend's event stream needs "backend" too
TOKEN_TTL_S = 3600
USER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenSigner:
    def __init__(self, secret: bytes, audiences: list[str]) -> None:
        self.secret = secret
        self.audiences = audiences

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self.secret, payload.encode("ascii"), hashlib.sha256).digest())

    def issue(self, user: str) -> str:
        now = int(time.time())
        claims = {
            "sub": user,
            "aud": self.audiences,
            "iat": now,
            "exp": now + TOKEN_TTL_S,
            "jti": secrets.token_hex(8),
        }
        payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
        return f"{payload}.{self._sign(payload)}"

    def verify(self, token: str) -> dict[str, Any]:
        """The token's claims; raise ValueError saying why it is not valid."""
        payload, dot, signature = token.partition(".")
        if not dot or not payload or not signature:
            raise ValueError("malformed token")
        if not hmac.compare_digest(signature, self._sign(payload)):
            raise ValueError("bad signature")
        try:
            claims: dict[str, Any] = json.loads(_unb64(payload))
        except ValueError:
            raise ValueError("malformed token") from None
        if claims.get("exp", 0) < time.time():
            raise ValueError("token expired")
        return claims


def load_audiences() -> tuple[list[str], str]:
    """Token audiences and where they came from (the override file, or the default)."""
    if not FIX_FILE.is_file():
        return DEFAULT_AUDIENCES, "default"
    try:
        data = json.loads(FIX_FILE.read_text(encoding="utf-8"))
        audiences = data["audiences"]
        if not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences):
            raise ValueError("'audiences' must be a list of strings")
    except (ValueError, KeyError, TypeError) as exc:
        sys.exit(f"auth: cannot use {FIX_FILE}: {exc}")
    return audiences, f"from {FIX_FILE.name} override"


class Handler(JsonHandler):
    server_version = "shop-auth/1.0"
    signer: TokenSigner  # set in main()

    def do_GET(self) -> None:
        if self.path == "/health":
            self._send(200, {"status": "ok", "service": "auth"})
        elif self.path == "/verify":
            self._verify()
        else:
            self._send(404, {"error": f"no route GET {self.path}"})

    def do_POST(self) -> None:
        if self.path == "/token":
            self._issue()
        else:
            self._send(404, {"error": f"no route POST {self.path}"})

    def _issue(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"null")
        except ValueError:
            self._send(400, {"error": "body is not valid JSON"})
            return
        user = body.get("user") if isinstance(body, dict) else None
        if not isinstance(user, str) or not USER_RE.match(user):
            self._send(400, {"error": "'user' must be 1-64 letters, digits or _.@-"})
            return
        self._send(
            200,
            {
                "token": self.signer.issue(user),
                "token_type": "Bearer",
                "expires_in": TOKEN_TTL_S,
                "audiences": self.signer.audiences,
            },
        )

    def _verify(self) -> None:
        scheme, _, token = (self.headers.get("Authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            self._send(401, {"error": "missing bearer token"})
            return
        try:
            claims = self.signer.verify(token.strip())
        except ValueError as exc:
            self._send(401, {"error": f"invalid token: {exc}"})
            return
        self._send(200, {"sub": claims["sub"], "aud": claims["aud"], "exp": claims["exp"]})


def main() -> None:
    args = parse_address(__doc__.splitlines()[0])

    audiences, source = load_audiences()
    secret = os.environ.get("SHOP_AUTH_SECRET", "").encode() or secrets.token_bytes(32)
    Handler.signer = TokenSigner(secret, audiences)
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    print(
        f"auth: listening on http://{args.host}:{server.server_port}"
        f" (token audiences: {', '.join(audiences)}; {source})",
        flush=True,
    )
    serve(server)


if __name__ == "__main__":
    main()
