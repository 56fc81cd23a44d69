"""One iteration as a list of small stages: plan -> deploy -> test -> analyze -> report.

Each stage takes what the ones before it made and returns its own record; the store keeps
every record as it is made, so an interrupted iteration loses nothing.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from rich.console import Console

from deployloop.analysis.figures import figures
from deployloop.config import Config, SuiteConfig, url_env_var
from deployloop.deploy import DeployContext, DeployError, make_target
from deployloop.deploy.base import DeployTarget, Rollback
from deployloop.gitinfo import file_digests
from deployloop.layout import StateLayout
from deployloop.models import (
    Deployment,
    DeployStatus,
    InventoryItem,
    IterationRecord,
    IterationStatus,
    Outcome,
    SuiteRecord,
    SuiteStatus,
    Summary,
    TestResult,
    TestRow,
)
from deployloop.runner.display import LineDisplay, LiveDisplay
from deployloop.runner.execute import (
    NOT_RUN,
    WHILE_RUNNING,
    Interrupted,
    RunState,
    SuiteProgress,
    TestRunner,
)
from deployloop.runner.inventory import collect_inventory, suites_covering_others
from deployloop.runner.jobs import plan_jobs
from deployloop.runner.process import PytestSetup
from deployloop.runner.reportlog import COLLECTION_ERROR
from deployloop.store import Store
from deployloop.summaries import load_summary


class UsageError(Exception):
    """Flags that do not fit the config (`loop run` exits 2)."""


@dataclass(frozen=True)
class IterationSettings:
    env: str
    config: Config
    workdir: Path
    layout: StateLayout
    suite_globs: tuple[str, ...]
    workers: int
    target_pass_rate: float


@dataclass(frozen=True)
class Plan:
    record: IterationRecord
    suites: tuple[SuiteConfig, ...]  # the selected suites, in run order
    dir: Path
    # Prefix of this run's per-process files: a resume must not overwrite the files of the
    # processes it resumes.
    job_prefix: str = ""


@dataclass(frozen=True)
class IterationOutcome:
    record: IterationRecord
    summary: Summary
    deploy_error: str | None = None
    interrupted: bool = False


def select_suites(config: Config, globs: Sequence[str]) -> list[SuiteConfig]:
    """Suites matching any `--suite` glob (all when none), lowest priority number first."""
    suites = config.tests.suites
    if globs:
        for glob in globs:
            if not any(fnmatch.fnmatch(s.name.lower(), glob.lower()) for s in suites):
                names = ", ".join(repr(s.name) for s in suites)
                raise UsageError(f"--suite {glob!r} matches no suite (suites: {names})")
        suites = [
            s for s in suites if any(fnmatch.fnmatch(s.name.lower(), g.lower()) for g in globs)
        ]
    order = {s.name: i for i, s in enumerate(config.tests.suites)}
    return sorted(suites, key=lambda s: (s.priority, order[s.name]))


def run_iteration(
    settings: IterationSettings,
    store: Store,
    console: Console,
    record: IterationRecord,
    resume: bool = False,
) -> IterationOutcome:
    """Plan, deploy, test, analyze and report one iteration; never raises on Ctrl-C.

    Any other failure (the state database, the disk) marks the iteration `error` with the
    reason before it propagates: an iteration never stays `running` after loop is gone.
    """
    deploy_error: str | None = None
    interrupted = False
    target = make_target(settings.config)
    try:
        plan = plan_iteration(settings, store, console, record, resume)
        try:
            deployments = deploy_services(settings, store, console, plan, target)
            run_tests(settings, store, console, plan, deployments, target)
        except DeployError as exc:
            deploy_error = str(exc)
            store.record_deployments(record.id, exc.deployments)
        if settings.config.deploy.rollback_on_failure:
            roll_back_if_worse(settings, store, console, record, target, deploy_error)
    except (KeyboardInterrupt, Interrupted):
        interrupted = True
    except Exception as exc:
        _mark_error(store, record, exc)
        raise
    finally:
        target.stop()
    status = _final_status(store, record, settings.target_pass_rate, deploy_error, interrupted)
    store.finish_iteration(record.id, status, error=deploy_error)
    finished = store.iteration_by_id(record.id)
    assert finished is not None
    summary = load_summary(store, finished, settings.config, date.today())
    write_reports(settings.layout, summary)
    return IterationOutcome(finished, summary, deploy_error, interrupted)


# --- plan ------------------------------------------------------------------------------------


def plan_iteration(
    settings: IterationSettings,
    store: Store,
    console: Console,
    record: IterationRecord,
    resume: bool,
) -> Plan:
    selected = select_suites(settings.config, settings.suite_globs)
    out = settings.layout.iteration_dir(settings.env, record.number)
    if resume and store.tests(record.id):
        # The inventory and the suite selection of an interrupted iteration stand: only its
        # pending tests run.
        chosen = {s.name for s in store.suites(record.id) if s.selected}
        kept = tuple(s for s in select_suites(settings.config, ()) if s.name in chosen)
        return Plan(record, kept, out, _resume_prefix(out / "pytest"))
    console.print(f"[bold]Iteration {record.number}[/] ({settings.env}): collecting tests")
    setup = _pytest_setup(settings, record, deployments=_configured_urls(settings.config))
    inventory = collect_inventory(
        settings.config.tests.suites, setup, out / "pytest", settings.config.tests.suite_timeout_s
    )
    names = {s.name for s in selected}
    suites = [
        SuiteRecord(
            name=s.name,
            priority=s.priority,
            selected=s.name in names,
            status=SuiteStatus.PENDING if s.name in names else SuiteStatus.NOT_RUN,
        )
        for s in settings.config.tests.suites
    ]
    store.record_plan(record.id, suites, inventory)
    store.record_test_files(record.id, file_digests(settings.workdir, {i.file for i in inventory}))
    _print_inventory(console, settings.config.tests.suites, inventory, names)
    return Plan(record, tuple(selected), out)


def _configured_urls(config: Config) -> list[Deployment]:
    """Services whose URL the config gives (command and none targets): the tests see them at
    collection already."""
    if config.deploy.target not in ("command", "none"):
        return []
    return [
        Deployment(s.name, DeployStatus.PENDING, url=s.url) for s in config.deploy.services if s.url
    ]


def _resume_prefix(pytest_dir: Path) -> str:
    number = 1
    while any(pytest_dir.glob(f"resume{number}-*")):
        number += 1
    return f"resume{number}-"


def _print_inventory(
    console: Console,
    suites: Sequence[SuiteConfig],
    inventory: list[InventoryItem],
    selected: set[str],
) -> None:
    total = len(inventory)
    errors = sum(1 for i in inventory if i.collect_error)
    running = sum(1 for i in inventory if i.suite in selected)
    line = f"  {total} tests in {len(suites)} suites"
    if running != total:
        line += f"; running {running} in {len(selected)} selected suites"
    if errors:
        line += f"; [red]{errors} could not be collected[/]"
    console.print(line)


# --- deploy ----------------------------------------------------------------------------------


def deploy_services(
    settings: IterationSettings,
    store: Store,
    console: Console,
    plan: Plan,
    target: DeployTarget,
) -> list[Deployment]:
    config = settings.config
    if not config.deploy.services:
        return []
    names = ", ".join(s.name for s in config.deploy.services)
    console.print(f"  deploying ({config.deploy.target}): {names}")
    ctx = DeployContext(
        env=settings.env,
        iteration=plan.record.number,
        git_sha=plan.record.git_sha,
        log_dir=plan.dir / "services",
        python=sys.executable,
        base_env=dict(os.environ),
    )
    deployments = target.deploy(config, ctx)
    store.record_deployments(plan.record.id, deployments)
    revisions = sorted(f"{d.service}@{d.revision}" for d in deployments if d.revision)
    if revisions:
        # A new revision is new code even when the work tree is the same.
        base = plan.record.code_key or ""
        store.set_code_key(plan.record.id, base + "|" + ",".join(revisions))
    for d in deployments:
        console.print(f"  [green]ready[/] {d.service} {d.url or ''}", highlight=False)
    return list(deployments)


# --- test ------------------------------------------------------------------------------------


class _StoreRecorder:
    def __init__(self, store: Store, iteration_id: int) -> None:
        self._store = store
        self._id = iteration_id

    def results(self, results: list[TestResult]) -> None:
        self._store.record_results(self._id, results)

    def suite_status(self, suite: str, status: SuiteStatus, error: str | None = None) -> None:
        self._store.set_suite_status(
            self._id,
            suite,
            status,
            error=error,
            started=status == SuiteStatus.RUNNING,
            finished=status not in (SuiteStatus.RUNNING, SuiteStatus.PENDING),
        )


def run_tests(
    settings: IterationSettings,
    store: Store,
    console: Console,
    plan: Plan,
    deployments: list[Deployment],
    target: DeployTarget,
) -> None:
    if not plan.job_prefix:  # a resume keeps its inventory
        recollect_with_services(settings, store, console, plan, deployments)
    rows = store.tests(plan.record.id)
    selected = {s.name for s in plan.suites}
    pending: dict[str, list[str]] = {}
    collectable: dict[str, list[str]] = {}
    totals: dict[str, int] = {}
    done: dict[str, int] = {}
    failed: dict[str, int] = {}
    for row in rows:
        totals[row.suite] = totals.get(row.suite, 0) + 1
        if row.outcome is None:
            pending.setdefault(row.suite, []).append(row.nodeid)
        else:
            done[row.suite] = done.get(row.suite, 0) + 1
            if row.outcome in (Outcome.FAILED, Outcome.ERROR):
                failed[row.suite] = failed.get(row.suite, 0) + 1
        is_collect_error = row.outcome == Outcome.ERROR and (row.message or "").startswith(
            COLLECTION_ERROR
        )
        if not is_collect_error:
            collectable.setdefault(row.suite, []).append(row.nodeid)
    state = RunState(
        {
            s.name: SuiteProgress(
                s.name, totals.get(s.name, 0), done.get(s.name, 0), failed.get(s.name, 0)
            )
            for s in plan.suites
        }
    )
    recorder = _StoreRecorder(store, plan.record.id)
    workers = settings.workers
    overlapping = suites_covering_others(
        plan.suites, {row.nodeid: row.suite for row in rows}, settings.workdir
    )
    jobs = plan_jobs(
        plan.suites, pending, collectable, workers, prefix=plan.job_prefix, by_node_id=overlapping
    )
    # Suites with nothing left to run (all collection errors, or finished before a resume).
    for suite in plan.suites:
        if suite.name in selected and not pending.get(suite.name):
            progress = state.suites[suite.name]
            progress.status = SuiteStatus.FAILED if progress.failed else SuiteStatus.PASSED
            recorder.suite_status(suite.name, progress.status)
    if not jobs:
        return
    count = sum(len(v) for k, v in pending.items() if k in selected)
    console.print(f"  running {count} tests: {len(jobs)} pytest processes, {workers} at once")
    setup = _pytest_setup(settings, plan.record, deployments)
    display = LiveDisplay(console, state) if console.is_terminal else LineDisplay(console)
    with display:
        runner = TestRunner(
            setup,
            plan.dir / "pytest",
            settings.config.tests.suite_timeout_s,
            workers,
            recorder,
            display,
            state,
            fresh_env=lambda: target.test_env(settings.config, deployments),
        )
        runner.run(jobs)
    if settings.config.tests.reruns:
        rerun_failures(settings, store, console, plan, setup, deployments, target)


def recollect_with_services(
    settings: IterationSettings,
    store: Store,
    console: Console,
    plan: Plan,
    deployments: Sequence[Deployment],
) -> None:
    """Collect again the suites whose collection failed before deploy: a test module may read
    LOOP_<NAME>_URL at import time, and the URLs of a local deploy exist only now."""
    if not any(d.url for d in deployments):
        return
    broken = {
        row.suite
        for row in store.tests(plan.record.id)
        if row.outcome == Outcome.ERROR and (row.message or "").startswith(COLLECTION_ERROR)
    }
    suites = [s for s in plan.suites if s.name in broken]
    if not suites:
        return
    console.print(f"  collecting {len(suites)} suites again, with the services' URLs")
    setup = _pytest_setup(settings, plan.record, deployments)
    inventory = collect_inventory(
        suites,
        setup,
        plan.dir / "pytest",
        settings.config.tests.suite_timeout_s,
        name="recollect",
    )
    store.replace_inventory(plan.record.id, {s.name for s in suites}, inventory)


class _AttemptRecorder:
    """Rerun results go beside the first ones: the first failure stays the test's outcome."""

    def __init__(self, store: Store, iteration_id: int, attempt: int) -> None:
        self._store = store
        self._id = iteration_id
        self._attempt = attempt
        self.failing: set[tuple[str, str]] = set()

    def results(self, results: list[TestResult]) -> None:
        for result in results:
            self._store.record_attempt(self._id, self._attempt, result)
            if result.outcome in (Outcome.FAILED, Outcome.ERROR):
                self.failing.add((result.suite, result.nodeid))

    def suite_status(self, suite: str, status: SuiteStatus, error: str | None = None) -> None:
        return None


