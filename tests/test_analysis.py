"""The analyze stage: figures, failure signatures, clusters, known issues, summary."""

from __future__ import annotations

import math
import time
from dataclasses import replace
from datetime import date

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from deployloop.analysis import build_summary
from deployloop.analysis.categories import categorize
from deployloop.analysis.clusters import cluster_failures, mark_outage
from deployloop.analysis.context import AnalysisContext
from deployloop.analysis.figures import figures
from deployloop.analysis.history import flaky_and_broken
from deployloop.analysis.known_issues import match_known_issues
from deployloop.analysis.normalize import normalize
from deployloop.analysis.signatures import failing_frame, failure_of, traceback_locations
from deployloop.config import CategoryRule, KnownIssue
from deployloop.models import (
    Category,
    Deployment,
    DeployStatus,
    Figures,
    HistoryRow,
    IterationRecord,
    IterationStatus,
    Outcome,
    SuiteRecord,
    SuiteStatus,
    Summary,
)
from deployloop.models import TestRow as Row  # aliased: pytest collects classes named Test*

WS_403 = (
    "AssertionError: events stream rejected: HTTP 403 for user {user}\n"
    "assert 403 == 200\n"
    " +  where 403 = <Response [403 Forbidden]>.status_code"
)
TODAY = date(2025, 9, 7)


def row(
    nodeid: str,
    outcome: Outcome | None,
    message: str | None = None,
    suite: str = "p1",
    duration_s: float | None = 0.5,
) -> Row:
    file = nodeid.split("::")[0]
    if outcome is None:
        duration_s = None
    return Row(nodeid, suite, file, outcome, duration_s, message, None)


# --- figures ---------------------------------------------------------------------------------


def test_figures_count_executed_and_pass_rate_exactly() -> None:
    rows = [row(f"t.py::p{i}", Outcome.PASSED) for i in range(116)]
    rows += [row(f"t.py::f{i}", Outcome.FAILED, "x") for i in range(6)]
    rows += [row("t.py::e", Outcome.ERROR, "x")]
    result = figures(rows)
    assert (result.executed, result.passed, result.failed, result.errors) == (123, 116, 6, 1)
    assert result.pass_rate == pytest.approx(100.0 * 116 / 123)


def test_skipped_xfailed_xpassed_are_shown_never_passed_or_executed() -> None:
    rows = [
        row("t.py::a", Outcome.PASSED),
        row("t.py::b", Outcome.SKIPPED),
        row("t.py::c", Outcome.XFAILED),
        row("t.py::d", Outcome.XPASSED),
    ]
    result = figures(rows)
    assert result == Figures(collected=4, executed=1, passed=1, skipped=1, xfailed=1, xpassed=1)
    assert result.pass_rate == 100.0


def test_pending_tests_are_collected_not_executed() -> None:
    rows = [row("t.py::a", Outcome.FAILED, "x"), row("t.py::b", None), row("t.py::c", None)]
    result = figures(rows)
    assert (result.collected, result.executed, result.pending) == (3, 1, 2)
    assert result.pass_rate == 0.0
    assert figures([]).pass_rate is None


# --- normalize -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (
            WS_403.format(user="u-8f3a"),
            "AssertionError: events stream rejected: HTTP 403 for user <id>",
        ),
        ("httpx.ConnectError: [Errno 111] Connection refused",) * 2,
        ("Failed: Timeout >5.0s", "Failed: Timeout ><dur>"),
        (
            "assert 403 == 200\n +  where 403 = <Response [403 Forbidden]>.status_code",
            "assert 403 == 200",
        ),
        (
            "HTTPStatusError: Client error '503 Service Unavailable' for url "
            "'http://127.0.0.1:8123/api/events?token=abc'",
            "HTTPStatusError: Client error '503 Service Unavailable' for url "
            "'http://<ip>/api/events?<query>'",
        ),
        (
            "AssertionError: expected 200, got 500 for 550e8400-e29b-41d4-a716-446655440000 "
            "at 2025-09-07T07:15:03.123Z after 1.25s",
            "AssertionError: expected 200, got 500 for <uuid> at <ts> after <dur>",
        ),
        ("KeyError: 'user_1234'", "KeyError: <str>"),
        ("AssertionError\nassert False", "AssertionError: assert False"),
        ("E   assert 3 ==   4", "assert <n> == <n>"),
        (
            "RuntimeError: commit abc1234def at 0x7f3a00 failed",
            "RuntimeError: commit <hex> at <hex> failed",
        ),
    ],
)
def test_normalize_removes_what_varies_and_keeps_what_explains(message: str, expected: str) -> None:
    assert normalize(message) == expected


