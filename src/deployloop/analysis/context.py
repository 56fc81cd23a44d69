"""What the analysis of one iteration may look at beyond its own rows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from deployloop.log_lines import LogLine
from deployloop.models import HistoryRow, IterationRecord, PastResults, TestRow

if TYPE_CHECKING:  # the config's pydantic models cost ~0.2 s to import
    from deployloop.config import AnalysisSection, CategoryRule


def _default_settings() -> AnalysisSection:
    from deployloop.config import AnalysisSection

    return AnalysisSection()


@dataclass(frozen=True)
class IterationRows:
    record: IterationRecord
    rows: Sequence[TestRow]  # every collected test of that iteration, pending ones included


@dataclass(frozen=True)
class AnalysisContext:
    # Every result of the env's iterations up to and including this one, reruns included,
    # oldest first: as rows (store.history) or as the store keeps them (store.past_results,
    # what reports read: its size does not grow with the number of iterations).
    history: Sequence[HistoryRow] | PastResults = ()
    # The env's iterations up to and including this one, oldest first: the trend.
    iterations: Sequence[IterationRecord] = ()
    previous: IterationRows | None = None  # iteration N-1: integrity and false-green checks
    compare: IterationRows | None = None  # the diff's other side (default: previous)
    categories: Sequence[CategoryRule] = ()
    settings: AnalysisSection = field(default_factory=_default_settings)
    # The services' log lines of the iteration, in time order: the clusters' evidence.
    service_logs: Sequence[LogLine] = ()
