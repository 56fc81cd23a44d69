"""The analysis features, checked on histories made of real pytest runs.

Each scenario writes small test files into a project in tmp_path, runs them with
`python -m pytest` and loop's plugin (`--loop-reportlog`), turns the report log into results
with the runner's ReportLogReader, records them in a real Store the way `loop run` does (plan,
results, rerun attempts, test file hashes, code keys), and reads the summary back with
`load_summary`.
"""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
import textwrap
from collections import defaultdict
from collections.abc import Iterator, Sequence
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deployloop.analysis.clusters import cluster_failures
from deployloop.analysis.normalize import normalize
from deployloop.analysis.progress import iterations_to_green, pace_of
from deployloop.config import Config
from deployloop.gitinfo import file_digests
from deployloop.models import (
    Category,
    FalseGreen,
    HistoryPoint,
    IntegrityFlag,
    InventoryItem,
    IterationRecord,
    IterationStatus,
    Outcome,
    SignatureChange,
    SuiteRecord,
    SuiteStatus,
    Summary,
    TestResult,
    Trend,
)
from deployloop.models import TestRow as Row  # aliased: pytest collects classes named Test*
from deployloop.report._format import to_green_text
from deployloop.runner.process import PLUGIN_DIR
from deployloop.runner.reportlog import ReportLogReader
from deployloop.stages.analyze import load_summary
from deployloop.store import Store

TODAY = date(2025, 9, 7)
ENV = "staging"
FAILING = (Outcome.FAILED, Outcome.ERROR)


def config(**sections: Any) -> Config:
    raw: dict[str, Any] = {"tests": {"suites": [{"name": "any", "paths": ["tests"]}]}}
    raw.update(sections)
    return Config.model_validate(raw)


def pytest_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "LOOP_"))}
    env["PYTEST_ADDOPTS"] = "-p no:hypothesispytest -p no:cacheprovider"
    return env


class Lab:
    """A project folder and a store: each `iteration` collects, runs and records for real."""

    def __init__(self, root: Path) -> None:
        self.root = root / "project"
        self.root.mkdir(parents=True)
        self.store = Store.open(root / "state" / "loop.db")
        self._runs = 0

    def write(self, relpath: str, text: str) -> None:
        path = self.root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")

    def remove(self, relpath: str) -> None:
        (self.root / relpath).unlink()

    def iteration(
        self,
        suites: dict[str, list[str]],
        *,
        code_key: str | None = "code-1",
        selected: Sequence[str] | None = None,
        reruns: int = 0,
        workers: int = 1,
    ) -> IterationRecord:
        record = self.store.start_iteration(ENV, "abc1234", 100.0, workers, code_key=code_key)
        chosen = set(suites) if selected is None else set(selected)
        suite_of = {path: name for name, paths in suites.items() for path in paths}
        # Collecting and running at once, like two pytest processes of `loop run` would.
        collecting = self._collect([p for paths in suites.values() for p in paths])
        results = self._run(
            [p for name in suites if name in chosen for p in suites[name]], suite_of
        )
        stdout, _ = collecting.communicate(timeout=60)
        inventory = [
            InventoryItem(suite_of[nodeid.split("::")[0]], nodeid, nodeid.split("::")[0])
            for nodeid in stdout.splitlines()
            if "::" in nodeid
        ]
        self.store.record_plan(
            record.id,
            [
                SuiteRecord(
                    name,
                    1,
                    name in chosen,
                    SuiteStatus.PENDING if name in chosen else SuiteStatus.NOT_RUN,
                )
                for name in suites
            ],  # fmt: skip
            inventory,
        )
        self.store.record_test_files(
            record.id, file_digests(self.root, {item.file for item in inventory})
        )
        self.store.record_results(record.id, results)
        for name in chosen:
            failed = any(r.suite == name and r.outcome in FAILING for r in results)
            status = SuiteStatus.FAILED if failed else SuiteStatus.PASSED
            self.store.set_suite_status(record.id, name, status, finished=True)
        failing = sorted(r.nodeid for r in results if r.outcome in FAILING)
        for attempt in range(2, reruns + 2):
            if not failing:
                break
            rerun = self._run(failing, suite_of)
            for result in rerun:
                self.store.record_attempt(record.id, attempt, result)
            failing = sorted(r.nodeid for r in rerun if r.outcome in FAILING)
        failed = any(r.outcome in FAILING for r in results)
        self.store.finish_iteration(
            record.id, IterationStatus.FAILED if failed else IterationStatus.PASSED
        )
        finished = self.store.iteration_by_id(record.id)
        assert finished is not None
        return finished

    def summary(
        self, record: IterationRecord, cfg: Config | None = None, compare_to: int | None = None
    ) -> Summary:
        return load_summary(self.store, record, cfg or config(), TODAY, compare_to)

    def _collect(self, paths: list[str]) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "pytest", "--collect-only", "-q", "--rootdir", ".", *paths],
            cwd=self.root, env=pytest_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True,
        )  # fmt: skip

    def _run(self, args: list[str], suite_of: dict[str, str]) -> list[TestResult]:
        if not args:
            return []
        self._runs += 1
        log = self.root.parent / f"run-{self._runs}.jsonl"
        # With loop's own plugin, whose lines the runner's reader reads, as `loop run` does.
        subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "--rootdir", ".", "-p", "deployloop_plugin",
             f"--loop-reportlog={log}", *args],
            cwd=self.root, env={**pytest_env(), "PYTHONPATH": str(PLUGIN_DIR)},
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        results: list[TestResult] = []
        reader = ReportLogReader(lambda nodeid: suite_of.get(nodeid.split("::")[0]), results.append)
        reader.feed(log.read_bytes())
        assert reader.session_finished, f"pytest did not finish: {args}"
        return results


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    lab = Lab(tmp_path)
    yield lab
    lab.store.close()


