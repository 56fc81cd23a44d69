"""`loop run` end to end: the real console script, real pytest suites, real local services.

Every test writes a small project into tmp_path (configs/<env>.toml, test files, service
scripts), runs `loop` there in a subprocess, and checks what a user sees: the exit code, the
figures of `loop summarize --format json` / `loop status --format json`, the reports, the
messages. Timeouts are small so the whole file stays fast.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from conftest import Project, output, pid_alive, read_pid, wait_for

# --- helpers -------------------------------------------------------------------------------


def suite_figures(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """name -> the contract figures of that suite."""
    keys = ("status", "collected", "executed", "passed", "failed", "errors", "skipped",
            "pass_rate")
    return {s["name"]: {k: s[k] for k in keys} for s in summary["suites"]}


def totals(summary: dict[str, Any]) -> dict[str, Any]:
    keys = ("collected", "executed", "passed", "failed", "errors", "skipped", "pass_rate")
    return {k: summary["totals"][k] for k in keys}


def failure_messages(project: Project, iteration: int = 1) -> dict[str, str]:
    """node id -> one-line message, from the failure analysis of report.md."""
    text = (project.iteration_dir(iteration) / "report.md").read_text(encoding="utf-8")
    found = dict(re.findall(r"^\s*- `([^`]+)` — (.*)$", text, flags=re.MULTILINE))
    assert found, f"report.md lists no failing tests:\n{text}"
    return found


def cluster_tests(summary: dict[str, Any]) -> set[str]:
    return {t for c in summary["clusters"] for t in c["tests"]}


def printed(result: subprocess.CompletedProcess[str]) -> str:
    """stdout and stderr with whitespace collapsed: the terminal report wraps long lines."""
    return " ".join((result.stdout + "\n" + result.stderr).split())


def port_open(url: str) -> bool:
    host, port = url.removeprefix("http://").split(":")
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, int(port))) == 0


def one_suite_config(paths: str, *, timeout: float = 3) -> str:
    """One suite "Main" over `paths` (TOML list items), no services, one iteration."""
    return f"""
        [loop]
        max_iterations = 1

        [deploy]
        target = "none"

        [tests]
        workers = 1
        suite_timeout_s = {timeout}

        [[tests.suites]]
        name = "Main"
        paths = [{paths}]
        priority = 1
        """


# --- 1. exact figures ----------------------------------------------------------------------

CRITICAL = """
    import pytest

    @pytest.fixture
    def database():
        raise ConnectionError("database is down")

    def test_login():
        pass

    def test_checkout():
        assert 2 + 2 == 4

    def test_refund():
        assert 100 == 90, "refund amount wrong"

    def test_reports(database):
        pass

    @pytest.mark.skip(reason="feature flag off")
    def test_export():
        pass
    """

HIGH = """
    import pytest

    def test_a():
        pass

    def test_b():
        pass

    def test_c():
        pass

    @pytest.mark.xfail(reason="known rounding bug")
    def test_rounding():
        assert round(2.675, 2) == 2.68

    def test_profile():
        raise KeyError("avatar")
    """

LOW = """
    import pytest

    @pytest.fixture
    def session():
        yield "s"
        raise RuntimeError("session close failed")

    def test_one():
        pass

    def test_two():
        pass

    def test_three():
        pass

    def test_later():
        pytest.skip("not on this platform")

    def test_cleanup(session):
        pass

    @pytest.mark.xfail(reason="was flaky")
    def test_lucky():
        pass
    """


def test_exact_figures_three_suites(project: Project) -> None:
    # Config order is not priority order: reports go by priority.
    project.config("""
        [loop]
        max_iterations = 3

        [deploy]
        target = "local"

        [tests]
        workers = 2
        suite_timeout_s = 5

        [[tests.suites]]
        name = "Low"
        paths = ["tests/e2e/test_low.py"]
        priority = 3

        [[tests.suites]]
        name = "Critical"
        paths = ["tests/e2e/test_critical.py"]
        priority = 1

        [[tests.suites]]
        name = "High"
        paths = ["tests/e2e/test_high.py"]
        priority = 2

        [[known_issues]]
        id = "db-down"
        match = "database is (down|gone)"
        reason = "staging database in maintenance; TICKET-7"
        expires = 2999-12-31

        [[known_issues]]
        id = "old-issue"
        match = "refund amount"
        reason = "fixed long ago"
        expires = 2000-01-01
        """)
    project.write("tests/e2e/test_critical.py", CRITICAL)
    project.write("tests/e2e/test_high.py", HIGH)
    project.write("tests/e2e/test_low.py", LOW)

    plan = project.run("plan")
    assert plan.returncode == 0, output(plan)
    assert "16 tests in 3 suites" in printed(plan)
    assert not project.state.exists()  # plan changes nothing

    result = project.run("run", "--max-iterations", "1")
    assert result.returncode == 1, output(result)

    summary = project.summary()
    assert summary["env"] == "local"
    assert summary["iteration"] == 1
    assert summary["status"] == "failed"
    expected_totals = {
        "collected": 16, "executed": 12, "passed": 8, "failed": 2, "errors": 2,
        "skipped": 2, "pass_rate": 66.7,
    }
    assert totals(summary) == expected_totals
    assert summary["totals"]["xfailed"] == 1
    assert summary["totals"]["xpassed"] == 1
    assert summary["totals"]["pending"] == 0
    assert [s["name"] for s in summary["suites"]] == ["Critical", "High", "Low"]
    assert [s["priority"] for s in summary["suites"]] == [1, 2, 3]
    expected_suites = {
        "Critical": {"status": "failed", "collected": 5, "executed": 4, "passed": 2,
                     "failed": 1, "errors": 1, "skipped": 1, "pass_rate": 50.0},
        "High": {"status": "failed", "collected": 5, "executed": 4, "passed": 3,
                 "failed": 1, "errors": 0, "skipped": 0, "pass_rate": 75.0},
        "Low": {"status": "failed", "collected": 6, "executed": 4, "passed": 3,
                "failed": 0, "errors": 1, "skipped": 1, "pass_rate": 75.0},
    }
    assert suite_figures(summary) == expected_suites
    for suite in summary["suites"]:
        assert suite["executed"] == suite["passed"] + suite["failed"] + suite["errors"]
    assert summary["remaining_suites"] == []
    assert summary["deployments"] == []

    # Every failing test is in a failure pattern; nothing else is.
    assert cluster_tests(summary) == {
        "tests/e2e/test_critical.py::test_refund",
        "tests/e2e/test_critical.py::test_reports",
        "tests/e2e/test_high.py::test_profile",
        "tests/e2e/test_low.py::test_cleanup",
    }
    assert sum(c["count"] for c in summary["clusters"]) == 4
    messages = failure_messages(project)
    assert "refund amount wrong" in messages["tests/e2e/test_critical.py::test_refund"]
    assert "database is down" in messages["tests/e2e/test_critical.py::test_reports"]
    assert "setup" in messages["tests/e2e/test_critical.py::test_reports"]
    assert "KeyError" in messages["tests/e2e/test_high.py::test_profile"]
    assert "teardown" in messages["tests/e2e/test_low.py::test_cleanup"]
    assert "session close failed" in messages["tests/e2e/test_low.py::test_cleanup"]

    # A known issue explains a failure but never turns it into a pass.
    issues = {i["id"]: i for i in summary["known_issues"]}
    assert issues["db-down"]["failures"] == ["tests/e2e/test_critical.py::test_reports"]
    assert (issues["db-down"]["matched"], issues["db-down"]["expired"]) == (True, False)
    assert issues["old-issue"]["failures"] == ["tests/e2e/test_critical.py::test_refund"]
    assert issues["old-issue"]["expired"] is True
    [db_cluster] = [c for c in summary["clusters"]
                    if "tests/e2e/test_critical.py::test_reports" in c["tests"]]
    assert db_cluster["known_issue"] == "db-down"

    # The files of the iteration.
    out = project.iteration_dir(1)
    on_disk = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert totals(on_disk) == expected_totals
    assert suite_figures(on_disk) == expected_suites
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "66.7%" in report
    assert "staging database in maintenance; TICKET-7" in report
    assert "expired" in report
    reportlogs = list(out.rglob("*.reportlog.jsonl"))
    assert reportlogs and all(p.stat().st_size > 0 for p in reportlogs)
    junits = list(out.rglob("*.junit.xml"))
    assert junits
    cases: set[tuple[str | None, str | None]] = set()
    failures = errors = 0
    for path in junits:
        root = ET.parse(path).getroot()
        for case in root.iter("testcase"):
            cases.add((case.get("classname"), case.get("name")))
        for suite in root.iter("testsuite"):
            failures += int(suite.get("failures", 0))
            errors += int(suite.get("errors", 0))
    assert len(cases) == 16
    assert (failures, errors) == (2, 2)

    # Same code, a lower --target: the next iteration (2) reaches it, with the same figures.
    again = project.run("run", "--max-iterations", "1", "--target", "66")
    assert again.returncode == 0, output(again)
    second = project.summary()
    assert (second["iteration"], second["status"]) == (2, "passed")
    assert totals(second) == expected_totals
    assert [(h["iteration"], h["status"]) for h in project.history()] == [
        (1, "failed"), (2, "passed"),
    ]


# --- 2. target reached ---------------------------------------------------------------------


def test_all_passing_reaches_target(project: Project) -> None:
    project.config(one_suite_config('"tests/test_ok.py"'))
    project.write("tests/test_ok.py", """
        def test_a():
            pass

        def test_b():
            pass
        """)
    result = project.run("run")
    assert result.returncode == 0, output(result)
    summary = project.summary()
    assert summary["status"] == "passed"
    assert totals(summary) == {
        "collected": 2, "executed": 2, "passed": 2, "failed": 0, "errors": 0,
        "skipped": 0, "pass_rate": 100.0,
    }
    assert [h["status"] for h in project.history()] == ["passed"]

    # The state is found where it was written, and only there.
    assert project.json("status", "--state-dir", ".loop", "--format", "json")["iteration"] == 1
    elsewhere = project.run("status", "--format", "json",
                            env={"LOOP_STATE_DIR": str(project.root / "other")})
    assert json.loads(elsewhere.stdout)["iteration"] is None
    missing = project.run("summarize", "--iteration", "7")
    assert missing.returncode == 2, output(missing)
    assert "iteration 7" in missing.stderr
    written = project.run("summarize", "--format", "markdown", "--output", "out.md")
    assert written.returncode == 0, output(written)
    assert (project.root / "out.md").read_text(encoding="utf-8") == (
        project.iteration_dir(1) / "report.md"
    ).read_text(encoding="utf-8")


# --- 3. config errors ----------------------------------------------------------------------

_SUITES = """
    [[tests.suites]]
    name = "Main"
    paths = ["tests"]
    """


@pytest.mark.parametrize(
    ("toml", "args", "expected"),
    [
        pytest.param(
            "[tests]\nworkrs = 2\n" + _SUITES,
            [],
            "configs/local.toml:2: tests.workrs: unknown key (did you mean 'workers'?)",
            id="unknown-key",
        ),
        pytest.param(
            "[tests]\nworkers = \"two\"\n" + _SUITES,
            [],
            "configs/local.toml:2: tests.workers: expected an integer, got the string 'two'",
            id="wrong-type",
        ),
        pytest.param(
            """
            [[deploy.services]]
            name = "auth"
            command = ["{python}", "svc.py", "--port", "{port}"]

            [[deploy.services]]
            name = "backend"
            command = ["{python}", "svc.py", "--port", "{port}"]
            depends_on = ["auht"]
            """ + _SUITES,
            [],
            "configs/local.toml:8: deploy.services[1].depends_on: unknown service 'auht'",
            id="unknown-depends-on",
        ),
        pytest.param(
            """
            [[deploy.services]]
            name = "a"
            command = ["{python}", "svc.py", "--port", "{port}"]
            depends_on = ["b"]

            [[deploy.services]]
            name = "b"
            command = ["{python}", "svc.py", "--port", "{port}"]
            depends_on = ["a"]
            """ + _SUITES,
            [],
            "configs/local.toml:4: deploy.services[0].depends_on: dependency cycle: a -> b -> a",
            id="cycle",
        ),
        pytest.param(
            _SUITES + _SUITES,
            [],
            "configs/local.toml:6: tests.suites[1].name: duplicate suite name 'Main'",
            id="duplicate-suite",
        ),
        pytest.param(
            _SUITES,
            ["--env", "staging"],
            "configs/staging.toml: no config for env 'staging'",
            id="missing-env-config",
        ),
    ],
)
def test_config_errors_exit_2_and_start_nothing(
    project: Project, toml: str, args: list[str], expected: str
) -> None:
    project.config(toml)
    project.service()
    result = project.run("run", *args)
    assert result.returncode == 2, output(result)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, output(result)
    assert expected in lines[0]
    assert "Traceback" not in result.stdout + result.stderr
    # `loop plan` validates the same way.
    plan = project.run("plan", *args)
    assert plan.returncode == 2, output(plan)
    assert expected in plan.stderr
    assert not project.state.exists()


# --- 4. a hanging test ---------------------------------------------------------------------


def test_hanging_test_times_out_and_other_suite_still_runs(project: Project) -> None:
    project.config("""
        [loop]
        max_iterations = 1

        [deploy]
        target = "none"

        [tests]
        workers = 1
        suite_timeout_s = 2

        [[tests.suites]]
        name = "Hangs"
        paths = ["tests/test_hangs.py"]
        priority = 1

        [[tests.suites]]
        name = "Other"
        paths = ["tests/test_other.py"]
        priority = 2
        """)
    project.write("tests/test_hangs.py", """
        import time

        def test_first():
            pass

        def test_second_fails():
            assert "status" == "ok"

        def test_third():
            pass

        def test_hang():
            time.sleep(600)

        def test_after_1():
            pass

        def test_after_2():
            pass
        """)
    project.write("tests/test_other.py", """
        def test_x():
            pass

        def test_y():
            pass
        """)
    started = time.monotonic()
    result = project.run("run", timeout=120)
    elapsed = time.monotonic() - started
    assert result.returncode == 1, output(result)
    assert elapsed < 60, f"loop took {elapsed:.0f} s with a 2 s suite timeout"

    summary = project.summary()
    figures = suite_figures(summary)
    assert figures["Hangs"] == {
        "status": "timeout", "collected": 6, "executed": 6, "passed": 2, "failed": 1,
        "errors": 3, "skipped": 0, "pass_rate": 33.3,
    }
    assert figures["Other"] == {
        "status": "passed", "collected": 2, "executed": 2, "passed": 2, "failed": 0,
        "errors": 0, "skipped": 0, "pass_rate": 100.0,
    }
    assert summary["totals"]["pending"] == 0
    assert cluster_tests(summary) == {
        "tests/test_hangs.py::test_second_fails",
        "tests/test_hangs.py::test_hang",
        "tests/test_hangs.py::test_after_1",
        "tests/test_hangs.py::test_after_2",
    }
    messages = failure_messages(project)
    assert "status" in messages["tests/test_hangs.py::test_second_fails"]
    for name in ("test_hang", "test_after_1", "test_after_2"):
        assert "timed out after 2 s" in messages[f"tests/test_hangs.py::{name}"], messages
    assert "while this test was running" in messages["tests/test_hangs.py::test_hang"]


def test_suite_timeout_does_not_count_other_suites_collection(project: Project) -> None:
    # workers = 1 runs both suites in one pytest. "Fast" needs 0.8 s of its 2 s; "Heavy"
    # imports slowly (a big SDK). Only when tests run, not at loop's --collect-only pass, to
    # keep this test short.
    project.config("""
        [loop]
        max_iterations = 1

        [deploy]
        target = "none"

        [tests]
        workers = 1
        suite_timeout_s = 2

        [[tests.suites]]
        name = "Fast"
        paths = ["tests/test_fast.py"]
        priority = 1

        [[tests.suites]]
        name = "Heavy"
        paths = ["tests/test_heavy.py"]
        priority = 2
        """)
    project.write("tests/test_fast.py", """
        import time

        def test_1():
            time.sleep(0.4)

        def test_2():
            time.sleep(0.4)
        """)
    project.write("tests/test_heavy.py", """
        import sys
        import time

        if "--collect-only" not in sys.argv:
            time.sleep(1.6)

        def test_heavy():
            pass
        """)
    result = project.run("run", timeout=120)
    summary = project.summary()
    assert {n: f["status"] for n, f in suite_figures(summary).items()} == {
        "Fast": "passed", "Heavy": "passed",
    }, failure_messages(project)
    assert result.returncode == 0, output(result)


# --- 5. pytest crashes mid-suite -----------------------------------------------------------

CRASHING = """
    import os

    def test_1():
        pass

    def test_2():
        pass

    def test_3_crashes():
        os._exit(3)

    def test_4():
        pass

    def test_5():
        pass
    """


def test_pytest_crash_costs_only_the_test_it_ran(project: Project) -> None:
    # workers = 1: both suites share one worker; a new worker runs what the crash left.
    project.config("""
        [loop]
        max_iterations = 1

        [deploy]
        target = "none"

        [tests]
        workers = 1
        suite_timeout_s = 3

        [[tests.suites]]
        name = "Crashes"
        paths = ["tests/test_crash.py"]
        priority = 1

        [[tests.suites]]
        name = "After"
        paths = ["tests/test_after.py"]
        priority = 2
        """)
    project.write("tests/test_crash.py", CRASHING)
    project.write("tests/test_after.py", """
        def test_a():
            pass

        def test_b():
            pass
        """)
    result = project.run("run")
    assert result.returncode == 1, output(result)
    summary = project.summary()
    assert suite_figures(summary) == {
        "Crashes": {"status": "crashed", "collected": 5, "executed": 5, "passed": 4,
                    "failed": 0, "errors": 1, "skipped": 0, "pass_rate": 80.0},
        "After": {"status": "passed", "collected": 2, "executed": 2, "passed": 2,
                  "failed": 0, "errors": 0, "skipped": 0, "pass_rate": 100.0},
    }
    assert cluster_tests(summary) == {"tests/test_crash.py::test_3_crashes"}
    messages = failure_messages(project)
    assert "pytest crashed (exit 3" in messages["tests/test_crash.py::test_3_crashes"]
    assert "while this test was running" in messages["tests/test_crash.py::test_3_crashes"]


def test_undecodable_text_in_a_failure_does_not_crash_loop(project: Project) -> None:
    project.config(one_suite_config('"tests/test_bytes.py"'))
    project.write("tests/test_bytes.py", """
        def test_ok():
            pass

        def test_body():
            body = b"caf\\xe9 au lait".decode("utf-8", "surrogateescape")
            assert body == "ok", "response body: " + body
        """)
    result = project.run("run")
    assert "Traceback" not in result.stderr, output(result)
    assert result.returncode == 1, output(result)
    summary = project.summary()
    assert summary["status"] == "failed"
    assert (summary["totals"]["passed"], summary["totals"]["failed"]) == (1, 1)
    assert "response body: caf" in failure_messages(project)["tests/test_bytes.py::test_body"]


# --- 6. -x / --maxfail in the project's pytest config --------------------------------------

FAILING_SUITE = """
    def test_f1():
        assert False

    def test_f2():
        assert False

    def test_ok():
        pass

    def test_f3():
        assert False
    """


def test_stop_on_first_failure_options_do_not_cut_the_run(project: Project) -> None:
    # The project's pytest.ini says -x and --maxfail=1, and so does [tests] pytest_args:
    # loop must still run every test of every suite.
    project.write("pytest.ini", "[pytest]\naddopts = -x --maxfail=1\n")
    project.config("""
        [loop]
        max_iterations = 1

        [deploy]
        target = "none"

        [tests]
        workers = 1
        suite_timeout_s = 3
        pytest_args = ["-x", "--maxfail=1"]

        [[tests.suites]]
        name = "First"
        paths = ["tests/test_first.py"]
        priority = 1

        [[tests.suites]]
        name = "Second"
        paths = ["tests/test_second.py"]
        priority = 2
        """)
    project.write("tests/test_first.py", FAILING_SUITE)
    project.write("tests/test_second.py", FAILING_SUITE)
    result = project.run("run")
    assert result.returncode == 1, output(result)
    summary = project.summary()
    assert totals(summary) == {
        "collected": 8, "executed": 8, "passed": 2, "failed": 6, "errors": 0,
        "skipped": 0, "pass_rate": 25.0,
    }
    assert {name: f["status"] for name, f in suite_figures(summary).items()} == {
        "First": "failed", "Second": "failed",
    }


# --- 7. what cannot be collected: import errors, missing paths, hangs ----------------------


def test_collection_problems_are_errors_and_other_suites_run(project: Project) -> None:
    # Three suites that cannot be collected: an import error, a missing path, and a module
    # that hangs at import (its own -m expression gives it a collecting pytest of its own,
    # so the test pays the 2 s timeout once). None is dropped; "Fine" runs as usual.
    project.config("""
        [loop]
        max_iterations = 1

        [deploy]
        target = "none"

        [tests]
        workers = 1
        suite_timeout_s = 2

        [[tests.suites]]
        name = "Broken"
        paths = ["tests/test_broken.py"]
        priority = 1

        [[tests.suites]]
        name = "Fine"
        paths = ["tests/test_fine.py"]
        priority = 1

        [[tests.suites]]
        name = "Missing"
        paths = ["tests/test_missing.py"]
        priority = 2

        [[tests.suites]]
        name = "Hangs at import"
        paths = ["tests/test_hangs.py"]
        markers = "not slow"
        priority = 2
        """)
    project.write("tests/test_broken.py", """
        import nonexistent_module

        def test_never():
            pass
        """)
    project.write("tests/test_fine.py", """
        def test_a():
            pass

        def test_b():
            pass
        """)
    project.write("tests/test_hangs.py", """
        import time

        time.sleep(600)  # waits for a server that never answers

        def test_never():
            pass
        """)
    started = time.monotonic()
    result = project.run("run", timeout=120)
    assert result.returncode == 1, output(result)
    assert time.monotonic() - started < 60
    summary = project.summary()
    figures = suite_figures(summary)
    assert figures["Fine"] == {
        "status": "passed", "collected": 2, "executed": 2, "passed": 2, "failed": 0,
        "errors": 0, "skipped": 0, "pass_rate": 100.0,
    }
    for name in ("Broken", "Missing", "Hangs at import"):
        assert figures[name]["status"] != "passed"
        assert {k: figures[name][k] for k in ("collected", "executed", "passed", "errors")} == {
            "collected": 1, "executed": 1, "passed": 0, "errors": 1,
        }, name
    assert totals(summary) == {
        "collected": 5, "executed": 5, "passed": 2, "failed": 0, "errors": 3,
        "skipped": 0, "pass_rate": 40.0,
    }
    labels = " ".join(c["label"] for c in summary["clusters"])
    assert "ModuleNotFoundError" in labels
    messages = failure_messages(project)

    def message_of(file: str) -> str:
        [message] = [m for node, m in messages.items() if node.startswith(file)]
        return message

    assert "No module named 'nonexistent_module'" in message_of("tests/test_broken.py")
    assert "test_missing.py" in message_of("tests/test_missing.py")
    hang = message_of("tests/test_hangs.py")
    assert "2 s" in hang and ("timed out" in hang or "took longer" in hang), hang


# --- 8. deploy failures --------------------------------------------------------------------


def _service_config(auth_mode: str) -> str:
    return f"""
        [loop]
        max_iterations = 2

        [deploy]
        target = "local"

        [[deploy.services]]
        name = "auth"
        command = ["{{python}}", "svc.py", "--port", "{{port}}", "--mode", "{auth_mode}",
                   "--name", "auth"]
        ready_timeout_s = 1

        [[deploy.services]]
        name = "backend"
        command = ["{{python}}", "svc.py", "--port", "{{port}}", "--name", "backend"]
        depends_on = ["auth"]
        ready_timeout_s = 1

        [tests]
        workers = 1
        suite_timeout_s = 3

        [[tests.suites]]
        name = "Main"
        paths = ["tests"]
        """


_RECORDING_TEST = """
    from pathlib import Path

    def test_records_that_it_ran():
        with open("ran.txt", "a") as f:
            f.write("ran\\n")
    """


def test_service_never_ready_exits_3_and_runs_no_tests(project: Project) -> None:
    project.config(_service_config("unhealthy"))
    project.service()
    project.write("tests/test_any.py", _RECORDING_TEST)
    result = project.run("run")
    assert result.returncode == 3, output(result)
    assert not (project.root / "ran.txt").exists()
    summary = project.summary()
    assert summary["status"] == "deploy_failed"
    assert summary["totals"]["executed"] == 0
    deployments = {d["service"]: d for d in summary["deployments"]}
    assert deployments["auth"]["status"] == "failed"
    assert "503" in deployments["auth"]["error"]
    assert deployments["backend"]["status"] == "skipped"
    # One iteration only, though max_iterations = 2: a broken deploy is not retried blindly.
    assert len(project.history()) == 1


@pytest.mark.parametrize(
    ("auth_command", "expected"),
    [
        pytest.param(
            '["{python}", "svc.py", "--port", "{port}", "--mode", "crash", "--name", "auth"]',
            ["exited with code 3", "SERVICE_SECRET is not set"],
            id="exits-3",
        ),
        pytest.param(
            '["./no-such-server", "--port", "{port}"]',
            ["cannot run './no-such-server'", "No such file or directory"],
            id="no-such-program",
        ),
    ],
)
def test_service_that_cannot_start_shows_why(
    project: Project, auth_command: str, expected: list[str]
) -> None:
    config = _service_config("ok").replace(
        '''["{python}", "svc.py", "--port", "{port}", "--mode", "ok",
                   "--name", "auth"]''',
        auth_command,
    )
    assert auth_command in config
    project.config(config)
    project.service()
    project.write("tests/test_any.py", _RECORDING_TEST)
    result = project.run("run")
    assert result.returncode == 3, output(result)
    assert not (project.root / "ran.txt").exists()
    for text in expected:
        assert text in printed(result), output(result)
    summary = project.summary()
    assert summary["status"] == "deploy_failed"
    deployments = {d["service"]: d for d in summary["deployments"]}
    assert deployments["auth"]["status"] == "failed"
    for text in expected:
        assert text in deployments["auth"]["error"]
    assert deployments["backend"]["status"] == "skipped"


def test_a_failed_deploy_leads_with_the_line_that_says_why(project: Project) -> None:
    """A service's closing traceback ends with teardown lines; the one that says why comes
    first in the error, not cut off after them."""
    project.write("svc.py", """
        import sys, traceback

        print("api: starting", flush=True)
        try:
            raise RuntimeError("DATABASE_URL is not set")
        except RuntimeError:
            traceback.print_exc()
        for step in range(12):
            print(f"api: shutting down: closing pool {step}", file=sys.stderr, flush=True)
        sys.exit(1)
    """)
    project.config("""
        [deploy]
        target = "local"

        [[deploy.services]]
        name = "api"
        command = ["{python}", "svc.py", "--port", "{port}"]

        [[tests.suites]]
        name = "A"
        paths = ["tests"]
    """)
    project.write("tests/test_a.py", "def test_a():\n    pass\n")
    result = project.run("run")
    assert result.returncode == 3, output(result)
    (deployment,) = project.summary()["deployments"]
    assert deployment["error"].startswith(
        "service 'api': exited with code 1: RuntimeError: DATABASE_URL is not set (log: "
    ), deployment["error"]
    assert "estimated remaining" not in result.stdout and "False green" not in result.stdout


# --- 9. services and the environment of the tests -----------------------------------------


def test_services_in_dependency_order_and_test_environment(project: Project) -> None:
    project.config("""
        [loop]
        max_iterations = 1

        [deploy]
        target = "local"

        [[deploy.services]]
        name = "backend"
        command = ["{python}", "svc.py", "--port", "{port}", "--name", "backend",
                   "--pidfile", "backend.pid"]
        depends_on = ["auth"]
        ready_timeout_s = 5
        env = { SHOP_FEATURE = "on", PORT = "1" }

        [[deploy.services]]
        name = "auth"
        command = ["{python}", "svc.py", "--port", "{port}", "--name", "auth",
                   "--pidfile", "auth.pid"]
        ready_timeout_s = 5

        [[deploy.services]]
        name = "order-api"
        command = ["{python}", "svc.py", "--port", "{port}", "--name", "order-api",
                   "--pidfile", "order-api.pid"]
        ready_timeout_s = 5

        [tests]
        workers = 1
        suite_timeout_s = 5
        env = { E2E_FLAVOR = "blue", LOOP_ENV = "spoofed" }

        [[tests.suites]]
        name = "Services"
        paths = ["tests/test_services.py"]
        """, env="qa")
    project.service()
    project.write("tests/test_services.py", """
        import json
        import os
        import urllib.request

        def get(url):
            with urllib.request.urlopen(url, timeout=5) as response:
                return json.loads(response.read())

        def test_auth_is_up():
            assert get(os.environ["LOOP_AUTH_URL"] + "/health") == {"ok": True, "name": "auth"}

        def test_backend_knows_auth():
            backend = get(os.environ["LOOP_BACKEND_URL"] + "/env")
            assert backend["LOOP_AUTH_URL"] == os.environ["LOOP_AUTH_URL"]
            assert backend["LOOP_ENV"] == "qa"
            assert backend["LOOP_ITERATION"] == "1"
            # Its own env table, except PORT: loop's real port wins.
            assert backend["SHOP_FEATURE"] == "on"
            assert backend["PORT"] == os.environ["LOOP_BACKEND_URL"].rsplit(":", 1)[1]

        def test_dashed_name():
            assert get(os.environ["LOOP_ORDER_API_URL"] + "/health")["name"] == "order-api"

        def test_loop_variables():
            # [tests] env cannot override loop's own variables.
            assert os.environ["LOOP_ENV"] == "qa"
            assert os.environ["LOOP_ITERATION"] == "1"
            assert os.environ["E2E_FLAVOR"] == "blue"
        """)
    result = project.run("run", "--env", "qa")
    assert result.returncode == 0, output(result)
    summary = project.summary(env="qa")
    assert totals(summary) == {
        "collected": 4, "executed": 4, "passed": 4, "failed": 0, "errors": 0,
        "skipped": 0, "pass_rate": 100.0,
    }
    deployments = {d["service"]: d for d in summary["deployments"]}
    assert set(deployments) == {"auth", "backend", "order-api"}
    for d in deployments.values():
        assert d["status"] == "ready"
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", d["url"])
    assert len({d["url"] for d in deployments.values()}) == 3
    for name in deployments:
        assert (project.iteration_dir(1, env="qa") / "services" / f"{name}.log").is_file()
    # The services are stopped when loop ends.
    for name in deployments:
        pid = read_pid(project.root / f"{name}.pid")
        wait_for(lambda pid=pid: not pid_alive(pid), timeout=10, what=f"{name} to stop")
        assert not port_open(deployments[name]["url"])
    # No state for the default env.
    assert "No iterations yet" in printed(project.run("status"))


# --- 10. the loop: fix hook, next iteration, stall -----------------------------------------

FIX_HOOK = """
    import json
    import os
    from pathlib import Path

    summary_path = Path(os.environ["LOOP_SUMMARY_JSON"])
    summary = json.loads(summary_path.read_text())
    with open("hook_calls.jsonl", "a") as f:
        f.write(json.dumps({
            "iteration_env": os.environ["LOOP_ITERATION"],
            "env": os.environ["LOOP_ENV"],
            "summary_iteration": summary["iteration"],
            "summary_failed": summary["totals"]["failed"],
            "report_exists": Path(os.environ["LOOP_REPORT_MD"]).is_file(),
            "summary_path": str(summary_path),
        }) + "\\n")
    if os.environ.get("HOOK_FIXES") == "1":
        Path("fixed.txt").write_text("yes")
    """

NEEDS_FIX = """
    import os
    from pathlib import Path

    def test_stable():
        with open("iterations.log", "a") as f:
            f.write(os.environ["LOOP_ITERATION"] + "\\n")

    def test_needs_fix():
        assert Path("fixed.txt").exists(), "fixed.txt is missing"
    """


def _loop_config(max_iterations: int, stall: int) -> str:
    return f"""
        [loop]
        max_iterations = {max_iterations}
        stall_iterations = {stall}
        between_iterations = ["{{python}}", "scripts/fix.py"]

        [deploy]
        target = "none"

        [tests]
        workers = 1
        suite_timeout_s = 3

        [[tests.suites]]
        name = "Main"
        paths = ["tests"]
        """


def _hook_calls(project: Project) -> list[dict[str, Any]]:
    path = project.root / "hook_calls.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_hook_fixes_and_second_iteration_passes(project: Project) -> None:
    project.config(_loop_config(max_iterations=5, stall=3))
    project.write("scripts/fix.py", FIX_HOOK)
    project.write("tests/test_app.py", NEEDS_FIX)
    result = project.run("run", env={"HOOK_FIXES": "1"})
    assert result.returncode == 0, output(result)
    history = project.history()
    assert [(h["iteration"], h["status"]) for h in history] == [(1, "failed"), (2, "passed")]
    assert [h["totals"]["pass_rate"] for h in history] == [50.0, 100.0]
    calls = _hook_calls(project)
    assert len(calls) == 1
    call = calls[0]
    assert call["iteration_env"] == "1"
    assert call["env"] == "local"
    assert call["summary_iteration"] == 1
    assert call["summary_failed"] == 1
    assert call["report_exists"] is True
    assert Path(call["summary_path"]) == (project.iteration_dir(1) / "summary.json").resolve()
    assert project.summary(iteration=1)["totals"]["failed"] == 1
    assert (project.root / "iterations.log").read_text().split() == ["1", "2"]


def test_stall_stops_the_loop(project: Project) -> None:
    project.config(_loop_config(max_iterations=5, stall=1))
    project.write("scripts/fix.py", FIX_HOOK)
    project.write("tests/test_app.py", NEEDS_FIX)
    result = project.run("run", env={"HOOK_FIXES": "0"})
    assert result.returncode == 1, output(result)
    history = project.history()
    assert [(h["iteration"], h["status"]) for h in history] == [(1, "failed"), (2, "failed")]
    assert len(_hook_calls(project)) == 1
    assert "no improvement" in printed(result)


def test_failing_hook_stops_the_loop(project: Project) -> None:
    project.config(_loop_config(max_iterations=5, stall=0).replace(
        '["{python}", "scripts/fix.py"]', '["{python}", "-c", "import sys; sys.exit(4)"]'
    ))
    project.write("tests/test_app.py", NEEDS_FIX)
    result = project.run("run")
    assert result.returncode == 1, output(result)
    assert "exited with 4" in printed(result)
    assert [h["status"] for h in project.history()] == ["failed"]


# --- 11. Ctrl-C and --resume ---------------------------------------------------------------


def test_ctrl_c_keeps_results_and_resume_finishes(project: Project) -> None:
    project.config("""
        [loop]
        max_iterations = 1

        [deploy]
        target = "local"

        [[deploy.services]]
        name = "api"
        command = ["{python}", "svc.py", "--port", "{port}", "--pidfile", "api.pid"]
        ready_timeout_s = 5

        [tests]
        workers = 1
        suite_timeout_s = 60

        [[tests.suites]]
        name = "Main"
        paths = ["tests/test_slow.py"]
        """)
    project.service()
    project.write("sleep.txt", "30")
    project.write("tests/test_slow.py", """
        import os
        import time
        from pathlib import Path

        def record(name):
            with open("runs.log", "a") as f:
                f.write(name + "\\n")

        def test_fast_1():
            record("fast_1")

        def test_fast_2():
            record("fast_2")

        def test_fast_3():
            record("fast_3")

        def test_slow():
            Path("slow.pid.tmp").write_text(str(os.getpid()))
            os.replace("slow.pid.tmp", "slow.pid")
            time.sleep(float(Path("sleep.txt").read_text()))
            record("slow")
        """)
    proc = project.popen("run")

    def three_done() -> dict[str, Any] | None:
        if proc.poll() is not None:
            pytest.fail(f"loop run ended early with exit {proc.returncode}")
        status = project.status()
        if status.get("totals") and status["totals"]["passed"] >= 3:
            return status
        return None

    running = wait_for(three_done, timeout=30, interval=0.2, what="3 results in loop status")
    # One run per env at a time: a second would run the same tests into the same files.
    second = project.run("run")
    assert second.returncode == 2, output(second)
    assert "another `loop run`" in second.stderr and "is running env 'local'" in second.stderr
    assert project.run("run", "--resume", "--suite", "Main").returncode == 2
    table = project.run("status")
    assert table.returncode == 0, output(table)
    assert "Main" in table.stdout
    assert running["status"] == "running"
    assert running["totals"]["collected"] == 4
    assert running["totals"]["pending"] == 1
    slow_pid = read_pid(project.root / "slow.pid", timeout=10)
    api_pid = read_pid(project.root / "api.pid")

    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    try:
        stdout, stderr = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
        pytest.fail(f"loop did not stop on SIGINT\n{stdout}\n{stderr}")
    assert proc.returncode == 130, f"{stdout}\n{stderr}"
    assert time.monotonic() - sent < 15

    summary = project.summary()
    assert summary["status"] == "interrupted"
    assert summary["totals"]["passed"] == 3
    assert summary["totals"]["pending"] == 1
    assert summary["totals"]["collected"] == 4
    # Nothing left running: not the test process, not the service.
    wait_for(lambda: not pid_alive(slow_pid), timeout=10, what="pytest to be gone")
    wait_for(lambda: not pid_alive(api_pid), timeout=10, what="the service to be gone")
    deployment = summary["deployments"][0]
    assert not port_open(deployment["url"])
    assert "--resume" in stdout
    assert [(x["name"], x["status"]) for x in summary["suites"]] == [("Main", "interrupted")]
    # Its test without a result is still to run (`--resume`): the suite is not done.
    assert summary["remaining_suites"] == ["Main"]

    # Resume with the slow test made fast: only the test without a result runs again.
    (project.root / "sleep.txt").write_text("0")
    result = project.run("run", "--resume")
    assert result.returncode == 0, output(result)
    summary = project.summary()
    assert summary["iteration"] == 1
    assert summary["status"] == "passed"
    assert totals(summary) == {
        "collected": 4, "executed": 4, "passed": 4, "failed": 0, "errors": 0,
        "skipped": 0, "pass_rate": 100.0,
    }
    runs = (project.root / "runs.log").read_text().splitlines()
    assert sorted(runs) == ["fast_1", "fast_2", "fast_3", "slow"]
    assert [h["status"] for h in project.history()] == ["passed"]
    # The interrupted process's files stay beside the resumed one's.
    pytest_dir = project.iteration_dir(1) / "pytest"
    assert (pytest_dir / "worker-01.junit.xml").exists()
    assert (pytest_dir / "resume1-worker-01.junit.xml").exists()


def test_second_ctrl_c_stops_a_stubborn_test_at_once(project: Project) -> None:
    project.config(one_suite_config('"tests/test_stubborn.py"', timeout=30))
    project.write("tests/test_stubborn.py", """
        import os
        import signal
        import time

        def test_fast():
            pass

        def test_ignores_ctrl_c():
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            with open("stubborn.pid.tmp", "w") as f:
                f.write(str(os.getpid()))
            os.replace("stubborn.pid.tmp", "stubborn.pid")
            time.sleep(30)
        """)
    proc = project.popen("run")
    stubborn = read_pid(project.root / "stubborn.pid")
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    try:
        # pytest would be killed after 5 s anyway: a second Ctrl-C must not wait for that.
        proc.communicate(timeout=3)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        os.kill(stubborn, signal.SIGKILL)
        pytest.fail("loop still waited for the test after a second Ctrl-C")
    assert time.monotonic() - sent < 3
    assert proc.returncode == 130
    wait_for(lambda: not pid_alive(stubborn), timeout=5, what="the stubborn pytest to be gone")
    assert project.summary()["status"] == "interrupted"


def test_ctrl_c_while_waiting_for_a_service(project: Project) -> None:
    project.config("""
        [loop]
        max_iterations = 1

        [deploy]
        target = "local"

        [[deploy.services]]
        name = "api"
        command = ["{python}", "svc.py", "--port", "{port}", "--mode", "unhealthy",
                   "--pidfile", "api.pid"]
        ready_timeout_s = 60

        [tests]
        workers = 1
        suite_timeout_s = 3

        [[tests.suites]]
        name = "Main"
        paths = ["tests"]
        """)
    project.service()
    project.write("tests/test_any.py", _RECORDING_TEST)
    proc = project.popen("run")
    api_pid = read_pid(project.root / "api.pid")
    assert proc.poll() is None
    time.sleep(0.3)  # in the readiness wait now
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 130, f"{stdout}\n{stderr}"
    wait_for(lambda: not pid_alive(api_pid), timeout=10, what="the service to be gone")
    assert not (project.root / "ran.txt").exists()
    summary = project.summary()
    assert summary["status"] == "interrupted"
    assert summary["totals"]["executed"] == 0


# --- history --------------------------------------------------------------------------------


def test_history_never_shows_100_percent_with_a_failure(project: Project) -> None:
    # 2000 of 2001 is 99.95%: rounded naively it would read 100.0 next to a failing test.
    project.config(one_suite_config('"tests/test_many.py"', timeout=30))
    project.write("tests/test_many.py", """
        import pytest

        @pytest.mark.parametrize("i", range(2001))
        def test_item(i):
            assert i != 7
        """)
    result = project.run("run")
    assert result.returncode == 1, output(result)
    summary = project.summary()
    assert (summary["totals"]["passed"], summary["totals"]["failed"]) == (2000, 1)
    assert summary["totals"]["pass_rate"] == 99.9
    [entry] = project.history()
    assert entry["totals"]["pass_rate"] == summary["totals"]["pass_rate"]


# --- 12. --suite -----------------------------------------------------------------------------


def test_suite_glob_runs_only_matching_suites(project: Project) -> None:
    project.config("""
        [loop]
        max_iterations = 1

        [deploy]
        target = "none"

        [tests]
        workers = 1
        suite_timeout_s = 3

        [[tests.suites]]
        name = "API smoke"
        paths = ["tests/test_api_smoke.py"]
        priority = 1

        [[tests.suites]]
        name = "UI"
        paths = ["tests/test_ui.py"]
        priority = 1

        [[tests.suites]]
        name = "API full"
        paths = ["tests/test_api_full.py"]
        priority = 2
        """)
    recording = """
        def test_{name}():
            with open("ran.txt", "a") as f:
                f.write("{name}\\n")
        """
    project.write("tests/test_api_smoke.py", recording.format(name="smoke"))
    project.write("tests/test_api_full.py", recording.format(name="full"))
    project.write("tests/test_ui.py", recording.format(name="ui"))

    nothing = project.run("run", "--suite", "nope*")
    assert nothing.returncode == 2, output(nothing)
    assert "nope*" in nothing.stderr
    assert not (project.state / "runs").exists()

    result = project.run("run", "--suite", "api*")
    # The target is a pass rate of executed tests: both selected suites passed.
    assert result.returncode == 0, output(result)
    assert sorted((project.root / "ran.txt").read_text().split()) == ["full", "smoke"]
    summary = project.summary()
    assert summary["remaining_suites"] == ["UI"]
    figures = suite_figures(summary)
    assert figures["UI"]["executed"] == 0
    assert figures["UI"]["collected"] == 1
    assert figures["API smoke"]["passed"] == 1
    assert figures["API full"]["passed"] == 1
    assert summary["totals"]["collected"] == 3
    assert summary["totals"]["executed"] == 2


# --- 13. reading commands without state ----------------------------------------------------


def test_commands_without_state(project: Project) -> None:
    status = project.run("status")
    assert status.returncode == 0, output(status)
    assert "No iterations yet" in printed(status)
    history = project.run("history")
    assert history.returncode == 0, output(history)
    assert "No iterations yet" in printed(history)
    assert project.status()["iteration"] is None
    summarize = project.run("summarize")
    assert summarize.returncode == 2, output(summarize)
    assert "loop run" in summarize.stderr
    assert "Traceback" not in summarize.stderr
    # Reading never creates state.
    assert not project.state.exists()


# --- 14. suites that overlap: each test runs and counts once -------------------------------


def _recording_tests(prefix: str, count: int) -> str:
    """A test file of `count` passing tests, each appending its name to runs.log."""
    lines = ["def record(name):", "    with open('runs.log', 'a') as f:",
             "        f.write(name + '\\n')", ""]
    for i in range(count):
        lines += [f"def test_{prefix}{i}():", f"    record('{prefix}{i}')", ""]
    return "\n".join(lines)


def test_folder_suite_does_not_rerun_a_nested_suite(project: Project) -> None:
    # workers = 2: each suite gets a pytest of its own. The folder suite's process must not
    # run the nested suite's file as well (the most specific path owns a test).
    project.config("""
        [loop]
        max_iterations = 1

        [deploy]
        target = "none"

        [tests]
        workers = 2
        suite_timeout_s = 5

        [[tests.suites]]
        name = "Everything else"
        paths = ["tests"]
        priority = 1

        [[tests.suites]]
        name = "Checkout"
        paths = ["tests/test_checkout.py"]
        priority = 2
        """)
    project.write("tests/test_checkout.py", _recording_tests("checkout", 1))
    project.write("tests/test_misc.py", _recording_tests("misc", 1))
    result = project.run("run")
    assert result.returncode == 0, output(result)
    summary = project.summary()
    assert {n: f["collected"] for n, f in suite_figures(summary).items()} == {
        "Everything else": 1, "Checkout": 1,
    }
    # Every e2e test runs once per iteration: they create orders, users, ...
    runs = (project.root / "runs.log").read_text().split()
    assert sorted(runs) == ["checkout0", "misc0"]


def test_marker_suite_and_folder_suite_count_each_test_once(project: Project) -> None:
    # The smoke test is in both suites; the one with a -m expression is the more specific.
    project.write("pytest.ini", "[pytest]\nmarkers =\n    smoke: quick checks\n")
    project.config("""
        [loop]
        max_iterations = 1

        [deploy]
        target = "none"

        [tests]
        workers = 1
        suite_timeout_s = 5

        [[tests.suites]]
        name = "Smoke"
        paths = ["tests"]
        markers = "smoke"
        priority = 1

        [[tests.suites]]
        name = "Full"
        paths = ["tests"]
        priority = 2
        """)
    project.write("tests/test_app.py", """
        import pytest

        def record(name):
            with open("runs.log", "a") as f:
                f.write(name + "\\n")

        @pytest.mark.smoke
        def test_login():
            record("login")

        def test_search():
            record("search")

        def test_export():
            record("export")
        """)
    result = project.run("run")
    assert result.returncode == 0, output(result)
    runs = (project.root / "runs.log").read_text().split()
    assert sorted(runs) == ["export", "login", "search"]
    summary = project.summary()
    # The project has 3 tests; the totals must say so.
    assert summary["totals"]["collected"] == 3
    assert summary["totals"]["passed"] == 3
    assert {n: f["collected"] for n, f in suite_figures(summary).items()} == {
        "Smoke": 1, "Full": 2,
    }


def test_a_failure_of_loop_itself_marks_the_iteration_and_exits_4(project: Project) -> None:
    project.config(one_suite_config('"tests/test_ok.py"'))
    project.write("tests/test_ok.py", """
        def test_ok():
            pass
        """)
    (project.state / "runs").mkdir(parents=True)
    (project.state / "runs" / "local").write_text("not a folder")
    result = project.run("run")
    assert result.returncode == 4, output(result)
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: loop could not go on: ")
    assert project.history()[0]["status"] == "error"


def test_collection_errors_of_suites_not_run_do_not_count(project: Project) -> None:
    project.config("""
        [loop]
        max_iterations = 1

        [deploy]
        target = "none"

        [tests]
        workers = 1

        [[tests.suites]]
        name = "Good"
        paths = ["tests/test_good.py"]

        [[tests.suites]]
        name = "Broken"
        paths = ["tests/test_broken.py"]
        """)
    project.write("tests/test_good.py", """
        def test_ok():
            pass
        """)
    project.write("tests/test_broken.py", "import nonexistent_module\n")
    result = project.run("run", "--suite", "Good")
    assert result.returncode == 0, output(result)
    summary = project.summary()
    assert summary["totals"]["executed"] == 1 and summary["totals"]["errors"] == 0
    assert summary["remaining_suites"] == ["Broken"]


def test_a_config_that_is_not_utf8_is_a_config_error(project: Project) -> None:
    (project.root / "configs").mkdir()
    (project.root / "configs" / "local.toml").write_bytes(b"[tests]\nname = '\xff'\n")
    result = project.run("run")
    assert result.returncode == 2, output(result)
    assert "configs/local.toml: not UTF-8 text" in result.stderr


def test_a_module_that_reads_a_service_url_at_import_runs(project: Project) -> None:
    project.config("""
        [loop]
        max_iterations = 1

        [deploy]
        target = "local"

        [[deploy.services]]
        name = "api"
        command = ["{python}", "svc.py", "--port", "{port}"]
        ready_timeout_s = 5

        [tests]
        workers = 1

        [[tests.suites]]
        name = "Main"
        paths = ["tests/test_api.py"]
        """)
    project.service()
    project.write("tests/test_api.py", """
        import os
        import urllib.request

        BASE = os.environ["LOOP_API_URL"]  # read at import, as many e2e suites do

        def test_health():
            with urllib.request.urlopen(BASE + "/health") as response:
                assert response.status == 200
        """)
    result = project.run("run")
    assert result.returncode == 0, output(result)
    summary = project.summary()
    assert (summary["totals"]["passed"], summary["totals"]["errors"]) == (1, 0)


def test_reruns_show_a_flaky_test_and_compare_shows_what_changed(project: Project) -> None:
    project.config("""
        [loop]
        max_iterations = 1

        [deploy]
        target = "none"

        [tests]
        workers = 1
        reruns = 2

        [[tests.suites]]
        name = "Main"
        paths = ["tests/test_flaky.py"]
        """)
    project.write("tests/test_flaky.py", """
        from pathlib import Path

        def test_warmup():
            # Fails the first time it runs in a project, passes after: a flaky test.
            marker = Path("warmed")
            first = not marker.exists()
            marker.write_text("1")
            assert not first, "cold cache"

        def test_steady():
            assert Path("broken").exists() is False
        """)
    first = project.run("run")
    assert first.returncode == 1, output(first)
    summary = project.summary()
    # The rerun passed, but the first failure still counts and the test is listed as flaky.
    assert (summary["totals"]["passed"], summary["totals"]["failed"]) == (1, 1)
    [flaky] = summary["flaky"]
    assert flaky["test"] == "tests/test_flaky.py::test_warmup"
    assert [(h["outcome"], h["attempt"]) for h in flaky["history"]] == [
        ("failed", 1), ("passed", 2),
    ]
    (project.root / "broken").write_text("")
    project.run("run")
    diff = project.json("summarize", "--compare", "1", "--format", "json")["diff"]
    assert diff["compared_to"] == 1
    assert diff["fixed"] == ["tests/test_flaky.py::test_warmup"]
    assert diff["new_failures"] == ["tests/test_flaky.py::test_steady"]
    assert project.run("summarize", "--compare", "9").returncode == 2
