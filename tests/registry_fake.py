"""A container registry's v2 manifest API on 127.0.0.1 (REGISTRY_EMULATOR_HOST=<address>): the
digest of each pushed tag, 404 with the registry's MANIFEST_UNKNOWN for any other, as Artifact
Registry answers. `push` (again) moves a tag to a new digest."""

from __future__ import annotations

import hashlib
import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeRegistry:
    def __init__(self) -> None:
        self.digests: dict[tuple[str, str], str] = {}  # (repository, tag) -> digest
        self.requests: list[str] = []
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def do_HEAD(self) -> None:  # noqa: N802 - the stdlib's name
                registry.requests.append(self.path)
                path = self.path.removeprefix("/v2/")
                repository, _, tag = path.rpartition("/manifests/")
                digest = registry.digests.get((repository, tag))
                if digest is None:
                    body = json.dumps({"errors": [{"code": "MANIFEST_UNKNOWN"}]}).encode()
                    self.send_response(404)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Docker-Content-Digest", digest)
                self.send_header(
                    "Content-Type", "application/vnd.docker.distribution.manifest.v2+json"
                )
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        self.address = f"127.0.0.1:{self.http.server_address[1]}"

    def push(self, image: str) -> str:
        """Push `host/repository:tag`; returns its (new) digest."""
        path = image.split("/", 1)[1]
        repository, tag = path.rsplit(":", 1)
        digest = "sha256:" + hashlib.sha256(uuid.uuid4().bytes).hexdigest()
        self.digests[(repository, tag)] = digest
        return digest

    def stop(self) -> None:
        self.http.shutdown()
        self.http.server_close()