def rerun_failures(
    settings: IterationSettings,
    store: Store,
    console: Console,
    plan: Plan,
    setup: PytestSetup,
    deployments: list[Deployment],
    target: DeployTarget,
) -> None:
    """Run failing tests again (`[tests] reruns`) so flaky ones show as flaky."""
    failing = {(r.suite, r.nodeid) for r in store.tests(plan.record.id) if _rerunnable(r)}
    for attempt in range(2, settings.config.tests.reruns + 2):
        if not failing:
            return
        pending: dict[str, list[str]] = {}
        for suite, nodeid in sorted(failing):
            pending.setdefault(suite, []).append(nodeid)
        suites = [s for s in plan.suites if s.name in pending]
        console.print(f"  rerun {attempt - 1}: {len(failing)} failing tests")
        jobs = plan_jobs(
            suites, pending, {}, settings.workers, prefix=f"{plan.job_prefix}rerun{attempt - 1}-"
        )
        recorder = _AttemptRecorder(store, plan.record.id, attempt)
        state = RunState({s.name: SuiteProgress(s.name, len(pending[s.name])) for s in suites})
        with LineDisplay(console) as display:
            TestRunner(
                setup,
                plan.dir / "pytest",
                settings.config.tests.suite_timeout_s,
                settings.workers,
                recorder,
                display,
                state,
                fresh_env=lambda: target.test_env(settings.config, deployments),
            ).run(jobs)
        failing = recorder.failing


