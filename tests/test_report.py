"""The report stage renders one Summary three ways; a reader must see the same figures in each."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import date
from typing import Any

from rich.console import Console

from deployloop.analysis import build_summary
from deployloop.analysis.context import AnalysisContext
from deployloop.models import (
    Category,
    Cluster,
    Deployment,
    DeployStatus,
    FalseGreen,
    Figures,
    HistoryPoint,
    HistoryRow,
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
    Trend,
)
from deployloop.models import TestHistory as History  # aliased: pytest collects Test* classes
from deployloop.models import TestRow as Row
from deployloop.report.json_report import summary_to_dict, summary_to_json
from deployloop.report.markdown import summary_to_markdown
from deployloop.report.terminal import render_history, render_status, render_summary

WS_REASON = "staging requires OAuth on WebSocket; tracked in TICKET-12"
WS_TESTS = (
    "tests/e2e/test_priority1_critical.py::test_002_websocket_authentication_real",
    "tests/e2e/test_websocket_events.py::test_concurrent_websocket_real[4-clients]",
    "tests/e2e/test_websocket_events.py::test_websocket_connection",
    "tests/e2e/test_websocket_events.py::test_websocket_event_flow_real",
)
RESET_TEST = "tests/e2e/test_agent_pipeline.py::test_real_pipeline_error_handling"


def suite(
    name: str,
    priority: int,
    status: SuiteStatus,
    *,
    collected: int,
    passed: int = 0,
    failed: int = 0,
    errors: int = 0,
    skipped: int = 0,
    key_issue: str | None = None,
    selected: bool = True,
) -> SuiteSummary:
    figures = Figures(
        collected=collected,
        executed=passed + failed + errors,
        passed=passed,
        failed=failed,
        errors=errors,
        skipped=skipped,
    )
    return SuiteSummary(name, priority, status, selected, figures, key_issue)


def totals_of(suites: tuple[SuiteSummary, ...]) -> Figures:
    """What the analysis stage does: totals are the sums of the suite rows."""
    fields = ("collected", "executed", "passed", "failed", "errors", "skipped")
    return Figures(**{f: sum(getattr(s.figures, f) for s in suites) for f in fields})


def make_summary() -> Summary:
    # Deliberately out of priority order: the reports must sort by priority.
    suites = (
        suite(
            "WebSocket Events",
            3,
            SuiteStatus.FAILED,
            collected=5,
            passed=2,
            failed=3,
            key_issue="WebSocket 403",
        ),
        suite(
            "Priority 1 Critical",
            1,
            SuiteStatus.FAILED,
            collected=25,
            passed=24,
            failed=1,
            key_issue="WebSocket 403",
        ),
        suite("Priority 2 High", 2, SuiteStatus.PASSED, collected=10, passed=10),
        suite(
            "Agent | Pipeline",
            3,
            SuiteStatus.FAILED,
            collected=8,
            passed=5,
            errors=1,
            skipped=2,
            key_issue="ConnectionResetError | backend",
        ),
        suite(
            "Priority 7 Resilience",
            7,
            SuiteStatus.NOT_RUN,
            collected=40,
            selected=False,
        ),
    )
    iteration = IterationRecord(
        id=11,
        env="staging",
        number=4,
        status=IterationStatus.FAILED,
        git_sha="0123456789abcdef0123456789abcdef01234567",
        started_at="2025-09-07T07:07:00+00:00",
        finished_at="2025-09-07T07:15:02+00:00",
        target_pass_rate=100.0,
        workers=4,
    )
    failures = tuple(
        Row(t, "x", "f.py", Outcome.FAILED, 0.5, "WebSocket handshake rejected: HTTP 403", None)
        for t in WS_TESTS
    ) + (
        Row(
            RESET_TEST, "Agent | Pipeline", "f.py", Outcome.ERROR, 1.0, "ConnectionResetError", None
        ),
    )
    return Summary(
        iteration=iteration,
        totals=totals_of(suites),
        suites=suites,
        clusters=(
            Cluster(
                label="WebSocket handshake rejected: HTTP 403",
                signature="websocket-403",
                tests=WS_TESTS,
                suites=("Priority 1 Critical", "WebSocket Events"),
                known_issue="ws-oauth-403",
            ),
            Cluster(
                label="ConnectionResetError",
                signature="conn-reset",
                tests=(RESET_TEST,),
                suites=("Agent | Pipeline",),
            ),
        ),
        known_issues=(
            KnownIssueMatch("ws-oauth-403", WS_REASON, expired=False, failures=WS_TESTS),
            KnownIssueMatch("old-flake", "flaky DNS, fixed in 2024", expired=True, failures=()),
        ),
        deployments=(
            Deployment(
                "auth",
                DeployStatus.READY,
                url="https://auth-abc.run.app",
                revision="auth-00007-xyz",
            ),
            Deployment(
                "backend",
                DeployStatus.FAILED,
                error="health check /health returned 503 | gave up after 30s",
            ),
        ),
        remaining_suites=("Priority 7 Resilience",),
        elapsed_s=482.0,
        estimated_remaining_s=1350.0,
        failures=failures,
    )


# Figures of make_summary(), counted by hand from the suites above.
COLLECTED, EXECUTED, PASSED, FAILED, ERRORS, SKIPPED = 88, 46, 41, 4, 1, 2


# --- json ---------------------------------------------------------------------------------


def test_json_has_every_contract_key_in_order() -> None:
    data = summary_to_dict(make_summary())
    assert list(data) == [
        "env",
        "iteration",
        "status",
        "git_sha",
        "started_at",
        "finished_at",
        "totals",
        "suites",
        "clusters",
        "known_issues",
        "remaining_suites",
        "deployments",
        "timing",
        # The analysis features come after the keys above, which keep their order.
        "known_issue_failures",
        "remaining_tests",
        "outage",
        "integrity",
        "false_greens",
        "flaky",
        "broken",
        "projection",
        "trend",
        "diff",
        # Later additions, after every key an older version wrote.
        "running",
        "partial",
        "left_out",
        "root_causes",
    ]
    assert list(data["totals"]) == [
        "collected",
        "executed",
        "passed",
        "failed",
        "errors",
        "skipped",
        "pass_rate",
        "xfailed",
        "xpassed",
        "pending",
    ]
    assert list(data["suites"][0]) == [
        "name",
        "priority",
        "status",
        "collected",
        "executed",
        "passed",
        "failed",
        "errors",
        "skipped",
        "pass_rate",
        "key_issue",
    ]
    assert list(data["clusters"][0]) == [
        "label",
        "count",
        "tests",
        "known_issue",
        "suites",
        "category",
        "first_iteration",
        "service_logs",
    ]
    assert list(data["known_issues"][0]) == ["id", "reason", "failures", "expired", "matched"]
    assert list(data["deployments"][0]) == [
        "service",
        "status",
        "url",
        "revision",
        "started_at",
        "ready_at",
        "error",
        "image",
        "digest",
        "rolled_back_to",
        "tag",
        "promoted",
        "warning",
        "serving",
    ]
    assert list(data["timing"]) == ["elapsed_s", "estimated_remaining_s"]


def test_json_figures_are_exact() -> None:
    data = json.loads(summary_to_json(make_summary()))
    assert data["env"] == "staging"
    assert data["iteration"] == 4
    assert data["status"] == "failed"
    assert data["totals"] == {
        "collected": COLLECTED,
        "executed": EXECUTED,
        "passed": PASSED,
        "failed": FAILED,
        "errors": ERRORS,
        "skipped": SKIPPED,
        "pass_rate": 89.1,  # 41 / 46
        "xfailed": 0,
        "xpassed": 0,
        "pending": COLLECTED - EXECUTED - SKIPPED,
    }
    by_name = {s["name"]: s for s in data["suites"]}
    assert by_name["Priority 1 Critical"]["pass_rate"] == 96.0
    assert by_name["WebSocket Events"]["pass_rate"] == 40.0
    not_run = by_name["Priority 7 Resilience"]
    assert not_run["status"] == "not_run"
    assert not_run["executed"] == 0 and not_run["pass_rate"] is None
    assert [s["priority"] for s in data["suites"]] == [1, 2, 3, 3, 7]

    ws = data["clusters"][0]
    assert ws["count"] == 4 and ws["tests"] == list(WS_TESTS)
    assert ws["known_issue"] == "ws-oauth-403"
    issues = {i["id"]: i for i in data["known_issues"]}
    assert issues["ws-oauth-403"]["reason"] == WS_REASON
    assert issues["ws-oauth-403"]["matched"] is True
    assert issues["old-flake"] == {
        "id": "old-flake",
        "reason": "flaky DNS, fixed in 2024",
        "failures": [],
        "expired": True,
        "matched": False,
    }
    assert data["remaining_suites"] == ["Priority 7 Resilience"]
    backend = data["deployments"][1]
    assert backend["status"] == "failed" and backend["url"] is None
    assert "503" in backend["error"]
    assert data["timing"] == {"elapsed_s": 482.0, "estimated_remaining_s": 1350.0}


def test_json_text_is_indented_with_trailing_newline() -> None:
    text = summary_to_json(make_summary())
    assert text.endswith("}\n")
    assert text.startswith('{\n  "env": "staging"')


def test_a_single_failure_never_rounds_to_a_full_pass() -> None:
    nearly = suite("Big", 1, SuiteStatus.FAILED, collected=2500, passed=2499, failed=1)
    base = make_summary()
    summary = replace(
        base,
        iteration=replace(base.iteration, target_pass_rate=95.0),
        suites=(nearly,),
        totals=nearly.figures,
        clusters=(),
    )
    assert summary_to_dict(summary)["totals"]["pass_rate"] == 99.9
    markdown = summary_to_markdown(summary)
    assert "(99.9%, target 95.0%)" in markdown
    assert "Pass rate: 99.9% (2499/2500 executed)" in markdown
    assert table_rows(markdown, "## Results")[-1][9] == "**99.9%**"


# --- markdown ------------------------------------------------------------------------------


def table_rows(markdown: str, heading: str) -> list[list[str]]:
    """Cells of the first table under `heading`, split on unescaped pipes, header dropped."""
    section = markdown.split(heading, 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    return [[c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]] for line in lines[2:]]


def test_markdown_total_row_equals_the_sum_of_suite_rows() -> None:
    rows = table_rows(summary_to_markdown(make_summary()), "## Results")
    suites, total = rows[:-1], rows[-1]
    assert total[0] == "**TOTAL**"
    assert len(suites) == 5
    for column in range(3, 9):  # Collected .. Skipped
        column_sum = sum(int(row[column]) for row in suites)
        assert total[column] == f"**{column_sum}**"
    assert total[3:10] == [
        f"**{COLLECTED}**",
        f"**{EXECUTED}**",
        f"**{PASSED}**",
        f"**{FAILED}**",
        f"**{ERRORS}**",
        f"**{SKIPPED}**",
        "**89.1%**",
    ]


def test_markdown_rows_follow_priority_and_show_rates() -> None:
    rows = table_rows(summary_to_markdown(make_summary()), "## Results")
    assert [row[0] for row in rows] == [
        "Priority 1 Critical",
        "Priority 2 High",
        "WebSocket Events",
        "Agent \\| Pipeline",
        "Priority 7 Resilience",
        "**TOTAL**",
    ]
    assert rows[0][9] == "96.0%" and rows[0][10] == "WebSocket 403"
    assert rows[4][2] == "not run" and rows[4][9] == "n/a"


def test_markdown_opens_with_title_and_verdict() -> None:
    lines = summary_to_markdown(make_summary()).splitlines()
    assert lines[0].startswith("# ") and "staging" in lines[0] and "4" in lines[0]
    verdict = lines[2]
    assert verdict.startswith("**Verdict: FAILED** — ")
    assert "41/46 executed tests passed (89.1%" in verdict
    assert "5 failing" in verdict and "2 patterns" in verdict
    assert "1 suite not run" in verdict
    assert "1 service not deployed" in verdict


def test_markdown_known_issue_failures_stay_failures_with_their_reason() -> None:
    markdown = summary_to_markdown(make_summary())
    analysis = markdown.split("## Failure analysis", 1)[1].split("\n## ", 1)[0]
    assert f"known issue ws-oauth-403: {WS_REASON} — still counted as failing" in analysis
    for test in WS_TESTS:
        assert f"`{test}`" in analysis
    assert f"`{RESET_TEST}` — ConnectionResetError" in analysis
    assert "expected" not in markdown.lower()
    assert "old-flake" in analysis and "not matched" in analysis and "expired" in analysis


def test_markdown_escapes_pipes_in_cells() -> None:
    markdown = summary_to_markdown(make_summary())
    assert "| Agent \\| Pipeline |" in markdown
    assert "ConnectionResetError \\| backend" in markdown
    deploy_rows = table_rows(markdown, "## Deployment status")
    assert deploy_rows[1] == [
        "backend",
        "failed",
        "-",
        "-",
        "health check /health returned 503 \\| gave up after 30s",
    ]
    assert deploy_rows[0][:4] == ["auth", "ready", "https://auth-abc.run.app", "auth-00007-xyz"]


def test_markdown_progress_and_metrics() -> None:
    markdown = summary_to_markdown(make_summary())
    progress = markdown.split("## Progress", 1)[1].split("\n## ", 1)[0]
    assert f"Executed {EXECUTED} of {COLLECTED} collected tests (52.3%)" in progress
    assert "Priority 7 Resilience (not selected this iteration, 40 tests)" in progress
    assert "Estimated remaining time: 22m 30s" in progress
    metrics = markdown.split("## Key metrics", 1)[1]
    assert "Elapsed: 8m 02s" in metrics
    assert "89.1% (41/46 executed)" in metrics
    assert "0123456789abcdef0123456789abcdef01234567" in metrics


def test_markdown_for_a_clean_iteration() -> None:
    clean = suite("Smoke", 1, SuiteStatus.PASSED, collected=3, passed=3)
    summary = replace(
        make_summary(),
        iteration=replace(make_summary().iteration, status=IterationStatus.PASSED),
        suites=(clean,),
        totals=clean.figures,
        clusters=(),
        known_issues=(),
        deployments=(),
        remaining_suites=(),
        failures=(),
        estimated_remaining_s=None,
    )
    markdown = summary_to_markdown(summary)
    assert "**Verdict: PASSED** — 3/3 executed tests passed (100.0%, target 100.0%)" in markdown
    assert "No failing tests." in markdown
    assert "Remaining suites: none." in markdown


def test_markdown_warns_when_totals_disagree_with_rows() -> None:
    summary = make_summary()
    wrong = replace(summary, totals=replace(summary.totals, passed=PASSED + 5))
    assert "totals disagree" in summary_to_markdown(wrong)
    assert "totals disagree" not in summary_to_markdown(summary)


# --- terminal ------------------------------------------------------------------------------


def console() -> Console:
    return Console(record=True, width=160, color_system=None)


def test_terminal_summary_shows_suites_totals_and_verdict() -> None:
    out = console()
    render_summary(make_summary(), out)
    text = out.export_text()
    for name in ("Priority 1 Critical", "Priority 2 High", "Agent | Pipeline", "WebSocket Events"):
        assert name in text
    total_line = next(line for line in text.splitlines() if "TOTAL" in line)
    assert total_line.split() == ["TOTAL", "88", "46", "41", "4", "1", "2", "89.1%"]
    assert "Verdict: FAILED — 41/46 executed tests passed (89.1%" in text
    assert "still counted as failing" in text
    # Brackets of a parametrized node id are data, not console markup.
    assert "test_concurrent_websocket_real[4-clients]" in text
    assert "health check /health returned 503" in text


def test_terminal_status_is_compact_with_progress() -> None:
    out = console()
    render_status(make_summary(), out)
    text = out.export_text()
    assert "Iteration 4 (staging): failed" in text
    assert f"executed {EXECUTED} of {COLLECTED}" in text
    assert "24/25" not in text  # done counts include every finished test
    assert "25/25" in text and "0/40" in text
    assert "Verdict: FAILED" in text


def test_a_partial_iteration_says_so_in_every_format() -> None:
    whole = make_summary()
    assert summary_to_dict(whole)["partial"] is False
    assert "partial iteration" not in summary_to_markdown(whole)
    # Suites left out by --suite, and an iteration that ran only the failed tests.
    some = replace(whole, partial=True)
    failed_only = replace(some, iteration=replace(whole.iteration, partial=True))
    for summary, words in [
        (some, "1 of 5 suites not selected (--suite)"),
        (failed_only, "only the tests that failed before were run (--failed-only)"),
    ]:
        assert summary_to_dict(summary)["partial"] is True
        assert "partial iteration: " in summary_to_markdown(summary)
        assert words in summary_to_markdown(summary)
        for render in (render_summary, render_status):
            out = console()
            render(summary, out)
            assert words in out.export_text()


def test_build_summary_marks_unselected_suites_and_failed_only_as_partial() -> None:
    rows = [Row("t.py::a", "p1", "t.py", Outcome.PASSED, 0.1, None, None)]
    chosen = SuiteRecord("p1", 1, True, SuiteStatus.PASSED)
    left_out = SuiteRecord("p2", 2, False, SuiteStatus.NOT_RUN)
    record = make_summary().iteration
    assert not build_summary(record, [chosen], rows, [], [], date(2026, 12, 1), 1.0).partial
    assert build_summary(record, [chosen, left_out], rows, [], [], date(2026, 12, 1), 1.0).partial
    failed_only = replace(record, partial=True)
    assert build_summary(failed_only, [chosen], rows, [], [], date(2026, 12, 1), 1.0).partial


def test_terminal_status_of_many_suites_fits_one_screen() -> None:
    passed = tuple(
        suite(f"Module {i:02d}", 2, SuiteStatus.PASSED, collected=4, passed=4) for i in range(25)
    )
    red = suite("Checkout", 1, SuiteStatus.FAILED, collected=4, passed=3, failed=1)
    suites = (red, *passed)
    summary = replace(make_summary(), suites=suites, totals=totals_of(suites))
    out = console()
    render_status(summary, out)
    text = out.export_text()
    assert "Checkout" in text
    assert "Module 03" not in text
    assert "... 25 more suites: 25 passed" in text
    assert len(text.splitlines()) < 40


def test_terminal_history_lists_iterations() -> None:
    summary = make_summary()
    earlier = replace(
        summary.iteration,
        number=3,
        finished_at="2025-09-07T06:50:00+00:00",
        started_at="2025-09-07T06:30:00+00:00",
    )
    running = replace(summary.iteration, number=5, status=IterationStatus.RUNNING, finished_at=None)
    out = console()
    render_history(
        [(earlier, Figures(collected=88, executed=40, passed=30, failed=10)), (running, Figures())],
        out,
    )
    text = out.export_text()
    row3 = next(line for line in text.splitlines() if line.strip().startswith("3 "))
    assert "20m 00s" in row3 and "75.0%" in row3 and "0123456" in row3
    row5 = next(line for line in text.splitlines() if line.strip().startswith("5 "))
    assert "running" in row5 and "n/a" in row5


def test_terminal_summary_keeps_figures_whole_on_an_80_column_terminal() -> None:
    out = Console(record=True, width=80, color_system=None)
    render_summary(make_summary(), out)
    text = out.export_text()
    total_line = next(line for line in text.splitlines() if "TOTAL" in line)
    assert total_line.split() == ["TOTAL", "88", "46", "41", "4", "1", "2", "89.1%"]
    assert "100.0%" in text  # the passing suite's rate, not cut to "100.…"
    assert "…" not in text


# --- insights ------------------------------------------------------------------------------

FLAKY_TEST = "tests/e2e/test_priority2_high.py::test_session_refresh"
CHANGED_TEST = "tests/e2e/test_auth.py::test_login_rejects_bad_password"
EMPTY_TEST = "tests/e2e/test_priority2_high.py::test_export[csv]"
FIXED = tuple(f"tests/e2e/test_priority2_high.py::test_fixed_{n}" for n in range(4))
ADDED = "tests/e2e/test_priority2_high.py::test_new_export"
REMOVED = "tests/e2e/test_priority2_high.py::test_old_export"
PROJECTION_BASIS = "remaining suites pass at their iteration-3 rate"


def make_insights() -> Insights:
    return Insights(
        flaky=(
            History(
                FLAKY_TEST,
                (
                    HistoryPoint(3, Outcome.FAILED, 1),
                    HistoryPoint(3, Outcome.PASSED, 2),
                    HistoryPoint(4, Outcome.PASSED, 1),
                ),
                "failed and passed on the same code",
            ),
        ),
        broken=(
            History(
                WS_TESTS[0],
                (
                    HistoryPoint(2, Outcome.FAILED),
                    HistoryPoint(3, Outcome.FAILED),
                    HistoryPoint(4, Outcome.FAILED),
                ),
                "failed in every iteration since 2",
            ),
        ),
        integrity=(
            IntegrityFlag(
                CHANGED_TEST, "tests/e2e/test_auth.py", "passed after its test file changed"
            ),
            IntegrityFlag("Priority 2 High", None, "12 tests in iteration 3, 10 now"),
        ),
        false_greens=(
            FalseGreen("Priority 2 High", "suite", "passed with 2 of its tests removed"),
            FalseGreen(EMPTY_TEST, "test", "passed without running an assertion"),
            FalseGreen("iteration", "iteration", "collected fewer tests than iteration 3"),
        ),
        failures_with_known_issue=4,
        failures_without_known_issue=1,
        projection=Projection(
            final_pass_rate=86.43,
            low=80.25,
            high=91.0,
            remaining_tests=40,
            basis=PROJECTION_BASIS,
        ),
        trend=Trend(
            ((1, 60.0), (2, 75.55), (3, None), (4, 89.13)), iterations_to_green=1.6,
            pace="rising",
        ),
        diff=IterationDiff(
            compared_to=3,
            fixed=FIXED,
            new_failures=(RESET_TEST,),
            still_failing=(WS_TESTS[0], WS_TESTS[2]),
            added=(ADDED,),
            removed=(REMOVED,),
            changed_signatures=(
                SignatureChange(WS_TESTS[1], "TimeoutError", "WebSocket handshake rejected: 403"),
            ),
        ),
        remaining_suite_tests=(("Priority 7 Resilience", 40),),
    )


def make_insight_summary(insights: Insights | None = None) -> Summary:
    base = make_summary()
    ws, reset = base.clusters
    auth, backend = base.deployments
    return replace(
        base,
        clusters=(
            replace(ws, category=Category.ENVIRONMENT, first_iteration=2),
            replace(reset, category=Category.PRODUCT, first_iteration=4),
        ),
        deployments=(
            replace(
                auth,
                image="europe-docker.pkg.dev/p/r/auth:0123456",
                rolled_back_to="auth-00006-abc",
            ),
            backend,
        ),
        insights=make_insights() if insights is None else insights,
    )


def section(markdown: str, heading: str) -> str:
    return markdown.split(heading + "\n", 1)[1].split("\n## ", 1)[0]


def test_json_carries_every_insight() -> None:
    data = json.loads(summary_to_json(make_insight_summary()))
    assert data["flaky"] == [
        {
            "test": FLAKY_TEST,
            "history": [
                {"iteration": 3, "outcome": "failed", "attempt": 1},
                {"iteration": 3, "outcome": "passed", "attempt": 2},
                {"iteration": 4, "outcome": "passed", "attempt": 1},
            ],
            "reason": "failed and passed on the same code",
        }
    ]
    assert data["broken"] == [
        {
            "test": WS_TESTS[0],
            "history": [{"iteration": n, "outcome": "failed", "attempt": 1} for n in (2, 3, 4)],
            "reason": "failed in every iteration since 2",
        }
    ]
    assert data["integrity"] == [
        {
            "test": CHANGED_TEST,
            "file": "tests/e2e/test_auth.py",
            "reason": "passed after its test file changed",
        },
        {"test": "Priority 2 High", "file": None, "reason": "12 tests in iteration 3, 10 now"},
    ]
    assert data["false_greens"] == [
        {"suite": "Priority 2 High", "reason": "passed with 2 of its tests removed"},
        {"test": EMPTY_TEST, "reason": "passed without running an assertion"},
        {"iteration": 4, "reason": "collected fewer tests than iteration 3"},
    ]
    assert data["known_issue_failures"] == {"with": 4, "without": 1}
    assert data["outage"] is None
    assert data["projection"] == {
        "final_pass_rate": 86.4,
        "low": 80.2,  # round() to one decimal, like every other rate
        "high": 91.0,
        "remaining_tests": 40,
        "basis": PROJECTION_BASIS,
    }
    assert data["trend"] == {
        "pass_rates": [
            {"iteration": 1, "pass_rate": 60.0},
            {"iteration": 2, "pass_rate": 75.5},
            {"iteration": 3, "pass_rate": None},
            {"iteration": 4, "pass_rate": 89.1},
        ],
        "iterations_to_green": 1.6,
        "pace": "rising",
    }
    assert data["diff"] == {
        "compared_to": 3,
        "fixed": list(FIXED),
        "new_failures": [RESET_TEST],
        "still_failing": [WS_TESTS[0], WS_TESTS[2]],
        "added": [ADDED],
        "removed": [REMOVED],
        "changed_signatures": [
            {
                "test": WS_TESTS[1],
                "before": "TimeoutError",
                "after": "WebSocket handshake rejected: 403",
            }
        ],
    }
    assert data["remaining_suites"] == ["Priority 7 Resilience"]
    assert data["remaining_tests"] == [{"suite": "Priority 7 Resilience", "tests": 40}]
    ws, reset = data["clusters"]
    assert (ws["category"], ws["first_iteration"]) == ("environment", 2)
    assert ws["suites"] == ["Priority 1 Critical", "WebSocket Events"]
    assert (reset["category"], reset["first_iteration"]) == ("product", 4)
    auth, backend = data["deployments"]
    assert auth["image"] == "europe-docker.pkg.dev/p/r/auth:0123456"
    assert auth["rolled_back_to"] == "auth-00006-abc"
    assert backend["image"] is None and backend["rolled_back_to"] is None


def test_json_with_empty_insights() -> None:
    data = summary_to_dict(make_summary())
    assert data["known_issue_failures"] == {"with": 0, "without": 0}
    assert data["outage"] is None
    for key in ("integrity", "false_greens", "flaky", "broken"):
        assert data[key] == []
    for key in ("projection", "trend", "diff"):
        assert data[key] is None
    # Without counts from the analysis, a remaining suite counts its collected tests.
    assert data["remaining_tests"] == [{"suite": "Priority 7 Resilience", "tests": 40}]
    assert data["clusters"][0]["category"] == "unknown"
    assert data["clusters"][0]["first_iteration"] is None


def test_json_outage_and_unknown_false_green_kind() -> None:
    insights = Insights(
        outage="backend unreachable: 40 of 46 tests failed with ConnectionRefusedError",
        false_greens=(FalseGreen("Priority 2 High", "shard", "one shard never ran"),),
    )
    data = summary_to_dict(make_insight_summary(insights))
    assert data["outage"] == insights.outage
    assert data["false_greens"] == [
        {"subject": "Priority 2 High", "kind": "shard", "reason": "one shard never ran"}
    ]


def top_bullets(markdown: str) -> list[str]:
    """The bullets between the verdict line and the first section."""
    head = markdown.split("\n## ", 1)[0].splitlines()
    return [line[2:] for line in head if line.startswith("- ")]


def test_markdown_opens_with_verdict_then_three_facts_by_priority() -> None:
    markdown = summary_to_markdown(make_insight_summary())
    lines = markdown.splitlines()
    assert lines[2].startswith("**Verdict: FAILED** — ")
    assert lines[3] == ""
    facts = top_bullets(markdown)
    assert len(facts) == 3
    assert lines[4:7] == [f"- {fact}" for fact in facts]
    integrity, new, green = facts
    assert integrity.startswith("Integrity: 2 flags to check before trusting these results")
    assert f"`{CHANGED_TEST}`: passed after its test file changed" in integrity
    assert new.startswith(f"1 new failure since iteration 3: `{RESET_TEST}`")
    assert new.endswith("(4 fixed, 2 still failing)")
    assert green.startswith("3 false greens")
    assert "suite `Priority 2 High`: passed with 2 of its tests removed" in green


def test_markdown_an_outage_comes_first_and_integrity_is_never_buried() -> None:
    insights = replace(make_insights(), outage="backend returned 503 to 40 of 46 tests")
    facts = top_bullets(summary_to_markdown(make_insight_summary(insights)))
    assert facts[0] == "Outage: backend returned 503 to 40 of 46 tests"
    assert facts[1].startswith("Integrity: ")
    assert len(facts) == 3


def test_markdown_top_facts_fall_back_to_cluster_and_progress() -> None:
    facts = top_bullets(summary_to_markdown(make_summary()))
    assert len(facts) == 2  # no insights: the biggest pattern and the progress
    assert facts[0].startswith(
        "Biggest failure pattern: WebSocket handshake rejected: HTTP 403 — 4 failures in 2 suites"
    )
    assert "still counted as failing" in facts[0]
    assert facts[1] == (
        f"Progress: executed {EXECUTED} of {COLLECTED} collected tests (52.3%); "
        "1 suite remaining; 40 tests not run yet; estimated remaining time 22m 30s"
    )
    flaky_only = replace(make_insights(), integrity=(), diff=None, false_greens=())
    facts = top_bullets(summary_to_markdown(make_insight_summary(flaky_only)))
    assert [fact.split(" ", 2)[:2] for fact in facts] == [
        ["Biggest", "failure"],
        ["1", "flaky"],
        ["4", "failures"],
    ]
    assert facts[1] == f"1 flaky test (passed and failed without a change): `{FLAKY_TEST}`"
    assert facts[2] == (
        "4 failures match a known issue and still count as failing; 1 without a known issue"
    )


def test_markdown_section_order() -> None:
    markdown = summary_to_markdown(make_insight_summary())
    headings = [line for line in markdown.splitlines() if line.startswith("## ")]
    assert headings == [
        "## Integrity",
        "## Results",
        "## Failure analysis",
        "## Flaky and broken tests",
        "## False greens",
        "## Changes since iteration 3",
        "## Progress",
        "## Deployment status",
        "## Key metrics",
    ]
    # With nothing to report, the insight sections are left out, not shown empty.
    plain = summary_to_markdown(make_summary())
    assert [line for line in plain.splitlines() if line.startswith("## ")] == [
        "## Results",
        "## Failure analysis",
        "## Progress",
        "## Deployment status",
        "## Key metrics",
    ]


def test_markdown_integrity_section_lists_every_flag() -> None:
    integrity = section(summary_to_markdown(make_insight_summary()), "## Integrity")
    assert "2 flags: check these before trusting the pass rate." in integrity
    assert f"- `{CHANGED_TEST}`: passed after its test file changed" in integrity
    assert "- `Priority 2 High` (file" not in integrity
    assert "- `Priority 2 High`: 12 tests in iteration 3, 10 now" in integrity


def test_markdown_clusters_have_category_first_seen_and_known_issue_counts() -> None:
    analysis = section(summary_to_markdown(make_insight_summary()), "## Failure analysis")
    assert analysis.startswith(
        "\n5 failing tests in 2 patterns. 4 with a known issue (still counted as failing), "
        "1 without a known issue."
    )
    ws = analysis.split("### 1. ", 1)[1].split("### 2. ", 1)[0]
    assert "- Category: environment\n- First seen in iteration 2\n" in ws
    reset = analysis.split("### 2. ", 1)[1]
    assert "- Category: product\n- First seen in iteration 4 (this one)\n" in reset


def test_markdown_flaky_and_broken_with_history() -> None:
    part = section(summary_to_markdown(make_insight_summary()), "## Flaky and broken tests")
    flaky, broken = part.split("### Broken (1)")
    assert "### Flaky (1)" in flaky
    assert (
        f"- `{FLAKY_TEST}` — failed and passed on the same code\n"
        "  - it3: failed → it3 rerun 1: passed → it4: passed"
    ) in flaky
    assert (
        f"- `{WS_TESTS[0]}` — failed in every iteration since 2\n"
        "  - it2: failed → it3: failed → it4: failed"
    ) in broken


def test_markdown_false_greens_and_changes() -> None:
    markdown = summary_to_markdown(make_insight_summary())
    greens = section(markdown, "## False greens")
    assert "- suite `Priority 2 High`: passed with 2 of its tests removed" in greens
    assert f"- test `{EMPTY_TEST}`: passed without running an assertion" in greens
    assert "- the iteration: collected fewer tests than iteration 3" in greens
    changes = section(markdown, "## Changes since iteration 3")
    assert changes.startswith(
        "\nvs iteration 3: 4 fixed, 1 new failure, 2 still failing, 1 added, 1 removed, "
        "1 changed failure signature."
    )
    order = [changes.index(f"### {title}") for title in ("New", "Still", "Fixed", "Added")]
    assert order == sorted(order)
    assert f"### New failures (1)\n\n- `{RESET_TEST}`" in changes
    assert f"- `{WS_TESTS[1]}`: TimeoutError → WebSocket handshake rejected: 403" in changes


def test_markdown_progress_has_labelled_projection_and_trend() -> None:
    progress = section(summary_to_markdown(make_insight_summary()), "## Progress")
    assert "  - Priority 1 Critical: executed 25 of 25 (100.0%)" in progress
    assert "  - Agent | Pipeline: executed 6 of 8 (75.0%)" in progress
    assert "  - Priority 7 Resilience: executed 0 of 40 (0.0%)" in progress
    assert "Priority 7 Resilience (not selected this iteration, 40 tests)" in progress
    assert (
        "- **Projection (not a result):** final pass rate 86.4% (range 80.2%–91.0%) "
        f"if the 40 remaining tests run; basis: {PROJECTION_BASIS}"
    ) in progress
    assert (
        "- Trend: it1 60.0% → it2 75.5% → it3 n/a → it4 89.1%; "
        "about 2 more iterations to green at this pace"
    ) in progress
    # The projection appears only labelled as one: never as a figure of its own.
    markdown = summary_to_markdown(make_insight_summary())
    assert markdown.count("86.4%") == 1


def test_markdown_deployments_show_image_and_rollback() -> None:
    markdown = summary_to_markdown(make_insight_summary())
    deployments = section(markdown, "## Deployment status")
    assert "| Service | Status | URL | Image | Revision | Rolled back to | Error |" in deployments
    rows = table_rows(markdown, "## Deployment status")
    assert rows[0] == [
        "auth",
        "ready",
        "https://auth-abc.run.app",
        "europe-docker.pkg.dev/p/r/auth:0123456",
        "auth-00007-xyz",
        "auth-00006-abc",
        "",
    ]
    assert rows[1][:6] == ["backend", "failed", "-", "-", "-", "-"]


def test_terminal_summary_has_attention_block_above_the_tables() -> None:
    insights = replace(make_insights(), outage="backend returned 503 to 40 of 46 tests")
    out = console()
    render_summary(make_insight_summary(insights), out)
    text = out.export_text()
    lines = [line.rstrip() for line in text.splitlines()]
    start = lines.index("Attention")
    assert start < next(i for i, line in enumerate(lines) if "Results" in line)
    assert lines[start + 1 : start + 7] == [
        "  ! Outage: backend returned 503 to 40 of 46 tests",
        f"  ! Integrity: {CHANGED_TEST}: passed after its test file changed",
        "  ! Integrity: Priority 2 High: 12 tests in iteration 3, 10 now",
        "  ! False green: suite Priority 2 High: passed with 2 of its tests removed",
        f"  ! False green: test {EMPTY_TEST}: passed without running an assertion",
        "  ! False green: the iteration: collected fewer tests than iteration 3",
    ]
    assert "environment, first seen in iteration 2" in text
    assert "product, first seen in iteration 4 (this one)" in text
    assert f"Flaky: 1 — {FLAKY_TEST}" in text
    assert f"Broken: 1 — {WS_TESTS[0]}" in text
    assert "vs iteration 3: 4 fixed, 1 new failure, 2 still failing" in text
    assert (
        "Known issues: 4 failures with a known issue (still counted as failing), 1 without" in text
    )
    projection = next(line for line in lines if "86.4%" in line)
    assert projection.startswith("Projection (not a result): final pass rate 86.4% (range")
    assert "Trend: it1 60.0%" in text
    assert "auth-00006-abc" in text and "europe-docker.pkg.dev/p/r/auth:0123456" in text
    assert lines[-1].startswith("Verdict: FAILED")


def test_terminal_attention_is_coloured() -> None:
    insights = replace(make_insights(), outage="backend down")
    out = Console(record=True, width=160, force_terminal=True, color_system="standard")
    render_summary(make_insight_summary(insights), out)
    styled = out.export_text(styles=True)
    red, yellow = "\x1b[1;31m", "\x1b[1;33m"
    assert f"{red}Outage: \x1b[0m\x1b[31mbackend down" in styled
    assert f"{red}Integrity: \x1b[0m\x1b[31m{CHANGED_TEST}" in styled
    assert f"{yellow}False green: \x1b[0m\x1b[33msuite Priority 2 High" in styled


def test_terminal_summary_without_insights_has_no_attention_block() -> None:
    out = console()
    render_summary(make_summary(), out)
    text = out.export_text()
    assert "Attention" not in text and "Projection" not in text
    assert "vs iteration" not in text and "Flaky" not in text
    assert "unknown" in text  # clusters show their category even when not classified


def test_terminal_status_shows_progress_verdict_and_top_facts() -> None:
    summary = make_insight_summary()
    running = replace(summary, iteration=replace(summary.iteration, status=IterationStatus.RUNNING))
    out = console()
    render_status(running, out)
    text = out.export_text()
    lines = text.splitlines()
    assert lines[0] == "Iteration 4 (staging): running"
    assert f"executed {EXECUTED} of {COLLECTED}" in lines[1]
    verdict_at = next(i for i, line in enumerate(lines) if line.startswith("Verdict: RUNNING"))
    assert lines[verdict_at + 1].rstrip() == "Top facts"
    # Each fact starts with a bullet; a long one wraps under its text.
    facts = [line for line in lines[verdict_at + 2 :] if line.startswith("  • ")]
    assert len(facts) == 3
    assert facts[0].startswith("  • Integrity: 2 flags")
    assert facts[1].startswith("  • 1 new failure since iteration 3: ")
    assert facts[2].startswith("  • 3 false greens")
    assert all(line.startswith("    ") for line in lines[verdict_at + 2 :] if line not in facts)
    assert RESET_TEST in text


def test_terminal_status_with_empty_insights_shows_progress_as_a_fact() -> None:
    out = console()
    render_status(make_summary(), out)
    text = out.export_text()
    assert "Top facts" in text
    assert f"  • Progress: executed {EXECUTED} of {COLLECTED} collected tests" in text


def test_terminal_attention_shows_the_first_few_and_counts_the_rest() -> None:
    flags = tuple(
        IntegrityFlag(f"tests/e2e/t.py::test_{n}", "tests/e2e/t.py", "passed after a change")
        for n in range(7)
    )
    out = console()
    render_summary(make_insight_summary(replace(make_insights(), integrity=flags)), out)
    text = out.export_text()
    assert "tests/e2e/t.py::test_4: passed after a change" in text
    assert "test_5" not in text
    assert "    ... and 2 more integrity flags" in text


def test_terminal_insights_on_an_80_column_terminal() -> None:
    out = Console(record=True, width=80, color_system=None)
    render_summary(make_insight_summary(), out)
    text = out.export_text()
    total_line = next(line for line in text.splitlines() if "TOTAL" in line)
    assert total_line.split() == ["TOTAL", "88", "46", "41", "4", "1", "2", "89.1%"]
    assert "…" not in text
    # Too narrow for image and rollback columns: they go under the deployments table.
    assert "  auth: image europe-docker.pkg.dev/p/r/auth:0123456; rolled back to" in text
    status = Console(record=True, width=80, color_system=None)
    render_status(make_insight_summary(), status)
    assert "…" not in status.export_text()


# --- setup failures, crashed services, crashed iterations ----------------------------------

DEPLOY_ERROR = "service 'backend': exited with code 3 before ready: No module named 'flask'"
SERVICE_CRASH = "exited with code 1 during the tests at 2026-12-01T10:00:03Z: RuntimeError: db gone"


def analysed(
    status: IterationStatus,
    rows: list[Row],
    deployments: list[Deployment],
    error: str | None = None,
) -> Summary:
    """A summary as `loop` computes it, from recorded rows, with history to time them by."""
    record = IterationRecord(
        id=7, env="staging", number=5, status=status, git_sha="abc1234",
        started_at="2026-12-01T10:00:00+00:00", finished_at="2026-12-01T10:00:09+00:00",
        target_pass_rate=100.0, workers=2, error=error,
    )  # fmt: skip
    suites = [
        SuiteRecord("Checkout", 1, True, SuiteStatus.PENDING),
        SuiteRecord("Search", 2, True, SuiteStatus.PENDING),
    ]
    history = [
        HistoryRow(4, r.nodeid, r.suite, Outcome.PASSED, 1, None, 3.0, None, None) for r in rows
    ]
    return build_summary(
        record, suites, rows, deployments, [], date(2026, 12, 1), 9.0,
        AnalysisContext(history=history),
    )  # fmt: skip


def pending_rows() -> list[Row]:
    return [
        Row(f"tests/test_{suite.lower()}.py::test_{n}", suite, f"tests/test_{suite.lower()}.py",
            None, None, None, None)
        for suite in ("Checkout", "Search")
        for n in range(3)
    ]  # fmt: skip


def all_text(summary: Summary) -> tuple[str, str, dict[str, Any]]:
    """(terminal summary and status, markdown, json) of one summary."""
    out = console()
    render_summary(summary, out)
    render_status(summary, out)
    return out.export_text(), summary_to_markdown(summary), json.loads(summary_to_json(summary))


def test_a_failed_deploy_is_stated_never_a_false_green_nor_time_remaining() -> None:
    deployments = [
        Deployment("auth", DeployStatus.READY, url="http://127.0.0.1:1"),
        Deployment("backend", DeployStatus.FAILED, error=DEPLOY_ERROR),
    ]
    summary = analysed(IterationStatus.DEPLOY_FAILED, pending_rows(), deployments, DEPLOY_ERROR)
    terminal, markdown, data = all_text(summary)
    verdict = f"Verdict: DEPLOY FAILED — the deploy failed: {DEPLOY_ERROR}; no test ran"
    assert verdict in terminal
    assert f"**{verdict.replace(' — ', '** — ', 1)}" in markdown
    assert f"  ! Deploy failed: {DEPLOY_ERROR}; no test ran" in terminal
    assert top_bullets(markdown)[0] == f"Deploy failed: {DEPLOY_ERROR}"
    for text in (terminal, markdown):
        assert "false green" not in text.lower()
        assert "no test executed" not in text
        assert "estimated remaining" not in text.lower()
        assert "Projection" not in text
    assert data["status"] == "deploy_failed"
    assert data["false_greens"] == []
    assert data["timing"]["estimated_remaining_s"] is None
    assert data["projection"] is None
    assert data["totals"]["pending"] == 6


def test_a_cloud_run_deploy_failure_without_a_failed_service_states_its_error() -> None:
    # Every service was deployed and ready; minting the ID token the tests need failed.
    error = "service 'api': cannot mint an ID token: the metadata server is unreachable"
    deployments = [
        Deployment("api", DeployStatus.READY, url="https://api-xyz.a.run.app",
                   revision="api-00004-abc", image="europe-docker.pkg.dev/p/r/api@sha256:ab")
    ]  # fmt: skip
    summary = analysed(IterationStatus.DEPLOY_FAILED, pending_rows(), deployments, error)
    terminal, markdown, data = all_text(summary)
    assert f"Verdict: DEPLOY FAILED — the deploy failed: {error}" in terminal
    assert f"Deploy failed: {error}" in markdown
    assert "estimated remaining" not in (terminal + markdown).lower()
    assert "False green" not in terminal + markdown
    assert (data["false_greens"], data["timing"]["estimated_remaining_s"]) == ([], None)


def test_an_iteration_interrupted_before_its_tests_is_no_result() -> None:
    summary = analysed(IterationStatus.INTERRUPTED, pending_rows(), [])
    terminal, markdown, data = all_text(summary)
    assert "Verdict: INTERRUPTED — interrupted before any test ran" in terminal
    assert "`loop run --env staging --resume` finishes it" in terminal
    assert "False green" not in terminal + markdown
    assert "estimated remaining" not in (terminal + markdown).lower()
    assert (data["false_greens"], data["timing"]["estimated_remaining_s"]) == ([], None)


def crashed_service_summary() -> Summary:
    refused = "httpx.ConnectError: [Errno 111] Connection refused"
    rows = [
        Row(f"tests/test_checkout.py::test_{n}", "Checkout", "tests/test_checkout.py",
            Outcome.FAILED, 0.2, refused, None)
        for n in range(4)
    ] + [
        Row("tests/test_search.py::test_ok", "Search", "tests/test_search.py", Outcome.PASSED,
            0.2, None, None)
    ]  # fmt: skip
    deployments = [
        Deployment("auth", DeployStatus.READY, url="http://127.0.0.1:1"),
        Deployment("backend", DeployStatus.CRASHED, url="http://127.0.0.1:2", error=SERVICE_CRASH),
    ]
    return analysed(IterationStatus.FAILED, rows, deployments)


def test_a_service_that_crashed_during_the_tests_is_said_first() -> None:
    summary = crashed_service_summary()
    crash = f"service backend crashed during the tests: {SERVICE_CRASH}"
    terminal, markdown, data = all_text(summary)
    lines = [line.rstrip() for line in terminal.splitlines()]
    attention = lines.index("Attention")
    assert lines[attention + 1] == f"  ! Crashed: {crash}"
    assert lines[attention + 2].startswith("  ! Outage: environment outage: 4 of 5")
    assert "service backend crashed during the tests" in lines[attention + 2]
    facts = [line for line in lines if line.startswith("  • ")]
    assert facts[0].startswith(f"  • {crash}")
    assert top_bullets(markdown)[0].startswith(crash)
    # The outage's cluster names the crash next to its own label, everywhere.
    label = (
        "httpx.ConnectError: [Errno 111] Connection refused "
        "(service backend crashed during the tests)"
    )
    assert data["clusters"][0]["label"] == label
    assert f"### 1. {label} — 4 failures" in markdown
    assert "crashed during the tests" in terminal.split("Deployments", 1)[1]
    assert [d["status"] for d in data["deployments"]] == ["ready", "crashed"]
    rows = table_rows(markdown, "## Deployment status")
    assert rows[1][:2] == ["backend", "crashed during the tests"]
    assert "Verdict: FAILED — 1/5 executed tests passed" in terminal
    assert "service backend crashed during the tests" in terminal.split("Verdict: FAILED", 1)[1]


def test_a_crashed_service_is_red_in_the_deployments_table() -> None:
    out = Console(record=True, width=160, force_terminal=True, color_system="standard")
    render_summary(crashed_service_summary(), out)
    assert "\x1b[1;31mcrashed\x1b[0m" in out.export_text(styles=True)


def test_a_crashed_iteration_says_so_and_how_to_finish_it() -> None:
    rows = pending_rows()
    rows[0] = replace(rows[0], outcome=Outcome.PASSED, duration_s=1.0)
    reason = "loop was killed (no loop held env staging); found by loop status"
    summary = analysed(IterationStatus.CRASHED, rows, [], reason)
    terminal, markdown, data = all_text(summary)
    resume = "`loop run --env staging --resume` finishes it"
    assert "Verdict: CRASHED — 1/1 executed tests passed" in terminal
    assert f"loop crashed mid-iteration ({reason}): {resume}" in " ".join(terminal.split())
    assert markdown.splitlines()[2].startswith("**Verdict: CRASHED** — ")
    assert resume in markdown.splitlines()[2]
    assert data["status"] == "crashed"
    # Nothing executed: a setup failure like any other, still resumable.
    empty = analysed(IterationStatus.CRASHED, pending_rows(), [], reason)
    terminal, markdown, data = all_text(empty)
    terminal = " ".join(terminal.split())
    assert f"Verdict: CRASHED — loop crashed before any test ran ({reason})" in terminal
    assert resume in terminal
    assert "False green" not in terminal + markdown
    assert (data["false_greens"], data["timing"]["estimated_remaining_s"]) == ([], None)


def test_history_shows_a_crashed_iteration_in_red() -> None:
    record = replace(make_summary().iteration, status=IterationStatus.CRASHED)
    out = Console(record=True, width=160, force_terminal=True, color_system="standard")
    render_history([(record, Figures(collected=4, executed=2, passed=2))], out)
    assert "\x1b[1;31mcrashed\x1b[0m" in out.export_text(styles=True)
