"""A finished iteration's summary is kept in the store (schema 5) and read back by `loop
status` and `loop summarize` while what it was computed from holds: the reports are the same
whether it was kept or computed, and anything that would change it makes it computed again."""

from __future__ import annotations

import json
import math
import random
import sqlite3
import subprocess
import sys
import time
from dataclasses import fields, is_dataclass, replace
from datetime import date, timedelta
from pathlib import Path

import pytest

from deployloop import cli
from deployloop.analysis import kept
from deployloop.analysis.kept import (
    keep_summary,
    kept_summary,
    summary_from_bytes,
    summary_key,
    summary_to_bytes,
    valid_days,
)
from deployloop.config import KnownIssue, load_config
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
    InventoryItem,
    IterationDiff,
    IterationRecord,
    IterationStatus,
    KnownIssueMatch,
    Outcome,
    Projection,
    RootCause,
    RunningTest,
    ServiceLog,
    SignatureChange,
    SuiteRecord,
    SuiteStatus,
    SuiteSummary,
    Summary,
    TestHistory,
    TestResult,
    TestRow,
    Trend,
)
from deployloop.stages.analyze import load_summary
from deployloop.store import SCHEMA_VERSION, Store

ENV = "local"
LOOP = str(Path(sys.executable).with_name("loop"))
MESSAGES = ("AssertionError: expected 200, got 500", "KeyError: 'order_id'", "boom")

CONFIG = """\
[loop]
target_pass_rate = 100

[deploy]
target = "none"

[[tests.suites]]
name = "a"
paths = ["t_a.py"]
priority = 1

[[tests.suites]]
name = "b"
paths = ["t_b.py"]
priority = 2
"""

KNOWN_ISSUE = """
[[known_issues]]
id = "order-500"
match = "expected 200, got 500"
reason = "the orders service returns 500; TICKET-7"
"""


def fill(store: Store, iterations: int, seed: int = 5) -> None:
    """Finished iterations with failures of a few kinds (clusters, a known issue), tests that
    fail now and then (flaky, broken), reruns, a node id from a file name that is not UTF-8,
    and a suite with a pending test."""
    rng = random.Random(seed)
    odd = "t_b.py::test_\udcff"  # lone surrogate: what a non-UTF-8 file name becomes
    for number in range(1, iterations + 1):
        record = store.start_iteration(ENV, f"sha{number}", 100.0, 2, code_key=f"c{number}")
        items = [
            InventoryItem(suite, f"t_{suite}.py::test_{i}", f"t_{suite}.py")
            for suite in ("a", "b")
            for i in range(12)
        ] + [InventoryItem("b", odd, "t_b.py")]
        suites = [SuiteRecord(s, 1 if s == "a" else 2, True, SuiteStatus.PENDING) for s in "ab"]
        store.record_plan(record.id, suites, items)
        store.record_test_files(record.id, {"t_a.py": "h1", "t_b.py": f"h{number % 2}"})
        results = []
        for item in items[:-2]:  # one test stays pending
            roll = rng.random()
            outcome = (
                Outcome.FAILED if roll < 0.3 else Outcome.SKIPPED if roll < 0.35 else Outcome.PASSED
            )
            message = rng.choice(MESSAGES) if outcome is Outcome.FAILED else None
            longrepr = f"t.py:1: in test\n    assert x\nE   {message}" if message else None
            results.append(TestResult(
                item.nodeid, item.suite, outcome, round(rng.uniform(0.01, 2.0), 3),
                message, longrepr,
            ))  # fmt: skip
        results.append(TestResult(odd, "b", Outcome.FAILED, 1.0, "boom", "E   boom"))
        store.record_results(record.id, results)
        for result in results:
            if result.outcome is Outcome.FAILED and rng.random() < 0.3:
                store.record_attempt(record.id, 2, replace(result, outcome=Outcome.PASSED))
        for suite in "ab":
            store.set_suite_status(record.id, suite, SuiteStatus.FAILED)
        store.finish_iteration(record.id, IterationStatus.FAILED)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """tmp_path with .loop/ (4 finished iterations) and configs/local.toml."""
    store = Store.open(tmp_path / ".loop" / "loop.db")
    fill(store, 4)
    store.close()
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / f"{ENV}.toml").write_text(CONFIG + KNOWN_ISSUE)
    return tmp_path


def loop(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LOOP, *args], cwd=project, capture_output=True, text=True, check=True, timeout=120
    )