def points(*items: tuple[int, Outcome] | tuple[int, Outcome, int]) -> tuple[HistoryPoint, ...]:
    return tuple(HistoryPoint(*item) for item in items)


# A test that fails on its first call and passes afterwards: a counter in a file next to it.
FLAKY = """
from pathlib import Path

COUNTER = Path(__file__).with_name("calls.txt")


def test_warmup():
    calls = int(COUNTER.read_text()) + 1 if COUNTER.exists() else 1
    COUNTER.write_text(str(calls))
    assert calls > 1, f"service not warmed up: call {calls}"


def test_steady():
    pass
"""
WARMUP = "tests/test_flaky.py::test_warmup"
NO_MIN = {"analysis": {"min_test_duration_s": 0}}


# --- flaky and broken ------------------------------------------------------------------------


def test_a_pass_on_rerun_is_flaky_and_the_first_failure_still_counts(lab: Lab) -> None:
    lab.write("tests/test_flaky.py", FLAKY)
    record = lab.iteration({"api": ["tests/test_flaky.py"]}, reruns=2)
    summary = lab.summary(record, config(**NO_MIN))

    assert (summary.totals.executed, summary.totals.passed, summary.totals.failed) == (2, 1, 1)
    (flaky,) = summary.insights.flaky
    assert flaky.test == WARMUP
    assert flaky.history == points((1, Outcome.FAILED, 1), (1, Outcome.PASSED, 2))
    assert flaky.reason == (
        "in iteration 1 it failed on attempt 1 and passed on attempt 2 (a rerun of the same code)"
    )
    assert summary.insights.broken == ()
    assert [c.tests for c in summary.clusters] == [(WARMUP,)]  # still a failure
    assert summary.clusters[0].label == "AssertionError: service not warmed up: call 1"


def test_a_pass_in_the_next_iteration_on_the_same_code_is_flaky(lab: Lab) -> None:
    lab.write("tests/test_flaky.py", FLAKY)
    suites = {"api": ["tests/test_flaky.py"]}
    lab.iteration(suites, code_key="k1")
    second = lab.iteration(suites, code_key="k1")
    summary = lab.summary(second, config(**NO_MIN))

    (flaky,) = summary.insights.flaky
    assert flaky.history == points((1, Outcome.FAILED), (2, Outcome.PASSED))
    assert flaky.reason == (
        "it failed in iteration 1 and passed in iteration 2 with the same code and test file"
    )
    assert summary.insights.diff is not None and summary.insights.diff.fixed == (WARMUP,)


