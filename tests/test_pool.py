"""The worker pool, end to end: long-lived pytest workers started while the services deploy,
fed failed-first and longest-first, a crash or a hang costing one test, module fixtures kept
in one worker. Real `loop`, real pytest workers, real local services."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import Project, output, pid_alive, pids_where, wait_for

from deployloop.runner.inventory import INVENTORY_END
from deployloop.runner.process import PLUGIN_DIR

FLIPPABLE = """
    import pathlib

    import pytest

    BROKEN = pathlib.Path(__file__).parent.parent / "broken.txt"

    @pytest.mark.parametrize("i", range({count}))
    def test_item(i):
        broken = BROKEN.read_text().split() if BROKEN.exists() else []
        assert str(i) not in broken, "broken on purpose"
"""


def config(suites: str, *, workers: int = 2, extra: str = "", deploy: str = "") -> str:
    return f"""
        [loop]
        max_iterations = 1

        [deploy]
        target = "{"local" if deploy else "none"}"
        {deploy}

        [tests]
        workers = {workers}
        suite_timeout_s = 60
        {extra}
        {suites}
        """


def suite(name: str, path: str, priority: int = 1, more: str = "") -> str:
    return f"""
        [[tests.suites]]
        name = "{name}"
        paths = ["{path}"]
        priority = {priority}
        {more}
        """


def started_order(project: Project, iteration: int) -> list[str]:
    """Node ids of an iteration in the order their tests started, as the one worker said."""
    events = project.iteration_dir(iteration) / "pytest" / "worker-01.events.jsonl"
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    return [e["nodeid"] for e in lines if e.get("event") == "start"]


def outcomes(project: Project, iteration: int) -> dict[str, Any]:
    """Each test's outcome and message in an iteration ({} while the store is not there)."""
    if not (project.state / "loop.db").exists():
        return {}
    try:
        return _outcomes(project, iteration)
    except sqlite3.OperationalError:  # created, its tables not yet
        return {}


def _outcomes(project: Project, iteration: int) -> dict[str, Any]:
    with sqlite3.connect(project.state / "loop.db") as db:
        rows = db.execute(
            "SELECT t.nodeid, t.outcome, t.message FROM tests t JOIN iterations i"
            " ON i.id = t.iteration_id WHERE i.number = ?",
            (iteration,),
        ).fetchall()
    return {n: (o, m) for n, o, m in rows}


def test_failed_tests_run_first_next_iteration_and_the_terminal_says_so(
    project: Project,
) -> None:
    project.config(
        config(
            suite("Early", "tests/test_early.py", 1) + suite("Late", "tests/test_late.py", 3),
            workers=1,
        )
    )
    project.write("tests/test_early.py", FLIPPABLE.format(count=30))
    project.write("tests/test_late.py", FLIPPABLE.format(count=30).replace("test_item", "test_z"))
    project.write("broken.txt", "17")  # test_late.py's item 17 and test_early.py's item 17
    first = project.run("run")
    assert first.returncode == 1, output(first)
    project.write("broken.txt", "")
    second = project.run("run")
    assert second.returncode == 0, output(second)
    order = started_order(project, 2)
    # Priority 3's failing test runs before every priority 1 test that passed last time.
    assert set(order[:2]) == {
        "tests/test_early.py::test_item[17]",
        "tests/test_late.py::test_z[17]",
    }, order[:5]
    assert "the 2 tests that failed last time are done" in second.stdout, output(second)
    assert "2 pass now" in second.stdout