def kept_rows(project: Path) -> dict[int, str]:
    """iteration number -> key of its kept summary."""
    conn = sqlite3.connect(project / ".loop" / "loop.db")
    try:
        rows = conn.execute(
            "SELECT i.number, s.key FROM summaries s JOIN iterations i ON i.id = s.iteration_id"
        ).fetchall()
    finally:
        conn.close()
    return dict(rows)


def drop_kept(project: Path) -> None:
    conn = sqlite3.connect(project / ".loop" / "loop.db")
    with conn:
        conn.execute("DELETE FROM summaries")
    conn.close()


def computed(store: Store, number: int, config_dir: Path | None, today: date) -> Summary:
    record = store.iteration(ENV, number)
    assert record is not None
    config = load_config(config_dir, ENV) if config_dir else None
    return load_summary(store, record, config, today)


REPORTS = (
    ("status",),
    ("status", "--format", "json"),
    ("summarize",),
    ("summarize", "--format", "json"),
    ("summarize", "--format", "markdown"),
    ("summarize", "--iteration", "2"),
    ("summarize", "--iteration", "3", "--format", "json"),
)


# --- the kept form --------------------------------------------------------------------------


def test_a_kept_summary_reads_back_equal_to_the_computed_one(project: Path) -> None:
    store = Store.open(project / ".loop" / "loop.db")
    summary = computed(store, 4, project / "configs", date.today())
    # The history makes every part of it: a test of the round trip, not of an empty summary.
    assert summary.clusters and summary.failures and summary.known_issues
    assert summary.insights.flaky or summary.insights.broken
    assert summary.insights.diff is not None and summary.insights.trend is not None
    assert any("\udcff" in row.nodeid for row in summary.failures)
    again = summary_from_bytes(summary_to_bytes(summary))
    assert again == summary
    assert _types(again) == _types(summary)  # 1.0 stays a float, 1 an int
    store.close()


def test_every_kind_of_record_reads_back_as_it_was() -> None:
    """Every kind of record a Summary holds, every optional part set, with the values a JSON
    round trip could bend (int and float, infinity, None in a pair, escapes, surrogates)."""
    record = _record()
    summary = Summary(
        iteration=record,
        totals=Figures(5, 4, 2, 1, 1, 1, 0, 0),
        suites=(SuiteSummary("s\u202e1", 1, SuiteStatus.FAILED, False, Figures(1), "k"),),
        clusters=(
            Cluster("l", "sig", ("a::t[é]",), ("s",), "ki", Category.PRODUCT, 3,
                    (ServiceLog("api", ("09:00:00.000 ERROR x", "09:00:01.000 y")),)),
            Cluster("l2", "sig2", (), (), None, Category.UNKNOWN, None),
        ),
        known_issues=(KnownIssueMatch("ki", "why", True, ("a::t",)),),
        deployments=(
            Deployment("svc", DeployStatus.CRASHED, "http://x", "r1", None, "t", "e", "i", "r0"),
        ),
        remaining_suites=("s2",),
        elapsed_s=12.0,
        estimated_remaining_s=3,
        failures=(
            TestRow("a::t\udc80", "s", "a", Outcome.ERROR, 0.0, "m\nx", "E x", "2024-01-01"),
        ),
        insights=Insights(
            flaky=(TestHistory("a::t", (HistoryPoint(1, Outcome.FAILED, 1),
                                        HistoryPoint(1, Outcome.PASSED, 2)), "r"),),
            broken=(),
            integrity=(IntegrityFlag("a::t", None, "changed"),),
            false_greens=(FalseGreen("s", "suite", "0 executed"),),
            outage="most failed",
            failures_with_known_issue=1,
            failures_without_known_issue=2,
            projection=Projection(99.5, 98.25, 100.0, 7, "basis"),
            trend=Trend(((1, None), (2, 50.0), (3, 75)), math.inf, "rising"),
            diff=IterationDiff(2, ("f",), ("n",), (), ("a",), ("r",),
                               (SignatureChange("t", "b", "a"),)),
            remaining_suite_tests=(("s2", 4),),
        ),
        running=(RunningTest("a::u", "s", 1.5),),
        partial=True,
        root_causes=(RootCause("POST /x answered 500", ("e1", "e2"), ("l", "l2"),
                               (("a::t", "a.py:3"), ("a::u", None))),),
    )  # fmt: skip
    again = summary_from_bytes(summary_to_bytes(summary))
    assert again == summary
    assert _types(again) == _types(summary)