@pytest.mark.parametrize("second_key", ["k2", None])
def test_a_pass_after_a_code_change_or_with_unknown_code_is_not_flaky(
    lab: Lab, second_key: str | None
) -> None:
    lab.write("tests/test_flaky.py", FLAKY)
    suites = {"api": ["tests/test_flaky.py"]}
    lab.iteration(suites, code_key="k1" if second_key else None)
    summary = lab.summary(lab.iteration(suites, code_key=second_key), config(**NO_MIN))
    assert summary.insights.flaky == ()
    assert summary.insights.diff is not None and summary.insights.diff.fixed == (WARMUP,)


API = """
import time


def check(value):
    assert value == 0


def test_ok():
    time.sleep(0.01)


def test_forbidden():
    status = 403
    assert status == 200, f"events stream rejected: HTTP {status}"


def test_sum():
    assert 1 + 1 == 3


def test_helper_one():
    check(1)


def test_helper_two():
    check(2)
"""


def test_broken_after_three_failing_iterations_with_known_issue_and_category(lab: Lab) -> None:
    lab.write("tests/test_api.py", API)
    suites = {"api": ["tests/test_api.py"]}
    cfg = config(
        known_issues=[{"id": "ws-403", "match": "events stream rejected: HTTP 403"}],
        categories=[{"name": "test", "message": "^assert", "traceback": r"def check\("}],
        analysis={"broken_after": 3, "min_test_duration_s": 0},
    )
    lab.iteration(suites, code_key="k1")
    second = lab.iteration(suites, code_key="k2")
    assert lab.summary(second, cfg).insights.broken == ()
    third = lab.iteration(suites, code_key="k3")
    summary = lab.summary(third, cfg)
    insights = summary.insights

    failing = ["test_forbidden", "test_helper_one", "test_helper_two", "test_sum"]
    assert [b.test for b in insights.broken] == [f"tests/test_api.py::{name}" for name in failing]
    for broken in insights.broken:
        assert broken.history == points(
            (1, Outcome.FAILED), (2, Outcome.FAILED), (3, Outcome.FAILED)
        )
        assert broken.reason == "failed in each of its last 3 runs (iterations 1, 2, 3)"
    assert insights.flaky == ()
    assert (insights.failures_with_known_issue, insights.failures_without_known_issue) == (1, 3)

    by_label = {c.label: c for c in summary.clusters}
    assert sorted(by_label) == [
        "AssertionError: assert (1 + 1) == 3",  # alone in its function
        "AssertionError: assert <n> == <n>",  # both helper failures: one frame, one cluster
        "AssertionError: events stream rejected: HTTP 403",
    ]
    helper = next(c for c in summary.clusters if c.count == 2)
    assert helper.tests == (
        "tests/test_api.py::test_helper_one",
        "tests/test_api.py::test_helper_two",
    )
    assert helper.signature.endswith("@ tests/test_api.py::check")
    assert helper.category == Category.TEST  # the rule's traceback regex matches
    forbidden = by_label["AssertionError: events stream rejected: HTTP 403"]
    assert (forbidden.known_issue, forbidden.category) == ("ws-403", Category.UNKNOWN)
    sum_cluster = by_label["AssertionError: assert (1 + 1) == 3"]
    assert sum_cluster.category == Category.UNKNOWN  # message matches, traceback does not
    assert {c.first_iteration for c in summary.clusters} == {1}
    assert insights.trend is not None
    assert insights.trend.pass_rates == ((1, 20.0), (2, 20.0), (3, 20.0))
    assert insights.trend.iterations_to_green is None  # not improving


# --- integrity -------------------------------------------------------------------------------

EDITED_BEFORE = """
def compute():
    return 5


def test_a():
    assert compute() == 4


def test_b():
    pass


def test_c():
    assert compute() == 6
"""
EDITED_AFTER = """
def compute():
    return 5


def test_a():
    assert True


def test_b():
    pass
"""
SERVICE = """
from pathlib import Path


def test_service():
    state = Path(__file__).parent.parent.joinpath("service-state.txt").read_text().strip()
    assert state == "up", f"service is {state}"
"""


