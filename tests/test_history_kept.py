"""The figures and per-test history the store keeps as results arrive (schema 4) say what the
rows say, and reports read them instead of every row of every iteration."""

from __future__ import annotations

import json
import random
import sqlite3
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from deployloop.analysis.figures import figures
from deployloop.analysis.history import flaky_and_broken
from deployloop.analysis.past import past_of
from deployloop.analysis.progress import estimate_remaining_s, projection, trend
from deployloop.models import (
    OUTCOME_CODES,
    Figures,
    InventoryItem,
    IterationStatus,
    Outcome,
    SuiteRecord,
    SuiteStatus,
    TestResult,
)
from deployloop.store import SCHEMA_VERSION, Store

ENV = "local"
LOOP = str(Path(sys.executable).with_name("loop"))
OUTCOMES = [Outcome.PASSED] * 6 + [
    Outcome.FAILED, Outcome.ERROR, Outcome.SKIPPED, Outcome.XFAILED, Outcome.XPASSED,
]  # fmt: skip


def fill(store: Store, iterations: int, seed: int = 3) -> None:
    """Random results through every write path: plan, results (some twice), a node id not in
    the inventory, a re-plan, a suite collected again, reruns, a pending test."""
    rng = random.Random(seed)
    for number in range(1, iterations + 1):
        record = store.start_iteration(ENV, None, 100.0, 2, code_key=f"code-{number // 2}")
        items = [
            InventoryItem(suite, f"t_{suite}.py::test_{i}", f"t_{suite}.py")
            for suite in ("a", "b")
            for i in range(rng.randint(8, 12))
        ]
        items.append(InventoryItem("b", "broken.py", "broken.py", "ImportError: nope"))
        suites = [SuiteRecord(s, 1, True, SuiteStatus.PENDING) for s in ("a", "b")]
        store.record_plan(record.id, suites, items[:3])
        store.record_plan(record.id, suites, items)  # planned again (a resume re-plans)
        store.record_test_files(record.id, {f"t_{s}.py": f"h{number % 3}" for s in "ab"})
        store.replace_inventory(record.id, {"a"}, [i for i in items if i.suite == "a"])
        results = [
            TestResult(i.nodeid, i.suite, rng.choice(OUTCOMES), rng.uniform(0.01, 2.0), "boom")
            for i in items[1:]
            if i.collect_error is None
        ]
        results.append(TestResult(f"t_a.py::extra_{number}", "a", Outcome.PASSED, 0.5))
        store.record_results(record.id, results)
        store.record_results(record.id, results[:4])  # reported twice: no double count
        for result in results:
            if result.outcome in (Outcome.FAILED, Outcome.ERROR):
                again = rng.choice([Outcome.PASSED, result.outcome])
                store.record_attempt(record.id, 2, TestResult(
                    result.nodeid, result.suite, again, 0.3, "again"))  # fmt: skip
        store.finish_iteration(record.id, IterationStatus.FAILED)


def test_kept_figures_and_history_match_the_rows(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "loop.db")
    fill(store, 6)
    kept = store.iteration_figures(ENV)
    for record in store.iterations(ENV):
        rows = store.tests(record.id)
        assert kept[record.id] == figures(rows)
        by_suite = store.figures(record.id)
        for suite in ("a", "b"):
            assert by_suite[suite] == figures(r for r in rows if r.suite == suite)
    for up_to in (6, 3, 1):
        expected = past_of(store.history(ENV, up_to))
        past = store.past_results(ENV, up_to)
        assert {(t.suite, t.nodeid): t.outcomes.rstrip() for t in past.tests} == {
            (t.suite, t.nodeid): t.outcomes.rstrip() for t in expected.tests
        }
        assert past.counts == expected.counts
        assert past.reruns == expected.reruns
        # Failures carry what clusters read (the message), not the file hash.
        assert sorted(past.failures, key=repr) == sorted(
            (replace(r, file_hash=None) for r in expected.failures), key=repr
        )
        assert past.durations.keys() == expected.durations.keys()
        for nodeid, (seconds, count) in past.durations.items():
            assert count == expected.durations[nodeid][1]
            assert seconds == pytest.approx(expected.durations[nodeid][0])


