"""Cloud Run Jobs, Executions and Tasks for the fake Admin API (cloudrun_fake.FakeCloudRun
serves them), for the real `run_v2.JobsClient`, `ExecutionsClient` and `TasksClient`.

`google.cloud.run.v2.Jobs` (CreateJob, GetJob, ListJobs, UpdateJob, DeleteJob, RunJob),
`google.cloud.run.v2.Executions` (GetExecution, ListExecutions, CancelExecution,
DeleteExecution) and `google.cloud.run.v2.Tasks` (GetTask, ListTasks). Every call goes through
FakeCloudRun's `_enter` (recorded in `calls`; `deny`, `unavailable`, ... apply), and its
operations live in FakeCloudRun's dict, answered by its GetOperation.

Like the real API it refuses: a job id that is not RFC 1035, a job that exists (create) or
does not (get, update, run, delete), a stale etag (update, run, delete), a template without
exactly one container with an image, task_count < 0 or > 10000, parallelism < 0,
max_retries outside 0..10, a timeout <= 0 or > 168 h, a reserved env var name
(CLOUD_RUN_JOB, ...), labels that break Google's rules. Unset fields get Cloud Run's
defaults: 1 task, 3 retries, a 600 s timeout.

RunJob makes an execution `<job>/executions/<job id>-<5 random [a-z0-9]>` whose tasks really
run: each attempt is a local process of the command the template's image maps to (the same
image map as revisions, fake_containers.py; `{python}` is this interpreter), followed by the
container's args (the override's when given). It runs in the fake's working directory, in its
own session, with the env a job container gets: only PATH and LANG of this machine, then
`task_env` (what "inside the project's network" means to a test: STORAGE_EMULATOR_HOST, a
metadata host, ...), the container's plain env vars with the override's laid over them,
CLOUD_RUN_JOB, CLOUD_RUN_EXECUTION, CLOUD_RUN_TASK_INDEX, CLOUD_RUN_TASK_ATTEMPT (0 first),
CLOUD_RUN_TASK_COUNT, and PYTHONUNBUFFERED=1 (as revisions get, so a killed task's last lines
reach its log). Secret references get no value. Output goes to
`<logs>/jobs/<execution id>/task<index>-attempt<n>.log`, each line stamped like a revision's.
An image the map does not name runs nothing: its attempts succeed at once (as a revision of
such an image is ready at once).

At most `parallelism` attempts run at once (0: all). An attempt that exits non-zero, runs past
the timeout (its process group is then SIGKILLed) or is killed fails; the task is retried
(CLOUD_RUN_TASK_ATTEMPT + 1) while its retries are fewer than max_retries, then failed. When
an attempt's main process ends, whatever is left of its process group is killed too, as when
Cloud Run tears a container down. The execution ends once every task is done; RunJob's
operation carries the execution as metadata from the start and is done then: the execution
as its response, or, when a task failed, an error with the execution's failure message.

Knobs: `task_env`, `kill_task` (an attempt SIGKILLed after a delay: an OOM kill or a lost
machine); `wait(execution)` until an execution has ended; `executions` and `tasks(execution)`
for assertions. `stop()` kills every task's process group.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import string
import subprocess
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

import grpc  # noqa: E402
from fake_containers import Containers, _copy_stamped, machine_env, task_argv  # noqa: E402
from google.cloud import run_v2  # noqa: E402
from google.longrunning import operations_pb2  # noqa: E402
from google.protobuf import any_pb2  # noqa: E402
from google.rpc import code_pb2, status_pb2  # noqa: E402
from grpc_fake import unary  # noqa: E402

Enter = Callable[[str, str, grpc.ServicerContext], None]
CheckLabels = Callable[[Any, grpc.ServicerContext], None]

State = run_v2.Condition.State
ExecutionReason = run_v2.Condition.ExecutionReason
Completion = run_v2.ExecutionReference.CompletionStatus

RESERVED_ENV = (
    "CLOUD_RUN_JOB", "CLOUD_RUN_EXECUTION", "CLOUD_RUN_TASK_INDEX", "CLOUD_RUN_TASK_ATTEMPT",
    "CLOUD_RUN_TASK_COUNT",
)
JOB_ID = re.compile(r"^[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?$")  # RFC 1035, at most 63
MAX_TASKS = 10_000
MAX_RETRIES = 10
MAX_TIMEOUT = timedelta(hours=168)
DEFAULT_RETRIES = 3  # TaskTemplate.max_retries: "Defaults to 3"
DEFAULT_TIMEOUT = timedelta(seconds=600)  # TaskTemplate.timeout: "Defaults to 600 seconds"
PAGE_SIZE = 100
POLL_S = 0.01
CANCEL_WAIT_S = 10.0

# What Cloud Run says of a failed attempt (Task.last_attempt_result.status) and, for the
# task that failed the execution, in the execution's Completed condition and the RunJob
# operation's error: "Task <task id> failed with exit code: <n> and message: <status message>".
# The wording is as quoted from real executions in public issue threads, notes and tests
# (`gcloud run jobs executions describe`, operation errors): a non-zero exit, "...failed with
# exit code: 1 and message: The container exited with an error."; a timeout, "...failed with
# exit code: 0 and message: The configured timeout was reached."; an OOM kill, "...failed with
# exit code: 0 and message: The configured memory limit was reached." (exit code 0: a killed
# container has none), its system log line "Container terminated on signal 9.". The codes
# (ABORTED for an exit, DEADLINE_EXCEEDED for a timeout, CANCELLED for a cancelled task) are
# those floci-gcp's Cloud Run emulator documents as GCP's; RESOURCE_EXHAUSTED for an OOM kill
# and INTERNAL for another signal are guesses: no public source shows them.
EXITED = "The container exited with an error."
TIMED_OUT = "The configured timeout was reached."
OUT_OF_MEMORY = "The configured memory limit was reached."
CANCELLED = "Cancelled by user."  # floci-gcp's documented GCP wording, not seen elsewhere


def _signalled(number: int) -> str:
    return f"Container terminated on signal {number}."


@dataclass
class _Kill:
    index: int
    attempt: int
    after_s: float
    oom: bool
    execution: str | None  # None: the next execution that runs that attempt


@dataclass
class _Attempt:
    index: int
    number: int
    process: subprocess.Popen[bytes] | None  # None: nothing to run (exit code in `rc`)
    copying: threading.Thread | None
    deadline: float  # time.monotonic()
    rc: int | None = None
    kill_at: float | None = None
    oom: bool = True
    timed_out: bool = False
    killed: bool = False
    # What every process of its "container" inherited: CLOUD_RUN_EXECUTION, ..._TASK_INDEX
    # and ..._TASK_ATTEMPT, as NAME=VALUE; see _kill.
    marks: tuple[bytes, ...] = ()


@dataclass
class _Run:
    execution: run_v2.Execution  # the live message; copies go out
    tasks: list[run_v2.Task]
    job: str  # the job's full name
    operation: str  # RunJob's operation
    argv: list[str] | None  # None: the image maps to no command
    env: dict[str, str]  # the container's plain env, overrides laid over it
    timeout_s: float
    max_retries: int
    parallelism: int  # > 0
    pending: deque[int]
    running: dict[int, _Attempt] = field(default_factory=dict)
    cancel: bool = False
    done: threading.Event = field(default_factory=threading.Event)
    wake: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    @property
    def id(self) -> str:
        return self.execution.name.rsplit("/", 1)[-1]


class FakeJobs:
    """Jobs, executions and tasks of a FakeCloudRun: its `enter` records each call and
    answers it with a knob's error; `operations` (name -> Operation) and `lock` are its own.
    `containers` gives the image map, the logs folder and the working directory (None: no
    image runs anything, logs go to a `fake-cloudrun-jobs-<pid>` temporary folder);
    `check_labels` refuses bad labels of a job (and its template)."""

    def __init__(
        self,
        enter: Enter,
        operations: dict[str, operations_pb2.Operation],
        lock: threading.RLock,
        containers: Containers | None = None,
        check_labels: CheckLabels | None = None,
    ) -> None:
        self.task_env: dict[str, str] = {}
        self.containers = containers
        self.logs = (
            containers.logs if containers is not None
            else Path(tempfile.gettempdir()) / f"fake-cloudrun-jobs-{os.getpid()}"
        )
        self.workdir = containers.workdir if containers is not None else Path.cwd()
        self._enter = enter
        self._operations = operations
        self._lock = lock
        self._check_labels = check_labels
        self._jobs: dict[str, run_v2.Job] = {}  # by full name
        self._runs: dict[str, _Run] = {}  # by execution name
        self._kills: list[_Kill] = []
        self._stopping = False

    # --- gRPC ------------------------------------------------------------------------------------

    def handlers(self) -> tuple[grpc.GenericRpcHandler, ...]:
        op_out = operations_pb2.Operation.SerializeToString
        jobs = grpc.method_handlers_generic_handler(
            "google.cloud.run.v2.Jobs",
            {
                "CreateJob": unary(self._create, run_v2.CreateJobRequest.deserialize, op_out),
                "GetJob": unary(self._get, run_v2.GetJobRequest.deserialize,
                                run_v2.Job.serialize),
                "ListJobs": unary(self._list, run_v2.ListJobsRequest.deserialize,
                                  run_v2.ListJobsResponse.serialize),
                "UpdateJob": unary(self._update, run_v2.UpdateJobRequest.deserialize, op_out),
                "DeleteJob": unary(self._delete, run_v2.DeleteJobRequest.deserialize, op_out),
                "RunJob": unary(self._run, run_v2.RunJobRequest.deserialize, op_out),
            },
        )
        executions = grpc.method_handlers_generic_handler(
            "google.cloud.run.v2.Executions",
            {
                "GetExecution": unary(
                    self._get_execution, run_v2.GetExecutionRequest.deserialize,
                    run_v2.Execution.serialize,
                ),
                "ListExecutions": unary(
                    self._list_executions, run_v2.ListExecutionsRequest.deserialize,
                    run_v2.ListExecutionsResponse.serialize,
                ),
                "CancelExecution": unary(
                    self._cancel, run_v2.CancelExecutionRequest.deserialize, op_out
                ),
                "DeleteExecution": unary(
                    self._delete_execution, run_v2.DeleteExecutionRequest.deserialize, op_out
                ),
            },
        )
        tasks = grpc.method_handlers_generic_handler(
            "google.cloud.run.v2.Tasks",
            {
                "GetTask": unary(self._get_task, run_v2.GetTaskRequest.deserialize,
                                 run_v2.Task.serialize),
                "ListTasks": unary(self._list_tasks, run_v2.ListTasksRequest.deserialize,
                                   run_v2.ListTasksResponse.serialize),
            },
        )
        return (jobs, executions, tasks)

    def stop(self) -> None:
        """Kill every task's process group; the executions end cancelled."""
        with self._lock:
            self._stopping = True
            runs = list(self._runs.values())
            for run in runs:
                for attempt in run.running.values():
                    _kill(attempt)
                run.wake.set()
        for run in runs:
            if run.thread is not None:
                run.thread.join(5)

    # --- knobs and inspection --------------------------------------------------------------------

    def kill_task(
        self, index: int, attempt: int = 0, after_s: float = 0.0, *, oom: bool = True,
        execution: str | None = None,
    ) -> None:
        """Attempt `attempt` of task `index` (of `execution`, else of the next execution that
        runs it) is SIGKILLed, whole process group, `after_s` seconds after it starts: as
        Cloud Run's OOM killer does (`oom`), or a machine lost under it (then the attempt
        reads "Container terminated on signal 9.")."""
        with self._lock:
            self._kills.append(_Kill(index, attempt, after_s, oom, execution))

    def wait(self, execution: str, timeout: float = 10.0) -> run_v2.Execution:
        """The execution (full name) once it has ended; TimeoutError if it runs on."""
        with self._lock:
            run = self._runs[execution]
        if not run.done.wait(timeout):
            raise TimeoutError(f"{execution} still runs after {timeout} s")
        with self._lock:
            ended: run_v2.Execution = _copy(run.execution)
            return ended

    @property
    def executions(self) -> dict[str, run_v2.Execution]:
        """Every execution, by full name, as it is now."""
        with self._lock:
            return {name: _copy(run.execution) for name, run in self._runs.items()}

    @property
    def jobs(self) -> dict[str, run_v2.Job]:
        with self._lock:
            return {name: _copy(job) for name, job in self._jobs.items()}

    def tasks(self, execution: str) -> list[run_v2.Task]:
        with self._lock:
            return [_copy(task) for task in self._runs[execution].tasks]

    # --- Jobs ------------------------------------------------------------------------------------

    def _create(self, request: run_v2.CreateJobRequest, context: grpc.ServicerContext) -> Any:
        name = f"{request.parent}/jobs/{request.job_id}"
        self._enter("CreateJob", name, context)
        _check_id(request.job_id, context)
        self._check_job(request.job, context)
        with self._lock:
            if name in self._jobs:
                context.abort(grpc.StatusCode.ALREADY_EXISTS,
                              f"Resource '{request.job_id}' already exists.")
            job = _copy(request.job)
            now = _now()
            job.name = name
            job.uid = str(uuid.uuid4())
            job.generation = 1
            job.create_time = now
            job.update_time = now
            self._settle(job)
            if not request.validate_only:
                self._jobs[name] = job
            return self._job_operation(job)

    def _get(self, request: run_v2.GetJobRequest, context: grpc.ServicerContext) -> Any:
        self._enter("GetJob", request.name, context)
        with self._lock:
            return _copy(self._job(request.name, context))

    def _list(self, request: run_v2.ListJobsRequest, context: grpc.ServicerContext) -> Any:
        self._enter("ListJobs", request.parent, context)
        with self._lock:
            jobs = [_copy(j) for n, j in sorted(self._jobs.items())
                    if n.startswith(request.parent + "/jobs/")]
        page, token = _page(jobs, request.page_size, request.page_token, context)
        return run_v2.ListJobsResponse(jobs=page, next_page_token=token)

    def _update(self, request: run_v2.UpdateJobRequest, context: grpc.ServicerContext) -> Any:
        name = request.job.name
        self._enter("UpdateJob", name, context)
        self._check_job(request.job, context)
        with self._lock:
            old = self._jobs.get(name)
            if old is None:
                if not request.allow_missing:
                    context.abort(grpc.StatusCode.NOT_FOUND, _missing(name, "JOB"))
                _check_id(name.rsplit("/", 1)[-1], context)
            elif request.job.etag and request.job.etag != old.etag:
                context.abort(grpc.StatusCode.ABORTED, _stale(name))
            job = _copy(request.job)
            now = _now()
            if old is None:
                job.uid = str(uuid.uuid4())
                job.generation = 1
                job.create_time = now
            else:
                # Output-only fields stay the service's; the rest is replaced, as
                # UpdateService does.
                for kept in ("uid", "create_time", "execution_count",
                             "latest_created_execution"):
                    setattr(job, kept, getattr(old, kept))
                job.generation = old.generation + 1
            job.update_time = now
            self._settle(job)
            if not request.validate_only:
                self._jobs[name] = job
            return self._job_operation(job)

    def _delete(self, request: run_v2.DeleteJobRequest, context: grpc.ServicerContext) -> Any:
        self._enter("DeleteJob", request.name, context)
        with self._lock:
            job = self._job(request.name, context)
            if request.etag and request.etag != job.etag:
                context.abort(grpc.StatusCode.ABORTED, _stale(request.name))
            if request.validate_only:
                return self._job_operation(job)
            del self._jobs[request.name]
            runs = [r for r in self._runs.values() if r.job == request.name]
            for run in runs:
                run.cancel = True
                run.wake.set()
        for run in runs:  # as Cloud Run does: the job's executions go with it
            run.done.wait(CANCEL_WAIT_S)
        with self._lock:
            for run in runs:
                self._runs.pop(run.execution.name, None)
            job.delete_time = _now()
            return self._job_operation(job)

    def _run(self, request: run_v2.RunJobRequest, context: grpc.ServicerContext) -> Any:
        self._enter("RunJob", request.name, context)
        overrides = request.overrides
        if len(overrides.container_overrides) > 1:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          "The request has errors: overrides.container_overrides: a job has"
                          " one container, so at most one override")
        if overrides.task_count < 0 or overrides.task_count > MAX_TASKS:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"The request has errors: overrides.task_count: must be between 1"
                          f" and {MAX_TASKS}, not {overrides.task_count}")
        if "timeout" in overrides:
            _check_timeout(overrides.timeout, "overrides.timeout", context)
        for override in overrides.container_overrides:
            _check_env([v.name for v in override.env], context)
        with self._lock:
            job = self._job(request.name, context)
            if request.etag and request.etag != job.etag:
                context.abort(grpc.StatusCode.ABORTED, _stale(request.name))
            container = job.template.template.containers[0]
            for override in overrides.container_overrides:
                if override.name and container.name and override.name != container.name:
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                  f"The request has errors: overrides.container_overrides:"
                                  f" no container named '{override.name}'")
            run = self._new_run(job, overrides)
            if request.validate_only:
                return operations_pb2.Operation(
                    name=run.operation, done=True, metadata=_pack(run.execution),
                    response=_pack(run.execution),
                )
            self._runs[run.execution.name] = run
            job.execution_count += 1
            job.latest_created_execution = _reference(run.execution)
            self._publish(run)
            run.thread = threading.Thread(
                target=self._drive, args=(run,), name=f"fake-job {run.id}", daemon=True
            )
            run.thread.start()
            return operations_pb2.Operation(
                name=run.operation, done=False, metadata=_pack(run.execution)
            )

    # --- Executions and tasks --------------------------------------------------------------------

    def _get_execution(
        self, request: run_v2.GetExecutionRequest, context: grpc.ServicerContext
    ) -> Any:
        self._enter("GetExecution", request.name, context)
        with self._lock:
            return _copy(self._execution(request.name, context).execution)

    def _list_executions(
        self, request: run_v2.ListExecutionsRequest, context: grpc.ServicerContext
    ) -> Any:
        self._enter("ListExecutions", request.parent, context)
        parent = request.parent
        with self._lock:
            runs = [r for r in self._runs.values()
                    if r.job == parent or (parent.endswith("/jobs/-")
                                          and r.job.startswith(parent[:-1]))]
            # Newest first, as the real list comes.
            runs.sort(key=lambda r: r.execution.create_time, reverse=True)
            executions = [_copy(r.execution) for r in runs]
        page, token = _page(executions, request.page_size, request.page_token, context)
        return run_v2.ListExecutionsResponse(executions=page, next_page_token=token)

    def _cancel(
        self, request: run_v2.CancelExecutionRequest, context: grpc.ServicerContext
    ) -> Any:
        self._enter("CancelExecution", request.name, context)
        with self._lock:
            run = self._execution(request.name, context)
            if request.etag and request.etag != run.execution.etag:
                context.abort(grpc.StatusCode.ABORTED, _stale(request.name))
            if run.done.is_set():
                context.abort(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"Execution '{run.id}' cannot be cancelled because it is not running.",
                )
            if not request.validate_only:
                run.cancel = True
                run.wake.set()
        if not request.validate_only:
            run.done.wait(CANCEL_WAIT_S)
        with self._lock:
            return self._execution_operation(run.execution)

    def _delete_execution(
        self, request: run_v2.DeleteExecutionRequest, context: grpc.ServicerContext
    ) -> Any:
        self._enter("DeleteExecution", request.name, context)
        with self._lock:
            run = self._execution(request.name, context)
            if request.etag and request.etag != run.execution.etag:
                context.abort(grpc.StatusCode.ABORTED, _stale(request.name))
            if request.validate_only:
                return self._execution_operation(run.execution)
            run.cancel = True  # a running execution is cancelled first
            run.wake.set()
        run.done.wait(CANCEL_WAIT_S)
        with self._lock:
            self._runs.pop(request.name, None)
            execution = _copy(run.execution)
            execution.delete_time = _now()
            return self._execution_operation(execution)

    def _get_task(self, request: run_v2.GetTaskRequest, context: grpc.ServicerContext) -> Any:
        self._enter("GetTask", request.name, context)
        with self._lock:
            run = self._runs.get(request.name.split("/tasks/")[0])
            for task in run.tasks if run is not None else []:
                if task.name == request.name:
                    return _copy(task)
            context.abort(grpc.StatusCode.NOT_FOUND, _missing(request.name, "TASK"))

    def _list_tasks(
        self, request: run_v2.ListTasksRequest, context: grpc.ServicerContext
    ) -> Any:
        self._enter("ListTasks", request.parent, context)
        with self._lock:
            run = self._runs.get(request.parent)
            tasks = [_copy(t) for t in run.tasks] if run is not None else []  # index order
        page, token = _page(tasks, request.page_size, request.page_token, context)
        return run_v2.ListTasksResponse(tasks=page, next_page_token=token)

    # --- checks and lookups ----------------------------------------------------------------------

    def _check_job(self, job: run_v2.Job, context: grpc.ServicerContext) -> None:
        template = job.template
        containers = template.template.containers
        if len(containers) != 1:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          "The request has errors: template.template.containers: a job needs"
                          f" exactly one container, not {len(containers)}")
        if not containers[0].image:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          "The request has errors: template.template.containers[0].image:"
                          " an image is required")
        if not 0 <= template.task_count <= MAX_TASKS:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"The request has errors: template.task_count: must be between 1"
                          f" and {MAX_TASKS}, not {template.task_count}")
        if template.parallelism < 0:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          "The request has errors: template.parallelism: must not be"
                          f" negative, not {template.parallelism}")
        if "max_retries" in template.template and not (
            0 <= template.template.max_retries <= MAX_RETRIES
        ):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          "The request has errors: template.template.max_retries: must be"
                          f" between 0 and {MAX_RETRIES}, not {template.template.max_retries}")
        if "timeout" in template.template:
            _check_timeout(template.template.timeout, "template.template.timeout", context)
        _check_env([v.name for v in containers[0].env], context)
        if self._check_labels is not None:
            self._check_labels(job, context)

    def _job(self, name: str, context: grpc.ServicerContext) -> run_v2.Job:
        job = self._jobs.get(name)
        if job is None:
            _abort(context, grpc.StatusCode.NOT_FOUND, _missing(name, "JOB"))
        return job

    def _execution(self, name: str, context: grpc.ServicerContext) -> _Run:
        run = self._runs.get(name)
        if run is None:
            _abort(context, grpc.StatusCode.NOT_FOUND, _missing(name, "EXECUTION"))
        return run

    @staticmethod
    def _settle(job: run_v2.Job) -> None:
        """Cloud Run's defaults, a new etag, the job reconciled and ready."""
        template = job.template
        template.task_count = template.task_count or 1
        if "max_retries" not in template.template:
            template.template.max_retries = DEFAULT_RETRIES
        if "timeout" not in template.template:
            template.template.timeout = DEFAULT_TIMEOUT
        job.etag = uuid.uuid4().hex
        job.observed_generation = job.generation
        job.reconciling = False
        job.terminal_condition = run_v2.Condition(
            type_="Ready", state=State.CONDITION_SUCCEEDED, last_transition_time=_now()
        )

    # --- operations ------------------------------------------------------------------------------

    def _job_operation(self, job: run_v2.Job) -> operations_pb2.Operation:
        """Done at the first GetOperation, with the job: as the services' operations."""
        return self._done_at_first_poll(job.name, _pack(job))

    def _execution_operation(self, execution: run_v2.Execution) -> operations_pb2.Operation:
        return self._done_at_first_poll(execution.name, _pack(execution))

    def _done_at_first_poll(self, resource: str, packed: any_pb2.Any) -> operations_pb2.Operation:
        name = f"{_location(resource)}/operations/{uuid.uuid4()}"
        self._operations[name] = operations_pb2.Operation(
            name=name, done=True, metadata=packed, response=packed
        )
        return operations_pb2.Operation(name=name, done=False, metadata=packed)

    def _publish(self, run: _Run) -> None:
        """RunJob's operation shows the execution as it is now; done once it has ended."""
        packed = _pack(run.execution)
        operation = operations_pb2.Operation(name=run.operation, metadata=packed)
        if run.execution.completion_time:
            operation.done = True
            failure = _failure(run)
            if failure is None:
                operation.response.CopyFrom(packed)
            else:
                operation.error.CopyFrom(failure)
        self._operations[run.operation] = operation  # replaced, never changed in place

    # --- executions ------------------------------------------------------------------------------

    def _new_run(self, job: run_v2.Job, overrides: run_v2.RunJobRequest.Overrides) -> _Run:
        job_id = job.name.rsplit("/", 1)[-1]
        suffix = "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
        name = f"{job.name}/executions/{job_id}-{suffix}"
        template = _copy(job.template.template)
        container = template.containers[0]
        env = {v.name: _copy(v) for v in container.env}
        for override in overrides.container_overrides:
            for var in override.env:
                env[var.name] = _copy(var)  # laid over the template's, by name
            if override.clear_args:
                container.args = []
            if override.args:
                container.args = list(override.args)
        container.env = list(env.values())
        if "timeout" in overrides:
            template.timeout = overrides.timeout
        task_count = overrides.task_count or job.template.task_count or 1
        parallelism = job.template.parallelism or task_count
        now = _now()
        execution = run_v2.Execution(
            name=name, uid=str(uuid.uuid4()), generation=1, create_time=now, update_time=now,
            job=job_id, labels=dict(job.template.labels),
            annotations=dict(job.template.annotations),
            task_count=task_count, parallelism=parallelism, template=template,
            reconciling=True, observed_generation=1, etag=uuid.uuid4().hex,
            conditions=[
                run_v2.Condition(type_="Started", state=State.CONDITION_PENDING,
                                 last_transition_time=now),
                run_v2.Condition(type_="Completed", state=State.CONDITION_PENDING,
                                 last_transition_time=now),
            ],
        )
        tasks = [
            run_v2.Task(
                name=f"{name}/tasks/{job_id}-{suffix}-task{index}", uid=str(uuid.uuid4()),
                generation=1, create_time=now, job=job_id, execution=f"{job_id}-{suffix}",
                containers=[_copy(c) for c in template.containers],
                max_retries=template.max_retries,
                timeout=template.timeout, index=index, reconciling=True,
                observed_generation=1, labels=dict(job.template.labels),
                conditions=[run_v2.Condition(type_="Completed", state=State.CONDITION_PENDING,
                                             last_transition_time=now)],
            )
            for index in range(task_count)
        ]
        command = (
            self.containers.command_for(container.image) if self.containers is not None
            else None
        )
        timeout = template.timeout
        return _Run(
            execution=execution, tasks=tasks, job=job.name,
            operation=f"{_location(job.name)}/operations/{uuid.uuid4()}",
            argv=(task_argv(command) + list(container.args)) if command is not None else None,
            env={v.name: v.value for v in container.env
                 if not v.value_source.secret_key_ref.secret},
            timeout_s=timeout.total_seconds(),
            max_retries=template.max_retries, parallelism=parallelism,
            pending=deque(range(task_count)),
        )

    def _drive(self, run: _Run) -> None:
        """The execution's scheduler: starts attempts, watches them, ends the execution."""
        try:
            while True:
                ended, copies = self._step(run)
                for copying in copies:  # the log's last lines, outside the lock
                    copying.join(2)
                if ended:
                    return
                run.wake.wait(POLL_S)
                run.wake.clear()
        finally:
            with self._lock:
                for attempt in run.running.values():
                    _kill(attempt)
            run.done.set()

    def _step(self, run: _Run) -> tuple[bool, list[threading.Thread]]:
        copies: list[threading.Thread] = []
        with self._lock:
            if run.cancel or self._stopping:
                for attempt in run.running.values():
                    _kill(attempt)
                    if attempt.copying is not None:
                        copies.append(attempt.copying)
                    self._cancel_task(run, attempt.index, started=True)
                run.running.clear()
                while run.pending:
                    self._cancel_task(run, run.pending.popleft(), started=False)
                self._end(run, cancelled=True)
                return True, copies
            changed = False
            now = time.monotonic()
            for index, attempt in list(run.running.items()):
                if attempt.process is not None and attempt.rc is None:
                    if attempt.process.poll() is None:
                        if now >= attempt.deadline:
                            attempt.timed_out = True
                        elif attempt.kill_at is not None and now >= attempt.kill_at:
                            attempt.killed = True
                        else:
                            continue
                    # Ended, or to end now: the rest of its container goes with it.
                    _kill(attempt)
                    attempt.rc = attempt.process.wait()
                    if attempt.copying is not None:
                        copies.append(attempt.copying)
                del run.running[index]
                self._record(run, attempt)
                changed = True
            while run.pending and len(run.running) < run.parallelism:
                index = run.pending.popleft()
                run.running[index] = self._start(run, index)
                changed = True
            if not run.pending and not run.running:
                self._end(run, cancelled=False)
                return True, copies
            if changed:
                self._count(run)
                self._publish(run)
            return False, copies

    def _start(self, run: _Run, index: int) -> _Attempt:
        task = run.tasks[index]
        number = task.retried
        now = _now()
        if not run.execution.start_time:
            run.execution.start_time = now
            run.execution.conditions = [
                run_v2.Condition(type_="Started", state=State.CONDITION_SUCCEEDED,
                                 last_transition_time=now),
                run_v2.Condition(type_="Completed", state=State.CONDITION_RECONCILING,
                                 last_transition_time=now),
            ]
            job = self._jobs.get(run.job)
            if job is not None and job.latest_created_execution.name == run.id:
                job.latest_created_execution = _reference(run.execution)  # now RUNNING
        if not task.start_time:
            task.start_time = now
            task.scheduled_time = now
        task.conditions = [run_v2.Condition(
            type_="Completed", state=State.CONDITION_RECONCILING, last_transition_time=now
        )]
        log = self.logs / "jobs" / run.id / f"task{index}-attempt{number}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + run.timeout_s
        attempt = _Attempt(index, number, None, None, deadline, marks=(
            f"CLOUD_RUN_EXECUTION={run.id}".encode(), f"CLOUD_RUN_TASK_INDEX={index}".encode(),
            f"CLOUD_RUN_TASK_ATTEMPT={number}".encode(),
        ))
        for kill in self._kills:
            if (kill.index, kill.attempt) == (index, number) and kill.execution in (
                None, run.execution.name, run.id
            ):
                self._kills.remove(kill)
                attempt.kill_at = time.monotonic() + kill.after_s
                attempt.oom = kill.oom
                break
        if run.argv is None:
            log.write_text("fake: the image maps to no command; the task did nothing\n",
                           encoding="utf-8")
            attempt.rc = 0
            return attempt
        env = {
            **machine_env(),
            **self.task_env,
            **run.env,
            "CLOUD_RUN_JOB": run.execution.job,
            "CLOUD_RUN_EXECUTION": run.id,
            "CLOUD_RUN_TASK_INDEX": str(index),
            "CLOUD_RUN_TASK_ATTEMPT": str(number),
            "CLOUD_RUN_TASK_COUNT": str(run.execution.task_count),
            "PYTHONUNBUFFERED": "1",
        }
        try:
            attempt.process = subprocess.Popen(
                run.argv, cwd=self.workdir, env=env, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )
        except OSError as exc:  # what the container's exec would fail with
            log.write_text(f"fake: cannot run {run.argv[0]}: {exc.strerror}\n",
                           encoding="utf-8")
            attempt.rc = 127
            return attempt
        attempt.copying = threading.Thread(
            target=_copy_stamped, args=(attempt.process, log), daemon=True
        )
        attempt.copying.start()
        return attempt

    def _record(self, run: _Run, attempt: _Attempt) -> None:
        task = run.tasks[attempt.index]
        result = _result(attempt)
        task.last_attempt_result = result
        now = _now()
        if result.status.code == code_pb2.OK:
            task.completion_time = now
            task.conditions = [run_v2.Condition(
                type_="Completed", state=State.CONDITION_SUCCEEDED, last_transition_time=now
            )]
            task.reconciling = False
        elif task.retried < run.max_retries:
            task.retried += 1
            run.pending.appendleft(attempt.index)  # retried next
        else:
            task.completion_time = now
            task.conditions = [run_v2.Condition(
                type_="Completed", state=State.CONDITION_FAILED, last_transition_time=now,
                message=result.status.message,
                execution_reason=ExecutionReason.NON_ZERO_EXIT_CODE,
            )]
            task.reconciling = False

    def _cancel_task(self, run: _Run, index: int, started: bool) -> None:
        task = run.tasks[index]
        now = _now()
        if started:
            task.last_attempt_result = run_v2.TaskAttemptResult(
                status=status_pb2.Status(code=code_pb2.CANCELLED, message=CANCELLED)
            )
        task.completion_time = now
        task.reconciling = False
        task.conditions = [run_v2.Condition(
            type_="Completed", state=State.CONDITION_FAILED, message=CANCELLED,
            execution_reason=ExecutionReason.CANCELLED, last_transition_time=now,
        )]

    def _count(self, run: _Run) -> None:
        execution = run.execution
        execution.running_count = len(run.running)
        states = [_task_state(t) for t in run.tasks]
        execution.succeeded_count = states.count("succeeded")
        execution.failed_count = states.count("failed")
        execution.cancelled_count = states.count("cancelled")
        execution.retried_count = sum(1 for t in run.tasks if t.retried)  # tasks, not tries
        execution.update_time = _now()

    def _end(self, run: _Run, cancelled: bool) -> None:
        self._count(run)
        execution = run.execution
        now = _now()
        execution.completion_time = now
        execution.reconciling = False
        execution.etag = uuid.uuid4().hex
        failure = _failure(run)
        if cancelled:
            completed = run_v2.Condition(
                type_="Completed", state=State.CONDITION_FAILED, message=CANCELLED,
                execution_reason=ExecutionReason.CANCELLED, last_transition_time=now,
            )
        elif failure is not None:
            completed = run_v2.Condition(
                type_="Completed", state=State.CONDITION_FAILED, message=failure.message,
                execution_reason=ExecutionReason.NON_ZERO_EXIT_CODE, last_transition_time=now,
            )
        else:
            completed = run_v2.Condition(
                type_="Completed", state=State.CONDITION_SUCCEEDED, last_transition_time=now
            )
        execution.conditions = [_copy(execution.conditions[0]), completed]
        job = self._jobs.get(run.job)
        if job is not None and job.latest_created_execution.name == run.id:
            job.latest_created_execution = _reference(execution)
        self._publish(run)


