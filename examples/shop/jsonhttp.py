"""What the shop's two services share: a quiet JSON-over-HTTP handler and a server that stops
cleanly on SIGTERM (how loop's local target stops them)."""

from __future__ import annotations

import argparse
import json
import os
import signal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any


class JsonHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as separate writes

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def handle(self) -> None:
        try:
            super().handle()
        except (ConnectionResetError, BrokenPipeError):
            pass  # the client went away; nothing to answer

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # quiet: errors still go to stderr through log_error


def parse_address(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1", help="0.0.0.0 in a container")
    # Cloud Run tells a container its port in PORT.
    port = os.environ.get("PORT", "")
    parser.add_argument(
        "--port", type=int, default=int(port) if port.isdigit() else None,
        required=not port.isdigit(), help="default: $PORT",
    )
    return parser.parse_args()


def serve(server: ThreadingHTTPServer) -> None:
    """Serve until SIGTERM or Ctrl-C, then close the socket."""
    signal.signal(signal.SIGTERM, _stop)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def _stop(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)
