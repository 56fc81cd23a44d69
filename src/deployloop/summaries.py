"""Read one iteration back from the store and analyze it: the one source of every figure."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime

from deployloop.analysis.summary import build_summary
from deployloop.config import KnownIssue
from deployloop.models import IterationRecord, Summary
from deployloop.store import Store


def load_summary(
    store: Store, record: IterationRecord, known_issues: Sequence[KnownIssue], today: date
) -> Summary:
    return build_summary(
        iteration=record,
        suites=store.suites(record.id),
        rows=store.tests(record.id),
        deployments=store.deployments(record.id),
        known_issues=known_issues,
        today=today,
        elapsed_s=elapsed_s(record),
    )


def elapsed_s(record: IterationRecord) -> float:
    start = datetime.fromisoformat(record.started_at)
    end = datetime.fromisoformat(record.finished_at) if record.finished_at else datetime.now(UTC)
    return max((end - start).total_seconds(), 0.0)