def test_failed_only_runs_those_and_the_iteration_is_partial(project: Project) -> None:
    project.config(config(suite("Main", "tests/test_main.py"), workers=2))
    project.write("tests/test_main.py", FLIPPABLE.format(count=20))
    project.write("broken.txt", "3 4")
    assert project.run("run").returncode == 1
    project.write("broken.txt", "4")
    result = project.run("run", "--failed-only")
    assert result.returncode == 1, output(result)
    ran = {n: o for n, (o, _) in outcomes(project, 2).items() if o is not None}
    assert ran == {
        "tests/test_main.py::test_item[3]": "passed",
        "tests/test_main.py::test_item[4]": "failed",
    }
    summary = project.summary(2)
    assert summary["partial"] is True
    # The 18 that passed before count as not run, never as passed.
    assert summary["totals"]["passed"] == 1 and summary["totals"]["executed"] == 2
    assert "18 tests not run (--failed-only)" in result.stdout, output(result)
    # Once more: only what still fails runs. The 18 passed in iteration 1 (the partial one
    # did not run them: not news), item 3 passed in iteration 2.
    again = project.run("run", "--failed-only")
    assert again.returncode == 1, output(again)
    ran = {n: o for n, (o, _) in outcomes(project, 3).items() if o is not None}
    assert ran == {"tests/test_main.py::test_item[4]": "failed"}, output(again)


def test_failed_only_that_passes_goes_on_to_a_full_iteration(project: Project) -> None:
    project.config(
        config(suite("Main", "tests/test_main.py"), workers=2).replace(
            "max_iterations = 1", "max_iterations = 3"
        )
    )
    project.write("tests/test_main.py", FLIPPABLE.format(count=10))
    project.write("broken.txt", "3")
    assert project.run("run", "--max-iterations", "1").returncode == 1
    project.write("broken.txt", "")
    result = project.run("run", "--failed-only")
    assert result.returncode == 0, output(result)
    history = project.history()
    assert [h["status"] for h in history] == ["failed", "passed", "passed"], history
    assert project.summary(3)["totals"]["executed"] == 10
    assert project.summary(3)["partial"] is False


def test_a_hung_test_costs_only_itself_with_the_pool(project: Project) -> None:
    project.config(
        config(suite("Main", "tests/test_main.py"), workers=2, extra="test_timeout_s = 2")
    )
    project.write("tests/test_main.py", """
        import time

        import pytest

        @pytest.mark.parametrize("i", range(12))
        def test_item(i):
            if i == 5:
                time.sleep(600)
        """)
    result = project.run("run", timeout=90)
    assert result.returncode == 1, output(result)
    got = outcomes(project, 1)
    assert got.pop("tests/test_main.py::test_item[5]")[0] == "error"
    assert {o for o, _ in got.values()} == {"passed"}, got


def test_module_fixture_is_set_up_once_unless_split_by_tests(project: Project) -> None:
    module = """
        import os
        import pathlib
        import time

        import pytest

        LOG = pathlib.Path(__file__).parent.parent / "setups.log"

        @pytest.fixture(scope="module")
        def server():
            with LOG.open("a") as log:
                log.write(f"{os.getpid()}\\n")
            return "up"

        @pytest.mark.parametrize("i", range(16))
        def test_item(server, i):
            time.sleep(0.1)  # long enough to be worth spreading over the workers
            assert server == "up"

        @pytest.mark.parametrize("i", range(16))
        def test_plain(i):
            pass
        """
    project.write("tests/test_mod.py", module)
    project.config(config(suite("Mod", "tests/test_mod.py"), workers=4))
    result = project.run("run")
    assert result.returncode == 0, output(result)
    assert len((project.root / "setups.log").read_text().split()) == 1
    (project.root / "setups.log").unlink()
    project.config(
        config(suite("Mod", "tests/test_mod.py", more='split = "tests"'), workers=4)
    )
    result = project.run("run")
    assert result.returncode == 0, output(result)
    # Spread over the workers: each worker that runs one of its tests sets it up.
    assert len(set((project.root / "setups.log").read_text().split())) > 1


def _events(project: Project) -> list[dict[str, Any]]:
    """What the processes that collected said: the fork server (its workers are forks of
    it, collected already)."""
    out = []
    for path in sorted((project.iteration_dir(1) / "pytest").glob("server-*.events.jsonl")):
        out += [json.loads(line) for line in path.read_text().splitlines()]
    return out


