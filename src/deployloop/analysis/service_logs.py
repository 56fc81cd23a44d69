"""What the services logged while a cluster's tests ran: the evidence beside each failure.

A test's window is from its start to its end, widened by MARGIN_S on each side (a request
logged just before the test's clock started, a retry logged after it gave up). Tests run in
parallel, so a window holds other tests' lines too: of the lines in any of a cluster's
windows, only the best kind is shown, at most MAX_LINES, in time order, per service:
  1. lines naming what the failures name: an HTTP path, a request id, a 4xx/5xx status, a
     quoted phrase of the message (`"token audience ['auth'] does not include 'backend'"`, not
     a quoted word like 'backend', which a service may log on every line);
  2. else error- and warning-looking lines;
  3. else every line.
The rest stays in the service's log, which the report names.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from datetime import UTC, datetime

from deployloop.analysis.root_causes import endpoint_of
from deployloop.log_lines import LogLine
from deployloop.models import ServiceLog, TestRow

MARGIN_S = 2.0
MAX_LINES = 20
_MAX_LINE_CHARS = 500
_SCANNED = 32_000  # of a failure's message and traceback: a 10 MB one costs as a 32 kB one

_SERIOUS = re.compile(
    r"(?i)\b(error|exception|traceback|fatal|critical|panic|warn(ing)?|denied|refused|"
    r"forbidden|unauthori[sz]ed|invalid|reject(ed|s)?|fail(ed|s|ure)?)\b"
)
# An HTTP path in a failure's text (/orders/42, /events?since=3), not a file on this machine.
_PATH = re.compile(r"(?<![\w.~-])/(?!tmp/|home/|usr/|var/|opt/|work/|proc/)[A-Za-z][\w.\-/]*")
_STATUS = re.compile(r"\b[45]\d\d\b")
# A quote that opens right after a closing one ('a' not in 'b') is not a quoted value.
_QUOTED = re.compile(r"(?<![\w'\"])'([^'\n]{6,200})'|(?<![\w'\"])\"([^\"\n]{6,200})\"")
_TOKEN = re.compile(r"[\w.-]+")
_LINE_PATH = re.compile(r"/[\w.\-/]*")
_MAX_PHRASES = 20
_URL_HOST = re.compile(r"[A-Za-z][\w+.-]*://[^/\s'\"]+")
_REQUEST_ID = re.compile(
    r"\b[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}\b|\b[0-9a-f]{16,}\b",
    re.IGNORECASE,
)


def cluster_service_logs(
    failures: Sequence[TestRow], lines: Sequence[LogLine]
) -> tuple[ServiceLog, ...]:
    """The log lines beside these failures (one cluster's), by service; () without any."""
    windows = [w for w in (_window(row) for row in failures) if w is not None]
    if not windows or not lines:
        return ()
    times = [line.at for line in lines]
    inside: dict[int, LogLine] = {}
    for start, end in windows:
        for index in range(bisect_left(times, start), bisect_right(times, end)):
            inside[index] = lines[index]
    if not inside:
        return ()
    named = _Names(_named(failures))
    ranks = {index: _rank(line.text, named) for index, line in inside.items()}
    best = min(ranks.values())
    chosen = sorted(index for index, rank in ranks.items() if rank == best)
    # A line repeated (one per failing request) is shown once, with how often it came.
    repeats: dict[tuple[str, str], list[LogLine]] = {}
    for index in chosen:
        line = lines[index]
        repeats.setdefault((line.service, line.text.rstrip()), []).append(line)
    by_service: dict[str, list[str]] = {}
    for same in list(repeats.values())[:MAX_LINES]:
        by_service.setdefault(same[0].service, []).append(_shown(same))
    return tuple(ServiceLog(service, tuple(shown)) for service, shown in by_service.items())


def _window(row: TestRow) -> tuple[float, float] | None:
    if not row.started_at:
        return None  # never started (a collection error): no time to match
    start = datetime.fromisoformat(row.started_at)
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    begin = start.timestamp()
    return begin - MARGIN_S, begin + (row.duration_s or 0.0) + MARGIN_S


def _named(failures: Sequence[TestRow]) -> frozenset[str]:
    """Paths and request ids the failures' messages (and assertion lines) name."""
    names: set[str] = set()
    for row in failures:
        text = _URL_HOST.sub("", (row.message or "")[:_SCANNED])  # a host is not a path
        if row.longrepr:  # its end holds the failing line and what pytest said of it
            text += "\n" + _URL_HOST.sub("", "\n".join(
                line for line in row.longrepr[-_SCANNED:].splitlines() if line.startswith("E ")
            ))
        names.update(p.split("?", 1)[0].rstrip("/.") for p in _PATH.findall(text))
        names.update(_REQUEST_ID.findall(text))
        names.update(_STATUS.findall(text))
        # A quoted phrase, not a quoted word: 'backend' names a service that logs its own
        # name on every line, which would match them all.
        names.update(q for a, b in _QUOTED.findall(text) if " " in (q := a or b).strip())
        endpoint = endpoint_of(row)  # the path the test called, when its message has none
        if endpoint is not None:
            names.add(endpoint.path.split("{id}", 1)[0].rstrip("/") or endpoint.path)
    return frozenset(name for name in names if len(name) > 1)


class _Names:
    """What a cluster's failures name, matched against a log line in one pass over its
    tokens, however many names there are (an outage's thousands of request ids): a status or
    an id as a whole token (500 is not in 1500us), a path by its segments (/status names
    /status/502), a quoted phrase as written (a few of the most common)."""

    def __init__(self, names: frozenset[str]) -> None:
        self.tokens = {n for n in names if " " not in n and not n.startswith("/")}
        self.paths = {n.rstrip("/") for n in names if n.startswith("/") and " " not in n}
        self.phrases = sorted((n for n in names if " " in n), key=len)[:_MAX_PHRASES]

    def __bool__(self) -> bool:
        return bool(self.tokens or self.paths or self.phrases)

    def named_in(self, text: str) -> bool:
        if self.tokens and not self.tokens.isdisjoint(_TOKEN.findall(text)):
            return True
        if self.paths:
            for path in _LINE_PATH.findall(text):
                segments = path.rstrip("/").split("/")
                if any("/".join(segments[:n]) in self.paths for n in range(2, len(segments) + 1)):
                    return True
        return any(phrase in text for phrase in self.phrases)


def _rank(text: str, named: _Names) -> int:
    if named and named.named_in(text):
        return 0
    return 1 if _SERIOUS.search(text) else 2


def _shown(same: Sequence[LogLine]) -> str:
    text = same[0].text.rstrip()
    if len(text) > _MAX_LINE_CHARS:
        text = text[: _MAX_LINE_CHARS - 3] + "..."
    if len(same) > 1:
        text += f"  ({len(same)} times, until {_clock(same[-1].at)})"
    return f"{_clock(same[0].at)} {text}"


def _clock(at: float) -> str:
    moment = datetime.fromtimestamp(at, UTC)
    return f"{moment:%H:%M:%S}.{moment.microsecond // 1000:03d}"
