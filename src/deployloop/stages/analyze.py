"""Read one iteration back from the store and analyze it: the one source of every figure."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime
from pathlib import Path

from deployloop.analysis.context import AnalysisContext, IterationRows
from deployloop.analysis.normalize import is_failure
from deployloop.analysis.setup_failure import is_setup_failure
from deployloop.analysis.summary import build_summary
from deployloop.config import AnalysisSection, Config
from deployloop.log_lines import read_service_logs
from deployloop.models import IterationRecord, Summary, TestRow
from deployloop.store import Store


def load_summary(
    store: Store,
    record: IterationRecord,
    config: Config | None,
    today: date,
    compare_to: int | None = None,
    services_dir: Path | None = None,
    rows: Sequence[TestRow] | None = None,
) -> Summary:
    """`config` gives known issues, categories and thresholds; reports work without one.
    `compare_to` picks the diff's other iteration (default: the one before).
    `services_dir`: the iteration's service logs, read when a test failed (the evidence).
    `rows`: the iteration's tests, when the caller has read them already."""
    rows = store.tests(record.id) if rows is None else rows
    previous = _previous_result(store, record.env, record.number)
    compare = previous if compare_to is None else _rows(store, record.env, compare_to)
    context = AnalysisContext(
        history=store.past_results(record.env, record.number),
        # Those left out (a setup failure, an outage) have no place on the trend.
        iterations=[
            r for r in store.iterations(record.env)
            if r.number <= record.number and r.left_out is None
        ],
        previous=previous,
        compare=compare,
        categories=config.categories if config else (),
        settings=config.analysis if config else AnalysisSection(),
        service_logs=read_service_logs(services_dir)
        if services_dir is not None and any(is_failure(row) for row in rows)
        else (),
    )
    return build_summary(
        iteration=record,
        suites=store.suites(record.id),
        rows=rows,
        deployments=store.deployments(record.id),
        known_issues=config.known_issues if config else (),
        today=today,
        elapsed_s=elapsed_s(record),
        context=context,
    )


def _previous_result(store: Store, env: str, number: int) -> IterationRows | None:
    """The latest iteration before `number` that ran tests: an iteration whose deploy failed
    (or that crashed before any test ran) is a setup failure, not a result to compare with."""
    for earlier in range(number - 1, 0, -1):
        record = store.iteration(env, earlier)
        # The kept figures tell a setup failure without reading its rows.
        if record is not None and record.left_out is None and not is_setup_failure(
            record.status, _executed(store, record)
        ):
            return IterationRows(record, store.tests(record.id))
    return None


def _executed(store: Store, record: IterationRecord) -> int:
    return sum(f.executed for f in store.figures(record.id).values())


def _rows(store: Store, env: str, number: int) -> IterationRows | None:
    if number < 1:
        return None
    record = store.iteration(env, number)
    return IterationRows(record, store.tests(record.id)) if record else None


def elapsed_s(record: IterationRecord) -> float:
    start = datetime.fromisoformat(record.started_at)
    end = datetime.fromisoformat(record.finished_at) if record.finished_at else datetime.now(UTC)
    return max((end - start).total_seconds(), 0.0)