def test_reports_read_the_same_from_kept_history_as_from_rows(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "loop.db")
    fill(store, 8)
    rows = store.history(ENV, 8)
    past = store.past_results(ENV, 8)
    collected = {r.nodeid for r in rows}
    for broken_after in (2, 3):
        assert flaky_and_broken(past, collected, broken_after) == flaky_and_broken(
            rows, collected, broken_after
        )
    iterations = store.iterations(ENV)
    assert trend(iterations, past, 100.0) == trend(iterations, rows, 100.0)
    latest = store.tests(iterations[-1].id)
    pending = [r for r in latest[:5]]
    pending = [type(r)(r.nodeid, r.suite, r.file, None, None, None, None) for r in pending]
    totals = figures(latest[5:])
    assert projection(pending, totals, past) == projection(pending, totals, rows)
    assert estimate_remaining_s(pending, 2, past) == pytest.approx(
        estimate_remaining_s(pending, 2, rows)
    )


def test_a_schema_3_database_gets_its_kept_tables_filled(tmp_path: Path) -> None:
    db = tmp_path / "loop.db"
    store = Store.open(db)
    fill(store, 4)
    want_figures = store.iteration_figures(ENV)
    want_past = store.past_results(ENV, 4)
    store.close()
    # What schema 3 had: no kept tables, no triggers.
    conn = sqlite3.connect(db)
    for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'"):
        conn.execute(f"DROP TRIGGER {name}")
    conn.execute("DROP TABLE outcome_counts")
    conn.execute("DROP TABLE test_history")
    conn.execute("PRAGMA user_version = 3")
    conn.commit()
    conn.close()
    store = Store.open(db)
    assert store.iteration_figures(ENV) == want_figures
    past = store.past_results(ENV, 4)
    assert {(t.suite, t.nodeid, t.outcomes.rstrip()) for t in past.tests} == {
        (t.suite, t.nodeid, t.outcomes.rstrip()) for t in want_past.tests
    }
    assert past.durations.keys() == want_past.durations.keys()
    # ...and keeps them from then on.
    fill(store, 1, seed=9)
    latest = store.iteration(ENV)
    assert latest is not None and latest.number == 5
    assert store.iteration_figures(ENV)[latest.id] == figures(store.tests(latest.id))
    (version,) = sqlite3.connect(db).execute("PRAGMA user_version").fetchone()
    assert version == SCHEMA_VERSION


def test_outcome_codes_are_one_distinct_character_each() -> None:
    assert set(OUTCOME_CODES) == set(Outcome)
    assert len(set(OUTCOME_CODES.values())) == len(Outcome)
    assert all(len(code) == 1 and code != " " for code in OUTCOME_CODES.values())


def test_loop_history_reads_the_kept_figures(tmp_path: Path) -> None:
    store = Store.open(tmp_path / ".loop" / "loop.db")
    fill(store, 3)
    expected = {r.number: figures(store.tests(r.id)) for r in store.iterations(ENV)}
    # The rows are gone from under it: only the kept figures can answer.
    store._conn.execute("DROP TRIGGER tests_kept_delete")
    store._conn.execute("DROP TRIGGER tests_kept_delete_result")
    store._conn.execute("DELETE FROM tests")
    store.close()
    out = subprocess.run(
        [LOOP, "history", "--format", "json", "--state-dir", str(tmp_path / ".loop")],
        capture_output=True, text=True, check=True, cwd=tmp_path,
    )  # fmt: skip
    listed = json.loads(out.stdout)
    assert [entry["iteration"] for entry in listed] == [1, 2, 3]
    for entry in listed:
        want: Figures = expected[entry["iteration"]]
        assert entry["totals"]["executed"] == want.executed
        assert entry["totals"]["passed"] == want.passed
        assert entry["totals"]["collected"] == want.collected
