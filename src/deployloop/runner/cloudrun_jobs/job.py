"""The job and its executions on the Admin API: create or update the job from the config,
run an execution with this iteration's overrides, watch it, cancel it.

An update starts from the live job and changes only what `[tests.cloudrun_jobs]` sets (image,
command, task settings, service account, VPC), so a team's own env vars, secrets and
resources on the job stay. Every call retries transient errors (tenacity).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential

from deployloop.config.models import CloudRunJobsConfig, Config
from deployloop.deploy.cloudrun.errors import is_transient, one_line
from deployloop.deploy.cloudrun.spec import LABEL_ENV, label_value, vpc_access

if TYPE_CHECKING:
    from google.cloud import run_v2

TASK_COMMAND = ("python", "-m", "deployloop.task")
LABEL_MANAGED = "managed-by"
OPERATION_TIMEOUT_S = 300.0
CANCEL_TIMEOUT_S = 30.0
T = TypeVar("T")


class JobError(Exception):
    """The job could not be created, updated, run or read; the message is one line."""


@dataclass(frozen=True)
class TaskStatus:
    index: int
    attempts: int  # how many attempts ran (or run)
    done: bool
    succeeded: bool
    reason: str  # Cloud Run's word on the last attempt ("" while it runs or when it passed)


@dataclass(frozen=True)
class ExecutionStatus:
    name: str
    done: bool
    running: int
    succeeded: int
    failed: int
    cancelled: int
    retried: int
    message: str


def job_location(config: Config) -> tuple[str, str]:
    """(project, region) of the job: its own, else the deploy's (the config requires one)."""
    jobs = config.tests.cloudrun_jobs
    assert jobs is not None
    return (jobs.project or config.deploy.project or "", jobs.region or config.deploy.region or "")


def _retrying(call: Callable[[], T]) -> T:
    return retry(
        retry=retry_if_exception(is_transient),
        stop=stop_after_attempt(6),
        wait=wait_exponential(multiplier=0.5, max=10),
        reraise=True,
    )(call)()