# --- helpers -------------------------------------------------------------------------------------


def _result(attempt: _Attempt) -> run_v2.TaskAttemptResult:
    """What Cloud Run reports of an attempt (see EXITED, ... for the sources)."""
    def status(code: int, message: str) -> status_pb2.Status:
        return status_pb2.Status(code=code, message=message)

    if attempt.timed_out:
        return run_v2.TaskAttemptResult(status=status(code_pb2.DEADLINE_EXCEEDED, TIMED_OUT))
    if attempt.killed:
        return run_v2.TaskAttemptResult(
            status=status(code_pb2.RESOURCE_EXHAUSTED, OUT_OF_MEMORY) if attempt.oom
            else status(code_pb2.INTERNAL, _signalled(int(signal.SIGKILL))),
            term_signal=int(signal.SIGKILL),
        )
    rc = attempt.rc or 0
    if rc == 0:
        return run_v2.TaskAttemptResult(status=status(code_pb2.OK, ""), exit_code=0)
    if rc < 0:  # ended by a signal no one here sent (it killed itself, or was killed)
        return run_v2.TaskAttemptResult(
            status=status(code_pb2.INTERNAL, _signalled(-rc)), term_signal=-rc
        )
    return run_v2.TaskAttemptResult(status=status(code_pb2.ABORTED, EXITED), exit_code=rc)


