"""Test, with `[tests] executor = "cloudrun-jobs"`: the pending tests run as the tasks of one
Cloud Run Jobs execution (deployloop.runner.cloudrun_jobs), recorded as the local runner
records its own."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Sequence

from rich.console import Console
from rich.text import Text

from deployloop.config import Config, url_env_var
from deployloop.deploy.base import DeployError
from deployloop.deploy.cloudrun.registry import ImageError
from deployloop.deploy.cloudrun.spec import image_sha
from deployloop.deploy.local import fill
from deployloop.models import Deployment, TestResult
from deployloop.report._format import plural
from deployloop.runner.cloudrun_jobs.bucket import BucketError, open_bucket
from deployloop.runner.cloudrun_jobs.executor import JobsExecutor, JobsRun
from deployloop.runner.cloudrun_jobs.job import JobError, JobRunner, job_location
from deployloop.runner.cloudrun_jobs.layout import PROJECT_ENV, RESULTS_ENV, run_folder
from deployloop.runner.cloudrun_jobs.shares import Share, split_into_shares
from deployloop.runner.execute import Display, Recorder, RunState
from deployloop.runner.process import PytestSetup
from deployloop.runner.schedule import PendingTest
from deployloop.stages.plan import Plan
from deployloop.stages.settings import IterationSettings

SERIAL = "serial suites: one task, after the rest, alone"
SUITE_TIMEOUT_NOTE = (
    "note: [tests] suite_timeout_s does not apply on Cloud Run Jobs, where a suite's tests"
    " spread over tasks: task_timeout_s bounds each task, test_timeout_s each test"
)


def shares_for(config: Config, tests: Sequence[PendingTest]) -> list[tuple[str, list[Share]]]:
    """The executions an iteration runs, each as its tasks' shares: one for the tests of
    every suite that is not serial; then, for the serial suites, one of a single task, with
    nothing else running: their fixtures may bind a fixed port or share a database (as the
    local executor runs them, after the rest, alone)."""
    jobs = config.tests.cloudrun_jobs
    assert jobs is not None
    split = {s.name: s.split for s in config.tests.suites}
    serial = frozenset(s.name for s in config.tests.suites if s.serial)
    executions = [
        ("", split_into_shares([t for t in tests if t.suite not in serial], jobs.tasks, split)),
        (SERIAL, [Share(0, tuple(t for t in _in_run_order(tests) if t.suite in serial))]),
    ]
    return [(label, shares) for label, shares in executions if any(s.tests for s in shares)]


def _in_run_order(tests: Sequence[PendingTest]) -> list[PendingTest]:
    return sorted(tests, key=lambda t: (not t.first, t.priority))


def job_image(config: Config, git_sha: str | None, iteration: int) -> str:
    jobs = config.tests.cloudrun_jobs
    assert jobs is not None
    return fill(jobs.image, git_sha=image_sha(git_sha), iteration=iteration)


def run_on_jobs(
    settings: IterationSettings,
    console: Console,
    plan: Plan,
    deployments: Sequence[Deployment],
    setup: PytestSetup,
    tests: Sequence[PendingTest],
    recorder: Recorder,
    display: Display,
    state: RunState,
    on_attempt: Callable[[int, TestResult], None],
    on_poll: Callable[[], None] = lambda: None,
) -> None:
    """Run `tests` as one execution; a job or bucket that fails is a DeployError (exit 3):
    the tests never ran, so nothing of it is a test result."""
    config = settings.config
    jobs = config.tests.cloudrun_jobs
    assert jobs is not None
    project, region = job_location(config)
    image = job_image(config, plan.record.git_sha, plan.record.number)
    executions = shares_for(config, tests)
    try:
        image = _pinned(image)
        if "suite_timeout_s" in config.tests.model_fields_set:
            console.print(Text(f"  {SUITE_TIMEOUT_NOTE}", style="yellow"))
        runner = JobRunner(jobs, project, region, settings.env)
        verb = runner.ensure(image)
        console.print(f"  job {jobs.job} {verb} in {project}/{region} ({image})")
        # Each execution writes under a folder of its own: a resume or a rerun never reads
        # another execution's chunks.
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        run_id = f"{plan.job_prefix or 'run-'}{stamp}-{secrets.token_hex(3)}"
        bucket = open_bucket(project, jobs.bucket)
        for label, shares in executions:
            console.print(f"  {plural(len(shares), 'task')}" + (f" ({label})" if label else ""))
            for share in shares:
                console.print(
                    f"    task {share.task}: {plural(len(share.tests), 'test')},"
                    f" ~{share.expected_s:.1f} s"
                )
            folder = run_folder(
                jobs.prefix, settings.env, plan.record.number,
                run_id + ("-serial" if label == SERIAL else ""),
            )
            env = {
                "LOOP_ENV": settings.env,
                "LOOP_ITERATION": str(plan.record.number),
                RESULTS_ENV: f"gs://{jobs.bucket}/{folder}",
                PROJECT_ENV: project,
            }
            for d in deployments:
                if d.url:
                    env[url_env_var(d.service)] = d.url
            JobsExecutor(
                JobsRun(
                    runner=runner,
                    bucket=bucket,
                    folder=folder,
                    shares=shares,
                    setup=setup,
                    env=env,
                    share_env=config.tests.env,
                    id_tokens=_audiences(config, deployments),
                    test_timeout_s=config.tests.test_timeout_s,
                ),
                recorder,
                display,
                state,
                on_attempt,
                on_poll,
            ).run()
    except (JobError, BucketError, ImageError) as exc:
        raise DeployError(f"tests on Cloud Run Jobs: {exc}", list(deployments)) from None


def _pinned(image: str) -> str:
    """The tests' image by digest, as the services' are: the tasks run exactly the image
    that was there when the iteration started, and a missing one fails before any task
    (ImageError). As written against the fake with no registry emulator (the services'
    deploy says so)."""
    from deployloop.deploy import gcp
    from deployloop.deploy.cloudrun.registry import resolve, used_as_written

    if used_as_written():
        return image
    return resolve(image, gcp.access_token).pinned


def _audiences(config: Config, deployments: Sequence[Deployment]) -> dict[str, str]:
    """LOOP_<NAME>_ID_TOKEN -> audience, for the task to mint from its metadata server."""
    if config.deploy.target != "cloudrun":
        return {}
    from deployloop.deploy.cloudrun.target import id_token_audiences

    return dict(id_token_audiences(config, deployments).values())