# Fragments that exercise every rule and their boundaries, glued together at random.
FRAGMENTS = [
    "HTTP", "HTTP/1.1", "status_code", "==", "!=", "403", "200", "5", "1.5", ".", ":", "-", "_",
    "'", '"', "<", ">", "<n>", "<str>", "[", "]", "Errno", "http://", "https://h:80/a?b=1", "?",
    "u-8f3a", "deadbeef1", "0x1f", "2025-09-07", "07:15:03", "10.0.0.1:80", "ms", "s", "E   ",
    "\n", " ", "Forbidden", "Not Found", "AssertionError", "x", "é", "٣",
]  # fmt: skip
messages = st.one_of(st.text(), st.lists(st.sampled_from(FRAGMENTS)).map("".join))


@settings(max_examples=1000)
@given(messages)
@example("'a'5")
@example("<n>'a'")
@example("'http://1.2.3.4:5/x?y'")
def test_normalize_is_idempotent(message: str) -> None:
    once = normalize(message)
    assert normalize(once) == once
    assert "\n" not in once and "  " not in once


one_line = st.text(
    st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), max_size=30
) | st.lists(st.sampled_from([f for f in FRAGMENTS if f != "\n"]), max_size=8).map("".join)
status = st.integers(100, 599)


@given(one_line, one_line, status, status)
def test_different_http_status_never_normalizes_equal(
    before: str, after: str, a: int, b: int
) -> None:
    if a != b:
        assert normalize(f"{before} HTTP {a} {after}") != normalize(f"{before} HTTP {b} {after}")


exception_names = st.from_regex(r"\A([a-z]{1,6}\.)?[A-Z][a-z]{0,8}(Error|Exception)\Z")


@given(exception_names, exception_names, one_line)
def test_different_exception_types_never_normalize_equal(a: str, b: str, rest: str) -> None:
    if a != b:
        assert normalize(f"{a}: {rest}") != normalize(f"{b}: {rest}")


# --- clusters --------------------------------------------------------------------------------


def test_messages_differing_only_in_ids_numbers_and_times_merge() -> None:
    rows = [
        row("a.py::one", Outcome.FAILED, WS_403.format(user="u-8f3a")),
        row("b.py::two", Outcome.ERROR, WS_403.format(user="u-11c0"), suite="p2"),
        row("a.py::three", Outcome.FAILED, "TimeoutError: no event after 5.0s at 07:15:03"),
        row("a.py::four", Outcome.FAILED, "TimeoutError: no event after 12.5s at 08:01:44"),
        row("a.py::ok", Outcome.PASSED),
    ]
    first, second = cluster_failures(rows, ())
    assert first.label == "AssertionError: events stream rejected: HTTP 403 for user <id>"
    assert first.tests == ("a.py::one", "b.py::two")
    assert first.suites == ("p1", "p2")
    assert (second.count, second.label) == (2, "TimeoutError: no event after <dur> at <ts>")


