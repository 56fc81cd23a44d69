"""Nothing lost, nothing left running, nothing leaked: faults and bad input, end to end.

Each test runs the real `loop` command on a project in tmp_path and breaks something the way
it breaks in real use: `kill -9`, a damaged database, a deleted state dir, a full disk, a
service that dies mid-run, secrets in failure messages, escape sequences in output.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import LOOP, Project, loop_env, output, pid_alive, pids_where, read_pid, wait_for

SERVICE_CONFIG = """
[loop]
max_iterations = 1

[deploy]
target = "local"

[[deploy.services]]
name = "api"
command = ["{python}", "svc.py", "--port", "{port}", "--pidfile", "api.pid"]
ready_timeout_s = 10

[tests]
workers = 1
suite_timeout_s = 120

[[tests.suites]]
name = "Main"
paths = ["tests"]
"""

# Three quick tests, then one that hangs while `hang.txt` exists.
HANGING_SUITE = """
import os
import time
from pathlib import Path
from typing import Any

def test_a(): pass
def test_b(): pass
def test_c(): pass

def test_hangs():
    Path("test.pid.tmp").write_text(str(os.getpid()))
    os.replace("test.pid.tmp", "test.pid")
    while Path("hang.txt").exists():
        time.sleep(0.1)
"""


def hanging_project(project: Project) -> None:
    project.config(SERVICE_CONFIG)
    project.service()
    project.write("tests/test_main.py", HANGING_SUITE)
    project.write("hang.txt", "")


def watchdog_pids(loop_pid: int) -> list[int]:
    """loop's watchdog: its child running deployloop/watchdog.py."""

    def is_watchdog(proc: Path) -> bool:
        ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        return ppid == loop_pid and b"watchdog.py" in (proc / "cmdline").read_bytes()

    return pids_where(is_watchdog)


def start_and_wait_for_hang(project: Project) -> tuple[subprocess.Popen[str], int, int]:
    proc = project.popen("run")
    test_pid = read_pid(project.root / "test.pid")
    api_pid = read_pid(project.root / "api.pid")
    wait_for(
        lambda: project.status().get("totals", {}).get("passed") == 3,
        what="three results recorded",
    )
    return proc, test_pid, api_pid


def test_kill_9_stops_services_and_pytest_and_next_command_marks_crashed(
    project: Project,
) -> None:
    hanging_project(project)
    proc, test_pid, api_pid = start_and_wait_for_hang(project)

    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # The watchdog stops what loop started, though loop had no chance to.
    wait_for(lambda: not pid_alive(test_pid), timeout=15, what="pytest to be stopped")
    wait_for(lambda: not pid_alive(api_pid), timeout=15, what="the service to be stopped")

    status = project.run("status", "--format", "json")
    assert status.returncode == 0, output(status)
    assert "marked 'crashed'" in status.stderr
    summary = project.summary()
    assert summary["status"] == "crashed"
    assert summary["totals"]["passed"] == 3
    assert summary["totals"]["pending"] == 1
    assert [h["status"] for h in project.history()] == ["crashed"]

    # --resume finishes the crashed iteration: only the test without a result runs.
    (project.root / "hang.txt").unlink()
    resumed = project.run("run", "--resume")
    assert resumed.returncode == 0, output(resumed)
    summary = project.summary()
    assert summary["iteration"] == 1 and summary["status"] == "passed"
    assert summary["totals"]["passed"] == 4


def test_what_a_killed_watchdog_left_is_reaped_by_the_next_command(project: Project) -> None:
    hanging_project(project)
    proc, test_pid, api_pid = start_and_wait_for_hang(project)
    watchdogs = watchdog_pids(proc.pid)
    assert len(watchdogs) == 1
    # Both at once, as `kill -9` of a whole process tree or an OOM kill of both would.
    os.kill(watchdogs[0], signal.SIGKILL)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(0.5)
    assert pid_alive(test_pid) and pid_alive(api_pid)  # orphans, for now
    assert list((project.state / "procs" / "local").glob("*.json"))

    history = project.run("history")
    assert history.returncode == 0, output(history)
    # The service, the fork server and its worker (a process group of its own).
    assert "stopped 3 processes" in history.stderr, history.stderr
    wait_for(lambda: not pid_alive(test_pid), timeout=10, what="pytest to be reaped")
    wait_for(lambda: not pid_alive(api_pid), timeout=10, what="the service to be reaped")
    assert not list((project.state / "procs" / "local").glob("*.json"))
    assert project.summary()["status"] == "crashed"