def test_integrity_flags_an_edited_test_that_passes_and_removed_tests(lab: Lab) -> None:
    lab.write("tests/test_edit.py", EDITED_BEFORE)
    lab.write("tests/test_service.py", SERVICE)
    lab.write("service-state.txt", "down")
    suites = {"api": ["tests/test_edit.py"], "service": ["tests/test_service.py"]}
    lab.iteration(suites, code_key="k1")
    lab.write("tests/test_edit.py", EDITED_AFTER)
    lab.write("service-state.txt", "up")  # fixed outside the tests: nothing to flag
    summary = lab.summary(lab.iteration(suites, code_key="k2"), config(**NO_MIN))

    file = "tests/test_edit.py"
    assert summary.insights.integrity == (
        IntegrityFlag(
            f"{file}::test_a",
            file,
            "passed after its test changed (file hash differs from iteration 1)",
        ),
        IntegrityFlag(
            f"{file}::test_c",
            file,
            "failing test removed: it failed in iteration 1 and is not collected now",
        ),
        IntegrityFlag("api", None, "suite has 2 tests, 3 in iteration 1: 1 removed"),
    )
    diff = summary.insights.diff
    assert diff is not None
    assert diff.fixed == (f"{file}::test_a", "tests/test_service.py::test_service")
    assert (diff.removed, diff.new_failures, diff.still_failing) == ((f"{file}::test_c",), (), ())
    trend = summary.insights.trend
    assert trend is not None and trend.pass_rates == ((1, 25.0), (2, 100.0))
    assert trend.iterations_to_green == 0.0


# --- false greens ----------------------------------------------------------------------------

SKIPS = """
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    Path(__file__).parent.parent.joinpath("maintenance.flag").exists(),
    reason="staging in maintenance",
)


def test_login():
    time.sleep(0.1)


def test_logout():
    time.sleep(0.1)
"""
FAST = """
import time


def test_instant():
    pass


def test_real():
    time.sleep(0.1)
"""


def test_false_greens_all_skipped_suite_skipped_jump_too_fast_and_nothing_executed(
    lab: Lab,
) -> None:
    lab.write("tests/test_skips.py", SKIPS)
    lab.write("tests/test_fast.py", FAST)
    suites = {"auth": ["tests/test_skips.py"], "fast": ["tests/test_fast.py"]}
    cfg = config(analysis={"min_test_duration_s": 0.05, "skipped_jump_pct": 20})
    first = lab.summary(lab.iteration(suites), cfg)
    instant = "tests/test_fast.py::test_instant"  # test_real sleeps 0.1 s: not flagged
    assert [(g.subject, g.kind) for g in first.insights.false_greens] == [(instant, "test")]
    assert first.insights.false_greens[0].reason.startswith("passed in ")
    assert first.insights.false_greens[0].reason.endswith(
        "ms, under the 0.05 s minimum (min_test_duration_s): too fast to have talked to a "
        "deployed service"
    )

    lab.write("maintenance.flag", "")
    second = lab.summary(lab.iteration(suites), cfg)
    greens = second.insights.false_greens
    assert [(g.subject, g.kind, g.reason) for g in greens[:2]] == [
        (
            "iteration",
            "iteration",
            "skipped share rose from 0.0% to 50.0% of finished tests (+50.0 points since "
            "iteration 1)",
        ),
        ("auth", "suite", "all 2 tests skipped"),
    ]
    assert [(g.subject, g.kind) for g in greens[2:]] == [(instant, "test")]
    assert second.totals.pass_rate == 100.0  # green on paper: that is why it is flagged

    third = lab.summary(lab.iteration(suites, selected=["auth"]), cfg)
    assert third.insights.false_greens[0] == FalseGreen(
        "iteration", "iteration", "no test executed: nothing was shown to work"
    )
    assert third.insights.projection is None  # tests pending, but nothing executed: no basis
    assert third.insights.remaining_suite_tests == (("fast", 2),)


def test_no_too_fast_flag_when_the_threshold_is_zero(lab: Lab) -> None:
    lab.write("tests/test_fast.py", FAST)
    summary = lab.summary(lab.iteration({"fast": ["tests/test_fast.py"]}), config(**NO_MIN))
    assert summary.insights.false_greens == ()


# --- diff and signatures ---------------------------------------------------------------------

