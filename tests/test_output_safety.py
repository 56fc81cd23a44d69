"""Text from tests, services and the environment never reaches a terminal, report.md or
summary.json raw: escape sequences, NUL, CR, bidi overrides and lone surrogates show as visible
escapes, and square brackets never turn into console markup."""

from __future__ import annotations

import io
import json
import re
import sys
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

from rich.console import Console

from deployloop.analysis import build_summary
from deployloop.config import Config, KnownIssue
from deployloop.layout import StateLayout
from deployloop.models import (
    Category,
    Cluster,
    Deployment,
    DeployStatus,
    FalseGreen,
    Figures,
    HistoryPoint,
    Insights,
    IntegrityFlag,
    IterationDiff,
    IterationRecord,
    IterationStatus,
    KnownIssueMatch,
    Outcome,
    Projection,
    SignatureChange,
    SuiteRecord,
    SuiteStatus,
    SuiteSummary,
    Summary,
)
from deployloop.models import TestHistory as History  # aliased: pytest collects Test* classes
from deployloop.models import TestRow as Row
from deployloop.planning import show_plan
from deployloop.report.json_report import summary_to_dict, summary_to_json
from deployloop.report.markdown import summary_to_markdown
from deployloop.report.terminal import render_history, render_status, render_summary
from deployloop.runner.display import LineDisplay, LiveDisplay, suite_line
from deployloop.runner.execute import RunState, SuiteProgress
from deployloop.safetext import has_unsafe
from deployloop.stages.report import write_reports

# Each of what a test, a service log or a file name may carry: a colour code, a window-title
# escape, NUL, a carriage return, a right-to-left override, a byte that was not UTF-8, and
# rich markup that does not open (MarkupError if parsed) or that would restyle the rest.
NASTY = "\x1b[31mred \x1b]0;title\x07 nul\x00 cr\r rtl\u202e bad\udcff [/red] [bold]é"
# How each must show: as visible escapes (the colour code carries no content and goes).
SHOWN = ("\\x1b]0;title\\x07", "nul\\x00", "rtl\\u202e", "bad\\xff", "[/red]", "[bold]", "é")
# Colour codes rich writes itself; anything else starting with ESC came from the data.
RICH_SGR = re.compile("\x1b\\[[0-9;]*m")
RAW = re.compile("[\x00\x07\r\x1b\u202e\ud800-\udfff]")


def nasty(tag: str) -> str:
    return f"{tag} {NASTY}"


NODE = f"tests/e2e/test_{NASTY}.py::test_one[{NASTY}]"
OTHER = "tests/e2e/test_plain.py::test_two"
SUITE = nasty("Suite")