def test_a_kept_form_of_other_code_is_not_read() -> None:
    with pytest.raises(ValueError):
        summary_from_bytes(b"not zlib")
    import zlib

    with pytest.raises((ValueError, TypeError, KeyError)):
        summary_from_bytes(zlib.compress(b'{"iteration": 1}'))
    with pytest.raises((ValueError, TypeError, KeyError)):
        summary_from_bytes(zlib.compress(b"[[1, 2]]"))


# --- status and summarize -------------------------------------------------------------------


def test_reports_are_the_same_kept_or_computed(project: Path) -> None:
    first = {args: loop(project, *args).stdout for args in REPORTS}
    # The latest iteration's, and those asked for by --iteration, are kept now.
    assert set(kept_rows(project)) == {2, 3, 4}
    again = {args: loop(project, *args).stdout for args in REPORTS}
    assert again == first
    drop_kept(project)
    fresh = {args: loop(project, *args).stdout for args in REPORTS}
    assert fresh == first
    assert json.loads(first[("summarize", "--format", "json")])["known_issues"][0]["failures"]


def test_status_reads_the_kept_summary(project: Path) -> None:
    loop(project, "status")
    store = Store.open(project / ".loop" / "loop.db")
    record = store.iteration(ENV)
    assert record is not None
    kept_one = store.kept_summary(record.id)
    assert kept_one is not None
    # A kept summary told apart from the computed one: status shows what is kept.
    marked = summary_from_bytes(kept_one[3])
    marked = replace(marked, totals=replace(marked.totals, skipped=4321))
    store.keep_summary(record.id, kept_one[0], kept_one[1], kept_one[2], summary_to_bytes(marked))
    store.close()
    assert "4321 skipped" in loop(project, "status").stdout


def test_a_known_issue_added_to_the_config_computes_it_again(project: Path) -> None:
    config = project / "configs" / f"{ENV}.toml"
    config.write_text(CONFIG)  # no known issue yet
    before = loop(project, "summarize", "--format", "json").stdout
    key = kept_rows(project)[4]
    assert json.loads(before)["known_issues"] == []
    config.write_text(CONFIG + KNOWN_ISSUE)
    after = loop(project, "summarize", "--format", "json").stdout
    assert json.loads(after)["known_issues"][0]["id"] == "order-500"
    assert kept_rows(project)[4] != key
    drop_kept(project)
    assert loop(project, "summarize", "--format", "json").stdout == after


def test_a_config_that_does_not_load_is_said_every_time_and_nothing_is_kept(
    project: Path,
) -> None:
    (project / "configs" / f"{ENV}.toml").write_text(CONFIG + "[nonsense]\n")
    for _ in range(2):
        out = loop(project, "status")
        assert "warning: reporting without the config" in out.stderr
    assert kept_rows(project) == {}


def test_a_config_that_cannot_be_read_keeps_nothing(project: Path) -> None:
    config = project / "configs" / f"{ENV}.toml"
    config.unlink()
    config.mkdir()  # a folder where the file should be
    store = Store.open(project / ".loop" / "loop.db")
    record = store.iteration(ENV)
    assert record is not None
    summary = cli._summary(store, record, project / "configs", project / ".loop")
    assert summary == computed(store, 4, None, date.today())
    assert store.kept_summary(record.id) is None
    store.close()


def test_without_a_config_the_summary_is_kept_too(project: Path) -> None:
    (project / "configs" / f"{ENV}.toml").unlink()
    first = loop(project, "summarize", "--format", "json").stdout
    assert set(kept_rows(project)) == {4}
    assert loop(project, "summarize", "--format", "json").stdout == first
    # A config appearing is a change like any other.
    (project / "configs" / f"{ENV}.toml").write_text(CONFIG + KNOWN_ISSUE)
    assert loop(project, "summarize", "--format", "json").stdout != first


def test_compare_is_computed_and_not_kept(project: Path) -> None:
    out = loop(project, "summarize", "--compare", "1", "--format", "json").stdout
    assert json.loads(out)["diff"]["compared_to"] == 1
    assert kept_rows(project) == {}
    loop(project, "summarize")
    out = loop(project, "summarize", "--compare", "1", "--format", "json").stdout
    assert json.loads(out)["diff"]["compared_to"] == 1