EVENTS = """
from pathlib import Path


def test_events_stream():
    status = int(Path(__file__).parent.parent.joinpath("status.txt").read_text())
    assert status == 200, f"events stream rejected: HTTP {status}"


def test_health():
    pass
"""
EVENTS_ADDED = """

def test_new_endpoint():
    raise KeyError("user_1234")
"""


def test_diff_shows_a_403_turning_into_a_500_and_added_failures(lab: Lab) -> None:
    lab.write("tests/test_events.py", EVENTS)
    lab.write("status.txt", "403")
    suites = {"events": ["tests/test_events.py"]}
    lab.iteration(suites, code_key="k1")
    lab.write("status.txt", "500")
    lab.write("tests/test_events.py", EVENTS + EVENTS_ADDED)
    summary = lab.summary(lab.iteration(suites, code_key="k2"), config(**NO_MIN))

    stream = "tests/test_events.py::test_events_stream"
    added = "tests/test_events.py::test_new_endpoint"
    diff = summary.insights.diff
    assert diff is not None
    assert diff.compared_to == 1
    assert (diff.fixed, diff.new_failures, diff.still_failing) == ((), (added,), (stream,))
    assert (diff.added, diff.removed) == ((added,), ())
    assert diff.changed_signatures == (
        SignatureChange(
            stream,
            "AssertionError: events stream rejected: HTTP 403",
            "AssertionError: events stream rejected: HTTP 500",
        ),
    )
    by_label = {c.label: c for c in summary.clusters}
    assert by_label["AssertionError: events stream rejected: HTTP 500"].first_iteration == 2
    assert by_label["KeyError: 'user_1234'"].first_iteration == 2
    # the same iteration compared with itself: nothing changed
    same = lab.summary(lab.store.iteration(ENV, 2) or pytest.fail("no it2"), compare_to=2)
    assert same.insights.diff is not None and same.insights.diff.changed_signatures == ()


# --- clusters from real tracebacks and outages -----------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


OUTAGE = """
import httpx

URL = "http://127.0.0.1:{port}"


def get(path):
    return httpx.get(URL + path, timeout=2)
"""


def test_an_outage_is_one_environment_cluster_across_suites(lab: Lab) -> None:
    lab.write("tests/client.py", OUTAGE.format(port=free_port()))
    lab.write(
        "tests/test_orders.py",
        """
        from client import get

        def test_list():
            assert get("/orders").status_code == 200

        def test_create():
            get("/orders/new")

        def test_cancel():
            response = get("/orders/1/cancel")
            assert response.json()["ok"]

        def test_offline_math():
            assert 2 * 2 == 4
        """,
    )
    lab.write(
        "tests/test_users.py",
        """
        from client import get

        def test_me():
            get("/me")

        def test_logout():
            get("/logout")
        """,
    )
    suites = {"orders": ["tests/test_orders.py"], "users": ["tests/test_users.py"]}
    cfg = config(
        categories=[{"name": "product", "message": "Connection refused"}],
        analysis={"outage_share": 0.5, "min_test_duration_s": 0},
    )
    summary = lab.summary(lab.iteration(suites), cfg)

    (cluster,) = summary.clusters
    label = "httpx.ConnectError: [Errno 111] Connection refused"
    assert (cluster.label, cluster.count, cluster.suites) == (label, 5, ("orders", "users"))
    assert cluster.category == Category.ENVIRONMENT  # an outage, whatever the rule says
    assert (
        summary.insights.outage == f"environment outage: 5 of 6 executed tests failed with {label}"
    )
    assert [s.key_issue for s in summary.suites] == [label, label]

    calm = lab.summary(
        lab.store.iteration(ENV, 1) or pytest.fail("no it1"),
        config(categories=[{"name": "product", "message": "Connection refused"}],
               analysis={"outage_share": 0.9}),
    )  # fmt: skip
    assert calm.insights.outage is None
    assert calm.clusters[0].category == Category.PRODUCT  # below the share, the rule decides


SOUP = """
def check(payload):
    assert payload == {"ok": "true"}


def test_payload():
    check({"error": "forbidden"})


def test_other_payload():
    check({"error": "teapot"})


def test_inline_payload():
    assert {"error": "teapot"} == {"ok": "true"}
"""