def test_different_status_codes_and_exception_types_never_merge() -> None:
    rows = [
        row("t.py::a", Outcome.FAILED, "AssertionError: HTTP 403 from /events"),
        row("t.py::b", Outcome.FAILED, "AssertionError: HTTP 500 from /events"),
        row("t.py::c", Outcome.FAILED, "ValueError: HTTP 500 from /events"),
        row("t.py::d", Outcome.FAILED, "assert 403 == 200"),
        row("t.py::e", Outcome.FAILED, "assert 500 == 200"),
    ]
    assert len(cluster_failures(rows, ())) == 5


def test_clusters_sort_by_count_then_label() -> None:
    rows = [
        row("t.py::a", Outcome.FAILED, "ZeroDivisionError: division by zero"),
        row("t.py::b", Outcome.FAILED, "KeyError: 'x'"),
        row("t.py::c", Outcome.FAILED, "KeyError: 'y'"),
        row("t.py::d", Outcome.FAILED, "AttributeError: nope"),
    ]
    labels = [c.label for c in cluster_failures(rows, ())]
    # A missing key is named: two keys are two causes, each cluster of one, sorted by label.
    assert labels == [
        "AttributeError: nope",
        "KeyError: 'x'",
        "KeyError: 'y'",
        "ZeroDivisionError: division by zero",
    ]


def test_quoted_names_tell_causes_apart_but_ids_do_not() -> None:
    assert normalize("ModuleNotFoundError: No module named 'grpc'") != normalize(
        "ModuleNotFoundError: No module named 'yaml'"
    )
    assert normalize("KeyError: 'user_1234'") == normalize("KeyError: 'user_9876'")
    assert normalize("assert {'error': 'forbidden'} == {'ok': 'true'}") == normalize(
        "assert {'error': 'teapot'} == {'ok': 'true'}"
    )


def test_known_issue_annotates_a_failure_and_keeps_it_counted() -> None:
    issues = [
        KnownIssue(id="events-403", match=r"events stream rejected: HTTP 403", reason="OAuth"),
        KnownIssue(id="any-403", match="403", reason="shadowed by the first"),
        KnownIssue(id="old", match="never matches", expires=date(2025, 1, 1)),
    ]
    rows = [
        row("t.py::a", Outcome.FAILED, WS_403.format(user="u-1")),
        row("t.py::b", Outcome.FAILED, WS_403.format(user="u-2")),
        row("t.py::c", Outcome.PASSED, "events stream rejected: HTTP 403"),  # not a failure
    ]
    (cluster,) = cluster_failures(rows, issues)
    assert cluster.known_issue == "events-403" and cluster.count == 2
    matches = match_known_issues(rows, issues, TODAY)
    assert [(m.id, m.failures, m.expired) for m in matches] == [
        ("events-403", ("t.py::a", "t.py::b"), False),
        ("any-403", (), False),
        ("old", (), True),
    ]
    assert figures(rows).failed == 2  # still failures


# --- summary ---------------------------------------------------------------------------------


def iteration(workers: int = 2) -> IterationRecord:
    return IterationRecord(
        id=1, env="staging", number=4, status=IterationStatus.FAILED, git_sha="abc1234",
        started_at="2025-09-07T07:07:00Z", finished_at="2025-09-07T07:15:00Z",
        target_pass_rate=100.0, workers=workers,
    )  # fmt: skip


