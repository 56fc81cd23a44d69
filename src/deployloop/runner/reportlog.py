"""Turn the JSON lines of loop's pytest plugin (`--loop-reportlog`) into one result per test.

pytest reports each test in up to three phases (setup, call, teardown); like pytest's own
junitxml, the phases merge into one outcome: an error in setup or teardown is an error, a
failing call is a failure, an expected failure that happened is xfailed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from deployloop.models import Outcome, TestResult
from deployloop.store import now_iso

# The plugin caps what it writes; a line longer than this is not one of its lines (a file
# overwritten, a torn write): it is skipped rather than held in memory.
MAX_LINE_BYTES = 8 * 1024 * 1024
COLLECTION_ERROR = "collection error: "  # how the message of a file that failed to collect begins


@dataclass
class _Phases:
    reports: dict[str, dict[str, Any]] = field(default_factory=dict)


class ReportLogReader:
    """Feeds on reportlog text as it grows; calls `on_result` once per finished test.

    `suite_of` maps a node id to its suite (None: not one of ours, ignored).
    """

    def __init__(
        self,
        suite_of: Callable[[str], str | None],
        on_result: Callable[[TestResult], None],
    ) -> None:
        self._suite_of = suite_of
        self._on_result = on_result
        self._partial = b""
        self._skipping = False  # inside an over-long line, until its end
        self._open: dict[str, _Phases] = {}
        self.session_finished = False

    def feed(self, data: bytes) -> None:
        """Take a chunk of the file; a line cut short stays until its end arrives."""
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            if self._skipping:
                self._skipping = False
            elif line.strip():
                self._line(line.decode("utf-8", errors="surrogateescape"))
        if len(self._partial) > MAX_LINE_BYTES:
            self._partial = b""
            self._skipping = True

    def _line(self, line: str) -> None:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            return  # a line torn by a kill mid-write: the test is recorded as unfinished
        if not isinstance(record, dict):
            return
        kind = record.get("$report_type")
        if kind == "TestReport":
            self._test_report(record)
        elif kind == "CollectReport" and record.get("outcome") == "failed":
            self._collect_error(record)
        elif kind == "SessionFinish":
            self.session_finished = True

    def _test_report(self, record: dict[str, Any]) -> None:
        nodeid = record.get("nodeid", "")
        if record.get("outcome") == "rerun":
            return  # a rerun plugin's earlier attempt: the final attempt follows
        phases = self._open.setdefault(nodeid, _Phases())
        phases.reports[record.get("when", "call")] = record
        if record.get("when") == "teardown":
            del self._open[nodeid]
            self._emit(nodeid, merge_phases(phases.reports))

    def _collect_error(self, record: dict[str, Any]) -> None:
        nodeid = record.get("nodeid", "")
        text = str(record.get("longrepr") or "")
        self._emit(nodeid, (Outcome.ERROR, 0.0, COLLECTION_ERROR + crash_line(text), text))

    def _emit(self, nodeid: str, merged: tuple[Outcome, float, str | None, str | None]) -> None:
        suite = self._suite_of(nodeid)
        if suite is None:
            return
        outcome, duration, message, longrepr = merged
        self._on_result(
            TestResult(nodeid, suite, outcome, duration, message, longrepr, now_iso())
        )

    def unfinished(self) -> dict[str, tuple[Outcome, float, str | None, str | None]]:
        """Failures of tests whose process died before their teardown reported.

        A test interrupted in its call phase reported only its setup: it has nothing to say
        and is left out, so the caller can give the reason it was stopped.
        """
        out = {}
        for nodeid, phases in self._open.items():
            setup = phases.reports.get("setup", {})
            if "call" in phases.reports or setup.get("outcome") == "failed":
                out[nodeid] = merge_phases(phases.reports)
        return out


def merge_phases(
    reports: dict[str, dict[str, Any]],
) -> tuple[Outcome, float, str | None, str | None]:
    """(outcome, duration, one-line message, full text) from the phases a test reported."""
    duration = sum(float(r.get("duration") or 0.0) for r in reports.values())
    setup, call, teardown = reports.get("setup"), reports.get("call"), reports.get("teardown")
    if setup and setup.get("outcome") == "failed":
        return _failure(Outcome.ERROR, duration, setup, "error in setup: ")
    if setup and setup.get("outcome") == "skipped":
        outcome = Outcome.XFAILED if "wasxfail" in setup else Outcome.SKIPPED
        return outcome, duration, setup.get("skip_reason") or setup.get("wasxfail"), None
    if call is None:
        if teardown and teardown.get("outcome") == "failed":
            return _failure(Outcome.ERROR, duration, teardown, "error in teardown: ")
        return Outcome.ERROR, duration, "no result: the test did not finish", None
    result: tuple[Outcome, float, str | None, str | None]
    if call.get("outcome") == "failed":
        result = _failure(Outcome.FAILED, duration, call, "")
    elif call.get("outcome") == "skipped":
        outcome = Outcome.XFAILED if "wasxfail" in call else Outcome.SKIPPED
        result = (outcome, duration, call.get("skip_reason") or call.get("wasxfail"), None)
    elif "wasxfail" in call:
        result = (Outcome.XPASSED, duration, call.get("wasxfail") or None, None)
    else:
        result = (Outcome.PASSED, duration, None, None)
    if teardown and teardown.get("outcome") == "failed":
        if result[0] == Outcome.FAILED:
            return result  # the failure explains more than the teardown error after it
        return _failure(Outcome.ERROR, duration, teardown, "error in teardown: ")
    return result


def _failure(
    outcome: Outcome, duration: float, report: dict[str, Any], prefix: str
) -> tuple[Outcome, float, str | None, str | None]:
    text = str(report.get("longrepr") or "")
    message = report.get("message") or crash_line(text)
    return outcome, duration, prefix + str(message), text


def crash_line(text: str) -> str:
    """The last `E   ` line of a pytest traceback, else its last non-empty line."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    e_lines = [ln[1:].strip() for ln in lines if ln.startswith("E ")]
    if e_lines:
        return e_lines[0] if len(e_lines) == 1 else e_lines[-1]
    return lines[-1].strip() if lines else "(no message)"