def _task_state(task: run_v2.Task) -> str:
    if not task.completion_time:
        return "running" if task.start_time else "pending"
    state = task.conditions[0].state if task.conditions else State.STATE_UNSPECIFIED
    if state == State.CONDITION_SUCCEEDED:
        return "succeeded"
    if task.conditions[0].execution_reason == ExecutionReason.CANCELLED:
        return "cancelled"
    return "failed"


def _failure(run: _Run) -> status_pb2.Status | None:
    """Why the execution failed: its failed task of lowest index, in Cloud Run's words."""
    if run.execution.cancelled_count:
        return None  # a cancelled execution's operation answers the execution
    for task in run.tasks:
        if _task_state(task) == "failed":
            result = task.last_attempt_result
            return status_pb2.Status(
                code=result.status.code,
                message=f"Task {task.name.rsplit('/', 1)[-1]} failed with exit code:"
                f" {result.exit_code} and message: {result.status.message}",
            )
    return None


def _reference(execution: run_v2.Execution) -> run_v2.ExecutionReference:
    if not execution.completion_time:
        status = (Completion.EXECUTION_RUNNING if execution.start_time
                  else Completion.EXECUTION_PENDING)
    elif execution.conditions[1].execution_reason == ExecutionReason.CANCELLED:
        status = Completion.EXECUTION_CANCELLED
    elif execution.conditions[1].state == State.CONDITION_SUCCEEDED:
        status = Completion.EXECUTION_SUCCEEDED
    else:
        status = Completion.EXECUTION_FAILED
    reference = run_v2.ExecutionReference(
        name=execution.name.rsplit("/", 1)[-1], create_time=execution.create_time,
        completion_status=status,
    )
    if execution.completion_time:
        reference.completion_time = execution.completion_time
    return reference


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
    context.abort(code, message)
    raise AssertionError("context.abort returned")  # it raises