def test_build_summary_totals_are_the_sum_of_suites() -> None:
    suites = [
        SuiteRecord("Agent Pipeline", priority=2, selected=True, status=SuiteStatus.FAILED),
        SuiteRecord("Critical", priority=1, selected=True, status=SuiteStatus.FAILED),
        SuiteRecord("Later", priority=1, selected=False, status=SuiteStatus.NOT_RUN),
        SuiteRecord("Streaming", priority=2, selected=True, status=SuiteStatus.PASSED),
    ]
    rows = [
        row("crit.py::a", Outcome.PASSED, suite="Critical", duration_s=1.0),
        row("crit.py::ws", Outcome.FAILED, WS_403.format(user="u-1"), "Critical", 3.0),
        row("pipe.py::a", Outcome.ERROR, WS_403.format(user="u-2"), "Agent Pipeline", 2.0),
        row("pipe.py::b", Outcome.SKIPPED, suite="Agent Pipeline", duration_s=0.0),
        row("stream.py::a", Outcome.PASSED, suite="Streaming", duration_s=2.0),
        row("later.py::a", None, suite="Later"),
        row("later.py::b", None, suite="Later"),
    ]
    deployments = [Deployment("backend", DeployStatus.READY, "http://localhost:8001", "r1")]
    # What store.history gives for this iteration's finished tests: their durations.
    history = [
        HistoryRow(1, r.nodeid, r.suite, r.outcome, 1, r.message, r.duration_s, None, None)
        for r in rows
        if r.outcome is not None
    ]
    summary = build_summary(
        iteration(workers=2), suites, rows, deployments, [], TODAY, 480.0,
        AnalysisContext(history=history),
    )

    assert [s.name for s in summary.suites] == ["Critical", "Later", "Agent Pipeline", "Streaming"]
    for field in ("collected", "executed", "passed", "failed", "errors", "skipped"):
        per_suite = sum(getattr(s.figures, field) for s in summary.suites)
        assert getattr(summary.totals, field) == per_suite, field
    assert summary.totals == figures(rows)
    assert (summary.totals.executed, summary.totals.passed, summary.totals.pending) == (4, 2, 2)
    assert summary.suites[0].key_issue == summary.clusters[0].label
    assert summary.suites[3].key_issue is None
    assert summary.remaining_suites == ("Later",)
    assert [r.nodeid for r in summary.failures] == ["crit.py::ws", "pipe.py::a"]
    assert summary.clusters[0].count == 2
    assert summary.deployments == tuple(deployments)
    # 2 pending tests never timed x the mean of all durations, mean(1, 3, 2, 0, 2) = 1.6 s,
    # over 2 workers
    assert summary.estimated_remaining_s == pytest.approx(1.6)
    assert summary.elapsed_s == 480.0


def test_estimate_is_zero_when_nothing_is_pending_and_none_without_durations() -> None:
    suites = [SuiteRecord("p1", priority=1, selected=True, status=SuiteStatus.RUNNING)]
    done = [row("t.py::a", Outcome.PASSED)]
    assert build_summary(iteration(), suites, done, [], [], TODAY, 1.0).estimated_remaining_s == 0.0
    # Nothing was ever timed: no figure rather than a guess.
    unknown = [row("t.py::a", Outcome.PASSED, duration_s=None), row("t.py::b", None)]
    assert (
        build_summary(iteration(), suites, unknown, [], [], TODAY, 1.0).estimated_remaining_s
        is None
    )


def test_a_row_of_an_unrecorded_suite_is_an_error_not_a_silent_mismatch() -> None:
    suites = [SuiteRecord("p1", priority=1, selected=True, status=SuiteStatus.PASSED)]
    with pytest.raises(ValueError, match="ghost"):
        build_summary(
            iteration(), suites, [row("t.py::a", Outcome.PASSED, suite="ghost")], [], [], TODAY, 1.0
        )


# --- signatures, frames, categories ---------------------------------------------------------

LONG = " ".join(f"step{chr(97 + i)}" for i in range(20))


def failing(nodeid: str, message: str, longrepr: str | None = None) -> Row:
    return Row(nodeid, "p1", nodeid.split("::")[0], Outcome.FAILED, 0.1, message, longrepr)


def test_near_identical_messages_merge_but_never_across_status_codes_or_types() -> None:
    rows = [
        failing("t.py::a", f"ValueError: {LONG} HTTP 403"),
        failing("t.py::b", f"ValueError: {LONG} HTTP 403 again"),  # 21 of 22 tokens shared
        failing("t.py::c", f"ValueError: {LONG} HTTP 500"),
        failing("t.py::d", f"RuntimeError: {LONG} HTTP 403"),
    ]
    clusters = cluster_failures(rows)
    assert sorted(c.tests for c in clusters) == [("t.py::a", "t.py::b"), ("t.py::c",), ("t.py::d",)]


