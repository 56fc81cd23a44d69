"""What a tested revision logged, from Cloud Logging, into the iteration's folder.

After the tests, each deployed revision's entries of the iteration's time span
(`resource.type = "cloud_run_revision"`, its service and revision name) are written to
`services/<name>.log` in log_lines' stamped form, with Cloud Logging's own timestamps: the
analysis then reads them beside each failure exactly as it reads a local service's output.
A revision that failed to start gets its first error entries in the deploy error, with a link
to its page in the console. LOGGING_EMULATOR_HOST points the client at a fake.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from deployloop.config import Config, ServiceConfig
from deployloop.deploy import gcp
from deployloop.deploy.cloudrun.errors import api_errors
from deployloop.log_lines import stamp
from deployloop.models import Deployment

MAX_ENTRIES = 5000  # per revision and iteration: the evidence, not an archive
SKIPPED_NOTE = (
    "service logs not read from Cloud Logging: CLOUDRUN_EMULATOR_HOST is set and"
    f" {gcp.LOGGING_EMULATOR_ENV} is not"
)


def write_revision_logs(
    config: Config, deployments: Sequence[Deployment], since: str, until: str, folder: Path
) -> str | None:
    """Each deployed revision's entries into folder/<service>.log; what went wrong, or None.
    Never raises: logs are evidence, and an iteration goes on without them."""
    revisions = [d for d in deployments if d.revision]
    if not revisions:
        return None
    client = gcp.logging_client()
    if client is None:
        return SKIPPED_NOTE
    by_name = {s.name: s for s in config.deploy.services}
    problems = []
    try:
        for deployment in revisions:
            service = by_name.get(deployment.service)
            if service is None or deployment.revision is None:
                continue
            try:
                entries = revision_entries(
                    client, config, service, deployment.revision, since, until
                )
            except api_errors() as exc:
                problems.append(f"{deployment.service}: {exc.message or exc}")
                continue
            folder.mkdir(parents=True, exist_ok=True)
            with open(folder / f"{deployment.service}.log", "a", encoding="utf-8") as log:
                log.writelines(f"{stamp(at)}{text}\n" for at, text in entries)
    finally:
        client.transport.close()  # type: ignore[no-untyped-call]
    return f"service logs not read: {'; '.join(problems)}" if problems else None


def revision_entries(
    client: Any,
    config: Config,
    service: ServiceConfig,
    revision: str,
    since: str,
    until: str | None = None,
    limit: int = MAX_ENTRIES,
) -> list[tuple[float, str]]:
    """(time, line) of a revision's entries, oldest first; a line starts with the entry's
    severity when it has one."""
    terms = [
        'resource.type = "cloud_run_revision"',
        f'resource.labels.service_name = "{service.cloud_run_name}"',
        f'resource.labels.revision_name = "{revision}"',
        f'timestamp >= "{since}"',
    ]
    if until is not None:
        terms.append(f'timestamp <= "{until}"')
    pager = client.list_log_entries(
        request={
            "resource_names": [f"projects/{config.deploy.project}"],
            "filter": " AND ".join(terms),
            "order_by": "timestamp asc",
            "page_size": 1000,
        },
        timeout=60,
    )
    out: list[tuple[float, str]] = []
    for entry in pager:
        out.append((_seconds(entry.timestamp), _text(entry)))
        if len(out) >= limit:
            break
    return out


def console_link(config: Config, service: ServiceConfig) -> str:
    return (
        f"https://console.cloud.google.com/run/detail/{config.deploy.region}/"
        f"{service.cloud_run_name}/revisions?project={config.deploy.project}"
    )


def _severity_name(severity: Any) -> str:
    """LogSeverity's name; proto-plus gives the enum of another package as a plain int."""
    from google.logging.type import log_severity_pb2  # type: ignore[import-untyped]

    try:
        return str(log_severity_pb2.LogSeverity.Name(int(severity)))
    except (ValueError, TypeError):
        return ""


def _seconds(timestamp: Any) -> float:
    if isinstance(timestamp, datetime):
        return timestamp.timestamp()
    return float(timestamp.seconds) + float(timestamp.nanos) / 1e9


def _text(entry: Any) -> str:
    if entry.text_payload:
        text = str(entry.text_payload)
    elif entry.json_payload:
        payload = dict(entry.json_payload)
        text = str(payload.get("message") or json.dumps(payload, default=str))
    else:
        text = ""
    severity = _severity_name(entry.severity)
    text = " ".join(text.splitlines()) if "\n" in text.rstrip("\n") else text.rstrip("\n")
    return f"{severity} {text}" if severity and severity != "DEFAULT" else text
