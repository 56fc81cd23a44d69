"""`[tests] executor = "cloudrun-jobs"` end to end: the real `loop`, the real google-cloud-run
client against the fake Admin API (tests/jobs_fake.py), whose tasks run `python -m
deployloop.task` as local processes, and a real Cloud Storage emulator between them."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cloudrun_fake import FakeCloudRun
from conftest import Project, output, pids_where, wait_for
from fake_containers import Containers
from metadata_fake import FakeMetadata, claims_of
from registry_fake import FakeRegistry
from storage_emulator import StorageEmulator, free_port

IMAGE = "europe-west1-docker.pkg.dev/p/e2e/tests:{git_sha}"
BUCKET = "loop-results"
TASK = ["{python}", "-m", "deployloop.task"]

CONFIG = """
[loop]
max_iterations = 1

[deploy]
target = "none"
project = "p"
region = "europe-west1"

[tests]
executor = "{executor}"
workers = 4

[tests.cloudrun_jobs]
image = "{image}"
tasks = {tasks}
task_timeout_s = {timeout}
max_retries = {retries}
results_bucket = "gs://{bucket}/ci"

[[tests.suites]]
name = "Priority 1"
paths = ["tests/test_orders.py", "tests/test_users.py"]
priority = 1

[[tests.suites]]
name = "Priority 2"
paths = ["tests/test_search.py", "tests/test_reports.py"]
priority = 2
"""

# 4 files x 50 tests: passes, failures, skips, an xfail; each takes a little time.
TESTS = """
import time
import pytest

@pytest.mark.parametrize("i", range(49))
def test_case(i):
    time.sleep(0.01)
    if i % 17 == 5:
        assert i == -1, "{name}: broken on purpose"
    if i % 23 == 7:
        pytest.skip("not on this platform")

@pytest.mark.xfail(reason="known bug", strict=False)
def test_known_bug():
    assert False