# As longrepr_text writes pytest's entries: source lines, then "path:line: message".
PYTEST_TRACEBACK = """\
    def test_one():
>       check(1)
tests/test_x.py:9:
    def check(value):
>       assert value == 0
E       assert 1 == 0
tests/test_x.py:4: AssertionError
--- Captured stdout call ---
other.py:1: noise"""

SHORT_TRACEBACK = """\
    check(1)
tests/test_x.py:9: in test_one
    assert value == 0
E   assert 1 == 0
tests/test_x.py:4: in check"""

NATIVE_TRACEBACK = """\
Traceback (most recent call last):
  File "/abs/project/tests/test_x.py", line 9, in test_one
    check(1)
  File "/abs/project/tests/test_x.py", line 4, in check
    assert value == 0
AssertionError"""


@pytest.mark.parametrize("longrepr", [PYTEST_TRACEBACK, SHORT_TRACEBACK, NATIVE_TRACEBACK])
def test_the_failing_frame_is_the_last_one_in_the_tests_file_without_line_number(
    longrepr: str,
) -> None:
    locations = traceback_locations(longrepr)
    assert failing_frame("tests/test_x.py::test_one", locations) == "tests/test_x.py::check"
    assert failing_frame("tests/test_y.py::test_one", locations) is None


def test_the_frame_splits_unspecific_messages_only() -> None:
    generic = failure_of(failing("tests/test_x.py::test_one", "assert 1 == 0", PYTEST_TRACEBACK))
    assert generic.signature == "AssertionError: assert <n> == <n> @ tests/test_x.py::check"
    specific = failure_of(
        failing("tests/test_x.py::test_one", "AssertionError: token expired", PYTEST_TRACEBACK)
    )
    assert specific.frame is None and specific.signature == "AssertionError: token expired"


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("httpx.ConnectError: [Errno 111] Connection refused", Category.ENVIRONMENT),
        ("ConnectionResetError: [Errno 104] Connection reset by peer", Category.ENVIRONMENT),
        ("socket.gaierror: [Errno -2] Name or service not known", Category.ENVIRONMENT),
        ("httpx.ReadTimeout: timed out", Category.ENVIRONMENT),
        ("Failed: Timeout >5.0s", Category.ENVIRONMENT),
        ("AssertionError: HTTP 503 from /api/orders", Category.ENVIRONMENT),
        ("assert 504 == 200", Category.ENVIRONMENT),
        ("AssertionError: HTTP 500 from /api/orders", Category.UNKNOWN),
        ("KeyError: 'total'", Category.UNKNOWN),
    ],
)
def test_built_in_categories(message: str, expected: Category) -> None:
    assert categorize([failure_of(failing("t.py::a", message))], ()) == expected


def test_category_rules_come_first_and_may_require_a_traceback_match() -> None:
    rules = [
        CategoryRule(name="test", message="KeyError", traceback="fixtures"),
        CategoryRule(name="product", message="KeyError|Connection refused"),
    ]
    in_fixture = failing("t.py::a", "KeyError: 'total'", "fixtures.py:3: KeyError")
    elsewhere = failing("t.py::b", "KeyError: 'total'", "t.py:3: KeyError")
    refused = failing("t.py::c", "ConnectionRefusedError: [Errno 111] Connection refused")
    assert categorize([failure_of(in_fixture)], rules) == Category.TEST
    assert categorize([failure_of(elsewhere)], rules) == Category.PRODUCT
    assert categorize([failure_of(refused)], rules) == Category.PRODUCT