def _rerunnable(row: TestRow) -> bool:
    # loop's own errors (a collection error, a suite timeout, a crash) would only repeat
    # themselves, slowly; a test's own failure, a network timeout included, may be flaky.
    message = row.message or ""
    return row.outcome in (Outcome.FAILED, Outcome.ERROR) and not (
        message.startswith((COLLECTION_ERROR, NOT_RUN)) or message.endswith(WHILE_RUNNING)
    )


def test_environment(
    settings: IterationSettings, number: int, deployments: Sequence[Deployment]
) -> dict[str, str]:
    """What the tests see: the caller's environment, `[tests] env`, then LOOP_* (ours win)."""
    env = dict(os.environ)
    env.update(settings.config.tests.env)
    env["LOOP_ENV"] = settings.env
    env["LOOP_ITERATION"] = str(number)
    for d in deployments:
        if d.url:
            env[url_env_var(d.service)] = d.url
    return env


def resolve_python(config: Config, workdir: Path) -> str:
    """The tests' interpreter; a missing one is a usage error before anything starts."""
    python = config.tests.python
    if python is None:
        return sys.executable
    found = str(workdir / python) if os.sep in python else shutil.which(python)
    if found is None or not os.access(found, os.X_OK) or os.path.isdir(found):
        raise UsageError(f"tests.python: {python!r} is not an executable interpreter")
    return found