def test_a_recycled_pid_in_a_stale_record_is_left_alone(project: Project) -> None:
    import json

    def entry(pid: int, started: str | None) -> dict[str, Any]:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return {"target": pid, "stop": 15, "started": started, "boot": boot, "program": "svc"}

    def start_time(pid: int) -> str:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]

    bystander = subprocess.Popen(["sleep", "60"], start_new_session=True)
    orphan = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        record = project.state / "procs" / "local" / "999999.json"
        record.parent.mkdir(parents=True)
        # A record left by a loop that is gone (its owner's pid no longer runs). It names
        # the bystander's group with another start time (the pid was reused: not ours), and
        # the orphan with its own (ours, left running).
        record.write_text(json.dumps({
            "owner": entry(999999, "1"),
            "children": [entry(bystander.pid, "1"), entry(orphan.pid, start_time(orphan.pid))],
        }))
        project.config(SERVICE_CONFIG)
        project.service()
        project.write("tests/test_main.py", "def test_a(): pass\n")
        result = project.run("run")
        assert result.returncode == 0, output(result)
        assert bystander.poll() is None
        assert orphan.wait(timeout=10) is not None  # the record was read: ours was reaped
        assert not record.exists()
    finally:
        for proc in (bystander, orphan):
            proc.kill()
            proc.wait()


def test_state_is_private_to_the_user(project: Project) -> None:
    project.config(SERVICE_CONFIG)
    project.service()
    project.write("tests/test_main.py", "def test_a(): pass\n")
    result = project.run("run")
    assert result.returncode == 0, output(result)

    def mode(path: Path) -> int:
        return stat.S_IMODE(path.stat().st_mode)

    assert mode(project.state) == 0o700
    files = [p for p in project.state.rglob("*") if p.is_file()]
    assert any(p.name == "loop.db" for p in files) and any(p.suffix == ".log" for p in files)
    loose = {str(p.relative_to(project.state)): oct(mode(p)) for p in files if mode(p) & 0o077}
    assert loose == {}
    dirs = [p for p in project.state.rglob("*") if p.is_dir()]
    assert all(mode(d) & 0o077 == 0 for d in dirs)
    # The tests' own files keep the user's umask: loop's privacy is loop's.
    project.write("tests/test_main.py", """
        import os, stat
        def test_umask(tmp_path):
            p = tmp_path / "f"
            p.write_text("x")
            assert stat.S_IMODE(p.stat().st_mode) == 0o644
        """)
    result = project.run("run")
    assert result.returncode == 0, output(result)


def test_an_older_state_dir_is_made_private(project: Project) -> None:
    project.config(SERVICE_CONFIG)
    project.service()
    project.write("tests/test_main.py", "def test_a(): pass\n")
    assert project.run("run").returncode == 0
    project.state.chmod(0o755)
    (project.state / "loop.db").chmod(0o644)
    assert project.run("run").returncode == 0
    assert stat.S_IMODE(project.state.stat().st_mode) == 0o700
    assert stat.S_IMODE((project.state / "loop.db").stat().st_mode) == 0o600


SECRET_API_KEY = "sk-live-9d8c7b6a5f"
SECRET_TOKEN = "ghp_T0k3nFr0mTheEnv1r0nment"
SECRET_DB = "db-pa55word-of-the-service"


