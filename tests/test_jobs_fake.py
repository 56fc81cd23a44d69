"""The fake's Cloud Run jobs (jobs_fake.py) with the real JobsClient, ExecutionsClient and
TasksClient: what they refuse, and tasks that really run as local processes.

Every task here runs PROBE, which writes what it saw (its env, pid, argv, the time) to
`out/task<index>-attempt<n>.start.json` when it starts and `.end.json` when it ends (`OUT`
names another folder), and behaves as its args say: `ok`, `sleep S`, `sleep-first S`
(attempt 0 only), `fail-first` (attempt 0 exits 1), `exit N`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

import grpc  # noqa: E402
import pytest  # noqa: E402
from cloudrun_fake import FakeCloudRun  # noqa: E402
from fake_containers import Containers  # noqa: E402
from google.api_core import exceptions  # noqa: E402
from google.cloud import run_v2  # noqa: E402
from google.cloud.run_v2.services.executions.transports.grpc import (  # noqa: E402
    ExecutionsGrpcTransport,
)
from google.cloud.run_v2.services.jobs.transports.grpc import JobsGrpcTransport  # noqa: E402
from google.cloud.run_v2.services.tasks.transports.grpc import TasksGrpcTransport  # noqa: E402
from google.rpc import code_pb2  # noqa: E402

PARENT = "projects/demo-proj/locations/europe-west1"
IMAGE = "europe-west1-docker.pkg.dev/demo-proj/jobs/probe:v1"
State = run_v2.Condition.State
Overrides = run_v2.RunJobRequest.Overrides

PROBE = textwrap.dedent(r'''
    import json, os, sys, time
    index = os.environ["CLOUD_RUN_TASK_INDEX"]
    attempt = os.environ["CLOUD_RUN_TASK_ATTEMPT"]
    out = os.environ.get("OUT", "out")
    os.makedirs(out, exist_ok=True)

    def write(kind):
        path = f"{out}/task{index}-attempt{attempt}.{kind}.json"
        with open(path + ".tmp", "w") as f:
            json.dump({"env": dict(os.environ), "pid": os.getpid(), "argv": sys.argv[1:],
                       "time": time.time()}, f)
        os.replace(path + ".tmp", path)

    write("start")
    mode = sys.argv[1] if len(sys.argv) > 1 else "ok"
    if mode == "sleep" or (mode == "sleep-first" and attempt == "0"):
        time.sleep(float(sys.argv[2]))
    elif mode == "fail-first" and attempt == "0":
        print(f"task {index} attempt {attempt} fails", flush=True)
        sys.exit(1)
    elif mode == "exit":
        sys.exit(int(sys.argv[2]))
    write("end")
    print(f"task {index} attempt {attempt} done")
''')


@dataclass
class Clients:
    jobs: run_v2.JobsClient
    executions: run_v2.ExecutionsClient
    tasks: run_v2.TasksClient


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeCloudRun]:
    containers = Containers({"jobs/probe": ["{python}", "-c", PROBE]}, tmp_path / "logs",
                            workdir=tmp_path)
    with FakeCloudRun(containers) as api:
        yield api


@pytest.fixture
def clients(fake: FakeCloudRun) -> Clients:
    """Built as deployloop.deploy.gcp builds them for an emulator: a transport on a ready
    insecure channel."""
    channel = grpc.insecure_channel(fake.address)
    return Clients(
        run_v2.JobsClient(transport=JobsGrpcTransport(channel=channel)),
        run_v2.ExecutionsClient(transport=ExecutionsGrpcTransport(channel=channel)),
        run_v2.TasksClient(transport=TasksGrpcTransport(channel=channel)),
    )


def job_spec(
    *args: str, env: dict[str, str] | None = None, task_count: int = 0, parallelism: int = 0,
    max_retries: int | None = None, timeout_s: float | None = None,
) -> run_v2.Job:
    container = run_v2.Container(
        image=IMAGE, args=list(args),
        env=[run_v2.EnvVar(name=k, value=v) for k, v in (env or {}).items()],
    )
    template = run_v2.TaskTemplate(containers=[container])
    if max_retries is not None:
        template.max_retries = max_retries
    if timeout_s is not None:
        template.timeout = timedelta(seconds=timeout_s)
    return run_v2.Job(template=run_v2.ExecutionTemplate(
        task_count=task_count, parallelism=parallelism, template=template,
    ))


def result(operation: Any) -> Any:
    """What the operation ends with; bounded, as the client would poll for 600 s."""
    return operation.result(timeout=5)


def create(clients: Clients, job_id: str, job: run_v2.Job) -> run_v2.Job:
    created: run_v2.Job = result(clients.jobs.create_job(parent=PARENT, job=job, job_id=job_id))
    return created


def run(
    fake: FakeCloudRun, clients: Clients, job: str, overrides: Overrides | None = None
) -> tuple[Any, run_v2.Execution]:
    """Run `job` and wait for its execution's end: (RunJob's operation, the execution)."""
    operation = clients.jobs.run_job(request=run_v2.RunJobRequest(
        name=f"{PARENT}/jobs/{job}", overrides=overrides or Overrides(),
    ))
    return operation, fake.jobs.wait(operation.metadata.name, timeout=10)


def seen(tmp_path: Path, index: int, attempt: int, kind: str = "start") -> dict[str, Any]:
    found: dict[str, Any] = json.loads(
        (tmp_path / "out" / f"task{index}-attempt{attempt}.{kind}.json").read_text()
    )
    return found


def wait_for(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"


def completed(execution: run_v2.Execution) -> run_v2.Condition:
    (condition,) = [c for c in execution.conditions if c.type_ == "Completed"]
    return condition


# --- jobs --------------------------------------------------------------------------------------


def test_create_get_update_with_etags(fake: FakeCloudRun, clients: Clients) -> None:
    created = create(clients, "probe", job_spec("ok", env={"MODE": "a"}))
    assert created.name == f"{PARENT}/jobs/probe"
    assert created.uid and created.etag and created.generation == 1
    assert created.terminal_condition.state == State.CONDITION_SUCCEEDED
    # Cloud Run's defaults for what the job left unset.
    assert created.template.task_count == 1
    assert created.template.template.max_retries == 3
    assert created.template.template.timeout == timedelta(seconds=600)

    read = clients.jobs.get_job(name=created.name)
    assert read.etag == created.etag
    read.template.template.containers[0].env.append(run_v2.EnvVar(name="MORE", value="b"))
    updated = result(clients.jobs.update_job(job=read))
    assert updated.generation == 2 and updated.uid == created.uid
    assert updated.etag != read.etag
    assert [v.name for v in clients.jobs.get_job(name=created.name)
            .template.template.containers[0].env] == ["MODE", "MORE"]

    with pytest.raises(exceptions.Aborted):  # `read` is stale now
        clients.jobs.update_job(job=read)
    with pytest.raises(exceptions.Aborted):
        clients.jobs.run_job(request=run_v2.RunJobRequest(name=created.name, etag=read.etag))
    with pytest.raises(exceptions.AlreadyExists):
        create(clients, "probe", job_spec("ok"))

    missing = job_spec("ok")
    missing.name = f"{PARENT}/jobs/nope"
    with pytest.raises(exceptions.NotFound):
        clients.jobs.update_job(job=missing)
    for call in (clients.jobs.get_job, clients.jobs.delete_job, clients.jobs.run_job):
        with pytest.raises(exceptions.NotFound, match="'nope' of kind 'JOB'"):
            call(name=missing.name)
    made = result(clients.jobs.update_job(
        request=run_v2.UpdateJobRequest(job=missing, allow_missing=True)
    ))
    assert made.generation == 1 and made.uid
    assert sorted(j.name for j in clients.jobs.list_jobs(parent=PARENT)) == [
        made.name, created.name,
    ]
    assert fake.count("UpdateJob", "probe") == 2 and fake.count("UpdateJob", "nope") == 2


@pytest.mark.parametrize(
    "job_id", ["1probe", "Probe", "my_probe", "probe-", "-probe", "p" * 64, ""]
)
def test_a_job_id_outside_rfc_1035_is_refused(
    fake: FakeCloudRun, clients: Clients, job_id: str
) -> None:
    with pytest.raises(exceptions.InvalidArgument, match="job_id"):
        create(clients, job_id, job_spec("ok"))
    assert fake.jobs.jobs == {}


def test_the_longest_job_id_is_taken(clients: Clients) -> None:
    assert create(clients, "p" + "-9" * 31, job_spec("ok")).name.endswith("p" + "-9" * 31)


def _reserved(job: run_v2.Job) -> None:
    job.template.template.containers[0].env.append(
        run_v2.EnvVar(name="CLOUD_RUN_TASK_INDEX", value="7")
    )


def _two_containers(job: run_v2.Job) -> None:
    job.template.template.containers.append(run_v2.Container(image=IMAGE))


def _no_image(job: run_v2.Job) -> None:
    job.template.template.containers[0].image = ""


def _retries(job: run_v2.Job) -> None:
    job.template.template.max_retries = 11


def _timeout(job: run_v2.Job) -> None:
    job.template.template.timeout = timedelta(hours=168, seconds=1)


def _parallelism(job: run_v2.Job) -> None:
    job.template.parallelism = -1


def _tasks(job: run_v2.Job) -> None:
    job.template.task_count = -2


def _label(job: run_v2.Job) -> None:
    job.template.labels["Team"] = "x"


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (_reserved, "reserved env names were provided: CLOUD_RUN_TASK_INDEX"),
        (_two_containers, "exactly one container"),
        (_no_image, "image"),
        (_retries, "max_retries"),
        (_timeout, "timeout"),
        (_parallelism, "parallelism"),
        (_tasks, "task_count"),
        (_label, "template.labels: invalid label 'Team'"),
    ],
)
def test_a_bad_template_is_refused(
    fake: FakeCloudRun, clients: Clients, change: Callable[[run_v2.Job], None], words: str
) -> None:
    job = job_spec("ok")
    change(job)
    with pytest.raises(exceptions.InvalidArgument, match=re.escape(words)):
        create(clients, "probe", job)
    good = create(clients, "probe", job_spec("ok"))
    change(good)
    with pytest.raises(exceptions.InvalidArgument, match=re.escape(words)):
        clients.jobs.update_job(job=good)
    assert clients.jobs.get_job(name=good.name).generation == 1


def test_a_reserved_name_in_the_overrides_is_refused(
    fake: FakeCloudRun, clients: Clients
) -> None:
    create(clients, "probe", job_spec("ok"))
    overrides = Overrides(container_overrides=[Overrides.ContainerOverride(
        env=[run_v2.EnvVar(name="CLOUD_RUN_EXECUTION", value="mine")]
    )])
    with pytest.raises(exceptions.InvalidArgument, match="CLOUD_RUN_EXECUTION"):
        clients.jobs.run_job(request=run_v2.RunJobRequest(
            name=f"{PARENT}/jobs/probe", overrides=overrides,
        ))
    assert fake.jobs.executions == {}


# --- executions and tasks ----------------------------------------------------------------------


def test_run_with_overrides_runs_each_task_with_a_job_containers_env(
    fake: FakeCloudRun, clients: Clients, tmp_path: Path
) -> None:
    create(clients, "probe", job_spec("ok", env={"MODE": "template", "KEEP": "kept"}))
    fake.jobs.task_env = {"STORAGE_EMULATOR_HOST": "http://127.0.0.1:4443"}
    operation = clients.jobs.run_job(request=run_v2.RunJobRequest(
        name=f"{PARENT}/jobs/probe",
        overrides=Overrides(task_count=3, container_overrides=[Overrides.ContainerOverride(
            env=[run_v2.EnvVar(name="MODE", value="override")]
        )]),
    ))
    name = operation.metadata.name  # the execution, before it has ended
    assert re.fullmatch(rf"{PARENT}/jobs/probe/executions/probe-[a-z0-9]{{5}}", name)
    execution_id = name.rsplit("/", 1)[-1]
    fake.jobs.wait(name)
    execution = result(operation)
    assert execution.name == name and execution.task_count == 3
    assert (execution.succeeded_count, execution.failed_count, execution.retried_count,
            execution.running_count) == (3, 0, 0, 0)
    assert execution.start_time and execution.completion_time and not execution.reconciling
    assert completed(execution).state == State.CONDITION_SUCCEEDED
    assert clients.executions.get_execution(name=name).etag == execution.etag
    assert [e.name for e in clients.executions.list_executions(
        parent=f"{PARENT}/jobs/probe")] == [name]

    machine = {"PATH", "LANG"} & set(os.environ)
    for index in range(3):
        env = seen(tmp_path, index, 0)["env"]
        assert {k: env[k] for k in env if k.startswith("CLOUD_RUN_")} == {
            "CLOUD_RUN_JOB": "probe", "CLOUD_RUN_EXECUTION": execution_id,
            "CLOUD_RUN_TASK_INDEX": str(index), "CLOUD_RUN_TASK_ATTEMPT": "0",
            "CLOUD_RUN_TASK_COUNT": "3",
        }
        assert env["MODE"] == "override" and env["KEEP"] == "kept"
        assert env["STORAGE_EMULATOR_HOST"] == "http://127.0.0.1:4443"
        assert set(env) == machine | {
            "MODE", "KEEP", "STORAGE_EMULATOR_HOST", "PYTHONUNBUFFERED",
            "CLOUD_RUN_JOB", "CLOUD_RUN_EXECUTION", "CLOUD_RUN_TASK_INDEX",
            "CLOUD_RUN_TASK_ATTEMPT", "CLOUD_RUN_TASK_COUNT",
        }, "only what a job container gets"
        log = tmp_path / "logs" / "jobs" / execution_id / f"task{index}-attempt0.log"
        assert f"task {index} attempt 0 done" in log.read_text()

    first = clients.tasks.list_tasks(request=run_v2.ListTasksRequest(parent=name, page_size=2))
    assert len(first.tasks) == 2 and first.next_page_token
    tasks = list(clients.tasks.list_tasks(
        request=run_v2.ListTasksRequest(parent=name, page_size=2)
    ))
    assert [t.name for t in tasks] == [
        f"{name}/tasks/{execution_id}-task{i}" for i in range(3)
    ]
    for index, task in enumerate(tasks):
        assert task.index == index and task.retried == 0 and task.execution == execution_id
        assert task.last_attempt_result.status.code == code_pb2.OK
        assert task.start_time <= task.completion_time
        assert {v.name: v.value for v in task.containers[0].env}["MODE"] == "override"
    assert clients.tasks.get_task(name=tasks[1].name).index == 1
    with pytest.raises(exceptions.NotFound):
        clients.tasks.get_task(name=f"{name}/tasks/{execution_id}-task3")

    job = clients.jobs.get_job(name=f"{PARENT}/jobs/probe")
    assert job.execution_count == 1
    assert job.latest_created_execution.name == execution_id
    assert (job.latest_created_execution.completion_status
            == run_v2.ExecutionReference.CompletionStatus.EXECUTION_SUCCEEDED)


def test_a_failed_attempt_is_retried_with_the_next_attempt_number(
    fake: FakeCloudRun, clients: Clients, tmp_path: Path
) -> None:
    create(clients, "probe", job_spec("fail-first", max_retries=1))
    operation, execution = run(fake, clients, "probe")
    assert (execution.succeeded_count, execution.failed_count, execution.retried_count) == (
        1, 0, 1,
    )
    assert completed(result(operation)).state == State.CONDITION_SUCCEEDED
    (task,) = clients.tasks.list_tasks(parent=execution.name)
    assert task.retried == 1 and task.last_attempt_result.exit_code == 0
    assert seen(tmp_path, 0, 1)["env"]["CLOUD_RUN_TASK_ATTEMPT"] == "1"
    assert not (tmp_path / "out" / "task0-attempt0.end.json").exists()
    logs = tmp_path / "logs" / "jobs" / execution.name.rsplit("/", 1)[-1]
    assert "task 0 attempt 0 fails" in (logs / "task0-attempt0.log").read_text()
    assert "task 0 attempt 1 done" in (logs / "task0-attempt1.log").read_text()


def test_a_non_zero_exit_fails_the_execution_with_its_exit_code(
    fake: FakeCloudRun, clients: Clients
) -> None:
    create(clients, "probe", job_spec("exit", "3", max_retries=0))
    operation, execution = run(fake, clients, "probe")
    execution_id = execution.name.rsplit("/", 1)[-1]
    message = (f"Task {execution_id}-task0 failed with exit code: 3 and message: The container"
               " exited with an error.")
    assert (execution.succeeded_count, execution.failed_count) == (0, 1)
    assert completed(execution).state == State.CONDITION_FAILED
    assert completed(execution).message == message
    assert completed(execution).execution_reason == (
        run_v2.Condition.ExecutionReason.NON_ZERO_EXIT_CODE
    )
    with pytest.raises(exceptions.GoogleAPICallError) as failed:
        result(operation)
    assert failed.value.message == message
    assert operation.metadata.failed_count == 1  # the operation still holds the execution
    (task,) = clients.tasks.list_tasks(parent=execution.name)
    assert task.last_attempt_result.exit_code == 3 and task.retried == 0
    assert task.last_attempt_result.status.message == "The container exited with an error."
    assert (clients.jobs.get_job(name=f"{PARENT}/jobs/probe").latest_created_execution
            .completion_status == run_v2.ExecutionReference.CompletionStatus.EXECUTION_FAILED)


def test_an_attempt_past_its_timeout_is_killed_and_fails(
    fake: FakeCloudRun, clients: Clients, tmp_path: Path
) -> None:
    """The template's timeout, and a run's override of it, bound each attempt."""
    create(clients, "probe", job_spec("sleep", "30", max_retries=0, timeout_s=1))
    create(clients, "again", job_spec("sleep-first", "30", max_retries=1,
                                      env={"OUT": "again"}))
    started = time.monotonic()
    timed_out = clients.jobs.run_job(name=f"{PARENT}/jobs/probe").metadata.name
    retried = clients.jobs.run_job(request=run_v2.RunJobRequest(
        name=f"{PARENT}/jobs/again", overrides=Overrides(timeout=timedelta(seconds=1)),
    )).metadata.name
    execution, other = fake.jobs.wait(timed_out), fake.jobs.wait(retried)
    assert time.monotonic() - started < 5

    assert execution.failed_count == 1
    assert completed(execution).message.endswith(
        "-task0 failed with exit code: 0 and message: The configured timeout was reached."
    )
    (task,) = clients.tasks.list_tasks(parent=execution.name)
    assert task.last_attempt_result.status.code == code_pb2.DEADLINE_EXCEEDED
    assert task.timeout == timedelta(seconds=1)

    assert (other.succeeded_count, other.retried_count) == (1, 1)
    assert other.template.timeout == timedelta(seconds=1)  # the job's own is 600 s
    pids = [json.loads(p.read_text())["pid"] for p in tmp_path.glob("*/*.start.json")]
    assert len(pids) == 3 and all(gone(pid) for pid in pids)


def test_kill_task_kills_an_attempt_as_an_oom_kill_or_a_lost_machine(
    fake: FakeCloudRun, clients: Clients, tmp_path: Path
) -> None:
    create(clients, "probe", job_spec("sleep", "30", max_retries=0, task_count=2))
    fake.jobs.kill_task(0, after_s=0.2)
    fake.jobs.kill_task(1, after_s=0.2, oom=False)
    _, execution = run(fake, clients, "probe")
    assert (execution.succeeded_count, execution.failed_count) == (0, 2)
    assert completed(execution).message.endswith(
        "-task0 failed with exit code: 0 and message: The configured memory limit was reached."
    )
    oom, lost = clients.tasks.list_tasks(parent=execution.name)
    assert oom.last_attempt_result.term_signal == lost.last_attempt_result.term_signal == 9
    assert oom.last_attempt_result.status.message == "The configured memory limit was reached."
    assert lost.last_attempt_result.status.message == "Container terminated on signal 9."
    assert gone(seen(tmp_path, 0, 0)["pid"]) and gone(seen(tmp_path, 1, 0)["pid"])

    # With a retry, the next attempt runs and succeeds.
    create(clients, "again", job_spec("sleep-first", "30", max_retries=1))
    fake.jobs.kill_task(0, attempt=0, after_s=0.1)
    _, execution = run(fake, clients, "again")
    assert (execution.succeeded_count, execution.retried_count) == (1, 1)


def test_cancel_kills_the_running_attempts_and_cancels_the_rest(
    fake: FakeCloudRun, clients: Clients, tmp_path: Path
) -> None:
    create(clients, "probe", job_spec("sleep", "30", task_count=3, parallelism=1))
    operation = clients.jobs.run_job(name=f"{PARENT}/jobs/probe")
    name = operation.metadata.name
    wait_for(lambda: (tmp_path / "out" / "task0-attempt0.start.json").exists())
    assert clients.executions.get_execution(name=name).running_count == 1
    cancelled = result(clients.executions.cancel_execution(name=name))
    assert cancelled.completion_time
    assert (cancelled.cancelled_count, cancelled.succeeded_count, cancelled.failed_count,
            cancelled.running_count) == (3, 0, 0, 0)
    assert completed(cancelled).state == State.CONDITION_FAILED
    assert completed(cancelled).execution_reason == run_v2.Condition.ExecutionReason.CANCELLED
    assert gone(seen(tmp_path, 0, 0)["pid"])
    assert not (tmp_path / "out" / "task1-attempt0.start.json").exists()
    assert result(operation).cancelled_count == 3  # RunJob's operation is done
    with pytest.raises(exceptions.FailedPrecondition):
        clients.executions.cancel_execution(name=name)

    result(clients.executions.delete_execution(name=name))
    with pytest.raises(exceptions.NotFound, match="of kind 'EXECUTION'"):
        clients.executions.get_execution(name=name)


def test_parallelism_bounds_the_attempts_running_at_once(
    fake: FakeCloudRun, clients: Clients, tmp_path: Path
) -> None:
    create(clients, "one", job_spec("sleep", "0.15", task_count=3, parallelism=1))
    _, execution = run(fake, clients, "one")
    assert execution.parallelism == 1 and execution.succeeded_count == 3
    spans = sorted((seen(tmp_path, i, 0)["time"], seen(tmp_path, i, 0, "end")["time"])
                   for i in range(3))
    assert all(end <= next_start for (_, end), (next_start, _) in zip(spans, spans[1:],
                                                                        strict=False))
    tasks = list(clients.tasks.list_tasks(parent=execution.name))
    assert all(a.completion_time <= b.start_time for a, b in zip(tasks, tasks[1:],
                                                                  strict=False))

    # 0: every task at once.
    create(clients, "all", job_spec("sleep", "0.2", task_count=3))
    _, execution = run(fake, clients, "all")
    assert execution.parallelism == 3 and execution.succeeded_count == 3
    starts = [seen(tmp_path, i, 0)["time"] for i in range(3)]
    ends = [seen(tmp_path, i, 0, "end")["time"] for i in range(3)]
    assert max(starts) < min(ends)


def test_deleting_a_job_takes_its_executions(fake: FakeCloudRun, clients: Clients) -> None:
    job = create(clients, "probe", job_spec("ok"))
    _, execution = run(fake, clients, "probe")
    with pytest.raises(exceptions.Aborted):
        clients.jobs.delete_job(request=run_v2.DeleteJobRequest(name=job.name, etag="old"))
    result(clients.jobs.delete_job(name=job.name))
    with pytest.raises(exceptions.NotFound):
        clients.executions.get_execution(name=execution.name)
    assert fake.jobs.executions == {}


def test_the_fakes_knobs_answer_job_calls_too(fake: FakeCloudRun, clients: Clients) -> None:
    create(clients, "probe", job_spec("ok"))
    fake.deny(service="probe", method="RunJob")
    with pytest.raises(exceptions.PermissionDenied, match="'run.jobs.run' denied"):
        clients.jobs.run_job(name=f"{PARENT}/jobs/probe")
    fake.unavailable("CreateJob", 1)
    with pytest.raises(exceptions.ServiceUnavailable):  # Create does not retry
        create(clients, "other", job_spec("ok"))
    create(clients, "other", job_spec("ok"))
    assert fake.count("RunJob", "probe") == 1 and fake.count("CreateJob") == 3
    assert [c.method for c in fake.mutating_calls()] == ["CreateJob", "RunJob", "CreateJob",
                                                         "CreateJob"]


def test_stop_leaves_no_task_running(tmp_path: Path) -> None:
    containers = Containers({"jobs/probe": ["{python}", "-c", PROBE]}, tmp_path / "logs",
                            workdir=tmp_path)
    with FakeCloudRun(containers) as fake:
        channel = grpc.insecure_channel(fake.address)
        jobs = run_v2.JobsClient(transport=JobsGrpcTransport(channel=channel))
        result(jobs.create_job(parent=PARENT, job=job_spec("sleep", "30", task_count=2),
                               job_id="probe"))
        name = jobs.run_job(name=f"{PARENT}/jobs/probe").metadata.name
        wait_for(lambda: all((tmp_path / "out" / f"task{i}-attempt0.start.json").exists()
                             for i in range(2)))
    assert all(gone(seen(tmp_path, i, 0)["pid"]) for i in range(2))
    assert fake.jobs.executions[name].cancelled_count == 2
    assert not [t for t in threading.enumerate() if t.name.startswith("fake-job ")]


def test_the_command_line_fake_runs_jobs(tmp_path: Path) -> None:
    """`cloudrun_fake.py --images FILE --task-env NAME=VALUE -- command`: the command's
    client runs a job whose task is the image's command, with that variable."""
    (tmp_path / "images.toml").write_text(
        '[images]\n"jobs/hello" = ["{python}", "-c", '
        '"import os; print(os.environ[\'CLOUD_RUN_TASK_INDEX\'], os.environ[\'MARK\'])"]\n'
    )
    client = textwrap.dedent(f'''
        import os, grpc
        from google.cloud import run_v2
        from google.cloud.run_v2.services.jobs.transports.grpc import JobsGrpcTransport
        channel = grpc.insecure_channel(os.environ["CLOUDRUN_EMULATOR_HOST"])
        jobs = run_v2.JobsClient(transport=JobsGrpcTransport(channel=channel))
        container = run_v2.Container(image="r/p/jobs/hello:1")
        job = run_v2.Job(template=run_v2.ExecutionTemplate(
            task_count=2, template=run_v2.TaskTemplate(containers=[container])))
        jobs.create_job(parent="{PARENT}", job=job, job_id="hello").result(timeout=5)
        execution = jobs.run_job(name="{PARENT}/jobs/hello").result(timeout=30)
        print("succeeded", execution.succeeded_count, execution.name.rsplit("/", 1)[-1])
    ''')
    (tmp_path / "client.py").write_text(client)
    fake_script = Path(__file__).with_name("cloudrun_fake.py")
    result = subprocess.run(
        [sys.executable, str(fake_script), "--images", "images.toml", "--logs", "logs",
         "--task-env", "MARK=inside", "--", sys.executable, "client.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
        env={**os.environ, "NO_GCE_CHECK": "true"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    match = re.search(r"^succeeded 2 (hello-[a-z0-9]{5})$", result.stdout, re.M)
    assert match, result.stdout
    log = tmp_path / "logs" / "jobs" / match[1] / "task1-attempt0.log"
    assert log.read_text().endswith(" 1 inside\n")
