"""First contact: loop on a project whose test interpreter is not loop's own.

The tests' interpreter here is a separate virtual environment that has pytest and what pytest
needs, and nothing else: no deployloop, no pytest-reportlog. loop must bring its own plugin.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Project, output

# What pytest imports; linked into the foreign venv from loop's own.
PYTEST_PACKAGES = ("pytest", "_pytest", "pluggy", "iniconfig", "packaging", "pygments", "py.py")


def make_venv(root: Path, with_pytest: bool) -> Path:
    done = subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(root)],
        capture_output=True, text=True, check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot create a virtual environment here: {done.stderr.strip()}")
    python = root / "bin" / "python"
    if with_pytest:
        (site,) = root.glob("lib/python*/site-packages")
        ours = Path(pytest.__file__).parents[1]
        for name in PYTEST_PACKAGES:
            for found in [ours / name, *ours.glob(f"{name}-*.dist-info")]:
                if found.exists():
                    (site / found.name).symlink_to(found)
    return python


@pytest.fixture(scope="module")
def foreign_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    python = make_venv(tmp_path_factory.mktemp("foreign") / "venv", with_pytest=True)
    check = subprocess.run(
        [str(python), "-c", "import pytest, sys\n"
         "try:\n import pytest_reportlog\nexcept ImportError: pass\nelse: sys.exit(3)\n"
         "try:\n import deployloop\nexcept ImportError: sys.exit(0)\nsys.exit(4)"],
        capture_output=True, text=True, check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    return python


CONFIG = """
[loop]
max_iterations = 1

[deploy]
target = "none"

[tests]
python = "{python}"
workers = 2
{extra}