"""


class Healthy(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def write_project(project: Project, executor: str, tasks: int = 4, timeout: int = 600,
                  retries: int = 0) -> None:
    project.config(CONFIG.format(
        executor=executor, image=IMAGE, tasks=tasks, timeout=timeout, retries=retries,
        bucket=BUCKET,
    ))
    for name in ("orders", "users", "search", "reports"):
        project.write(f"tests/test_{name}.py", TESTS.replace("{name}", name))


@pytest.fixture
def cloud(tmp_path: Path, project: Project) -> Iterator[tuple[FakeCloudRun, StorageEmulator]]:
    containers = Containers({"e2e/tests": TASK}, tmp_path / "fake-logs", workdir=project.root)
    with StorageEmulator(tmp_path / "storage.log", buckets=(BUCKET,)) as storage, \
            FakeCloudRun(containers) as fake:
        # What the project's network gives a task here: the bucket's emulator; and the
        # speed-up every pytest of these tests gets (see conftest.loop_env).
        fake.jobs.task_env.update({
            "STORAGE_EMULATOR_HOST": storage.host,
            "PYTEST_ADDOPTS": "-p no:hypothesispytest",
            "NO_GCE_CHECK": "true",
        })
        yield fake, storage


def emulated(fake: FakeCloudRun, storage: StorageEmulator) -> dict[str, str]:
    return {
        "CLOUDRUN_EMULATOR_HOST": fake.address,
        "STORAGE_EMULATOR_HOST": storage.host,
        "GRPC_VERBOSITY": "ERROR",
    }


def figures(summary: dict[str, object]) -> dict[str, object]:
    keep = ("collected", "executed", "passed", "failed", "errors", "skipped", "pass_rate")
    totals = summary["totals"]
    suites = summary["suites"]
    assert isinstance(totals, dict) and isinstance(suites, list)
    return {
        "totals": {k: totals[k] for k in keep},
        "suites": [{k: s[k] for k in ("name", "status", *keep)} for s in suites],
        "clusters": sorted((c["label"], c["count"]) for c in summary["clusters"]),  # type: ignore[attr-defined]
    }


def outcomes(project: Project) -> dict[str, tuple[str, str | None]]:
    import sqlite3

    with sqlite3.connect(project.state / "loop.db") as db:
        rows = db.execute("SELECT nodeid, outcome, message FROM tests").fetchall()
    return {n: (o, m) for n, o, m in rows}


def test_four_tasks_give_the_local_executors_figures(
    project: Project, cloud: tuple[FakeCloudRun, StorageEmulator], tmp_path: Path
) -> None:
    fake, storage = cloud
    local = Project(tmp_path / "local")
    write_project(local, "local")
    result = local.run("run", timeout=180)
    assert result.returncode == 1, output(result)

    write_project(project, "cloudrun-jobs", tasks=4)
    plan = project.run("plan", env=emulated(fake, storage), timeout=120)
    assert plan.returncode == 0, output(plan)
    assert "Tests run on Cloud Run Jobs: job loop-tests in p/europe-west1" in plan.stdout
    assert plan.stdout.count("  task ") == 4 and "task 3: 50 tests" in plan.stdout, plan.stdout

    result = project.run("run", env=emulated(fake, storage), timeout=300)
    assert result.returncode == 1, output(result)
    assert figures(project.summary(1)) == figures(local.summary(1))
    totals = project.summary(1)["totals"]
    assert totals["collected"] == 200 and totals["failed"] == 12, totals

    # One job, one execution of four tasks; each read its own share, by its task index.
    assert fake.count("CreateJob") == 1 and fake.count("RunJob") == 1
    (execution,) = fake.jobs.executions.values()
    assert execution.task_count == 4 and execution.succeeded_count == 4
    names = storage.names(BUCKET, "ci/local/iteration-1/")
    assert sum("/shares/task-" in n for n in names) == 4
    # Streamed while running: more than one chunk per task, never only at the end.
    assert all(n.startswith("ci/local/iteration-1/run-") for n in names)
    assert sum("/chunk-" in n for n in names) >= 4

    # A second iteration updates the job it made rather than making another.
    again = project.run("run", env=emulated(fake, storage), timeout=300)
    assert again.returncode == 1, output(again)
    assert fake.count("CreateJob") == 1 and fake.count("UpdateJob") == 1
    assert fake.count("RunJob") == 2


def test_a_task_killed_midway_loses_only_its_unfinished_tests(
    project: Project, cloud: tuple[FakeCloudRun, StorageEmulator]
) -> None:
    fake, storage = cloud
    write_project(project, "cloudrun-jobs", tasks=2, timeout=8)
    # One test hangs: its task runs into task_timeout_s and Cloud Run kills it.
    project.write("tests/test_orders.py", TESTS.replace("{name}", "orders").replace(
        "def test_case(i):\n", "def test_case(i):\n    if i == 20:\n        time.sleep(120)\n"
    ))
    result = project.run("run", env=emulated(fake, storage), timeout=300)
    assert result.returncode == 1, output(result)
    rows = outcomes(project)
    assert len(rows) == 200
    hung = rows["tests/test_orders.py::test_case[20]"]
    assert hung[0] == "error", hung
    assert hung[1] is not None and hung[1].startswith("task "), hung
    assert "while this test was running" in hung[1] and "timeout" in hung[1].lower(), hung
    task = hung[1].split()[1]
    # What the killed task had reported stays; what it never reached is an error naming it.
    not_run = {n: m for n, (o, m) in rows.items() if m and m.startswith("not run: task ")}
    assert not_run and all(m.startswith(f"not run: task {task} ") for m in not_run.values())
    # In the killed task's share, what ran before the hang kept its result; the rest did not
    # run. The other task's share all ran.
    (name,) = [n for n in storage.names(BUCKET, "ci/") if n.endswith(f"/task-000{task}.json")]
    share = [t["nodeid"] for t in json.loads(storage.client().bucket(BUCKET).blob(name)
                                             .download_as_text())["tests"]]
    hang = share.index("tests/test_orders.py::test_case[20]")
    assert hang > 0 and all(rows[n][0] in ("passed", "failed", "skipped", "xfailed")
                            for n in share[:hang])
    assert set(not_run) == set(share[hang + 1:])
    summary = project.summary(1)
    assert summary["totals"]["collected"] == 200
    suite = next(s for s in summary["suites"] if s["name"] == "Priority 1")
    assert suite["status"] == "timeout", suite


def test_a_retried_task_is_a_second_attempt(
    project: Project, cloud: tuple[FakeCloudRun, StorageEmulator]
) -> None:
    fake, storage = cloud
    write_project(project, "cloudrun-jobs", tasks=2, retries=1)
    # The task's container dies under one test, two seconds into it, on its first attempt
    # only (its task runner killed: an OOM kill, a lost machine), so Cloud Run runs its share
    # again.
    project.write("tests/test_users.py", TESTS.replace("{name}", "users").replace(
        "def test_case(i):\n",
        "def test_case(i):\n"
        "    import os, signal\n"
        "    if i == 10 and os.environ.get('CLOUD_RUN_TASK_ATTEMPT') == '0':\n"
        "        time.sleep(2)\n"
        "        os.kill(os.getppid(), signal.SIGKILL)\n"
        "        time.sleep(30)\n",
    ))
    result = project.run("run", env=emulated(fake, storage), timeout=300)
    assert result.returncode == 1, output(result)
    (execution,) = fake.jobs.executions.values()
    assert execution.retried_count == 1 and execution.succeeded_count == 2
    rows = outcomes(project)
    crashed = rows["tests/test_users.py::test_case[10]"]
    assert crashed[0] == "error", crashed
    assert (crashed[1] or "").startswith("task ") and "(attempt 1) ended" in (crashed[1] or "")
    assert (crashed[1] or "").endswith(" while this test was running"), crashed
    # Everything else has one result; none is 'not run'.
    assert not [m for _, m in rows.values() if m and m.startswith("not run")]
    summary = project.summary(1)
    assert summary["totals"]["collected"] == 200
    assert summary["totals"]["errors"] == 1
    # The retry's pass beside the first attempt's error: flaky, as a rerun shows it.
    flaky = {f["test"] for f in summary["flaky"]}
    assert "tests/test_users.py::test_case[10]" in flaky, summary["flaky"]


def test_a_test_that_crashes_pytest_loses_only_itself(
    project: Project, cloud: tuple[FakeCloudRun, StorageEmulator]
) -> None:
    fake, storage = cloud
    write_project(project, "cloudrun-jobs", tasks=2, retries=0)
    project.write("tests/test_users.py", TESTS.replace("{name}", "users").replace(
        "def test_case(i):\n",
        "def test_case(i):\n"
        "    import os, signal\n"
        "    if i == 10:\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n",
    ))
    result = project.run("run", env=emulated(fake, storage), timeout=300)
    assert result.returncode == 1, output(result)
    (execution,) = fake.jobs.executions.values()
    assert execution.retried_count == 0 and execution.succeeded_count == 2
    rows = outcomes(project)
    assert rows["tests/test_users.py::test_case[10]"] == (
        "error", "pytest was killed by signal 9 while this test was running"
    )
    # As on the local executor: the task ran the rest of its share in a new pytest.
    assert [n for n, (o, _) in rows.items() if o == "error"] == [
        "tests/test_users.py::test_case[10]"
    ]
    assert not [m for _, m in rows.values() if m and m.startswith("not run")]
    assert len(rows) == 200


def test_test_timeout_s_stops_a_test_inside_its_task(
    project: Project, cloud: tuple[FakeCloudRun, StorageEmulator]
) -> None:
    fake, storage = cloud
    write_project(project, "cloudrun-jobs", tasks=2)
    config = project.root / "configs/local.toml"
    config.write_text(config.read_text().replace("workers = 4\n", "test_timeout_s = 2\n"))
    project.write("tests/test_orders.py", TESTS.replace("{name}", "orders").replace(
        "def test_case(i):\n", "def test_case(i):\n    if i == 20:\n        time.sleep(120)\n"
    ))
    started = time.monotonic()
    result = project.run("run", env=emulated(fake, storage), timeout=300)
    assert result.returncode == 1, output(result)
    assert time.monotonic() - started < 60
    rows = outcomes(project)
    assert rows["tests/test_orders.py::test_case[20]"] == (
        "error", "test timed out after 2 s (tests.test_timeout_s) while this test was running"
    )
    assert [n for n, (o, _) in rows.items() if o == "error"] == [
        "tests/test_orders.py::test_case[20]"
    ]
    suite = next(s for s in project.summary(1)["suites"] if s["name"] == "Priority 1")
    assert suite["status"] == "timeout", suite


def test_serial_suites_run_after_the_rest_in_a_task_alone(
    project: Project, cloud: tuple[FakeCloudRun, StorageEmulator]
) -> None:
    fake, storage = cloud
    write_project(project, "cloudrun-jobs", tasks=2)
    config = project.root / "configs/local.toml"
    config.write_text(config.read_text().replace(
        'paths = ["tests/test_search.py", "tests/test_reports.py"]\npriority = 2\n',
        'paths = ["tests/test_search.py", "tests/test_reports.py"]\npriority = 2\n'
        "serial = true\n",
    ))
    # The serial suite owns a shared resource: while one of its tests holds it, no other
    # test may run anywhere.
    shared = project.root / "db-reset-in-progress"
    for name in ("search", "reports"):
        project.write(f"tests/test_{name}.py", f"""
            import time
            from pathlib import Path

            def test_reset_{name}():
                marker = Path({str(shared)!r})
                marker.write_text("x")
                time.sleep(1)
                marker.unlink()
        """)
    for name in ("orders", "users"):
        project.write(f"tests/test_{name}.py", f"""
            import time
            from pathlib import Path
            import pytest

            @pytest.mark.parametrize("i", range(10))
            def test_{name}(i):
                time.sleep(0.2)
                assert not Path({str(shared)!r}).exists(), "the database was being reset"
        """)
    result = project.run("run", env=emulated(fake, storage), timeout=300)
    assert result.returncode == 0, output(result)
    assert "1 task (serial suites: one task, after the rest, alone)" in result.stdout
    first, second = sorted(fake.jobs.executions.values(), key=lambda e: e.create_time)
    assert first.task_count == 2 and second.task_count == 1
    assert second.start_time >= first.completion_time


def test_an_unreachable_or_missing_bucket_stops_before_anything_runs(
    project: Project, cloud: tuple[FakeCloudRun, StorageEmulator]
) -> None:
    fake, storage = cloud
    write_project(project, "cloudrun-jobs")
    closed = f"http://127.0.0.1:{free_port()}"
    result = project.run("run", env={**emulated(fake, storage), "STORAGE_EMULATOR_HOST": closed},
                         timeout=120)
    assert result.returncode == 3, output(result)
    assert result.stderr.strip() == (
        f"error: results bucket gs://{BUCKET}: Cloud Storage unreachable"
        f" (STORAGE_EMULATOR_HOST={closed}): cannot connect (connection refused)"
    ), result.stderr
    # Nothing was deployed, no job made, no iteration recorded.
    assert fake.count("CreateJob") == 0 and fake.count("RunJob") == 0
    assert not project.iteration_dir(1).exists()

    project.config((project.root / "configs/local.toml").read_text().replace(BUCKET, "nobucket"))
    for command in ("plan", "run"):
        result = project.run(command, env=emulated(fake, storage), timeout=120)
        assert result.returncode == 3, output(result)
        assert "results bucket gs://nobucket does not exist: create it" in result.stderr
    assert fake.count("CreateJob") == 0


def test_a_task_sees_the_services_urls_and_the_iteration(
    project: Project, cloud: tuple[FakeCloudRun, StorageEmulator]
) -> None:
    fake, storage = cloud
    write_project(project, "cloudrun-jobs", tasks=1)
    api = ThreadingHTTPServer(("127.0.0.1", 0), Healthy)
    threading.Thread(target=api.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{api.server_address[1]}"
    text = (project.root / "configs/local.toml").read_text()
    project.config(text.replace(
        'region = "europe-west1"\n',
        f'region = "europe-west1"\n\n[[deploy.services]]\nname = "api"\nurl = "{url}"\n',
    ).replace("workers = 4\n", 'workers = 4\nenv = { E2E_MODE = "jobs" }\n'))
    project.write("tests/test_orders.py", f"""
        import os

        def test_env():
            assert os.environ["LOOP_API_URL"] == "{url}"
            assert os.environ["LOOP_ITERATION"] == "1"
            assert os.environ["LOOP_ENV"] == "local"
            assert os.environ["E2E_MODE"] == "jobs"
            assert os.environ["CLOUD_RUN_TASK_INDEX"] == "0"
    """)
    for name in ("users", "search", "reports"):
        project.write(f"tests/test_{name}.py", "def test_ok():\n    pass\n")
    try:
        result = project.run("run", env=emulated(fake, storage), timeout=300)
    finally:
        api.shutdown()
    assert result.returncode == 0, output(result)
    (execution,) = fake.jobs.executions.values()
    env = {e.name: e.value for e in execution.template.containers[0].env}
    assert env["LOOP_API_URL"] == url
    # [tests] env travels in the share, not in the execution's spec anyone may read.
    assert "E2E_MODE" not in env


PRIVATE_API = """
[loop]
max_iterations = 1

