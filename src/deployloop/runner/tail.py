"""A file another process appends to, read as it grows, in whole JSON lines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO, Any


class Tail:
    """A file another process appends to, read as it grows, in whole lines."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle: IO[bytes] | None = None
        self._partial = b""
        self._closed = False  # read to the end: later reads find nothing more

    def read(self) -> bytes:
        if self._closed:
            return b""
        if self._handle is None:
            try:
                self._handle = open(self.path, "rb")  # noqa: SIM115 (closed in close())
            except FileNotFoundError:
                return b""  # pytest has not configured its plugins yet
        return self._handle.read()

    def lines(self) -> list[dict[str, Any]]:
        chunks = (self._partial + self.read()).split(b"\n")
        self._partial = chunks.pop()
        out = []
        for chunk in chunks:
            try:
                out.append(json.loads(chunk))
            except ValueError:
                continue  # torn by a kill mid-write
        return out

    def close(self) -> None:
        self._closed = True
        if self._handle is not None:
            self._handle.close()
            self._handle = None