def test_workers_collect_while_the_services_deploy(project: Project) -> None:
    project.service()
    project.write("slow_start.py", """
        import runpy
        import sys
        import time

        time.sleep(6)  # a service that takes its time to come up
        sys.argv = ["svc.py", *sys.argv[1:]]
        runpy.run_path("svc.py", run_name="__main__")
        """)
    project.write("tests/test_api.py", """
        import json
        import os
        import urllib.request

        def test_health():
            url = os.environ["LOOP_API_URL"] + "/health"
            with urllib.request.urlopen(url) as response:
                assert response.status == 200
        """)
    project.config(
        config(
            suite("Api", "tests/test_api.py"),
            workers=2,
            deploy="""
        [[deploy.services]]
        name = "api"
        command = ["python", "slow_start.py", "--port", "{port}"]
        health_path = "/health"
        ready_timeout_s = 30
        """,
        )
    )
    result = project.run("run")
    assert result.returncode == 0, output(result)
    ready = [e["at"] for e in _events(project) if e.get("event") == "ready"]
    deployed = project.summary(1)["deployments"][0]
    assert ready, "no worker said it had collected"
    with sqlite3.connect(project.state / "loop.db") as db:
        (ready_at,) = db.execute("SELECT ready_at FROM deployments").fetchone()
    # Every worker had collected before the service was ready: no collection after it.
    assert max(ready) < datetime.fromisoformat(ready_at).timestamp(), (ready, ready_at)
    assert deployed["status"] == "ready"


def test_a_module_reading_the_url_at_import_gets_the_deployed_one(project: Project) -> None:
    project.service()
    project.write("tests/test_api.py", """
        import os
        import urllib.request

        URL = os.environ.get("LOOP_API_URL", "http://127.0.0.1:9")  # read at import

        def test_health():
            with urllib.request.urlopen(URL + "/health", timeout=5) as response:
                assert response.status == 200
        """)
    project.config(
        config(
            suite("Api", "tests/test_api.py"),
            workers=2,
            deploy="""
        [[deploy.services]]
        name = "api"
        command = ["python", "svc.py", "--port", "{port}"]
        health_path = "/health"
        """,
        )
    )
    result = project.run("run")
    assert result.returncode == 0, output(result)
    assert "reads LOOP_API_URL when it is imported" in result.stdout, output(result)


def test_forked_workers_capture_their_own_output(project: Project) -> None:
    # Forks share the server's capture files unless each makes its own: a failure would show
    # another test's output, or none.
    project.write("tests/test_out.py", """
        import time

        import pytest

        @pytest.mark.parametrize("i", range(12))
        def test_item(i):
            print(f"marker-{i}-start")
            time.sleep(0.05)
            print(f"marker-{i}-end")
            assert False, f"failing {i}"
        """)
    project.config(config(suite("Out", "tests/test_out.py"), workers=3))
    result = project.run("run")
    assert result.returncode == 1, output(result)
    captured: dict[str, str] = {}
    for path in (project.iteration_dir(1) / "pytest").glob("worker-*.reportlog.jsonl"):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if record.get("when") == "call":
                captured[record["nodeid"]] = "".join(text for _, text in record["sections"])
    assert len(captured) == 12
    for nodeid, text in captured.items():
        i = nodeid.split("[")[1].rstrip("]")
        assert f"marker-{i}-start" in text and f"marker-{i}-end" in text, (nodeid, text)
        others = [j for j in range(12) if str(j) != i and f"marker-{j}-" in text]
        assert not others, (nodeid, others)
    events = list((project.iteration_dir(1) / "pytest").glob("server-*.events.jsonl"))
    assert events, "the workers were not forks of a server"


def test_threads_at_collection_mean_workers_start_one_by_one(project: Project) -> None:
    project.write("tests/conftest.py", """
        import threading
        import time

        # A conftest that starts a thread at import: forking it would copy a process whose
        # other thread does not exist in the copy.
        threading.Thread(target=time.sleep, args=(60,), daemon=True, name="poller").start()
        """)
    project.write("tests/test_main.py", FLIPPABLE.format(count=6))
    project.config(config(suite("Main", "tests/test_main.py"), workers=2))
    result = project.run("run")
    assert result.returncode == 0, output(result)
    assert "start one by one: threads running after collection: poller" in result.stdout
    assert project.summary()["totals"]["passed"] == 6