def test_a_running_iteration_never_uses_or_keeps_one(project: Path) -> None:
    store = Store.open(project / ".loop" / "loop.db")
    fill(store, 1, seed=8)
    record = store.iteration(ENV)
    assert record is not None
    store.reopen_iteration(record.id)  # as `loop run --resume` does
    running = store.iteration_by_id(record.id)
    assert running is not None and running.status is IterationStatus.RUNNING
    config_bytes = (project / "configs" / f"{ENV}.toml").read_bytes()
    # Even a kept summary under the right key is not read for a running iteration...
    summary = computed(store, running.number, project / "configs", date.today())
    stale = replace(summary, totals=replace(summary.totals, skipped=4321))
    store.keep_summary(
        running.id, summary_key(store, running, config_bytes), None, None,
        summary_to_bytes(stale),
    )  # fmt: skip
    assert kept_summary(store, running, config_bytes, date.today()) is None
    got = cli._summary(store, running, project / "configs", project / ".loop")
    assert got.totals.skipped != 4321
    # ...and none is kept for it.
    store._conn.execute("DELETE FROM summaries")
    cli._summary(store, running, project / "configs", project / ".loop")
    assert keep_summary(store, got, config_bytes, (), date.today()) is False
    assert store.kept_summary(running.id) is None
    store.close()


def test_a_resumed_iteration_gets_its_summary_computed_again(project: Path) -> None:
    store = Store.open(project / ".loop" / "loop.db")
    record = store.iteration(ENV)
    assert record is not None
    first = cli._summary(store, record, project / "configs", project / ".loop")
    assert store.kept_summary(record.id) is not None
    store.reopen_iteration(record.id)
    store.record_results(record.id, [TestResult("t_b.py::test_11", "b", Outcome.PASSED, 0.1)])
    store.finish_iteration(record.id, IterationStatus.FAILED)
    finished = store.iteration(ENV)
    assert finished is not None
    again = cli._summary(store, finished, project / "configs", project / ".loop")
    assert again.totals.passed == first.totals.passed + 1
    assert again == computed(store, finished.number, project / "configs", date.today())
    store.close()


def test_forgetting_an_iteration_drops_its_summary_and_stales_later_ones(project: Path) -> None:
    for number in (2, 3, 4):
        loop(project, "summarize", "--iteration", str(number))
    before = kept_rows(project)
    assert set(before) == {2, 3, 4}
    store = Store.open(project / ".loop" / "loop.db")
    third = store.iteration(ENV, 3)
    assert third is not None
    # What `loop forget --env local --iteration 3` does to the store: its rows go.
    with store._tx() as tx:
        for table in ("tests", "attempts", "suites", "deployments", "test_files"):
            tx.execute(f"DELETE FROM {table} WHERE iteration_id = ?", (third.id,))
        tx.execute("DELETE FROM iterations WHERE id = ?", (third.id,))
    latest = store.iteration(ENV)
    assert latest is not None
    config_bytes = (project / "configs" / f"{ENV}.toml").read_bytes()
    # Its own summary is gone with it; the next one's was computed with it as its previous
    # iteration, so it no longer holds.
    assert set(kept_rows(project)) == {2, 4}
    assert kept_summary(store, latest, config_bytes, date.today()) is None
    summary = cli._summary(store, latest, project / "configs", project / ".loop")
    assert summary.insights.diff is not None and summary.insights.diff.compared_to == 2
    assert summary == computed(store, latest.number, project / "configs", date.today())
    assert kept_summary(store, latest, config_bytes, date.today()) == summary
    store.close()


def test_a_known_issue_expiring_bounds_the_days_a_summary_holds(project: Path) -> None:
    today = date(2030, 6, 15)

    def issue(expires: date | None) -> KnownIssue:
        return KnownIssue(id=f"i{expires}", match="x", expires=expires)

    assert valid_days([], today) == (None, None)
    assert valid_days([issue(None)], today) == (None, None)
    days = [issue(today - timedelta(days=10)), issue(today), issue(today + timedelta(days=5)),
            issue(today - timedelta(days=3))]  # fmt: skip
    # Expired the day after `expires`: the last one expired on the 13th, the next on the 16th.
    assert valid_days(days, today) == (date(2030, 6, 13), today)

    store = Store.open(project / ".loop" / "loop.db")
    record = store.iteration(ENV)
    assert record is not None
    config_bytes = b"expiring"
    summary = computed(store, 4, None, today)
    assert keep_summary(store, summary, config_bytes, days, today)
    for day, holds in ((today, True), (date(2030, 6, 13), True), (date(2030, 6, 12), False),
                       (today + timedelta(days=1), False)):  # fmt: skip
        assert (kept_summary(store, record, config_bytes, day) == summary) is holds, day
    store.close()