[deploy]
target = "cloudrun"
project = "p"
region = "europe-west1"

[[deploy.services]]
name = "api"
image = "europe-west1-docker.pkg.dev/p/shop/api:{{git_sha}}"

[tests]
executor = "cloudrun-jobs"

[tests.cloudrun_jobs]
image = "{image}"
tasks = 1
service_account = "e2e-runner@p.iam.gserviceaccount.com"
results_bucket = "gs://{bucket}"

[[tests.suites]]
name = "Smoke"
paths = ["tests"]
"""


def test_tasks_call_private_services_with_tokens_from_their_metadata_server(
    project: Project, cloud: tuple[FakeCloudRun, StorageEmulator]
) -> None:
    fake, storage = cloud
    project.config(PRIVATE_API.format(image=IMAGE, bucket=BUCKET))
    project.write("tests/test_api.py", """
        import os
        import urllib.request

        def test_health_with_the_tasks_token():
            request = urllib.request.Request(
                os.environ["LOOP_API_URL"] + "/health",
                headers={"Authorization": "Bearer " + os.environ["LOOP_API_ID_TOKEN"]},
            )
            with urllib.request.urlopen(request, timeout=10) as answer:
                assert answer.status == 200

        def test_the_token_never_shows():
            assert os.environ["LOOP_API_ID_TOKEN"] == "shown?"
    """)
    # Inside Cloud Run: no NO_GCE_CHECK, and the metadata server is the task's. First one
    # that does not answer (on this machine: never Google's).
    fake.jobs.task_env.pop("NO_GCE_CHECK")
    closed = f"127.0.0.1:{free_port()}"
    fake.jobs.task_env.update({"GCE_METADATA_HOST": closed, "GCE_METADATA_IP": closed})
    result = project.run("run", env=emulated(fake, storage), timeout=300)
    assert result.returncode == 2, output(result)  # no test ran: a setup failure, not a result
    message = outcomes(project)["tests/test_api.py::test_health_with_the_tasks_token"][1]
    assert message == (
        f"not run: task 0 (attempt 1) could not run its tests: cannot mint an ID token for"
        f" {fake.service('api').uri} from the metadata server: Neither metadata server or valid"
        " service account credentials are found. (Cloud Run: The container exited with an"
        " error.; exit code 2) before this test started"
    ), message
    project.run("forget", "--iteration", "1", "--yes")

    with FakeMetadata() as metadata:
        fake.jobs.task_env.update(metadata.env())
        result = project.run("run", env=emulated(fake, storage), timeout=300)
    assert result.returncode == 1, output(result)
    rows = outcomes(project)
    assert rows["tests/test_api.py::test_health_with_the_tasks_token"][0] == "passed", rows
    url = fake.service("api").uri
    assert metadata.audiences == [url]
    (bearer,) = [h for h in fake.services["api"].auth_headers if h.startswith("Bearer ")]
    token = bearer.removeprefix("Bearer ")
    assert claims_of(token)["aud"] == url
    assert claims_of(token)["email"] == "e2e-runner@p.iam.gserviceaccount.com"
    # The job runs as its service account; the token is in no spec and no file loop wrote.
    (job,) = fake.jobs.jobs.values()
    assert job.template.template.service_account == "e2e-runner@p.iam.gserviceaccount.com"
    assert all(token not in str(e) for e in fake.jobs.executions.values())
    message = rows["tests/test_api.py::test_the_token_never_shows"][1] or ""
    assert "[redacted:LOOP_API_ID_TOKEN]" in message, message
    files = [p for p in project.state.rglob("*") if p.is_file()]
    assert not [p for p in files if token.encode() in p.read_bytes()]


def test_status_shows_progress_and_ctrl_c_cancels_the_execution(
    project: Project, cloud: tuple[FakeCloudRun, StorageEmulator]
) -> None:
    fake, storage = cloud
    write_project(project, "cloudrun-jobs", tasks=2)
    for name in ("users", "reports"):
        project.write(f"tests/test_{name}.py", "")
    project.write("tests/test_search.py", "def test_one():\n    pass\n")
    # Each task runs its quick tests, then one that waits for Ctrl-C (and, in one of them,
    # the Priority 2 test after it).
    project.write("tests/test_orders.py", """
        import time
        import pytest

        @pytest.mark.parametrize("i", range(6))
        def test_quick(i):
            time.sleep(0.2)

        @pytest.mark.parametrize("i", range(2))
        def test_waits(i):
            time.sleep(120)
    """)
    proc = project.popen("run", env=emulated(fake, storage))

    def six_done() -> dict[str, object] | None:
        if proc.poll() is not None:
            pytest.fail(f"loop run ended early with exit {proc.returncode}")
        status = project.status()
        totals = status.get("totals")
        return status if isinstance(totals, dict) and totals["passed"] >= 6 else None

    running = wait_for(six_done, timeout=60, interval=0.3, what="6 results in loop status")
    assert running["status"] == "running"
    totals = running["totals"]
    assert isinstance(totals, dict) and totals["collected"] == 9 and totals["pending"] == 3
    assert pids_where(lambda p: b"deployloop.task" in (p / "cmdline").read_bytes())

    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, f"{stdout}\n{stderr}"
    (execution,) = fake.jobs.executions.values()
    assert execution.completion_time and execution.cancelled_count == 2, execution
    assert not pids_where(lambda p: b"deployloop.task" in (p / "cmdline").read_bytes())
    summary = project.summary()
    assert summary["status"] == "interrupted"
    assert summary["totals"]["passed"] == 6


def test_an_image_without_the_task_runner_is_named_in_every_error(
    project: Project, cloud: tuple[FakeCloudRun, StorageEmulator]
) -> None:
    fake, storage = cloud
    write_project(project, "cloudrun-jobs", tasks=2)
    config = project.root / "configs/local.toml"
    config.write_text(config.read_text().replace("/e2e/tests:", "/e2e/app:"))
    result = project.run("run", env=emulated(fake, storage), timeout=300)
    assert result.returncode == 2, output(result)  # no test ran: a setup failure
    messages = {m for _, m in outcomes(project).values()}
    assert messages == {
        f"not run: task {t} (attempt 1): the task ended without writing a result: does the"
        " job's image hold deployloop and run `python -m deployloop.task`? before this test"
        " started"
        for t in (0, 1)
    }, messages


def attempts(project: Project, nodeid: str) -> list[tuple[int, str]]:
    import sqlite3

    with sqlite3.connect(project.state / "loop.db") as db:
        rows = db.execute(
            "SELECT attempt, outcome FROM attempts WHERE nodeid = ? ORDER BY attempt", (nodeid,)
        ).fetchall()
    return [(a, o) for a, o in rows]


def test_a_pytest_crashing_at_exit_loses_nothing_and_is_not_retried(
    project: Project, cloud: tuple[FakeCloudRun, StorageEmulator]
) -> None:
    fake, storage = cloud
    write_project(project, "cloudrun-jobs", tasks=2, retries=2)
    # A native extension that segfaults at interpreter exit, after every test reported.
    project.write("conftest.py", """
        import atexit, os, signal
        atexit.register(lambda: os.kill(os.getpid(), signal.SIGSEGV))
    """)
    result = project.run("run", env=emulated(fake, storage), timeout=300)
    assert result.returncode == 1, output(result)
    (execution,) = fake.jobs.executions.values()
    assert execution.retried_count == 0 and execution.succeeded_count == 2
    rows = outcomes(project)
    assert len(rows) == 200 and not [o for o, _ in rows.values() if o == "error"]
    assert attempts(project, "tests/test_orders.py::test_case[5]") == []


def test_a_fixture_that_kills_every_pytest_gives_up_after_three(
    project: Project, cloud: tuple[FakeCloudRun, StorageEmulator]
) -> None:
    fake, storage = cloud
    write_project(project, "cloudrun-jobs", tasks=1)
    for name in ("users", "search", "reports"):
        project.write(f"tests/test_{name}.py", "def test_ok():\n    pass\n")
    project.write("tests/test_orders.py", """
        import os, signal
        import pytest

        @pytest.fixture(scope="module", autouse=True)
        def broken_database():
            os.kill(os.getpid(), signal.SIGKILL)

        @pytest.mark.parametrize("i", range(10))
        def test_case(i):
            pass
    """)
    result = project.run("run", env=emulated(fake, storage), timeout=300)
    assert result.returncode == 1, output(result)
    rows = outcomes(project)
    crashed = [n for n, (_, m) in rows.items() if m and m.startswith("pytest was killed")]
    gave_up = [n for n, (_, m) in rows.items() if m == (
        "not run: 3 pytest processes in a row stopped at their first test before this test"
        " started"
    )]
    assert len(crashed) == 3 and len(gave_up) == 7, rows
    assert sum(o == "passed" for o, _ in rows.values()) == 3  # the other modules still ran


def test_a_rerun_comes_after_a_retried_tasks_attempt(
    project: Project, cloud: tuple[FakeCloudRun, StorageEmulator]
) -> None:
    fake, storage = cloud
    write_project(project, "cloudrun-jobs", tasks=1, retries=1)
    config = project.root / "configs/local.toml"
    config.write_text(config.read_text().replace("workers = 4\n", "reruns = 1\n"))
    for name in ("users", "search", "reports"):
        project.write(f"tests/test_{name}.py", "def test_ok():\n    pass\n")
    # test_flaky fails, then the container dies under the next test on its first run, so
    # the retry runs test_flaky again (it fails: attempt 2); the rerun passes (attempt 3).
    project.write("tests/test_orders.py", f"""
        import os, signal, time
        from pathlib import Path

        ROOT = Path({str(project.root)!r})

        def runs(name):
            path = ROOT / (name + ".runs")
            count = int(path.read_text()) + 1 if path.exists() else 1
            path.write_text(str(count))
            return count

        def test_flaky():
            count = runs("flaky")
            assert count == 3, f"run {{count}}"

        def test_killer():
            if runs("killer") == 1:
                time.sleep(2)
                os.kill(os.getppid(), signal.SIGKILL)
                time.sleep(30)
    """)
    result = project.run("run", env=emulated(fake, storage), timeout=300)
    assert result.returncode == 1, output(result)
    nodeid = "tests/test_orders.py::test_flaky"
    assert outcomes(project)[nodeid] == ("failed", "AssertionError: run 1\nassert 1 == 3")
    assert attempts(project, nodeid) == [(2, "failed"), (3, "passed")]


def test_the_tests_image_is_pinned_by_digest_and_a_missing_one_stops_the_iteration(
    project: Project, cloud: tuple[FakeCloudRun, StorageEmulator]
) -> None:
    fake, storage = cloud
    write_project(project, "cloudrun-jobs", tasks=2)
    registry = FakeRegistry()
    try:
        env = {**emulated(fake, storage), "REGISTRY_EMULATOR_HOST": registry.address}
        missing = project.run("run", env=env, timeout=300)
        assert missing.returncode == 3, output(missing)
        assert ("tests on Cloud Run Jobs: europe-west1-docker.pkg.dev/p/e2e/tests:unknown: no"
                " such image") in missing.stdout, output(missing)
        assert fake.count("RunJob") == 0

        digest = registry.push("europe-west1-docker.pkg.dev/p/e2e/tests:unknown")
        result = project.run("run", env=env, timeout=300)
    finally:
        registry.stop()
    assert result.returncode == 1, output(result)
    (job,) = fake.jobs.jobs.values()
    assert job.template.template.containers[0].image == (
        f"europe-west1-docker.pkg.dev/p/e2e/tests@{digest}"
    )
    assert len(outcomes(project)) == 200