def test_fork_workers_false_starts_each_worker(project: Project) -> None:
    project.write("tests/test_main.py", FLIPPABLE.format(count=6))
    project.config(
        config(suite("Main", "tests/test_main.py"), workers=2, extra="fork_workers = false")
    )
    result = project.run("run")
    assert result.returncode == 0, output(result)
    pytest_dir = project.iteration_dir(1) / "pytest"
    assert not list(pytest_dir.glob("server-*")), list(pytest_dir.iterdir())
    assert len(list(pytest_dir.glob("worker-*.log"))) == 2


def test_the_plan_reads_the_fork_servers_collection(project: Project) -> None:
    # Two suites in another order than their priorities: the server collects them in run
    # order, the plan in config order; the same files all the same.
    # Thousands of tests: the plan must read the whole inventory, not what the server had
    # written of it when it said it was ready (this failed when "ready" came first).
    project.write("tests/test_a.py", FLIPPABLE.format(count=2000))
    project.write("tests/test_b.py", FLIPPABLE.format(count=1500).replace("test_item", "test_b"))
    project.config(
        config(suite("B", "tests/test_b.py", 2) + suite("A", "tests/test_a.py", 1), workers=2)
    )
    result = project.run("run")
    assert result.returncode == 0, output(result)
    assert "3500 tests in 2 suites" in result.stdout, output(result)
    pytest_dir = project.iteration_dir(1) / "pytest"
    assert not list(pytest_dir.glob("collect-*")), sorted(p.name for p in pytest_dir.iterdir())
    figures = {s["name"]: s["collected"] for s in project.summary()["suites"]}
    assert figures == {"A": 2000, "B": 1500}
    # A suite the workers do not run (serial) is collected by the plan on its own.
    project.config(
        config(
            suite("B", "tests/test_b.py", 2, more="serial = true")
            + suite("A", "tests/test_a.py", 1),
            workers=2,
        )
    )
    result = project.run("run")
    assert result.returncode == 0, output(result)
    assert list((project.iteration_dir(2) / "pytest").glob("collect-*"))
    assert {s["name"]: s["passed"] for s in project.summary()["suites"]} == {"A": 2000, "B": 1500}


def test_the_plan_is_shown_while_pytest_ends_and_loop_waits_for_that_end(
    project: Project,
) -> None:
    # pytest takes a while to end once it has listed its tests (a second after 10,000): here
    # its clean-up takes 3 s, then leaves a mark. The plan's table is out before the mark
    # (the inventory was read as soon as it was whole), and `loop plan` ends after it: pytest
    # was waited for, not stopped, so the project's own clean-up ran.
    project.write(
        "conftest.py",
        """
        import pathlib
        import time

        def pytest_unconfigure(config):
            time.sleep(3)
            (pathlib.Path(__file__).parent / "ended.txt").write_text("ok")
        """,
    )
    project.write("tests/test_a.py", FLIPPABLE.format(count=5))
    project.config(config(suite("A", "tests/test_a.py")))
    proc = project.popen("plan", env={"PYTHONUNBUFFERED": "1"})
    assert proc.stdout is not None
    shown_before_the_end = None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "5 tests in 1 suite" in line:
            shown_before_the_end = not (project.root / "ended.txt").exists()
            break
    proc.wait(60)
    assert proc.returncode == 0, "".join(lines) + proc.stdout.read()
    assert shown_before_the_end is True, "".join(lines)
    assert (project.root / "ended.txt").read_text() == "ok"


def test_the_plugin_and_loop_agree_on_the_inventorys_last_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The plugin runs in the tests' interpreter, by its top-level name; loop cannot import it.
    monkeypatch.syspath_prepend(str(PLUGIN_DIR))
    import deployloop_plugin

    assert deployloop_plugin.INVENTORY_END == INVENTORY_END + "\n"


def _server_pids(project: Project) -> list[int]:
    """The fork servers of a run in `project`, by their command line."""

    def is_server(proc: Path) -> bool:
        cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        return any(part.startswith(b"--loop-zygote") for part in cmdline) and os.readlink(
            proc / "cwd"
        ) == str(project.root)

    return pids_where(is_server)


