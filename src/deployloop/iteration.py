"""One iteration as a list of small stages: plan -> deploy -> test -> rollback -> report.

Each stage takes what the ones before it made and returns its own record; the store keeps
every record as it is made, so an interrupted iteration loses nothing. The stages live in
`deployloop.stages`, one module each; this module runs them in order and settles the status.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import date

from rich.console import Console

from deployloop.analysis.figures import figures
from deployloop.analysis.setup_failure import LEFT_OUT_STATUSES, pytest_setup_error
from deployloop.deploy import DeployError, DeployTarget, make_target
from deployloop.models import IterationRecord, IterationStatus, Summary, TestRow
from deployloop.runner.execute import Interrupted
from deployloop.runner.pool import WorkerPool
from deployloop.stages.analyze import load_summary
from deployloop.stages.deploy import deploy_services
from deployloop.stages.evidence import collect_service_logs
from deployloop.stages.plan import plan_iteration
from deployloop.stages.promote import promote_if_passed
from deployloop.stages.report import write_index, write_reports
from deployloop.stages.rollback import roll_back_if_worse
from deployloop.stages.settings import IterationSettings
from deployloop.stages.test import run_tests
from deployloop.store import Store


class IterationError(Exception):
    """loop itself could not go on during an iteration (the state database, the disk, a
    bug). `marked`: whether the iteration could be marked `error` (a full disk may refuse
    that too; the next loop command then marks it `crashed`)."""

    def __init__(self, cause: Exception, marked: bool) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.cause = cause
        self.marked = marked


@dataclass(frozen=True)
class IterationOutcome:
    record: IterationRecord
    summary: Summary
    deploy_error: str | None = None
    interrupted: bool = False
    # In GitHub Actions: one `::error` workflow command per failure pattern (report.github).
    annotations: tuple[str, ...] = ()


def run_iteration(
    settings: IterationSettings,
    store: Store,
    console: Console,
    record: IterationRecord,
    pool: WorkerPool | None,
    resume: bool = False,
) -> IterationOutcome:
    """Plan, deploy, test, analyze and report one iteration; never raises on Ctrl-C.

    `pool`: its test workers, started by the caller before anything else (stages.workers),
    collecting while the plan and the deploy run; None: the test stage starts its own.
    Any other failure (the state database, the disk) marks the iteration `error` with the
    reason, where the store still takes it, and raises IterationError.
    """
    deploy_error: str | None = None
    interrupted = False
    target = make_target(settings.config)
    try:
        plan = plan_iteration(
            settings, store, console, record, resume,
            shared=pool.shared_collection if pool is not None else None,
        )
        try:
            deployments = deploy_services(settings, store, console, plan, target)
            run_tests(settings, store, console, plan, deployments, target, pool)
            collect_service_logs(settings, console, plan, deployments, target)
        except DeployError as exc:
            deploy_error = str(exc)
            store.record_deployments(record.id, exc.deployments)
        if deploy_error is None:
            promote_if_passed(settings, store, console, record, target)
        deploy = settings.config.deploy
        # Candidates never took the traffic: there is nothing to roll back.
        if deploy.rollback_on_failure and deploy.traffic != "candidate":
            roll_back_if_worse(settings, store, console, record, target, deploy_error)
    except (KeyboardInterrupt, Interrupted):
        interrupted = True
        _close(pool)
    except Exception as exc:
        _close(pool)
        _stop(target)
        raise IterationError(exc, _mark_error(store, record, exc)) from exc
    interrupted = _stop(target) or interrupted
    # Read once: the status, the summary and every report are worked out from these rows.
    rows = store.tests(record.id)
    status, error = _final_status(rows, settings.target_pass_rate, deploy_error, interrupted)
    store.finish_iteration(
        record.id, status, error=error,
        left_out=f"{status.value.replace('_', ' ')}: {error}" if status in LEFT_OUT_STATUSES
        else None,
    )
    finished = store.iteration_by_id(record.id)
    assert finished is not None
    summary = load_summary(
        store, finished, settings.config, date.today(),
        services_dir=settings.layout.services_dir(record.env, record.number), rows=rows,
    )
    if summary.insights.outage and finished.left_out is None:
        # Most tests failed one way: the environment, not the code. The iterations after
        # this one leave it out; its own report says so first.
        store.leave_out(record.id, f"outage: {summary.insights.outage}")
    write_reports(settings.layout, summary, rows, store.reruns(record.id))
    _write_index(settings, store, summary)
    to_annotate = _in_actions(summary, rows)
    _keep(store, summary, settings)
    # The workers end their sessions (JUnit XML, teardown) while loop reports: waited for
    # only now.
    _close(pool)
    return IterationOutcome(finished, summary, deploy_error, interrupted, to_annotate)


def _write_index(settings: IterationSettings, store: Store, summary: Summary) -> None:
    """The env's page: a report beside the others, never a reason to fail the iteration."""
    try:
        write_index(settings.layout, store, summary)
    except OSError:
        pass


def _in_actions(summary: Summary, rows: list[TestRow]) -> tuple[str, ...]:
    """In GitHub Actions: the step summary written, the annotations to print; else nothing."""
    from deployloop.report import github

    if not github.in_actions():
        return ()
    github.append_step_summary(summary)
    return tuple(github.error_annotations(summary, rows))


def _keep(store: Store, summary: Summary, settings: IterationSettings) -> None:
    """The summary just reported, kept for `loop status` and `loop summarize` (a cache: a
    store that does not take it now costs them a recomputation, nothing else)."""
    from deployloop.analysis.kept import keep_summary

    try:
        keep_summary(
            store, summary, settings.config_bytes, settings.config.known_issues, date.today()
        )
    except (OSError, sqlite3.Error):
        pass


def _close(pool: WorkerPool | None) -> None:
    """Workers that have not ended yet end now (a deploy failed, Ctrl-C, a failure)."""
    if pool is not None:
        try:
            pool.close()
        except KeyboardInterrupt:
            pool.close()


def _stop(target: DeployTarget) -> bool:
    """Stop what the target started; True if Ctrl-C came meanwhile. The services are not
    lost then: loop kills whatever it still tracks as it exits, and its watchdog if it dies."""
    try:
        target.stop()
    except KeyboardInterrupt:
        return True
    return False


def _final_status(
    rows: list[TestRow],
    target_pass_rate: float,
    deploy_error: str | None,
    interrupted: bool,
) -> tuple[IterationStatus, str | None]:
    """How the iteration ended, and the error recorded with it."""
    if interrupted:
        return IterationStatus.INTERRUPTED, deploy_error
    if deploy_error is not None:
        return IterationStatus.DEPLOY_FAILED, deploy_error
    setup_error = pytest_setup_error(rows)
    if setup_error is not None:
        return IterationStatus.SETUP_FAILED, setup_error
    rate = figures(rows).pass_rate
    # Zero executed tests (rate None) never reaches the target: nothing was shown to work.
    if rate is not None and rate >= target_pass_rate:
        return IterationStatus.PASSED, None
    return IterationStatus.FAILED, None


def _mark_error(store: Store, record: IterationRecord, exc: Exception) -> bool:
    try:
        reason = f"{type(exc).__name__}: {exc}"
        store.finish_iteration(record.id, IterationStatus.ERROR, error=reason)
    except Exception:  # noqa: BLE001 (the store itself may be what failed)
        return False
    return True