def test_an_outage_needs_the_share_and_at_least_three_tests() -> None:
    refused = "httpx.ConnectError: [Errno 111] Connection refused"
    rows = [failing(f"t.py::t{i}", refused) for i in range(3)]
    clusters = cluster_failures(rows, categories=[CategoryRule(name="product", message=".")])
    marked, text = mark_outage(clusters, executed=5, share=0.6)
    assert text == f"environment outage: 3 of 5 executed tests failed with {refused}"
    assert marked[0].category == Category.ENVIRONMENT
    assert mark_outage(clusters, executed=6, share=0.6)[1] is None
    two = cluster_failures(rows[:2])
    assert mark_outage(two, executed=2, share=0.5)[1] is None


# --- flaky and broken from history rows -------------------------------------------------------


def hist(
    iteration: int, outcome: Outcome, attempt: int = 1, code: str | None = "k", file: str = "h"
) -> HistoryRow:
    return HistoryRow(iteration, "t.py::a", "p1", outcome, attempt, None, 0.1, code, file)


def test_flaky_needs_the_same_code_and_test_file_across_iterations() -> None:
    assert flaky_and_broken([hist(1, Outcome.FAILED), hist(2, Outcome.PASSED)], {"t.py::a"}, 3)[0]
    other_file = [hist(1, Outcome.FAILED), hist(2, Outcome.PASSED, file="h2")]
    assert flaky_and_broken(other_file, {"t.py::a"}, 3) == ((), ())
    unknown_code = [hist(1, Outcome.FAILED, code=None), hist(2, Outcome.PASSED, code=None)]
    assert flaky_and_broken(unknown_code, {"t.py::a"}, 3) == ((), ())
    # Reruns within one iteration run the same code, known or not.
    rerun = [hist(1, Outcome.ERROR, code=None), hist(1, Outcome.PASSED, attempt=2, code=None)]
    (flaky,), _ = flaky_and_broken(rerun, {"t.py::a"}, 3)
    assert "failed on attempt 1 and passed on attempt 2" in flaky.reason
    assert flaky_and_broken(rerun, {"t.py::other"}, 3) == ((), ())  # not collected now


def test_broken_counts_every_attempt_and_ignores_skips() -> None:
    runs = [
        hist(1, Outcome.PASSED, code="k1"),
        hist(2, Outcome.FAILED, code="k2"),
        hist(2, Outcome.FAILED, attempt=2, code="k2"),
        hist(3, Outcome.SKIPPED, code="k3"),
        hist(4, Outcome.ERROR, code="k4"),
    ]
    flaky, (broken,) = flaky_and_broken(runs, {"t.py::a"}, 3)
    assert flaky == ()
    assert broken.reason == "failed in each of its last 3 runs (iterations 2, 4)"
    assert len(broken.history) == 5  # the full history, skip included
    assert flaky_and_broken(runs, {"t.py::a"}, 4)[1] == ()  # the pass is among the last 4


# --- a huge failure costs what a small one does ---------------------------------------------

HUGE = 10_000_000