def test_a_fork_server_killed_mid_run_costs_only_the_tests_running(project: Project) -> None:
    # The OOM killer, or a test that kills its process group: loop goes on with a new
    # server (it used to stop with "read of closed file", exit 4).
    project.write("tests/test_slow.py", """
        import time

        import pytest

        @pytest.mark.parametrize("i", range(40))
        def test_item(i):
            time.sleep(0.1)
        """)
    project.config(config(suite("Slow", "tests/test_slow.py"), workers=2))
    proc = project.popen("run")
    first = wait_for(lambda: _server_pids(project), what="a fork server")
    wait_for(
        lambda: list((project.iteration_dir(1) / "pytest").glob("worker-*.reportlog.jsonl")),
        what="workers",
    )
    time.sleep(1.0)
    try:
        os.kill(first[0], signal.SIGKILL)
    except ProcessLookupError:
        pass  # a fast machine finished first: nothing to recover from, the rest still holds
    out, err = proc.communicate(timeout=90)
    assert proc.returncode in (0, 1), out + err
    assert "could not go on" not in out + err
    got = outcomes(project, 1)
    assert len(got) == 40 and all(o is not None for o, _ in got.values()), got
    errors = [n for n, (o, _) in got.items() if o == "error"]
    assert len(errors) <= 2, errors  # at most the test each worker was running


def test_a_suite_waiting_behind_others_does_not_time_out(project: Project) -> None:
    # The queue mixes suites: the time a suite's tests wait behind another suite's is not
    # its own (this suite timed out with 5 tests never started).
    project.write("tests/test_a.py", """
        import time

        import pytest

        @pytest.mark.parametrize("i", range(10))
        def test_a(i):
            time.sleep(0.25)
        """)
    project.write("tests/test_b.py", """
        import pathlib
        import time

        import pytest

        def test_flip():
            time.sleep(1.0)
            assert not (pathlib.Path(__file__).parent.parent / "broken").exists()

        @pytest.mark.parametrize("i", range(5))
        def test_quick(i):
            pass
        """)
    project.config(
        config(suite("A", "tests/test_a.py", 1) + suite("B", "tests/test_b.py", 2), workers=1)
        .replace("suite_timeout_s = 60", "suite_timeout_s = 3")
    )
    project.write("broken", "")
    assert project.run("run").returncode == 1
    (project.root / "broken").unlink()
    result = project.run("run")
    assert result.returncode == 0, output(result)
    assert project.summary()["totals"]["passed"] == 16


def test_a_forked_worker_stopped_for_a_timeout_takes_its_tests_children(
    project: Project,
) -> None:
    project.write("tests/test_hang.py", """
        import pathlib
        import subprocess
        import time

        PIDS = pathlib.Path(__file__).parent.parent / "child.pid"

        def test_hang():
            child = subprocess.Popen(["sleep", "300"])
            PIDS.write_text(str(child.pid))
            time.sleep(300)
        """)
    project.config(
        config(suite("Hang", "tests/test_hang.py"), workers=1, extra="test_timeout_s = 2")
    )
    result = project.run("run", timeout=90)
    assert result.returncode == 1, output(result)
    child = int((project.root / "child.pid").read_text())
    assert not pid_alive(child), "the hung test's child outlived its worker"


def test_resume_leaves_no_worker_behind(project: Project) -> None:
    project.write("tests/test_slow.py", """
        import time

        import pytest

        @pytest.mark.parametrize("i", range(30))
        def test_item(i):
            time.sleep(0.2)
        """)
    project.config(config(suite("Slow", "tests/test_slow.py"), workers=2))
    proc = project.popen("run")
    wait_for(
        lambda: sum(o is not None for o, _ in outcomes(project, 1).values()) >= 4,
        what="some results",
    )
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    result = project.run("run", "--resume")
    assert result.returncode == 0, output(result)
    pytest_dir = project.iteration_dir(1) / "pytest"
    assert not list(pytest_dir.glob("*.fifo")), sorted(p.name for p in pytest_dir.iterdir())
    assert not _server_pids(project)