def test_labels_stay_readable_and_frames_keep_unrelated_assertions_apart(lab: Lab) -> None:
    lab.write("tests/test_soup.py", SOUP)
    summary = lab.summary(lab.iteration({"soup": ["tests/test_soup.py"]}), config(**NO_MIN))
    helper, inline = summary.clusters
    # Placeholder soup ({<str>: <str>}) makes a poor label: the most common message reads better.
    assert helper.label == "AssertionError: assert {'error': 'forbidden'} == {'ok': 'true'}"
    assert helper.tests == (
        "tests/test_soup.py::test_other_payload",
        "tests/test_soup.py::test_payload",
    )
    assert helper.signature == (
        "AssertionError: assert {<str>: <str>} == {<str>: <str>} @ tests/test_soup.py::check"
    )
    # The same words failing in another function are another cause.
    assert inline.label == "AssertionError: assert {'error': 'teapot'} == {'ok': 'true'}"
    assert inline.tests == ("tests/test_soup.py::test_inline_payload",)


# --- progress, projection, remaining time ----------------------------------------------------

DONE = """
import time


def test_pass():
    time.sleep(0.05)


def test_fail():
    time.sleep(0.05)
    assert False, "order total is wrong"
"""
LATER = """
import time


def test_later_pass():
    time.sleep(0.2)


def test_later_fail():
    time.sleep(0.2)
    assert False, "refund not booked"
"""
LATER_NEW = """

def test_later_new():
    pass
"""


def test_projection_remaining_tests_and_time_come_from_history(lab: Lab) -> None:
    lab.write("tests/test_done.py", DONE)
    lab.write("tests/test_later.py", LATER)
    suites = {"done": ["tests/test_done.py"], "later": ["tests/test_later.py"]}
    lab.iteration(suites)
    lab.write("tests/test_later.py", LATER + LATER_NEW)
    record = lab.iteration(suites, selected=["done"], workers=2)
    summary = lab.summary(record, config(**NO_MIN))
    insights = summary.insights

    assert insights.remaining_suite_tests == (("later", 3),)
    # pending: later_pass (1 pass of 1: p = 2/3), later_fail (0 of 1: 1/3), later_new (no
    # history: this iteration's pass rate, 1 of 2 = 1/2)
    probabilities = [2 / 3, 1 / 3, 1 / 2]
    final = 100 * (1 + sum(probabilities)) / 5
    sigma = 100 * math.sqrt(sum(p * (1 - p) for p in probabilities)) / 5
    projection = insights.projection
    assert projection is not None
    assert projection.final_pass_rate == pytest.approx(final) == pytest.approx(50.0)
    assert projection.low == pytest.approx(final - 1.96 * sigma)
    assert projection.high == pytest.approx(final + 1.96 * sigma)
    assert projection.low <= projection.final_pass_rate <= projection.high
    assert 0 <= projection.low and projection.high <= 100
    assert projection.remaining_tests == 3
    assert projection.basis == (
        "projection from 2 pending tests' pass history and this iteration's pass rate (50.0%) "
        "for 1 without history; not a result"
    )
    assert summary.totals.pass_rate == 50.0  # the figure is what ran; the projection is apart

    # Remaining time: each pending test's mean recorded duration (all durations' mean for the
    # new one), over 2 workers.
    durations: dict[str, list[float]] = defaultdict(list)
    for row in lab.store.history(ENV, 2):
        assert row.duration_s is not None
        durations[row.nodeid].append(row.duration_s)
    overall = [d for values in durations.values() for d in values]
    expected = (
        sum(durations["tests/test_later.py::test_later_pass"])
        + sum(durations["tests/test_later.py::test_later_fail"])
        + sum(overall) / len(overall)
    ) / 2
    assert summary.estimated_remaining_s == pytest.approx(expected)
    assert summary.estimated_remaining_s is not None and summary.estimated_remaining_s > 0.2

    trend = insights.trend
    assert trend is not None and trend.pass_rates == ((1, 50.0), (2, 50.0))