def test_other_analysis_code_computes_it_again(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store.open(project / ".loop" / "loop.db")
    record = store.iteration(ENV)
    assert record is not None
    summary = cli._summary(store, record, project / "configs", project / ".loop")
    config_bytes = (project / "configs" / f"{ENV}.toml").read_bytes()
    assert kept_summary(store, record, config_bytes, date.today()) == summary
    monkeypatch.setattr(kept, "KEPT_FORMAT", kept.KEPT_FORMAT + 1)
    assert kept_summary(store, record, config_bytes, date.today()) is None
    monkeypatch.undo()
    monkeypatch.setattr(kept, "_code_stamp", lambda: "an edited analysis")
    assert kept_summary(store, record, config_bytes, date.today()) is None
    store.close()


def test_a_busy_store_is_not_waited_for(project: Path) -> None:
    store = Store.open(project / ".loop" / "loop.db")
    record = store.iteration(ENV)
    assert record is not None
    summary = computed(store, 4, project / "configs", date.today())
    other = sqlite3.connect(project / ".loop" / "loop.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # a `loop run` writing
    try:
        started = time.monotonic()
        assert keep_summary(store, summary, None, (), date.today()) is False
        assert time.monotonic() - started < 5
    finally:
        other.execute("ROLLBACK")
        other.close()
    # The store's own wait is as it was.
    assert store._conn.execute("PRAGMA busy_timeout").fetchone()[0] == 10000
    assert keep_summary(store, summary, None, (), date.today()) is True
    store.close()


# --- schema ---------------------------------------------------------------------------------


def test_a_schema_4_database_gets_the_summaries_table(tmp_path: Path) -> None:
    db = tmp_path / "loop.db"
    store = Store.open(db)
    fill(store, 2)
    store.close()
    conn = sqlite3.connect(db)
    conn.execute("DROP TRIGGER iterations_drop_summary")
    conn.execute("DROP TABLE summaries")
    conn.execute("ALTER TABLE deployments DROP COLUMN tag")  # schema 6's
    conn.execute("ALTER TABLE deployments DROP COLUMN promoted")
    conn.execute("PRAGMA user_version = 4")
    conn.commit()
    conn.close()
    store = Store.open(db, verify=True)
    record = store.iteration(ENV)
    assert record is not None
    summary = computed(store, 2, None, date.today())
    assert keep_summary(store, summary, None, (), date.today())
    assert kept_summary(store, record, None, date.today()) == summary
    store.close()
    (version,) = sqlite3.connect(db).execute("PRAGMA user_version").fetchone()
    assert version == SCHEMA_VERSION == 8


# --- helpers ----------------------------------------------------------------------------------


def _record() -> IterationRecord:
    return IterationRecord(
        7, "env", 3, IterationStatus.CRASHED, None, "2024-01-01T00:00:00.000+00:00",
        "2024-01-01T00:01:00.000+00:00", 99.5, 4, "killed", "key", True,
    )  # fmt: skip


def _types(value: object) -> object:
    """The tree of `value` with each leaf's type: equal trees of equal values may differ
    there (1 == 1.0 == True)."""
    if isinstance(value, tuple):
        return tuple(_types(item) for item in value)
    if is_dataclass(value) and not isinstance(value, type):
        return tuple(_types(getattr(value, f.name)) for f in fields(value))
    return type(value)


def test_loop_run_keeps_the_summary_it_reported(tmp_path: Path) -> None:
    from conftest import Project, output

    runner = Project(tmp_path)
    runner.config("""
        [loop]
        max_iterations = 1

        [deploy]
        target = "none"

        [[tests.suites]]
        name = "Main"
        paths = ["tests/test_main.py"]
        """)
    runner.write("tests/test_main.py", "def test_ok():\n    pass\n")
    result = runner.run("run")
    assert result.returncode == 0, output(result)
    store = Store.open(runner.state / "loop.db")
    record = store.iteration("local")
    assert record is not None
    # Kept by the run itself, before any status: the first status is as fast as the next.
    kept_one = store.kept_summary(record.id)
    assert kept_one is not None
    assert summary_from_bytes(kept_one[3]).totals.passed == 1
    # ... and under the key status computes: marked, it is what status shows.
    marked = summary_from_bytes(kept_one[3])
    marked = replace(marked, totals=replace(marked.totals, skipped=4321))
    store.keep_summary(record.id, kept_one[0], kept_one[1], kept_one[2], summary_to_bytes(marked))
    store.close()
    assert "4321 skipped" in runner.run("status").stdout