[[tests.suites]]
name = "Main"
paths = ["tests"]
"""


def test_an_interpreter_without_loop_or_reportlog_runs_green(
    project: Project, foreign_python: Path
) -> None:
    project.config(CONFIG.format(python=foreign_python, extra=""))
    project.write("tests/test_a.py", """
        import pytest

        @pytest.mark.parametrize("n", range(6))
        def test_n(n):
            assert n >= 0
        """)
    plan = project.run("plan")
    assert plan.returncode == 0, output(plan)
    result = project.run("run")
    assert result.returncode == 0, output(result)
    totals = project.summary()["totals"]
    assert (totals["collected"], totals["passed"], totals["errors"]) == (6, 6, 0)


def test_plan_and_run_stop_at_an_interpreter_without_pytest(
    project: Project, tmp_path: Path
) -> None:
    bare = make_venv(tmp_path / "bare", with_pytest=False)
    project.config(CONFIG.format(python=bare, extra=""))
    project.write("tests/test_a.py", "def test_a(): pass\n")
    for command in ("plan", "run"):
        result = project.run(command)
        assert result.returncode == 2, output(result)
        (line,) = result.stderr.strip().splitlines()
        assert "has no pytest" in line and "pip install pytest" in line, line
    assert not (project.state / "loop.db").exists()


def test_pytest_refusing_an_option_shows_its_own_message(
    project: Project, foreign_python: Path
) -> None:
    project.config(CONFIG.format(python=foreign_python, extra='pytest_args = ["--bogus"]'))
    project.write("tests/test_a.py", "def test_a(): pass\n")
    result = project.run("run")
    assert result.returncode == 2, output(result)  # a config error, found by pytest
    summary = project.summary()
    assert summary["status"] == "setup_failed"
    assert summary["left_out"].startswith("setup failed: unrecognized arguments: --bogus")
    labels = " ".join(c["label"] for c in summary["clusters"])
    assert "unrecognized arguments: --bogus" in labels, labels
    assert "usage:" not in labels
    report = (project.iteration_dir(1) / "report.md").read_text()
    assert "unrecognized arguments: --bogus (pytest exit 4)" in report.split("\n## ")[0]


def test_an_iteration_pytest_could_not_start_leaves_no_figures_behind(
    project: Project, foreign_python: Path
) -> None:
    """Not a result: a usage error between two passing iterations makes no test fixed,
    flaky or new, and no point of the trend."""
    project.config(CONFIG.format(python=foreign_python, extra=""))
    project.write("tests/test_a.py", "def test_a(): pass\ndef test_b(): pass\n")
    assert project.run("run").returncode == 0
    project.config(CONFIG.format(python=foreign_python, extra='pytest_args = ["--bogus"]'))
    second = project.run("run")
    assert second.returncode == 2, output(second)
    assert "Stopped: pytest could not run a test (exit 2)" in second.stdout
    assert project.summary(2)["diff"] is None and project.summary(2)["integrity"] == []
    project.config(CONFIG.format(python=foreign_python, extra=""))
    third = project.run("run")
    assert third.returncode == 0, output(third)
    summary = project.summary(3)
    assert summary["diff"]["compared_to"] == 1
    assert (summary["diff"]["fixed"], summary["diff"]["new_failures"]) == ([], [])
    assert summary["flaky"] == [] and summary["broken"] == [] and summary["integrity"] == []
    assert [p["iteration"] for p in summary["trend"]["pass_rates"]] == [1, 3]
    history = project.json("history", "--format", "json")
    assert [h["left_out"] is not None for h in history] == [False, True, False]


def test_a_hanging_test_is_named_while_it_hangs(project: Project) -> None:
    from conftest import read_pid, wait_for

    project.config(CONFIG.format(python="{python}", extra="").replace(
        'python = "{python}"\n', ""))
    project.write("tests/test_a.py", """
        import os, time
        from pathlib import Path

        def test_quick(): pass

        def test_hangs():
            Path("hang.pid").write_text(str(os.getpid()))
            while Path("hang.txt").exists():
                time.sleep(0.1)
        """)
    project.write("hang.txt", "")
    proc = project.popen("run")
    read_pid(project.root / "hang.pid")

    def named() -> dict[str, object] | None:
        status = project.status()
        running = status.get("running") or []
        return status if running and running[0]["running_s"] >= 1 else None

    status = wait_for(named, what="the hanging test in loop status")
    (test,) = status["running"]
    assert test["test"] == "tests/test_a.py::test_hangs" and test["suite"] == "Main"
    table = project.run("status")
    assert "running tests/test_a.py::test_hangs (Main) for" in table.stdout, output(table)
    (project.root / "hang.txt").unlink()
    proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert project.status()["running"] == []


def test_the_log_display_names_a_test_running_for_a_minute() -> None:
    import io
    import time

    from rich.console import Console

    from deployloop.runner.display import LineDisplay
    from deployloop.runner.execute import RunState

    out = io.StringIO()
    display = LineDisplay(Console(file=out, width=200))
    state = RunState({})
    state.running["01-main"] = ("tests/test_a.py::test_slow", time.monotonic() - 61)
    display.refresh(state)
    display.refresh(state)  # once per threshold, not once per poll
    assert out.getvalue().count("running tests/test_a.py::test_slow for 1m 01s") == 1


def test_a_fresh_folder_goes_init_plan_run(project: Project) -> None:
    status = project.run("status")
    assert status.returncode == 0 and "loop init" in status.stdout, output(status)
    run = project.run("run")
    assert run.returncode == 2 and "`loop init --env local`" in run.stderr, output(run)

    project.write("tests/test_priority1_login.py", "def test_login(): pass\n")
    project.write("tests/test_priority2_orders.py", """
        def test_list(): pass
        def test_create(): assert 1 + 1 == 3
        """)
    init = project.run("init")
    assert init.returncode == 0, output(init)
    assert "wrote configs/local.toml: 2 suites" in init.stdout
    assert "Priority 1 Login" in init.stdout and "next: `loop plan --env local`" in init.stdout
    again = project.run("init")
    assert again.returncode == 2 and "--force" in again.stderr, output(again)

    plan = project.run("plan")
    assert plan.returncode == 0, output(plan)
    result = project.run("run", "--max-iterations", "1")
    assert result.returncode == 1, output(result)
    suites = {s["name"]: (s["priority"], s["passed"], s["failed"]) for s in
              project.summary()["suites"]}
    assert suites == {"Priority 1 Login": (1, 1, 0), "Priority 2 Orders": (2, 1, 1)}


FIXED_PORT_SUITE = """
    import socket, time
    import pytest

    @pytest.fixture(scope="session")
    def server():
        # A fixed port, as many real suites have: two processes at once cannot both bind it.
        sock = socket.socket()
        sock.bind(("127.0.0.1", {port}))
        sock.listen()
        yield sock
        sock.close()

    @pytest.mark.parametrize("n", range(12))
    def test_uses_server(server, n):
        time.sleep(0.05)
