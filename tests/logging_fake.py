"""An in-process fake of the Cloud Logging API v2 (ListLogEntries), for the real
google-cloud-logging client; `LOGGING_EMULATOR_HOST=<fake.address>` points loop at it.

The entries are the fake Cloud Run's revisions' output: `<logs>/<service>/<revision>.log`,
each line stamped with the time it was written (fake_containers.py), as
`resource.type = "cloud_run_revision"` entries with that service and revision name, and the
line's own level word (ERROR, WARNING, ...) as its severity. Like the real API, the filter is
read, not ignored: a wrong resource type, service or revision, or a time outside
`timestamp >= / <=`, gives no entry; a filter it cannot read is INVALID_ARGUMENT; entries
come `timestamp asc`, a page at a time.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

import grpc  # noqa: E402
from google.cloud.logging_v2.types import (  # noqa: E402
    ListLogEntriesRequest,
    ListLogEntriesResponse,
    LogEntry,
)
from google.logging.type import log_severity_pb2  # noqa: E402
from grpc_fake import GrpcFake, unary  # noqa: E402

from deployloop.log_lines import read_log  # noqa: E402

_TERM = re.compile(r'^\s*([\w.]+)\s*(=|>=|<=)\s*"([^"]*)"\s*$')
_SEVERITY = re.compile(r"\b(DEBUG|INFO|NOTICE|WARNING|ERROR|CRITICAL)\b")


class FakeLogging(GrpcFake):
    def __init__(self, logs: Path, project: str | None = None) -> None:
        """`project`: the one project whose logs may be read (None: any)."""
        self.logs = logs
        self.project = project
        self.filters: list[str] = []

    def handlers(self) -> tuple[grpc.GenericRpcHandler, ...]:
        return (grpc.method_handlers_generic_handler(
            "google.logging.v2.LoggingServiceV2",
            {
                "ListLogEntries": unary(
                    self._list, ListLogEntriesRequest.deserialize,
                    ListLogEntriesResponse.serialize,
                ),
            },
        ),)

    def _list(self, request: ListLogEntriesRequest, context: grpc.ServicerContext) -> Any:
        self.filters.append(request.filter)
        names = list(request.resource_names)
        if len(names) != 1 or (self.project is not None and names[0] != f"projects/{self.project}"):
            context.abort(grpc.StatusCode.PERMISSION_DENIED,
                          f"The caller does not have permission on {request.resource_names}")
        terms: dict[tuple[str, str], str] = {}
        for term in request.filter.split(" AND "):
            match = _TERM.match(term)
            if match is None:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                              f"Unparseable filter: syntax error at {term!r}")
            terms[(match[1], match[2])] = match[3]
        if terms.get(("resource.type", "=")) != "cloud_run_revision":
            return ListLogEntriesResponse()
        service = terms.get(("resource.labels.service_name", "="), "")
        revision = terms.get(("resource.labels.revision_name", "="), "")
        since = _time(terms.get(("timestamp", ">=")), 0.0)
        until = _time(terms.get(("timestamp", "<=")), float("inf"))
        lines = [
            line for line in read_log(self.logs / service / f"{revision}.log", service)
            if since <= line.at <= until
        ] if service and revision else []
        start = int(request.page_token or 0)
        size = request.page_size or 1000
        page = lines[start:start + size]
        entries = [
            LogEntry(
                log_name=f"projects/{self.project}/logs/run.googleapis.com%2Fstdout",
                text_payload=line.text,
                timestamp=datetime.fromtimestamp(line.at, UTC),
                severity=_severity(line.text),
                resource={"type": "cloud_run_revision",
                          "labels": {"service_name": service, "revision_name": revision}},
            )
            for line in page
        ]
        more = start + size < len(lines)
        return ListLogEntriesResponse(
            entries=entries, next_page_token=str(start + size) if more else ""
        )


def _time(text: str | None, default: float) -> float:
    if text is None:
        return default
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _severity(text: str) -> int:
    match = _SEVERITY.search(text)
    name = match[1] if match else "DEFAULT"
    return int(getattr(log_severity_pb2, name))
