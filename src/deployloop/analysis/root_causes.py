"""One group per cause, above the message clusters.

One broken endpoint fails tests in several ways: `assert 500 == 200`, `HTTPStatusError: Server
error '500 ...' for url '.../orders'`, a `JSONDecodeError` on its error page. The clusters
group by message, so that is three clusters; here they are one root cause:

- by endpoint: the failures whose message, traceback or call names the same method and path
  (ids in the path folded: /orders/42 is /orders/{id}) with the same 4xx/5xx status (a
  failure that names none joins the endpoint's one status);
- by history: clusters that first failed in the same iteration and failed in exactly the same
  iterations since (at least two), when no endpoint ties them.

A group is shown only when it ties two clusters or more: a cluster alone is its own cause.
Each test is named with the file:line of its failing assertion, from its traceback.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from deployloop.analysis.normalize import FAILURE_OUTCOMES
from deployloop.analysis.past import results
from deployloop.models import Cluster, PastResults, RootCause, TestRow

_METHODS = "GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS"
_METHOD_PATH = re.compile(
    rf"\b({_METHODS})\s+['\"]?(?:https?://[^/\s'\"]+)?(/[^\s'\"?#),]*)"
)
_URL = re.compile(r"https?://[^/\s'\"]+(/[^\s'\"?#),]*)")
# A call in the test's code: client.post("/orders", ...), httpx.get(API + "/items"),
# session.get(f"{BASE}/items/{sku}"), client.request("POST", "/orders").
_URL_ARG = r"(?:[\w.\[\]'\"]+\s*\+\s*)?f?['\"](?:\{[^}'\"]*\})?(/[^'\"?#]*)"
_CALL = re.compile(
    r"(?:\.|\b)(get|post|put|patch|delete|head|options)\(\s*" + _URL_ARG, re.IGNORECASE
)
_REQUEST_CALL = re.compile(
    r"\.request\(\s*['\"](" + _METHODS + r")['\"]\s*,\s*" + _URL_ARG
)
_STATUS = (
    re.compile(r"\bassert ([1-5]\d\d) ==(?: ([1-5]\d\d)\b)?"),
    re.compile(r"'([1-5]\d\d) [A-Z][A-Za-z ]+'"),  # httpx: Server error '500 Internal ...'
    re.compile(r"\b([1-5]\d\d) (?:Server|Client) Error\b"),  # requests
    re.compile(r"\bHTTP Error ([1-5]\d\d)\b"),  # urllib
    re.compile(r"\b(?:HTTP(?!s?://)|status(?:[ _]code)?|answered|returned)\W{0,3}([1-5]\d\d)\b",
               re.IGNORECASE),
)
_ID_SEGMENT = re.compile(r"^(\d+|[0-9a-f]{8,}|[0-9a-f-]{32,36}|[A-Za-z]+-[0-9a-f]{6,})$",
                         re.IGNORECASE)
_WHERE = re.compile(r"^(\S+\.py):(\d+): (?:in (\S+))?", re.MULTILINE)
_TOGETHER_MIN = 2  # iterations two clusters must have failed in together
# Of a traceback, its start (the test's own frames, its calls) and its end (the failing
# line, the exception): a failure of 10 MB costs no more than one of 40 kB.
_SCANNED = 32_000
_SCANNED_END = 8_000


def _bounded(text: str | None) -> str:
    text = text or ""
    if len(text) <= _SCANNED + _SCANNED_END:
        return text
    return text[:_SCANNED] + "\n" + text[-_SCANNED_END:]


@dataclass(frozen=True)
class Endpoint:
    method: str | None
    path: str
    status: str | None

    @property
    def route(self) -> str:
        return f"{self.method} {self.path}" if self.method else self.path


def root_causes(
    clusters: Sequence[Cluster], rows: Sequence[TestRow], history: PastResults | None = None
) -> tuple[RootCause, ...]:
    failures = {row.nodeid: row for row in rows if row.outcome in FAILURE_OUTCOMES}
    endpoints = {nodeid: endpoint_of(row) for nodeid, row in failures.items()}
    groups = _by_endpoint(clusters, endpoints)
    tied = {cluster.label for group in groups for cluster in group[1]}
    out = [_endpoint_cause(route, members, endpoints, failures) for route, members in groups]
    if history is not None:
        rest = [c for c in clusters if c.label not in tied]
        out += [
            _together_cause(numbers, members, failures)
            for numbers, members in _by_history(rest, history)
        ]
    return tuple(out)


def endpoint_of(row: TestRow) -> Endpoint | None:
    """The method, path and status a failure names, from its message, its assertion lines
    and the calls in its traceback; None when it names no path."""
    message = (row.message or "")[:_SCANNED]
    longrepr = _bounded(row.longrepr)
    said = message + "\n" + "\n".join(
        line[2:] for line in longrepr.splitlines() if line.startswith("E ")
    )
    method, path = None, None
    found = _METHOD_PATH.search(said)
    if found:
        method, path = found[1].upper(), found[2]
    else:
        url = _URL.search(said)
        if url:
            path = url[1]
    call = _failing_call(longrepr)
    if call and (path is None or _folded(call[2]) == _folded(path)):
        method, path = method or call[1].upper(), path or call[2]
    path = path.rstrip(":;.,") if path is not None else None  # "…/orders: status 500"
    if not path or path == "/":
        return None
    return Endpoint(method, _folded(path), _status(said))


def failing_line(row: TestRow) -> str | None:
    """`file:line` of the test's failing line: pytest prints the test's own frame first, so
    the first traceback entry in the test's file (a helper of its own comes after it), else
    the last entry at all (the test frame is not shown)."""
    entries = _WHERE.findall(_bounded(row.longrepr))
    if not entries:
        return None
    own_file = [e for e in entries if e[0].endswith(row.file.rsplit("/", 1)[-1])]
    path, line, _ = own_file[0] if own_file else entries[-1]
    return f"{path}:{line}"


def _failing_call(longrepr: str) -> re.Match[str] | None:
    """The HTTP call of the test's own frame that failed: on its `>` line, else the last
    call before that frame ends (a login call at its start is not the one that failed)."""
    frame = re.split(r"^\S+\.py:\d+: ", longrepr, maxsplit=1, flags=re.MULTILINE)[0]
    marked = [line for line in frame.splitlines() if line.startswith(">")]
    for text in (*marked, frame):
        calls = [*_REQUEST_CALL.finditer(text), *_CALL.finditer(text)]
        if calls:
            return max(calls, key=lambda m: m.start())
    return None


def _status(text: str) -> str | None:
    """The first 4xx/5xx a message names, by any of the ways libraries say it."""
    found = []
    for pattern in _STATUS:
        for match in pattern.finditer(text):
            codes = [c for c in match.groups() if c and c[0] in "45"]
            if codes:
                found.append((match.start(), codes[0]))
    return min(found)[1] if found else None


def _folded(path: str) -> str:
    path = re.sub(r"\{[^}]*\}", "{id}", path)  # an f-string's fields are ids too
    segments = [("{id}" if _ID_SEGMENT.match(s) else s) for s in path.rstrip("/").split("/")]
    return "/".join(segments) or "/"


def _by_endpoint(
    clusters: Sequence[Cluster], endpoints: Mapping[str, Endpoint | None]
) -> list[tuple[tuple[str, str | None], list[Cluster]]]:
    """(route, status) -> the clusters with a failure naming it, for those with two or more."""
    statuses: dict[str, set[str]] = {}
    for endpoint in endpoints.values():
        if endpoint is not None and endpoint.status:
            statuses.setdefault(endpoint.route, set()).add(endpoint.status)
    members: dict[tuple[str, str | None], list[Cluster]] = {}
    for cluster in clusters:
        keys = []
        for nodeid in cluster.tests:
            endpoint = endpoints.get(nodeid)
            if endpoint is None:
                continue
            known = statuses.get(endpoint.route, set())
            status = endpoint.status or (next(iter(known)) if len(known) == 1 else None)
            keys.append((endpoint.route, status))
        for key in dict.fromkeys(keys):
            members.setdefault(key, []).append(cluster)
    return [(key, found) for key, found in members.items() if len(found) >= 2]


def _endpoint_cause(
    key: tuple[str, str | None],
    clusters: Sequence[Cluster],
    endpoints: Mapping[str, Endpoint | None],
    failures: Mapping[str, TestRow],
) -> RootCause:
    route, status = key
    tests = [
        nodeid for cluster in clusters for nodeid in cluster.tests
        if (e := endpoints.get(nodeid)) is not None and e.route == route
    ]
    label = f"{route} answered {status}" if status else f"{route} fails"
    ways = len(clusters)
    evidence = [
        f"{len(dict.fromkeys(tests))} failing tests call {route}"
        + (f" and got {status}" if status else "")
        + f", failing {ways} different ways"
    ]
    evidence += list(dict.fromkeys(
        f"{log.service} log: {line}"
        for cluster in clusters for log in cluster.service_logs for line in log.lines
        if route.split(" ")[-1].split("{id}")[0] in line
    ))[:3]
    return RootCause(label, tuple(evidence), tuple(c.label for c in clusters),
                     _located(tests, failures))


def _by_history(
    clusters: Sequence[Cluster], history: PastResults
) -> list[tuple[tuple[int, ...], list[Cluster]]]:
    failing: dict[str, set[int]] = {}
    for test in history.tests:
        failed = {n for n, o in results(test) if o in FAILURE_OUTCOMES}
        if failed:
            failing.setdefault(test.nodeid, set()).update(failed)
    first = min(history.counts, default=0)  # "appeared": there was a result before
    together: dict[tuple[int, ...], list[Cluster]] = {}
    for cluster in clusters:
        numbers: set[int] = set().union(*(failing.get(n, set()) for n in cluster.tests))
        if (
            len(numbers) >= _TOGETHER_MIN
            and min(numbers) == cluster.first_iteration
            and min(numbers) > first
        ):
            together.setdefault(tuple(sorted(numbers)), []).append(cluster)
    return [(numbers, found) for numbers, found in together.items() if len(found) >= 2]


def _together_cause(
    numbers: tuple[int, ...], clusters: Sequence[Cluster], failures: Mapping[str, TestRow]
) -> RootCause:
    listed = ", ".join(str(n) for n in numbers)
    tests = [nodeid for cluster in clusters for nodeid in cluster.tests]
    return RootCause(
        f"{len(clusters)} patterns that appeared together in iteration {numbers[0]}",
        (f"they failed in exactly the same iterations: {listed}",),
        tuple(c.label for c in clusters),
        _located(tests, failures),
    )


def _located(
    tests: Sequence[str], failures: Mapping[str, TestRow]
) -> tuple[tuple[str, str | None], ...]:
    return tuple(
        (nodeid, failing_line(failures[nodeid]) if nodeid in failures else None)
        for nodeid in dict.fromkeys(tests)
    )