def _check_id(job_id: str, context: grpc.ServicerContext) -> None:
    if not JOB_ID.match(job_id):
        context.abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"The request has errors: job_id: '{job_id}' is not a valid job name: it must"
            " begin with a lowercase letter, hold only lowercase letters, digits and"
            " hyphens, end with a letter or digit, and be at most 63 characters long",
        )


def _check_env(names: Sequence[str], context: grpc.ServicerContext) -> None:
    reserved = [n for n in names if n in RESERVED_ENV]
    if reserved:
        # Cloud Run's words for a service's PORT, with the job's own reserved names.
        context.abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"The following reserved env names were provided: {', '.join(reserved)}. These"
            " values are automatically set by the system.",
        )


def _check_timeout(timeout: timedelta, where: str, context: grpc.ServicerContext) -> None:
    if not timedelta(0) < timeout <= MAX_TIMEOUT:
        context.abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"The request has errors: {where}: must be more than 0 s and at most 168 h,"
            f" not {timeout.total_seconds():g} s",
        )


def _missing(name: str, kind: str) -> str:
    """Cloud Run's NOT_FOUND message (as floci-gcp's emulator records it)."""
    parts = name.split("/")
    project = parts[1] if len(parts) > 1 else ""
    region = parts[3] if len(parts) > 3 else ""
    return (f"Resource '{parts[-1]}' of kind '{kind}' in region '{region}' in project"
            f" '{project}' does not exist.")


