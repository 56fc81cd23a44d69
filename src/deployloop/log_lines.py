"""Service log lines with the time they were written: the format of `services/<name>.log`.

A service's log says why a request failed only if its lines can be matched to the tests that
ran meanwhile. Each line of a local service's output is written with the UTC time loop read
it from the service's pipe (services print line by line: loop sets PYTHONUNBUFFERED for
them), the way `docker logs -t` shows them; the Cloud Run target writes its revisions' log
entries in the same form, with Cloud Logging's own timestamps.

    2026-12-02T05:49:00.123Z backend: 403 /events: token audience ['auth'] ...
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

_STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})Z ")
_MAX_BYTES = 8 * 1024 * 1024  # a log read for evidence: its last 8 MB at most
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@dataclass(frozen=True)
class LogLine:
    service: str
    at: float  # seconds since the epoch
    text: str


def stamp(at: float) -> str:
    """The prefix of a line written at `at` (seconds since the epoch)."""
    moment = datetime.fromtimestamp(at, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z "


def unstamped(line: str) -> str:
    """The line as the service wrote it."""
    match = _STAMP.match(line)
    return line[match.end():] if match else line


def read_log(path: Path, service: str) -> list[LogLine]:
    """The stamped lines of a log, oldest first (an unstamped line, a piece of a long line,
    takes the time of the line before it); [] when there is no log."""
    return list(_lines(path, service))


def _lines(path: Path, service: str) -> Iterator[LogLine]:
    try:
        with path.open("rb") as log:
            size = log.seek(0, 2)
            log.seek(max(0, size - _MAX_BYTES))
            data = log.read()
    except OSError:
        return
    last: float | None = None
    for raw in data.decode("utf-8", "replace").splitlines():
        match = _STAMP.match(raw)
        if match:
            last = datetime.fromisoformat(match[1] + "+00:00").timestamp()
            raw = raw[match.end():]
        raw = _ANSI.sub("", raw)  # a colouring logger's escapes: text to match, not to show
        if last is not None and raw.strip():
            yield LogLine(service, last, raw)


def read_service_logs(services_dir: Path) -> list[LogLine]:
    """Every service log of an iteration (`services/<name>.log`), in time order."""
    try:
        paths = sorted(services_dir.glob("*.log"))
    except OSError:
        return []
    lines = [line for path in paths for line in read_log(path, path.stem)]
    return sorted(lines, key=lambda line: line.at)