def test_secrets_never_reach_anything_loop_writes(project: Project) -> None:
    project.config(f"""
        [loop]
        max_iterations = 1

        [deploy]
        target = "local"

        [[deploy.services]]
        name = "api"
        command = ["{{python}}", "svc.py", "--port", "{{port}}"]
        env = {{ DB_PASSWORD = "{SECRET_DB}" }}

        [tests]
        workers = 1
        pytest_args = ["-s"]
        env = {{ API_KEY = "{SECRET_API_KEY}" }}

        [[tests.suites]]
        name = "Main"
        paths = ["tests"]
        """)
    project.service()
    project.write("tests/test_main.py", """
        import json, os, urllib.request

        def service_env():
            url = os.environ["LOOP_API_URL"] + "/env"
            return json.load(urllib.request.urlopen(url))

        def test_key_in_assertion():
            assert os.environ["API_KEY"] == "expected"

        def test_token_in_header():
            headers = {"Authorization": "Bearer " + os.environ["GH_TOKEN"]}
            assert headers["Authorization"] == "Bearer other"

        def test_service_env_dumped():
            print("service says", service_env()["DB_PASSWORD"])  # -s: straight to the log
            assert service_env()["DB_PASSWORD"] == "nope"

        def test_fine():
            pass

        import pytest

        @pytest.mark.parametrize("token", [os.environ["GH_TOKEN"]])
        def test_token_as_parameter(token):
            assert token
        """)
    result = project.run("run", env={"GH_TOKEN": SECRET_TOKEN})
    assert result.returncode == 1, output(result)

    leaks = []
    everything = [("stdout", result.stdout), ("stderr", result.stderr)]
    for path in project.state.rglob("*"):
        if path.is_file():
            everything.append((str(path.relative_to(project.root)), path.read_bytes().decode(
                "utf-8", "replace")))
    for where, text in everything:
        for secret in (SECRET_API_KEY, SECRET_TOKEN, SECRET_DB):
            if secret in text:
                leaks.append(f"{secret} in {where}")
    assert leaks == []
    conn = sqlite3.connect(project.state / "loop.db")
    stored = " ".join(
        f"{m} {r}" for m, r in conn.execute("SELECT message, longrepr FROM tests")
    )
    conn.close()
    for name in ("API_KEY", "GH_TOKEN", "DB_PASSWORD"):
        assert f"[redacted:{name}]" in stored
    summary = project.summary()
    report = (project.iteration_dir(1) / "report.md").read_text()
    assert "[redacted:" in report
    assert (summary["totals"]["passed"], summary["totals"]["failed"]) == (2, 3)


def test_escape_sequences_from_tests_never_reach_the_terminal_or_report(
    project: Project,
) -> None:
    project.config(SERVICE_CONFIG)
    project.service()
    project.write("tests/test_main.py", r'''
        def test_evil():
            raise AssertionError("\x1b]0;pwned\x07\x1b[2J\x00 rm -rf [/red]")
        ''')
    result = project.run("run")
    assert result.returncode == 1, output(result)
    assert "\x1b" not in result.stdout and "\x00" not in result.stdout
    assert "\\x1b]0;pwned" in result.stdout
    report = (project.iteration_dir(1) / "report.md").read_text()
    assert "\x1b" not in report and "\\x1b" in report
    status = project.run("status")
    assert "\x1b" not in status.stdout, output(status)


def damage(db: Path) -> None:
    """Overwrite pages in the middle of the file, as a bad disk or a stray write would."""
    data = bytearray(db.read_bytes())
    for offset in range(4096, len(data), 4096):
        data[offset + 8 : offset + 4096] = b"\xa5" * (4096 - 8)
    db.write_bytes(bytes(data))


def ran_once(project: Project) -> Path:
    project.config(SERVICE_CONFIG)
    project.service()
    project.write("tests/test_main.py", "def test_a(): pass\ndef test_b(): assert 0\n")
    result = project.run("run")
    assert result.returncode == 1, output(result)
    return project.state / "loop.db"


@pytest.mark.parametrize("command", [["status"], ["history"], ["summarize"], ["run"]])
def test_a_truncated_store_is_an_error_with_the_way_back(
    project: Project, command: list[str]
) -> None:
    db = ran_once(project)
    assert (project.state / "loop.db.bak").exists()
    db.write_bytes(b"")
    result = project.run(*command)
    assert result.returncode == 2, output(result)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert str(Path(".loop") / "loop.db") in lines[0] and "truncated" in lines[0]
    assert "loop.db.bak" in lines[0]
    assert db.stat().st_size == 0  # a run never writes into a store it cannot verify


def test_a_damaged_store_is_an_error_and_the_backup_restores_it(project: Project) -> None:
    db = ran_once(project)
    for suffix in ("-wal", "-shm"):
        (project.state / f"loop.db{suffix}").unlink(missing_ok=True)
    damage(db)
    for command in (["status"], ["history"], ["summarize"], ["run"]):
        result = project.run(*command)
        assert result.returncode == 2, output(result)
        assert "Traceback" not in result.stderr
        assert "damaged" in result.stderr and "loop.db.bak" in result.stderr, output(result)
    # The hint is a command line: follow it.
    hint = result.stderr.split("restore the last good copy: ", 1)[1].strip()
    subprocess.run(hint, shell=True, cwd=project.root, check=True)
    assert [h["status"] for h in project.history()] == ["failed"]
    assert project.run("run").returncode == 1
    assert [h["iteration"] for h in project.history()] == [1, 2]


