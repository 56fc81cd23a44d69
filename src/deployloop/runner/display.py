"""Progress while tests run: a live table on a terminal, one line per finished suite elsewhere.

Suite names come from the config: each goes into a `Text` (never console markup) with anything
unsafe to show escaped.
"""

from __future__ import annotations

import time
from types import TracebackType

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from deployloop.models import SuiteStatus
from deployloop.report._format import format_duration
from deployloop.runner.execute import RunState, SuiteProgress
from deployloop.safetext import one_line

_STYLE = {
    SuiteStatus.PASSED: "green",
    SuiteStatus.FAILED: "red",
    SuiteStatus.TIMEOUT: "red",
    SuiteStatus.CRASHED: "red",
    SuiteStatus.RUNNING: "cyan",
    SuiteStatus.INTERRUPTED: "yellow",
}


def suite_line(suite: SuiteProgress) -> Text:
    elapsed = (suite.finished or time.monotonic()) - (suite.started or time.monotonic())
    style = _STYLE.get(suite.status, "")
    text = Text("  ")
    text.append(f"{suite.status.value:<11}", style=style)
    text.append(f" {one_line(suite.name)}  {suite.done}/{suite.total} done")
    if suite.failed:
        text.append(f", {suite.failed} failed", style="red")
    text.append(f"  ({elapsed:.1f} s)", style="dim")
    return text


# A test running this long is named (in a log: once per threshold it crosses), so a hang is
# seen while it happens, not only when its suite times out.
SLOW_TEST_S = 10.0
_LOG_AT_S = (60.0, 300.0, 900.0, 3600.0)


def running_line(nodeid: str, seconds: float) -> Text:
    text = Text("  running ", style="cyan")
    text.append(f"{one_line(nodeid)} for {format_duration(seconds)}")
    return text


class LineDisplay:
    """For logs and CI: a line when a suite finishes, nothing that redraws; a line when a
    test has been running for a minute, five, fifteen, an hour."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._told: dict[str, int] = {}  # node id -> thresholds already logged

    def __enter__(self) -> LineDisplay:
        return self

    def __exit__(
        self, *exc: type[BaseException] | BaseException | TracebackType | None
    ) -> None:
        return None

    def refresh(self, state: RunState) -> None:
        longest = state.longest_running()
        if longest is None:
            return
        nodeid, seconds = longest
        crossed = sum(1 for limit in _LOG_AT_S if seconds >= limit)
        if crossed > self._told.get(nodeid, 0):
            self._told[nodeid] = crossed
            self._console.print(running_line(nodeid, seconds), highlight=False)

    def suite_finished(self, suite: SuiteProgress) -> None:
        self._console.print(suite_line(suite), highlight=False)

    def note(self, text: Text) -> None:
        self._console.print(text, highlight=False)


class LiveDisplay:
    """A table of the suites that redraws in place, under an overall progress bar."""

    def __init__(self, console: Console, state: RunState) -> None:
        self._console = console
        self._live = Live(self._render(state), console=console, refresh_per_second=4,
                          transient=True)
        self._last = 0.0

    def __enter__(self) -> LiveDisplay:
        self._live.__enter__()
        return self

    def __exit__(
        self, *exc: type[BaseException] | BaseException | TracebackType | None
    ) -> None:
        self._live.stop()

    def refresh(self, state: RunState) -> None:
        now = time.monotonic()
        if now - self._last >= 0.2:
            self._last = now
            self._live.update(self._render(state))

    def suite_finished(self, suite: SuiteProgress) -> None:
        self._console.print(suite_line(suite), highlight=False)

    def note(self, text: Text) -> None:
        self._console.print(text, highlight=False)

    def _render(self, state: RunState) -> Group:
        total, done, failed = state.total, state.done, state.failed
        head = Text(f"Tests: {done}/{total} done")
        if failed:
            head.append(f", {failed} failed", style="red")
        head.append(f"  {time.monotonic() - state.started:.1f} s", style="dim")
        # A ProgressBar ends no line of its own: each sits in a table row.
        table = Table(box=None, show_header=False, padding=(0, 1))
        table.add_row(
            Text("all suites", style="bold"), _bar(total, done), Text(f"{done}/{total}"), Text()
        )
        for suite in state.suites.values():
            if suite.status == SuiteStatus.RUNNING:
                failed_text = Text(f"{suite.failed} failed" if suite.failed else "", style="red")
                table.add_row(
                    Text(one_line(suite.name)), _bar(suite.total, suite.done),
                    Text(f"{suite.done}/{suite.total}"), failed_text,
                )
        longest = state.longest_running()
        if longest is not None and longest[1] >= SLOW_TEST_S:
            return Group(head, table, running_line(*longest))
        return Group(head, table)


def _bar(total: int, done: int) -> ProgressBar:
    return ProgressBar(total=max(total, 1), completed=done, width=30)
