"""What the analysis of one iteration may look at beyond its own rows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from deployloop.config import AnalysisSection, CategoryRule
from deployloop.models import HistoryRow, IterationRecord, TestRow


@dataclass(frozen=True)
class IterationRows:
    record: IterationRecord
    rows: Sequence[TestRow]  # every collected test of that iteration, pending ones included


@dataclass(frozen=True)
class AnalysisContext:
    # Every result of the env's iterations up to and including this one, reruns included,
    # oldest first (store.history).
    history: Sequence[HistoryRow] = ()
    # The env's iterations up to and including this one, oldest first: the trend.
    iterations: Sequence[IterationRecord] = ()
    previous: IterationRows | None = None  # iteration N-1: integrity and false-green checks
    compare: IterationRows | None = None  # the diff's other side (default: previous)
    categories: Sequence[CategoryRule] = ()
    settings: AnalysisSection = field(default_factory=AnalysisSection)