def test_a_dropped_table_is_an_error(project: Project) -> None:
    db = ran_once(project)
    conn = sqlite3.connect(db)
    conn.execute("DROP TABLE tests")
    conn.commit()
    conn.close()
    for command in (["status"], ["history"], ["run"]):
        result = project.run(*command)
        assert result.returncode == 2, output(result)
        assert "table tests is missing" in result.stderr, output(result)
        assert "Traceback" not in result.stderr


SLOW_SUITE = """
import time
import pytest

@pytest.mark.parametrize("n", range(12))
def test_slow(n):
    time.sleep(0.5)
"""


def test_deleting_the_state_dir_mid_run_loses_no_result_and_keeps_the_lock(
    project: Project,
) -> None:
    project.config(SERVICE_CONFIG)
    project.service()
    project.write("tests/test_main.py", SLOW_SUITE)
    proc = project.popen("run")
    wait_for(
        lambda: (project.state / "loop.db").exists()
        and project.status().get("totals", {}).get("passed", 0) >= 2,
        what="two results",
    )
    subprocess.run(["rm", "-rf", str(project.state)], check=True)
    # The lock does not live in the state dir: a second run cannot start alongside.
    second = project.run("run")
    assert second.returncode == 2, output(second)
    assert "another `loop run`" in second.stderr
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, f"{stdout}\n{stderr}"
    assert "was deleted or replaced while loop ran" in stderr
    summary = project.summary()
    assert summary["totals"]["passed"] == 12
    assert summary["status"] == "passed"


