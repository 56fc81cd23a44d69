"""A child's output, copied from a pipe to its log file with secrets redacted.

pytest's output and a local service's are written by the child itself, and may print a
secret (a test with `-s`, a service logging its config). Nothing of it reaches the disk
without passing through loop's redaction: the child writes into a pipe, a thread of loop's
copies it to the file a line at a time. Memory stays bounded whatever the child prints: a
line with no end in sight is written in pieces, keeping an overlap so that a secret cut in
two by the piece boundary is still found whole.
"""

from __future__ import annotations

import codecs
import os
import threading
import time
from pathlib import Path
from typing import IO

from deployloop.log_lines import stamp
from deployloop.runner.plugin.deployloop_redact import Redactor

_CHUNK = 64 * 1024
_MAX_PENDING = 1024 * 1024
_OVERLAP = 4096  # a cut is never inside the last this-many characters of a long line


class LogPump:
    def __init__(self, path: Path, redactor: Redactor, stamped: bool = False) -> None:
        """`stamped`: each line starts with the time it was read (log_lines.stamp)."""
        self._redactor = redactor
        self._stamped = stamped
        self._line_start = True
        read_fd, self.write_fd = os.pipe()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        except OSError:
            os.close(read_fd)
            os.close(self.write_fd)
            raise
        self._out: IO[bytes] | None = os.fdopen(fd, "wb")
        self._thread = threading.Thread(
            target=self._copy, args=(read_fd,), name=f"log {path.name}", daemon=True
        )
        self._thread.start()

    def child_started(self) -> None:
        """The child holds its own copy of the pipe's write end: loop closes its copy, so the
        pump sees the end of the output when the child (and whatever it started) is done."""
        if self.write_fd >= 0:
            os.close(self.write_fd)
            self.write_fd = -1

    def close(self, timeout_s: float = 5.0) -> None:
        """Wait for the output to end (the child has exited), at most timeout_s."""
        self.child_started()
        self._thread.join(timeout_s)

    def _copy(self, read_fd: int) -> None:
        pending = ""
        # A character cut by a chunk boundary is decoded whole with the next chunk; bytes
        # that are not UTF-8 go through as surrogates and come back out as the same bytes.
        decoder = codecs.getincrementaldecoder("utf-8")("surrogateescape")
        with os.fdopen(read_fd, "rb", buffering=0) as source:
            while True:
                try:
                    data = source.read(_CHUNK)
                except OSError:
                    break
                if not data:
                    break
                pending += decoder.decode(data)
                cut = self._cut(pending)
                if cut:
                    self._write(pending[:cut])
                    pending = pending[cut:]
        pending += decoder.decode(b"", final=True)
        if pending:
            self._write(pending)
        if self._out is not None:
            try:
                self._out.close()
            except OSError:
                pass

    def _cut(self, pending: str) -> int:
        """How much of `pending` can be redacted and written now: whole lines (a value of
        several lines is hidden line by line too, see Redactor.add), or a piece of a line
        too long to hold, never cutting a hidden value in two."""
        cut = pending.rfind("\n") + 1
        if cut == 0 and len(pending) > _MAX_PENDING:
            cut = self._redactor.safe_cut(pending, len(pending) - _OVERLAP)
        return cut

    def _write(self, text: str) -> None:
        # A failed write (disk full, state dir deleted) stops the copying, never the
        # draining: a child writing into a full pipe would hang.
        if self._out is None:
            return
        text = self._redactor.redact(text)
        if self._stamped:
            text = self._stamp(text)
        try:
            self._out.write(text.encode("utf-8", "surrogateescape"))
            self._out.flush()
        except OSError:
            try:
                self._out.close()
            except OSError:
                pass
            self._out = None

    def _stamp(self, text: str) -> str:
        now = stamp(time.time())
        pieces = text.splitlines(keepends=True)
        out = []
        for piece in pieces:
            out.append(now + piece if self._line_start else piece)
            self._line_start = piece.endswith("\n")
        return "".join(out)