def test_iterations_to_green_follows_the_least_squares_slope() -> None:
    assert iterations_to_green([(1, 50.0), (2, 60.0), (3, 70.0)], 100.0) == pytest.approx(3.0)
    # only the last five count: the slope of 60, 60, 70, 80, 90 is 8 points per iteration
    rates = [(1, 0.0), (2, 60.0), (3, 60.0), (4, 70.0), (5, 80.0), (6, 90.0)]
    assert iterations_to_green(rates, 100.0) == pytest.approx(10 / 8)
    assert iterations_to_green([(1, 70.0), (2, 60.0)], 100.0) is None
    assert iterations_to_green([(1, 70.0)], 100.0) is None
    assert iterations_to_green([(1, 70.0), (2, None), (3, 100.0)], 100.0) == 0.0


def test_a_drop_is_never_projected_to_green() -> None:
    """The hand-written reports' trap: 80 -> 90 -> 99.3 -> 96.2 has a rising slope, and
    "about 1 more iteration to green" after a drop is a promise nothing supports."""
    rates = [(1, 80.0), (2, 90.0), (3, 99.3), (4, 96.2)]
    assert iterations_to_green(rates, 100.0) is None
    assert pace_of(rates) == "falling"
    assert pace_of([(1, 90.0), (2, 90.0)]) == "flat"
    assert pace_of([(1, 90.0), (2, None), (3, 95.0)]) == "rising"  # a setup failure between
    assert pace_of([(1, 90.0)]) == "unknown"
    falling = Trend(tuple(rates), None, "falling")
    assert to_green_text(falling) == "the pass rate is falling: no estimate of iterations to green"


# --- properties ------------------------------------------------------------------------------

WORDS = ["user", "request", "rejected", "events", "stream", "token", "order", "for", "after"]
# What varies between runs of one failure, by kind: a template keeps the kind, runs vary the value.
VARYING = {
    "{uuid}": st.uuids().map(str),
    "{n}": st.integers(0, 10**6).map(str),
    "{ts}": st.datetimes().map(lambda d: d.isoformat()),
    "{ip}": st.ip_addresses(v=4).map(str),
    "{dur}": st.floats(0, 1000, allow_nan=False).map(lambda x: f"{x:.2f}ms"),
    "{id}": st.integers(0, 10**6).map(lambda n: f"req_{n}"),
}


@settings(max_examples=300)
@given(
    st.lists(st.sampled_from([*WORDS, *VARYING]), min_size=1, max_size=12),
    st.data(),
)
def test_normalization_is_stable_over_what_varies(template: list[str], data: st.DataObject) -> None:
    def fill() -> str:
        return " ".join(data.draw(VARYING[word]) if word in VARYING else word for word in template)

    first, second = fill(), fill()
    assert normalize(first) == normalize(second)
    assert normalize(normalize(first)) == normalize(first)


EXCEPTIONS = ["AssertionError", "ValueError", "httpx.HTTPStatusError", "RuntimeError"]
CODES = [200, 403, 404, 500, 502, 503]


any_word = st.from_regex(r"[a-z]{3,8}", fullmatch=True)


# Long shared texts make messages >= 90 % alike, so the similarity merge is tried on each pair.
@settings(max_examples=200)
@given(
    st.lists(any_word, min_size=0, max_size=30),
    st.lists(
        st.tuples(
            st.sampled_from(EXCEPTIONS),
            st.sampled_from(CODES),
            st.sampled_from(["HTTP {}", "assert {} == 200", "status_code={}"]),
            st.one_of(st.just(""), any_word),
            st.booleans(),
        ),
        min_size=2,
        max_size=12,
    ),
)
def test_clusters_never_merge_different_status_codes_or_exceptions(
    shared: list[str], failures: list[tuple[str, int, str, str, bool]]
) -> None:
    rows = []
    cause: dict[str, tuple[str, int]] = {}
    for i, (exception, code, form, extra, with_traceback) in enumerate(failures):
        nodeid = f"tests/test_p.py::test_{i}"
        message = f"{exception}: {' '.join(shared)} {form.format(code)} {extra}".strip()
        longrepr = (
            f"    def test_{i}():\n>       call()\nE       {message}\n"
            f"tests/test_p.py:{i + 3}: {exception.rsplit('.', 1)[-1]}"
            if with_traceback
            else None
        )
        rows.append(Row(nodeid, "p", "tests/test_p.py", Outcome.FAILED, 0.1, message, longrepr))
        cause[nodeid] = (exception, code)
    clusters = cluster_failures(rows)
    assert sum(c.count for c in clusters) == len(rows)
    for cluster in clusters:
        assert len({cause[test] for test in cluster.tests}) == 1, cluster
    # and the same cause is one cluster when the messages are equal
    by_message: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        by_message[row.message or ""].add(row.nodeid)
    for tests in by_message.values():
        assert any(tests <= set(c.tests) for c in clusters)