def _pytest_setup(
    settings: IterationSettings, record: IterationRecord, deployments: Sequence[Deployment]
) -> PytestSetup:
    return PytestSetup(
        python=resolve_python(settings.config, settings.workdir),
        workdir=settings.workdir,
        pytest_args=tuple(settings.config.tests.pytest_args),
        env=test_environment(settings, record.number, deployments),
    )


# --- rollback --------------------------------------------------------------------------------


def roll_back_if_worse(
    settings: IterationSettings,
    store: Store,
    console: Console,
    record: IterationRecord,
    target: DeployTarget,
    deploy_error: str | None,
) -> list[Rollback]:
    """Send traffic back to the revisions of the last passing iteration when this one's
    deploy failed or its pass rate dropped below the previous iteration's."""
    reason = _rollback_reason(store, record, deploy_error)
    if reason is None:
        return []
    revisions = store.last_good_revisions(settings.env, record.number)
    if not revisions:
        console.print(f"  [yellow]no rollback[/]: {reason}, but no earlier iteration passed")
        return []
    try:
        done = target.rollback(settings.config, revisions, reason)
    except DeployError as exc:
        # What did roll back is in the message; the iteration's own result stands.
        console.print(f"  [red]rollback failed[/]: {exc}", highlight=False)
        return []
    for rollback in done:
        store.record_rollback(record.id, rollback.service, rollback.to_revision)
        console.print(
            f"  [yellow]rolled back[/] {rollback.service}: {rollback.from_revision or '?'}"
            f" -> {rollback.to_revision} ({rollback.reason})",
            highlight=False,
        )
    return done


