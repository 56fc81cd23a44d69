"""The runner's parts against real pytest output: phases merge into the outcome pytest means."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from deployloop.config import SuiteConfig
from deployloop.models import Outcome, TestResult
from deployloop.runner.jobs import plan_jobs
from deployloop.runner.process import PLUGIN_DIR
from deployloop.runner.reportlog import ReportLogReader
from deployloop.runner.suite_paths import SuitePaths

OUTCOMES = '''
import pytest

@pytest.fixture
def broken_setup():
    raise RuntimeError("database unreachable")

@pytest.fixture
def broken_teardown():
    yield
    raise RuntimeError("cleanup failed")

def test_pass(): pass
def test_fail(): assert 403 == 200, "events stream rejected: HTTP 403"
def test_setup_error(broken_setup): pass
def test_teardown_error(broken_teardown): pass
def test_fail_and_teardown_error(broken_teardown): assert False, "boom"
def test_skip(): pytest.skip("not in this env")
@pytest.mark.skip(reason="marked skip")
def test_skip_mark(): pass
@pytest.mark.xfail(reason="known bug")
def test_xfail(): assert False
@pytest.mark.xfail(reason="maybe fixed")
def test_xpass(): pass
@pytest.mark.xfail(reason="must fail", strict=True)
def test_xpass_strict(): pass
@pytest.mark.parametrize("n", [1, 2])
def test_param(n): assert n == 1
'''


def run_pytest(tmp_path: Path, env: dict[str, str] | None = None) -> bytes:
    """pytest with loop's plugin, as the runner starts it; returns its reportlog."""
    (tmp_path / "test_outcomes.py").write_text(OUTCOMES)
    log = tmp_path / "log.jsonl"
    subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p",
         "no:hypothesispytest", "-p", "deployloop_plugin", f"--loop-reportlog={log}",
         "test_outcomes.py"],
        cwd=tmp_path, capture_output=True, check=False,
        env={**os.environ, "PYTHONPATH": str(PLUGIN_DIR), **(env or {})},
    )
    return log.read_bytes()


def read(data: bytes, chunk: int) -> dict[str, TestResult]:
    results: list[TestResult] = []
    reader = ReportLogReader(lambda nodeid: "S", results.append)
    for i in range(0, len(data), chunk):
        reader.feed(data[i : i + chunk])
    assert reader.session_finished
    return {r.nodeid.split("::")[1]: r for r in results}


def test_phases_merge_like_pytest(tmp_path: Path) -> None:
    results = read(run_pytest(tmp_path), chunk=1 << 20)
    outcomes = {name: r.outcome for name, r in results.items()}
    assert outcomes == {
        "test_pass": Outcome.PASSED,
        "test_fail": Outcome.FAILED,
        "test_setup_error": Outcome.ERROR,
        "test_teardown_error": Outcome.ERROR,
        "test_fail_and_teardown_error": Outcome.FAILED,
        "test_skip": Outcome.SKIPPED,
        "test_skip_mark": Outcome.SKIPPED,
        "test_xfail": Outcome.XFAILED,
        "test_xpass": Outcome.XPASSED,
        "test_xpass_strict": Outcome.FAILED,
        "test_param[1]": Outcome.PASSED,
        "test_param[2]": Outcome.FAILED,
    }
    fail = results["test_fail"]
    assert fail.message is not None and "events stream rejected: HTTP 403" in fail.message
    assert fail.longrepr is not None and "assert 403 == 200" in fail.longrepr
    setup = results["test_setup_error"]
    assert setup.message == "error in setup: RuntimeError: database unreachable"
    assert results["test_skip"].message == "not in this env"


def test_lines_torn_at_any_byte_give_the_same_results(tmp_path: Path) -> None:
    data = run_pytest(tmp_path)
    whole = read(data, chunk=1 << 20)
    torn = read(data, chunk=7)
    assert {k: (v.outcome, v.message) for k, v in torn.items()} == {
        k: (v.outcome, v.message) for k, v in whole.items()
    }


def suite(name: str, *paths: str, markers: str | None = None) -> SuiteConfig:
    return SuiteConfig(name=name, paths=list(paths), markers=markers)


def test_items_belong_to_the_most_specific_suite(tmp_path: Path) -> None:
    suites = [suite("All", "tests"), suite("Login", "tests/test_auth.py::test_login")]
    owner = SuitePaths(suites, tmp_path).owner
    assert owner("tests/test_auth.py::test_login") == "Login"
    assert owner("tests/test_auth.py::test_login[admin]") == "Login"
    assert owner("tests/test_auth.py::test_login_twice") == "All"
    assert owner("tests/sub/test_x.py::test_y") == "All"
    assert owner("other/test_z.py::test_q") is None


def ids(n: int, prefix: str) -> list[str]:
    return [f"{prefix}.py::test_{i}" for i in range(n)]


def test_one_worker_runs_small_suites_in_one_process_in_priority_order() -> None:
    suites = [suite(f"S{i}", f"s{i}.py") for i in range(6)]
    pending = {s.name: ids(5, s.name) for s in suites}
    jobs = plan_jobs(suites, pending, pending, workers=1)
    assert len(jobs) == 1
    assert jobs[0].args == tuple(f"s{i}.py" for i in range(6))
    assert jobs[0].size == 30


def test_several_workers_shard_a_large_suite_and_cover_every_test_once() -> None:
    suites = [suite("Big", "big.py"), suite("Small", "small.py")]
    pending = {"Big": ids(200, "big"), "Small": ids(10, "small")}
    jobs = plan_jobs(suites, pending, pending, workers=4)
    assert len(jobs) > 4
    covered = [n for job in jobs for _, nodeids in job.expected for n in nodeids]
    assert sorted(covered) == sorted(pending["Big"] + pending["Small"])
    assert len(covered) == len(set(covered))


def test_different_markers_never_share_a_process() -> None:
    suites = [suite("A", "a.py", markers="smoke"), suite("B", "b.py")]
    pending = {"A": ids(3, "a"), "B": ids(3, "b")}
    jobs = plan_jobs(suites, pending, pending, workers=1)
    assert [(j.markers, j.suites) for j in jobs] == [("smoke", ["A"]), (None, ["B"])]


def test_resumed_suites_run_only_their_pending_tests_by_node_id() -> None:
    suites = [suite("A", "a.py")]
    jobs = plan_jobs(suites, {"A": ids(3, "a")[1:]}, {"A": ids(3, "a")}, workers=1)
    assert jobs[0].args == tuple(ids(3, "a")[1:])