def test_a_pytest_started_with_sigint_ignored_still_tears_down(project: Project) -> None:
    """A script that starts loop in the background makes it ignore SIGINT; the pytest it
    starts must still stop gracefully, with fixture teardown."""
    project.config(SERVICE_CONFIG)
    project.service()
    project.write("tests/test_main.py", """
        import os, time
        from pathlib import Path
        import pytest

        @pytest.fixture(scope="session")
        def resource():
            yield
            Path("teardown.txt").write_text("done")

        def test_waits(resource):
            Path("test.pid").write_text(str(os.getpid()))
            time.sleep(60)
        """)
    env = loop_env()
    script = f"'{LOOP}' run & echo $! > loop.pid; wait"
    shell = subprocess.Popen(
        ["bash", "-c", script], cwd=project.root, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        loop_pid = read_pid(project.root / "loop.pid")
        read_pid(project.root / "test.pid")
        sent = time.monotonic()
        os.kill(loop_pid, signal.SIGTERM)
        shell.wait(timeout=30)
        # Stopped by SIGINT at once, not killed after the 5 s grace.
        assert time.monotonic() - sent < 4
        assert (project.root / "teardown.txt").read_text() == "done"
    finally:
        if shell.poll() is None:
            shell.kill()


def test_a_service_that_crashes_mid_run_is_reported(project: Project) -> None:
    project.config(SERVICE_CONFIG.replace('"--pidfile", "api.pid"', '"--pidfile", "api.pid"'))
    project.service()
    project.write("tests/test_main.py", """
        import os, signal, time, urllib.request
        from pathlib import Path

        def get(path):
            return urllib.request.urlopen(os.environ["LOOP_API_URL"] + path, timeout=2)

        def test_1_up():
            assert get("/health").status == 200

        def test_2_service_dies():
            os.kill(int(Path("api.pid").read_text()), signal.SIGKILL)
            time.sleep(1.5)

        def test_3_after(): get("/health")
        def test_4_after(): get("/health")
        def test_5_after(): get("/health")
        """)
    result = project.run("run")
    assert result.returncode == 1, output(result)
    assert "service crashed: api" in result.stdout, output(result)
    summary = project.summary()
    (api,) = summary["deployments"]
    assert api["status"] == "crashed"
    assert "killed by SIGKILL during the tests" in api["error"]
    assert "crashed" in (project.iteration_dir(1) / "report.md").read_text()


def test_suite_paths_outside_the_project_run(project: Project, tmp_path: Path) -> None:
    other = tmp_path / "e2e-repo"
    (other / "tests").mkdir(parents=True)
    (other / "tests" / "test_outside.py").write_text(
        "import pytest\n"
        "@pytest.mark.parametrize('n', range(10))\n"
        "def test_n(n): assert n != 7\n"
    )
    project.root = tmp_path / "service-repo"
    project.root.mkdir()
    project.config(SERVICE_CONFIG.replace('paths = ["tests"]', 'paths = ["../e2e-repo/tests"]')
                   .replace("workers = 1", "workers = 2"))
    project.service()
    result = project.run("run")
    assert result.returncode == 1, output(result)
    summary = project.summary()
    assert {k: summary["totals"][k] for k in ("collected", "passed", "failed", "errors")} == {
        "collected": 10, "passed": 9, "failed": 1, "errors": 0,
    }
    (cluster,) = summary["clusters"]
    assert cluster["tests"][0].endswith("test_outside.py::test_n[7]")


def test_a_test_folder_whose_name_is_not_utf8(project: Project) -> None:
    project.config(SERVICE_CONFIG)
    project.service()
    folder = os.fsencode(project.root / "tests") + b"/caf\xe9"
    os.makedirs(folder)
    with open(folder + b"/test_x.py", "w") as f:
        f.write("def test_ok(): pass\ndef test_bad(): assert 0\n")
    result = project.run("run")
    assert result.returncode == 1, output(result)
    summary = project.summary()
    assert summary["totals"]["passed"] == 1 and summary["totals"]["failed"] == 1
    assert "caf\\xe9" in result.stdout
    # A resume or a rerun names the test to pytest again: the id must still find the file.
    project.write("configs/local.toml", SERVICE_CONFIG.replace(
        "[tests]", "[tests]\nreruns = 1"))
    result = project.run("run")
    assert result.returncode == 1, output(result)
    summary = project.summary()
    assert summary["totals"]["errors"] == 0 and summary["totals"]["failed"] == 1


@pytest.fixture
def small_disk(tmp_path: Path) -> Any:
    """A 2 MB filesystem (tmpfs) for the state dir; skipped where mounting is not allowed."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
        capture_output=True, check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {done.stderr.strip()!r}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_stops_the_run_and_says_what_the_store_holds(
    project: Project, small_disk: Path
) -> None:
    project.config(SERVICE_CONFIG.replace("[tests]", '[tests]\npytest_args = ["-s"]'))
    project.service()
    project.write("tests/test_main.py", """
        import os, time
        from pathlib import Path
        import pytest

        @pytest.mark.parametrize("n", range(40))
        def test_fills_the_disk(n):
            # A file per worker: several write at once, and one may be stopped mid-write.
            Path(f"test-{os.getpid()}.pid").touch()
            print("x" * 200_000)  # with -s, into pytest's log on the small disk
        """)
    state = small_disk / "state"
    result = project.run("run", "--state-dir", str(state), timeout=120)
    assert result.returncode == 4, output(result)
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr
    (message,) = [ln for ln in lines if ln.startswith("error:")]
    assert "disk is full" in message or "No space left" in message, message
    pids = [int(path.stem.split("-")[1]) for path in project.root.glob("test-*.pid")]
    assert pids
    wait_for(lambda: not any(map(pid_alive, pids)), timeout=10, what="pytest to be stopped")

    # Space comes back; what the message said is what the store says.
    for log in state.rglob("*.log"):
        log.unlink()
    status = project.run("status", "--format", "json", "--state-dir", str(state))
    assert status.returncode == 0, output(status)
    summary = project.json("summarize", "--format", "json", "--state-dir", str(state))
    if "marked 'error'" in message and "could not" not in message:
        assert summary["status"] == "error"
    else:
        assert summary["status"] == "crashed"
    assert summary["totals"]["collected"] == 40


def test_a_run_is_seen_live_whatever_tmpdir_says(project: Project, tmp_path: Path) -> None:
    """The lock lives in TMPDIR; a shell with another TMPDIR must still see the run (its
    record) and neither reap its children nor start a second run alongside."""
    hanging_project(project)
    proc, test_pid, api_pid = start_and_wait_for_hang(project)
    other = tmp_path / "other-tmp"
    other.mkdir()
    status = project.run("status", "--format", "json", env={"TMPDIR": str(other)})
    assert status.returncode == 0, output(status)
    assert "stopped" not in status.stderr and "crashed" not in status.stderr
    assert pid_alive(test_pid) and pid_alive(api_pid)
    second = project.run("run", env={"TMPDIR": str(other)})
    assert second.returncode == 2, output(second)
    assert "another `loop run`" in second.stderr
    (project.root / "hang.txt").unlink()
    proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert project.summary()["status"] == "passed"


def test_a_lock_folder_planted_by_someone_else_is_refused(
    project: Project, tmp_path: Path
) -> None:
    fake_tmp = tmp_path / "shared-tmp"
    planted = fake_tmp / f"deployloop-{os.getuid()}"
    planted.mkdir(parents=True)
    planted.chmod(0o777)
    project.config(SERVICE_CONFIG)
    project.service()
    project.write("tests/test_main.py", "def test_a(): pass\n")
    result = project.run("run", env={"TMPDIR": str(fake_tmp)})
    assert result.returncode == 2, output(result)
    assert "is not a private folder of this user" in result.stderr
    assert list(planted.iterdir()) == []


def test_sigterm_during_the_fix_step_stops_it_and_the_loop(project: Project) -> None:
    project.config(SERVICE_CONFIG.replace(
        "max_iterations = 1",
        'max_iterations = 3\nbetween_iterations = ["{python}", "fix.py"]',
    ))
    project.service()
    project.write("tests/test_main.py", "def test_fails(): assert 0\n")
    project.write("fix.py", """
        import os, signal, sys, time
        from pathlib import Path

        def stop(signum, frame):
            Path("fix-stopped.txt").write_text(str(signum))
            sys.exit(0)  # a fix step that exits 0 when asked to stop

        signal.signal(signal.SIGTERM, stop)
        Path("fix.pid").write_text(str(os.getpid()))
        time.sleep(60)
        """)
    proc = project.popen("run")
    fix_pid = read_pid(project.root / "fix.pid")
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, f"{stdout}\n{stderr}"
    assert (project.root / "fix-stopped.txt").read_text() == str(int(signal.SIGTERM))
    assert not pid_alive(fix_pid)
    # The loop stopped there: no second iteration.
    assert [h["iteration"] for h in project.history()] == [1]


def test_a_background_server_started_by_the_deploy_command_outlives_loop(
    project: Project,
) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    start = f"nohup {{python}} svc.py --port {port} --pidfile bg.pid"
    project.config(f"""
        [loop]
        max_iterations = 1

        [deploy]
        target = "command"
        command = ["sh", "-c", "{start} & echo started"]

        [[deploy.services]]
        name = "api"
        url = "http://127.0.0.1:{port}"

        [tests]
        workers = 1

        [[tests.suites]]
        name = "Main"
        paths = ["tests"]
        """)
    project.service()
    project.write("tests/test_main.py", "def test_a(): pass\n")
    result = project.run("run")
    try:
        assert result.returncode == 0, output(result)
        import urllib.request

        for _ in range(3):  # it writes a log line per request: no broken pipe once loop is gone
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                assert r.status == 200
    finally:
        pid = read_pid(project.root / "bg.pid")
        os.kill(pid, signal.SIGKILL)


def test_suites_outside_the_project_keep_its_pytest_config(
    project: Project, tmp_path: Path
) -> None:
    other = tmp_path / "e2e-repo"
    (other / "tests").mkdir(parents=True)
    (other / "tests" / "test_outside.py").write_text("def check_outside(): pass\n")
    project.root = tmp_path / "service-repo"
    project.root.mkdir()
    # The project's config makes check_* functions tests: lost if pytest misses it.
    project.write("pytest.ini", "[pytest]\npython_functions = check_* test_*\n")
    project.write("tests/test_inside.py", "def check_inside(): pass\n")
    project.config(SERVICE_CONFIG.replace('paths = ["tests"]', 'paths = ["tests"]\n\n'
                   '[[tests.suites]]\nname = "Outside"\npaths = ["../e2e-repo/tests"]'))
    project.service()
    result = project.run("run")
    assert result.returncode == 0, output(result)
    summary = project.summary()
    assert summary["totals"]["passed"] == 2
    assert not (tmp_path / ".pytest_cache").exists()


def test_a_test_printing_megabytes_is_recorded_with_capped_text(project: Project) -> None:
    project.config(SERVICE_CONFIG)
    project.service()
    project.write("tests/test_main.py", """
        def test_noisy():
            print("x" * 30_000_000)
            raise AssertionError("y" * 5_000_000)

        def test_quiet():
            pass
        """)
    result = project.run("run", timeout=120)
    assert result.returncode == 1, output(result)
    conn = sqlite3.connect(project.state / "loop.db")
    (message, longrepr), = conn.execute(
        "SELECT message, longrepr FROM tests WHERE nodeid LIKE '%test_noisy'"
    )
    conn.close()
    assert message.startswith("AssertionError: yyy") and len(message) < 5_000
    assert len(longrepr) < 25_000
    # The whole text is still in pytest's own log.
    # A worker's output is in its own log, or its fork server's.
    logs = (project.iteration_dir(1) / "pytest").glob("[ws]*-*.log")
    assert max(log.stat().st_size for log in logs) > 30_000_000
    summary = project.summary()
    assert any(t.endswith("test_noisy") for c in summary["clusters"] for t in c["tests"])