def _stale(name: str) -> str:
    return f"etag mismatch: '{name.rsplit('/', 1)[-1]}' changed since it was read"


def _page(
    items: list[Any], page_size: int, page_token: str, context: grpc.ServicerContext
) -> tuple[list[Any], str]:
    try:
        start = int(page_token or 0)
    except ValueError:
        start = -1
    if start < 0:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"Invalid page token: {page_token!r}")
    end = start + (page_size if page_size > 0 else PAGE_SIZE)
    return items[start:end], str(end) if end < len(items) else ""


def _kill(attempt: _Attempt) -> None:
    """The attempt's container goes: SIGKILL to its process group, and to every process
    that inherited its env (one started in a session of its own too, as a task's pytest is),
    as a container's end takes every process in it."""
    if attempt.process is None:
        return
    try:
        os.killpg(attempt.process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if attempt.rc is None:
        attempt.rc = attempt.process.wait()
    if attempt.marks:
        for pid in _container_pids(attempt.marks):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


def _container_pids(marks: tuple[bytes, ...]) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = b"\0" + (proc / "environ").read_bytes()
        except OSError:
            continue
        if all(b"\0" + mark + b"\0" in environ + b"\0" for mark in marks):
            found.append(int(proc.name))
    return found


def _location(name: str) -> str:
    return "/".join(name.split("/")[:4])


def _pack(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(type(message).pb(message))
    return packed


def _copy(message: Any) -> Any:
    return type(message).deserialize(type(message).serialize(message))


def _now() -> datetime:
    return datetime.now(UTC)

