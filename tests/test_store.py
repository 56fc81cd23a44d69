"""The store keeps every record as it arrives and refuses what it cannot read."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from deployloop.models import (
    Deployment,
    DeployStatus,
    InventoryItem,
    IterationStatus,
    Outcome,
    SuiteRecord,
    SuiteStatus,
    TestResult,
)
from deployloop.store import Store, StoreError


def test_results_are_visible_to_another_reader_as_they_arrive(tmp_path: Path) -> None:
    db = tmp_path / "loop.db"
    writer = Store.open(db)
    record = writer.start_iteration("local", "abc", 100.0, 2)
    items = [InventoryItem("S", f"t.py::test_{i}", "t.py") for i in range(3)]
    items.append(InventoryItem("S", "broken.py", "broken.py", "collection error: ImportError"))
    writer.record_plan(record.id, [SuiteRecord("S", 1, True, SuiteStatus.PENDING)], items)
    reader = Store.open(db, create=False)
    # The collection error counts at once: it is a result, not something left to run.
    assert [(t.nodeid, t.outcome) for t in reader.tests(record.id)] == [
        ("t.py::test_0", None), ("t.py::test_1", None), ("t.py::test_2", None),
        ("broken.py", Outcome.ERROR),
    ]
    writer.record_results(record.id, [TestResult("t.py::test_0", "S", Outcome.PASSED, 0.1)])
    assert reader.tests(record.id)[0].outcome == Outcome.PASSED


def test_iterations_are_numbered_per_env(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "loop.db")
    assert store.start_iteration("local", None, 100, 1).number == 1
    assert store.start_iteration("local", None, 100, 1).number == 2
    assert store.start_iteration("staging", None, 100, 1).number == 1
    store.finish_iteration(1, IterationStatus.INTERRUPTED)
    latest = store.iteration("local")
    assert latest is not None and latest.number == 2


def test_a_newer_schema_is_refused_with_a_reason(tmp_path: Path) -> None:
    db = tmp_path / "loop.db"
    Store.open(db).close()
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(StoreError, match="newer deployloop"):
        Store.open(db)


def test_missing_state_is_an_error_only_when_reading(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no state yet"):
        Store.open(tmp_path / "none" / "loop.db", create=False)


def test_a_schema_5_database_keeps_its_deployments_and_records_candidates(
    tmp_path: Path,
) -> None:
    db = tmp_path / "loop.db"
    store = Store.open(db)
    record = store.start_iteration("staging", "abc", 100.0, 1)
    store.record_deployments(record.id, [Deployment("api", DeployStatus.READY, revision="r1")])
    store.close()
    conn = sqlite3.connect(db)
    conn.execute("ALTER TABLE deployments DROP COLUMN tag")
    conn.execute("ALTER TABLE deployments DROP COLUMN promoted")
    conn.execute("PRAGMA user_version = 5")
    conn.commit()
    conn.close()
    store = Store.open(db, verify=True)
    (before,) = store.deployments(record.id)
    assert (before.revision, before.tag, before.promoted) == ("r1", None, False)
    store.record_deployments(
        record.id, [Deployment("api", DeployStatus.READY, revision="r2", tag="loop-it1")]
    )
    store.record_promotion(record.id, ["api"])
    (after,) = store.deployments(record.id)
    assert (after.revision, after.tag, after.promoted) == ("r2", "loop-it1", True)
    store.close()


def test_a_schema_6_database_gets_what_serves_the_traffic(tmp_path: Path) -> None:
    db = tmp_path / "loop.db"
    store = Store.open(db)
    record = store.start_iteration("staging", "abc", 100.0, 1)
    store.record_deployments(
        record.id, [Deployment("api", DeployStatus.READY, revision="r2", tag="loop-it1")]
    )
    store.close()
    conn = sqlite3.connect(db)
    conn.execute("ALTER TABLE deployments DROP COLUMN serving")
    conn.execute("PRAGMA user_version = 6")
    conn.commit()
    conn.close()
    store = Store.open(db, verify=True)
    (before,) = store.deployments(record.id)
    assert (before.revision, before.serving) == ("r2", None)
    store.record_deployments(record.id, [Deployment(
        "api", DeployStatus.READY, revision="r2", tag="loop-it1", serving="r1",
    )])
    assert store.deployments(record.id)[0].serving == "r1"  # a candidate: r1 still serves
    store.record_promotion(record.id, ["api"])
    assert store.deployments(record.id)[0].serving == "r2"
    store.record_rollback(record.id, "api", "r0")
    assert store.deployments(record.id)[0].serving == "r0"
    store.close()