class JobRunner:
    """One job of one project and region, through the Jobs, Executions and Tasks clients."""

    def __init__(self, config: CloudRunJobsConfig, project: str, region: str, env: str) -> None:
        from deployloop.deploy.gcp import jobs_clients

        self.config = config
        self.parent = f"projects/{project}/locations/{region}"
        self.name = f"{self.parent}/jobs/{config.job}"
        self._env = env
        self._jobs, self._executions, self._tasks = jobs_clients()

    def ensure(self, image: str) -> str:
        """Create the job, or bring the live one to the config; returns 'created' or
        'updated'."""
        from google.api_core import exceptions as gexc

        try:
            live = _retrying(lambda: self._jobs.get_job(name=self.name))
        except gexc.NotFound:
            live = None
        except gexc.GoogleAPICallError as exc:
            raise JobError(self._describe(exc, "read")) from None
        try:
            if live is None:
                job = self._apply(None, image)
                _retrying(
                    lambda: self._jobs.create_job(
                        parent=self.parent, job=job, job_id=self.config.job
                    ).result(timeout=OPERATION_TIMEOUT_S)  # type: ignore[no-untyped-call]
                )
                return "created"
            job = self._apply(live, image)
            _retrying(
                lambda: self._jobs.update_job(job=job).result(timeout=OPERATION_TIMEOUT_S)  # type: ignore[no-untyped-call]
            )
            return "updated"
        except gexc.GoogleAPICallError as exc:
            raise JobError(self._describe(exc, "create" if live is None else "update")) from None

    def _apply(self, live: run_v2.Job | None, image: str) -> run_v2.Job:
        from google.cloud import run_v2
        job = run_v2.Job() if live is None else run_v2.Job(live)
        if live is not None:
            job.name = self.name
        job.labels = {
            **dict(job.labels),
            LABEL_ENV: label_value(self._env),
            LABEL_MANAGED: "deployloop",
        }
        cfg = self.config
        template = job.template
        template.task_count = cfg.tasks
        template.parallelism = cfg.tasks
        task = template.template
        if not task.containers:
            task.containers = [run_v2.Container()]
        container = task.containers[0]
        container.image = image
        container.command = list(TASK_COMMAND)
        container.args = []
        task.max_retries = cfg.max_retries
        task.timeout = timedelta(seconds=cfg.task_timeout_s)  # proto-plus: a Duration
        if cfg.service_account is not None:
            task.service_account = cfg.service_account
        if cfg.vpc is not None:
            task.vpc_access = vpc_access(cfg.vpc)
        return job

    def run(self, tasks: int, env: Mapping[str, str]) -> str:
        """Start an execution of `tasks` tasks with `env` laid over the job's; returns its
        name at once (the operation ends only with the execution)."""
        from google.api_core import exceptions as gexc
        from google.cloud import run_v2

        overrides = run_v2.RunJobRequest.Overrides(
            container_overrides=[
                run_v2.RunJobRequest.Overrides.ContainerOverride(
                    env=[run_v2.EnvVar(name=k, value=v) for k, v in env.items()]
                )
            ],
            task_count=tasks,
            timeout=timedelta(seconds=self.config.task_timeout_s),
        )
        try:
            operation = self._jobs.run_job(
                request=run_v2.RunJobRequest(name=self.name, overrides=overrides)
            )
        except gexc.GoogleAPICallError as exc:
            raise JobError(self._describe(exc, "run")) from None
        execution: Any = operation.metadata
        name = getattr(execution, "name", "")
        if not name:
            raise JobError(f"run {self.name}: Cloud Run answered no execution")
        return str(name)

    def execution(self, name: str) -> ExecutionStatus:
        from google.api_core import exceptions as gexc
        from google.cloud import run_v2

        try:
            ex = _retrying(lambda: self._executions.get_execution(name=name))
        except gexc.GoogleAPICallError as exc:
            raise JobError(self._describe(exc, "read", name)) from None
        failed_condition = next(
            (
                c
                for c in ex.conditions
                if c.type_ == "Completed" and c.state == run_v2.Condition.State.CONDITION_FAILED
            ),
            None,
        )
        return ExecutionStatus(
            name=name,
            done=bool(ex.completion_time),
            running=ex.running_count,
            succeeded=ex.succeeded_count,
            failed=ex.failed_count,
            cancelled=ex.cancelled_count,
            retried=ex.retried_count,
            message=one_line(failed_condition.message) if failed_condition else "",
        )

    def tasks(self, execution: str) -> dict[int, TaskStatus]:
        from google.api_core import exceptions as gexc
        from google.cloud import run_v2

        try:
            listed = _retrying(lambda: list(self._tasks.list_tasks(parent=execution)))
        except gexc.GoogleAPICallError as exc:
            raise JobError(self._describe(exc, "read", execution)) from None
        out = {}
        for task in listed:
            result = task.last_attempt_result
            completed = next((c for c in task.conditions if c.type_ == "Completed"), None)
            done = bool(task.completion_time)
            succeeded = done and (
                completed is None or completed.state == run_v2.Condition.State.CONDITION_SUCCEEDED
            )
            reason = ""
            if result is not None and (result.exit_code or result.status.code):
                said = one_line(result.status.message or "")
                code = f"exit code {result.exit_code}" if result.exit_code else ""
                reason = "; ".join(p for p in (said, code) if p)
            if not reason and done and not succeeded and completed is not None:
                reason = one_line(completed.message or "") or "failed"
            started = bool(task.start_time)
            out[task.index] = TaskStatus(
                task.index, task.retried + (1 if started else 0), done, succeeded, reason
            )
        return out

    def started_with(self, name: str, value: str) -> list[str]:
        """Executions of the job not finished whose overrides set env `name` to `value`:
        the one a RunJob started when its answer never came back (Ctrl-C), and no other
        run's."""
        from google.api_core import exceptions as gexc

        try:
            listed = _retrying(lambda: list(self._executions.list_executions(parent=self.name)))
        except gexc.GoogleAPICallError as exc:
            raise JobError(self._describe(exc, "list the executions of")) from None
        return [
            e.name
            for e in listed
            if not e.completion_time
            and any(
                v.name == name and v.value == value for c in e.template.containers for v in c.env
            )
        ]

    def cancel(self, execution: str) -> None:
        """Stop the execution's tasks (Ctrl-C, or loop failing): nothing keeps running."""
        from google.api_core import exceptions as gexc

        try:
            self._executions.cancel_execution(name=execution).result(timeout=CANCEL_TIMEOUT_S)  # type: ignore[no-untyped-call]
        except gexc.FailedPrecondition:
            return  # finished meanwhile
        except (gexc.GoogleAPICallError, TimeoutError) as exc:
            raise JobError(self._describe(exc, "cancel", execution)) from None

    def _describe(self, exc: Exception, action: str, path: str | None = None) -> str:
        from google.api_core import exceptions as gexc

        path = path or self.name
        said = one_line(getattr(exc, "message", None) or str(exc))
        if isinstance(exc, gexc.PermissionDenied):
            return (
                f"permission denied to {action} {path}: the identity running loop needs"
                f" roles/run.developer on the project (and roles/iam.serviceAccountUser on"
                f" the job's service account); Cloud Run said: {said}"
            )
        if isinstance(exc, gexc.NotFound):
            return f"not found: {path} ({said}); check [tests.cloudrun_jobs] project and region"
        return f"cannot {action} {path}: {type(exc).__name__}: {said}"