def _rollback_reason(store: Store, record: IterationRecord, deploy_error: str | None) -> str | None:
    if deploy_error is not None:
        return "deploy failed"
    previous = store.iteration(record.env, record.number - 1)
    if previous is None:
        return None
    now = figures(store.tests(record.id)).pass_rate
    before = figures(store.tests(previous.id)).pass_rate
    if now is not None and before is not None and now < before:
        return f"pass rate dropped from {before:.1f}% to {now:.1f}%"
    return None


# --- analyze and report ----------------------------------------------------------------------


def _final_status(
    store: Store,
    record: IterationRecord,
    target_pass_rate: float,
    deploy_error: str | None,
    interrupted: bool,
) -> IterationStatus:
    if interrupted:
        return IterationStatus.INTERRUPTED
    if deploy_error is not None:
        return IterationStatus.DEPLOY_FAILED
    rate = figures(store.tests(record.id)).pass_rate
    # Zero executed tests (rate None) never reaches the target: nothing was shown to work.
    if rate is not None and rate >= target_pass_rate:
        return IterationStatus.PASSED
    return IterationStatus.FAILED


def _mark_error(store: Store, record: IterationRecord, exc: Exception) -> None:
    try:
        reason = f"{type(exc).__name__}: {exc}"
        store.finish_iteration(record.id, IterationStatus.ERROR, error=reason)
    except Exception:  # noqa: BLE001 (the store itself may be what failed)
        pass


def write_reports(layout: StateLayout, summary: Summary) -> tuple[Path, Path]:
    from deployloop.report.json_report import summary_to_json
    from deployloop.report.markdown import summary_to_markdown

    record = summary.iteration
    md = layout.report_md(record.env, record.number)
    js = layout.summary_json(record.env, record.number)
    md.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(md, summary_to_markdown(summary))
    _write_atomic(js, summary_to_json(summary))
    return md, js


def _write_atomic(path: Path, text: str) -> None:
    # A reader (the between-iterations hook, a CI step) never sees half a file.
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