def nasty_summary(status: IterationStatus = IterationStatus.FAILED) -> Summary:
    figures = Figures(collected=4, executed=3, passed=1, failed=1, errors=1)
    suites = (
        SuiteSummary(SUITE, 1, SuiteStatus.FAILED, True, figures, nasty("key issue")),
        SuiteSummary(nasty("Left out"), 2, SuiteStatus.NOT_RUN, False, Figures(collected=1), None),
    )
    totals = Figures(collected=5, executed=3, passed=1, failed=1, errors=1)
    iteration = IterationRecord(
        id=1, env="staging", number=3, status=status, git_sha=nasty("sha"),
        started_at="2025-09-07T07:07:00+00:00", finished_at=nasty("finished"),
        target_pass_rate=100.0, workers=2, error=nasty("loop error"),
    )  # fmt: skip
    history = (HistoryPoint(2, Outcome.FAILED), HistoryPoint(3, Outcome.PASSED))
    return Summary(
        iteration=iteration,
        totals=totals,
        suites=suites,
        clusters=(
            Cluster(
                label=nasty("label"),
                signature=nasty("signature"),
                tests=(NODE, OTHER),
                suites=(SUITE,),
                known_issue=nasty("issue"),
                category=Category.ENVIRONMENT,
                first_iteration=2,
            ),
        ),
        known_issues=(KnownIssueMatch(nasty("issue"), nasty("reason"), True, (NODE,)),),
        deployments=(
            Deployment(
                nasty("svc"), DeployStatus.CRASHED, url=nasty("url"), revision=nasty("rev"),
                error=nasty("exited with code 1 during the tests:\nTraceback\n  db gone"),
                image=nasty("image"), rolled_back_to=nasty("rolled"),
            ),
            Deployment("auth", DeployStatus.FAILED, error=nasty("deploy error")),
        ),  # fmt: skip
        remaining_suites=(nasty("Left out"),),
        elapsed_s=12.0,
        estimated_remaining_s=3.0,
        failures=(
            Row(NODE, SUITE, "f.py", Outcome.FAILED, 0.1, nasty("message\nsecond"), NASTY),
            Row(OTHER, SUITE, "f.py", Outcome.ERROR, 0.1, nasty("other"), None),
        ),
        insights=Insights(
            flaky=(History(NODE, history, nasty("flaky reason")),),
            broken=(History(OTHER, history, nasty("broken reason")),),
            integrity=(
                IntegrityFlag(NODE, nasty("file"), nasty("integrity")),
                IntegrityFlag(SUITE, None, nasty("shrunk")),
            ),
            false_greens=(
                FalseGreen(SUITE, "suite", nasty("green")),
                FalseGreen(NODE, "test", nasty("fast")),
                FalseGreen(nasty("odd"), nasty("kind"), nasty("odd reason")),
            ),
            outage=nasty("outage"),
            failures_with_known_issue=1,
            failures_without_known_issue=1,
            projection=Projection(50.0, 40.0, 60.0, 1, nasty("basis")),
            diff=IterationDiff(
                compared_to=2,
                fixed=(nasty("fixed"),),
                new_failures=(NODE,),
                still_failing=(OTHER,),
                added=(nasty("added"),),
                removed=(nasty("removed"),),
                changed_signatures=(SignatureChange(OTHER, nasty("before"), nasty("after")),),
            ),
            remaining_suite_tests=((nasty("Left out"), 1),),
        ),
    )


def terminal() -> tuple[Console, io.BytesIO]:
    """A colour terminal whose output is encoded as UTF-8, as a real one's is."""
    raw = io.BytesIO()
    file = io.TextIOWrapper(raw, encoding="utf-8", newline="", write_through=True)
    return Console(file=file, force_terminal=True, color_system="standard", width=200), raw


def shown(raw: io.BytesIO) -> str:
    return raw.getvalue().decode("utf-8")


def assert_safe(text: str, *, styled: bool = False) -> None:
    if styled:
        text = RICH_SGR.sub("", text)
    found = RAW.findall(text)
    assert not found, f"raw characters from the data: {found!r}"


def test_terminal_summary_status_and_history_escape_the_data() -> None:
    summary = nasty_summary()
    for render in (render_summary, render_status):
        console, raw = terminal()
        render(summary, console)
        text = shown(raw)
        assert_safe(text, styled=True)
        for visible in SHOWN:
            assert visible in text, (render.__name__, visible)
    console, raw = terminal()
    record = summary.iteration
    render_history([(record, summary.totals)], console)
    assert_safe(shown(raw), styled=True)
    assert "sha" in shown(raw)


def test_terminal_summary_of_a_crashed_iteration_escapes_its_error() -> None:
    console, raw = terminal()
    render_summary(nasty_summary(IterationStatus.CRASHED), console)
    assert_safe(shown(raw), styled=True)


def test_markdown_escapes_the_data() -> None:
    markdown = summary_to_markdown(nasty_summary())
    assert_safe(markdown)
    markdown.encode("utf-8")
    for visible in SHOWN:
        assert visible in markdown, visible
    # A table row stays one line whatever the cells hold.
    rows = [line for line in markdown.splitlines() if line.startswith("| ")]
    assert all(line.endswith(" |") for line in rows)


def strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def test_json_is_valid_utf8_with_every_string_escaped() -> None:
    text = summary_to_json(nasty_summary())
    text.encode("utf-8")  # a lone surrogate would raise here, as writing summary.json did
    data = json.loads(text)
    assert data == summary_to_dict(nasty_summary())
    unsafe = [s for s in strings(data) if has_unsafe(s) or "\x1b" in s]
    assert not unsafe
    assert data["clusters"][0]["label"] == (
        "label red \\x1b]0;title\\x07 nul\\x00 cr\\x0d rtl\\u202e bad\\xff [/red] [bold]é"
    )
    assert "é" in text  # non-ASCII letters stay readable
    assert NODE not in text


def test_reports_written_for_the_hook_escape_the_data(tmp_path: Path) -> None:
    md, js = write_reports(StateLayout(tmp_path), nasty_summary())
    assert_safe(md.read_text(encoding="utf-8"))
    json.loads(js.read_text(encoding="utf-8"))


def test_an_analysed_iteration_with_nasty_results_renders_safely() -> None:
    iteration = IterationRecord(
        id=1, env="staging", number=1, status=IterationStatus.FAILED, git_sha="abc1234",
        started_at="2025-09-07T07:07:00Z", finished_at="2025-09-07T07:15:00Z",
        target_pass_rate=100.0, workers=1,
    )  # fmt: skip
    rows = [
        Row(NODE, SUITE, "f.py", Outcome.FAILED, 0.1, nasty("AssertionError: x"), NASTY),
        Row(OTHER, SUITE, "f.py", Outcome.PASSED, 0.1, None, None),
    ]
    summary = build_summary(
        iteration, [SuiteRecord(SUITE, 1, True, SuiteStatus.FAILED)], rows,
        [Deployment("api", DeployStatus.READY, url="http://127.0.0.1:1")],
        [KnownIssue(id="k", match="red", reason=nasty("reason"))], date(2025, 9, 7), 1.0,
    )  # fmt: skip
    console, raw = terminal()
    render_summary(summary, console)
    assert_safe(shown(raw), styled=True)
    assert "[/red]" in shown(raw)
    assert_safe(summary_to_markdown(summary))
    json.loads(summary_to_json(summary))


def test_progress_display_escapes_suite_names() -> None:
    progress = SuiteProgress(SUITE, total=3, done=1, failed=1, status=SuiteStatus.RUNNING)
    state = RunState(suites={SUITE: progress})
    console, raw = terminal()
    console.print(suite_line(progress))
    LineDisplay(console).suite_finished(progress)
    live = LiveDisplay(console, state)
    console.print(live._render(state))
    text = shown(raw)
    assert_safe(text, styled=True)
    assert "[/red]" in text and "\\x1b]0;title\\x07" in text


def test_plan_escapes_names_and_collection_errors(tmp_path: Path) -> None:
    # The config refuses control characters in names and paths; markup it takes, and what
    # pytest says about a file that fails to import may hold anything.
    (tmp_path / "tests").mkdir()
    message = NASTY.replace(" bad\udcff", "")  # a source file is valid UTF-8
    (tmp_path / "tests" / "test_bad.py").write_text(
        f"raise RuntimeError({message!r})\n", encoding="utf-8"
    )
    config = Config.model_validate(
        {
            "deploy": {"target": "none", "services": [{"name": "api", "url": "http://h/[/red]"}]},
            "tests": {
                "python": sys.executable,
                "suites": [{"name": "Suite [/red] [bold]é", "paths": ["tests/test_bad.py"]}],
            },
        }
    )
    console, raw = terminal()
    show_plan("staging [/red]", config, tmp_path, lambda: console, 1)
    text = shown(raw)
    assert_safe(text, styled=True)
    assert "Suite [/red] [bold]é" in text and "staging [/red]" in text
    assert "cannot collect" in text and "\\x1b]0;title\\x07" in text