def huge_rows(size: int) -> list[Row]:
    """Failures whose message and traceback are `size` characters: a dumped response body, a
    test printing megabytes, a diff of two large payloads."""
    body = "line of payload 12345 with 'quoted' words and http://h/p?q=1\n"
    filler = body * (size // len(body))
    head = "AssertionError: events stream rejected: HTTP 403\n"
    traceback = (
        "    def test_events():\n>       check(stream())\n\nt.py:12: \n" + "E   " + filler
    )
    longrepr = traceback + "\nt.py:12: AssertionError\n--- Captured stdout call ---\n" + filler
    return [
        Row("t.py::a", "p1", "t.py", Outcome.FAILED, 0.1, head + filler, longrepr),
        Row("t.py::b", "p1", "t.py", Outcome.FAILED, 0.1, head + filler, longrepr),
        # One line, no newline in it: never splitlines()'d or regex-scanned whole. The word
        # cut at the signature's end is dropped, so it is the same cause as the two above.
        Row("t.py::one_line", "p1", "t.py", Outcome.FAILED, 0.1,
            "AssertionError: events stream rejected: HTTP 403 " + "x" * size, "x" * size),
    ] + [
        Row(f"t.py::ok{i}", "p1", "t.py", Outcome.PASSED, 0.1, None, None) for i in range(4)
    ]  # fmt: skip


def summarize_rows(rows: list[Row]) -> tuple[Summary, float]:
    suites = [SuiteRecord("p1", priority=1, selected=True, status=SuiteStatus.FAILED)]
    issues = [KnownIssue(id="ws", match="rejected.*HTTP 403", reason="OAuth")]
    rules = [CategoryRule(name="product", message="HTTP 403", traceback="t\\.py:12")]
    history = [HistoryRow(1, r.nodeid, r.suite, r.outcome, 1, r.message, 0.1, None, None)
               for r in rows]  # fmt: skip
    context = AnalysisContext(history=history, categories=rules)
    best = math.inf
    for _ in range(3):  # the fastest of a few runs: the least noisy figure
        start = time.perf_counter()
        summary = build_summary(iteration(), suites, rows, [], issues, TODAY, 1.0, context)
        best = min(best, time.perf_counter() - start)
    return summary, best


def test_the_analysis_of_a_10_mb_failure_is_bounded() -> None:
    small, small_s = summarize_rows(huge_rows(20_000))
    big, big_s = summarize_rows(huge_rows(HUGE))
    print(f"analysis: 20 kB failures {small_s * 1000:.1f} ms, 10 MB failures {big_s * 1000:.1f} ms")
    (cluster,) = big.clusters
    assert cluster.label == "AssertionError: events stream rejected: HTTP 403"
    assert cluster.tests == ("t.py::a", "t.py::b", "t.py::one_line")
    assert cluster.known_issue == "ws"
    assert cluster.category == Category.PRODUCT  # the rule's traceback regex matched
    assert [m.failures for m in big.known_issues] == [cluster.tests]
    assert small.clusters == big.clusters
    # Unbounded, the 10 MB run costs some 500 times the 20 kB one (seconds, not milliseconds).
    assert big_s < 20 * small_s + 0.05


def test_the_signature_of_a_long_message_is_its_beginning() -> None:
    line = "RuntimeError: " + "word " * 10_000
    assert len(normalize(line)) <= 2_100
    assert normalize(line + "tail one") == normalize(line + "tail two")
    assert normalize("\n" * 5 + "ValueError: bad 42") == "ValueError: bad <n>"


# --- loop's own "not run" errors ---------------------------------------------------------------

# The tail of a pytest killed mid-test, as the runner appends it: full of exception names that
# are pytest's, not the tests'.
PYTEST_TAIL = """\
tests/test_slow.py .
tests/test_slow.py:14: in test_slow
    time.sleep(30)
E   KeyboardInterrupt
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!! KeyboardInterrupt !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
/usr/lib/python3.11/threading.py:1590: KeyboardInterrupt
(to show a full traceback on KeyboardInterrupt use --full-trace)"""


def unreported(nodeid: str, message: str, text: str | None = None) -> Row:
    """A row the way the runner records a test pytest never reported (`_unreported`)."""
    longrepr = (text or message) + "\n\nlast lines of pytest output:\n" + PYTEST_TAIL
    return Row(nodeid, "p1", nodeid.split("::")[0], Outcome.ERROR, 0.0, message, longrepr)


def test_loop_own_errors_take_no_exception_name_from_pytest_output() -> None:
    from deployloop.models import NOT_RUN, WHILE_RUNNING
    from deployloop.runner.execute import crash_reason

    killed = f"{NOT_RUN}{crash_reason(-9, False, PYTEST_TAIL)} before this test started"
    timed_out = f"suite timed out after {5:g} s (tests.suite_timeout_s){WHILE_RUNNING}"
    crashed = f"{crash_reason(1, False, PYTEST_TAIL)}{WHILE_RUNNING}"
    rows = [
        unreported("tests/test_slow.py::test_a", killed),
        unreported("tests/test_slow.py::test_b", killed),
        unreported("tests/test_slow.py::test_slow", timed_out),
        unreported("tests/test_other.py::test_c", crashed),
    ]
    for r in rows:
        failure = failure_of(r)
        assert (failure.exception, failure.frame) == ("", None), r.message
        assert "KeyboardInterrupt" not in failure.signature
    clusters = cluster_failures(rows)
    assert sorted((c.label, c.count) for c in clusters) == sorted(
        [(killed, 2), (timed_out, 1), (crashed, 1)]
    )
    assert not any("KeyboardInterrupt" in c.label for c in clusters)


def test_a_failure_reported_before_a_crash_keeps_its_own_traceback_only() -> None:
    # pytest reported the setup failure, then was killed: the runner keeps pytest's text and
    # appends the output tail after it.
    text = (
        "    def test_x(db):\n>       assert db.ready\nE       assert False\n\n"
        "tests/test_slow.py:7: AssertionError"
    )
    row = unreported("tests/test_slow.py::test_x", "assert False", text)
    failure = failure_of(row)
    assert failure.exception == "AssertionError"
    assert failure.frame == "tests/test_slow.py::test_x"


# --- a setup failure is not a test result ------------------------------------------------------


def test_a_deploy_failed_iteration_is_no_false_green_and_has_no_estimate() -> None:
    suites = [SuiteRecord("p1", priority=1, selected=True, status=SuiteStatus.PENDING)]
    rows = [row("t.py::a", None), row("t.py::b", None)]
    # Earlier iterations timed these tests: an estimate would be possible, and meaningless.
    history = [
        HistoryRow(1, r.nodeid, "p1", Outcome.PASSED, 1, None, 2.0, None, None) for r in rows
    ]
    deployments = [Deployment("backend", DeployStatus.FAILED, error="exited with code 3")]
    for status in (
        IterationStatus.DEPLOY_FAILED,
        IterationStatus.CRASHED,
        IterationStatus.INTERRUPTED,
        IterationStatus.ERROR,
    ):
        record = replace(iteration(), status=status)
        summary = build_summary(
            record, suites, rows, deployments, [], TODAY, 5.0, AnalysisContext(history=history)
        )
        assert summary.insights.false_greens == (), status
        assert summary.estimated_remaining_s is None, status
        assert summary.insights.projection is None, status
        assert summary.totals.pending == 2  # the tests are still there, not run


def test_a_crashed_service_is_named_next_to_the_outage_it_caused() -> None:
    refused = "httpx.ConnectError: [Errno 111] Connection refused"
    suites = [SuiteRecord("p1", priority=1, selected=True, status=SuiteStatus.FAILED)]
    rows = [failing(f"t.py::t{i}", refused) for i in range(4)] + [row("t.py::ok", Outcome.PASSED)]
    crash = "exited with code 1 during the tests at 2026-12-01T10:00:03Z: RuntimeError: db gone"
    deployments = [
        Deployment("auth", DeployStatus.READY, "http://127.0.0.1:1"),
        Deployment("backend", DeployStatus.CRASHED, "http://127.0.0.1:2", error=crash),
    ]
    summary = build_summary(iteration(), suites, rows, deployments, [], TODAY, 5.0)
    (cluster,) = summary.clusters
    assert cluster.category == Category.ENVIRONMENT
    assert "backend" in cluster.label and "crashed" in cluster.label
    assert summary.insights.outage is not None
    assert "service backend crashed during the tests" in summary.insights.outage
    # Without a crash, the label is the failure's own.
    calm = build_summary(iteration(), suites, rows, deployments[:1], [], TODAY, 5.0)
    assert calm.clusters[0].label == refused