"""


def test_a_serial_fixed_port_suite_passes_with_four_workers(project: Project) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    project.config("""
        [loop]
        max_iterations = 1

        [deploy]
        target = "none"

        [tests]
        workers = 4

        [[tests.suites]]
        name = "Fixed port"
        paths = ["tests/test_fixed.py"]
        serial = true

        [[tests.suites]]
        name = "Also fixed port"
        paths = ["tests/test_fixed_too.py"]
        serial = true
        """)
    project.write("tests/test_fixed.py", FIXED_PORT_SUITE.format(port=port))
    project.write("tests/test_fixed_too.py", FIXED_PORT_SUITE.format(port=port))
    result = project.run("run")
    assert result.returncode == 0, output(result)
    totals = project.summary()["totals"]
    assert (totals["passed"], totals["errors"]) == (24, 0)


def test_a_hung_test_is_stopped_by_test_timeout_and_the_rest_runs(project: Project) -> None:
    project.config("""
        [loop]
        max_iterations = 1

        [deploy]
        target = "none"

        [tests]
        workers = 1
        test_timeout_s = 2

        [[tests.suites]]
        name = "Main"
        paths = ["tests"]
        """)
    project.write("tests/test_a.py", """
        import time

        def test_1(): pass
        def test_2_hangs(): time.sleep(300)
        def test_3(): pass
        def test_4(): pass
        """)
    result = project.run("run", timeout=120)
    assert result.returncode == 1, output(result)
    summary = project.summary()
    assert {k: summary["totals"][k] for k in ("passed", "errors")} == {"passed": 3, "errors": 1}
    (cluster,) = summary["clusters"]
    assert "test timed out after 2 s (tests.test_timeout_s)" in cluster["label"]
    assert cluster["tests"] == ["tests/test_a.py::test_2_hangs"]


def test_piped_output_keeps_ids_paths_and_dates_whole(project: Project) -> None:
    long_name = "test_" + "a_very_long_descriptive_name_" * 6 + "end"
    project.config(CONFIG.format(python="{python}", extra="").replace(
        'python = "{python}"\n', ""))
    project.write("tests/test_long.py", f"def {long_name}(): assert 0, 'HTTP 500 from /orders'\n")
    assert project.run("run").returncode == 1
    nodeid = f"tests/test_long.py::{long_name}"
    for command in (["summarize"], ["history"], ["status"]):
        result = project.run(*command, env={"COLUMNS": "60"})
        assert result.returncode == 0, output(result)
        assert "\x1b[" not in result.stdout  # no styles when piped
        if command == ["summarize"]:
            assert any(nodeid in line for line in result.stdout.splitlines()), result.stdout
        if command == ["history"]:
            (row,) = [ln for ln in result.stdout.splitlines() if ln.strip().startswith("1 ")]
            assert "failed" in row and "0.0%" in row
            assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d", row), row


def test_tests_that_read_a_service_url_at_import_are_collected_once_it_exists(
    project: Project,
) -> None:
    """A conftest (the whole suite fails to collect) or a test module (one file does) that
    reads LOOP_API_URL at import: before the deploy there is no URL; loop collects those
    suites again once the service is up, and their tests run."""
    project.service()
    project.config("""
        [loop]
        max_iterations = 1

        [deploy]
        target = "local"

        [[deploy.services]]
        name = "api"
        command = ["{python}", "svc.py", "--port", "{port}"]

        [[tests.suites]]
        name = "Conftest reads it"
        paths = ["a"]

        [[tests.suites]]
        name = "Module reads it"
        paths = ["b"]
    """)
    project.write("a/conftest.py", "import os\nAPI = os.environ['LOOP_API_URL']\n")
    project.write("a/test_a.py", "def test_a():\n    pass\n")
    project.write("b/test_b.py", "import os\nAPI = os.environ['LOOP_API_URL']\n\n"
                                 "def test_b():\n    assert API.startswith('http://')\n")
    result = project.run("run")
    assert result.returncode == 0, output(result)
    assert "collecting 2 suites again, with the services' URLs" in result.stdout
    totals = project.summary()["totals"]
    assert (totals["collected"], totals["passed"], totals["errors"]) == (2, 2, 0)