def test_an_iteration_interrupted_before_collection_raises_no_alarms(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "loop.db")
    first = store.start_iteration("local", None, 100.0, 1)
    store.record_plan(
        first.id,
        [SuiteRecord("S", 1, True, SuiteStatus.PENDING)],
        [InventoryItem("S", "t.py::test_a", "t.py")],
    )
    store.record_results(first.id, [TestResult("t.py::test_a", "S", Outcome.FAILED, 0.5, "x")])
    store.finish_iteration(first.id, IterationStatus.FAILED)
    second = store.start_iteration("local", None, 100.0, 1)
    store.finish_iteration(second.id, IterationStatus.INTERRUPTED)
    record = store.iteration("local", 2)
    assert record is not None
    insights = load_summary(store, record, None, date(2026, 1, 1)).insights
    assert insights.integrity == ()
    assert insights.false_greens == ()
    assert insights.diff is None


def test_a_fixed_collection_error_is_fixed_not_a_removed_failing_test(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "loop.db")
    suites = [SuiteRecord("S", 1, True, SuiteStatus.PENDING)]
    first = store.start_iteration("local", None, 100.0, 1)
    broken = "collection error: SyntaxError: invalid syntax"
    store.record_plan(first.id, suites, [InventoryItem("S", "t.py", "t.py", broken)])
    store.finish_iteration(first.id, IterationStatus.FAILED)
    second = store.start_iteration("local", None, 100.0, 1)
    store.record_plan(second.id, suites, [InventoryItem("S", "t.py::test_a", "t.py")])
    store.record_results(second.id, [TestResult("t.py::test_a", "S", Outcome.PASSED, 0.5)])
    store.finish_iteration(second.id, IterationStatus.PASSED)
    record = store.iteration("local", 2)
    assert record is not None
    insights = load_summary(store, record, None, date(2026, 1, 1)).insights
    assert insights.integrity == ()
    assert insights.diff is not None
    assert (insights.diff.fixed, insights.diff.removed) == (("t.py",), ())


def test_a_file_that_stops_collecting_is_no_removed_tests(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "loop.db")
    suites = [SuiteRecord("S", 1, True, SuiteStatus.PENDING)]
    first = store.start_iteration("local", None, 100.0, 1)
    store.record_plan(first.id, suites, [
        InventoryItem("S", "t.py::test_a", "t.py"), InventoryItem("S", "t.py::test_b", "t.py"),
    ])
    store.record_results(first.id, [
        TestResult("t.py::test_a", "S", Outcome.FAILED, 0.5, "boom"),
        TestResult("t.py::test_b", "S", Outcome.FAILED, 0.5, "boom"),
    ])
    store.finish_iteration(first.id, IterationStatus.FAILED)
    second = store.start_iteration("local", None, 100.0, 1)
    broken = "collection error: SyntaxError: invalid syntax"
    store.record_plan(second.id, suites, [InventoryItem("S", "t.py", "t.py", broken)])
    store.finish_iteration(second.id, IterationStatus.FAILED)
    third = store.start_iteration("local", None, 100.0, 1)
    store.record_plan(third.id, suites, [
        InventoryItem("S", "t.py::test_a", "t.py"), InventoryItem("S", "t.py::test_b", "t.py"),
    ])
    store.record_results(third.id, [
        TestResult("t.py::test_a", "S", Outcome.FAILED, 0.5, "boom"),
        TestResult("t.py::test_b", "S", Outcome.PASSED, 0.5),
    ])
    store.finish_iteration(third.id, IterationStatus.FAILED)

    def insights(number: int) -> Any:
        record = store.iteration("local", number)
        assert record is not None
        return load_summary(store, record, None, date(2026, 1, 1)).insights

    assert insights(2).integrity == ()
    diff = insights(3).diff
    # The syntax error is gone, but a test of the file still fails: the file is not "fixed".
    assert diff.fixed == ()
    assert diff.new_failures == ("t.py::test_a",)
