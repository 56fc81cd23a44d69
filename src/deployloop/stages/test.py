"""Test: run the planned suites' pending tests against the deployed services, then rerun the
failing ones (`[tests] reruns`)."""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence

from rich.console import Console
from rich.text import Text

from deployloop.deploy.base import DeployTarget
from deployloop.models import (
    NOT_RUN,
    WHILE_RUNNING,
    Deployment,
    Outcome,
    SuiteStatus,
    TestResult,
    TestRow,
)
from deployloop.report._format import plural
from deployloop.runner.display import LineDisplay, LiveDisplay
from deployloop.runner.execute import (
    RunState,
    SuiteProgress,
    TestRunner,
)
from deployloop.runner.inventory import (
    SUITE_NOT_COLLECTED,
    collect_inventory,
    suites_covering_others,
)
from deployloop.runner.jobs import plan_jobs
from deployloop.runner.phase import run_on_pool
from deployloop.runner.pool import WorkerPool
from deployloop.runner.process import PytestSetup
from deployloop.runner.reportlog import COLLECTION_ERROR
from deployloop.runner.schedule import DEFAULT_S, PendingTest, expected_durations
from deployloop.safetext import one_line
from deployloop.stages.plan import Plan
from deployloop.stages.pytest_setup import pytest_setup
from deployloop.stages.settings import IterationSettings
from deployloop.stages.workers import worker_groups
from deployloop.store import Store


class _StoreRecorder:
    def __init__(self, store: Store, iteration_id: int) -> None:
        self._store = store
        self._id = iteration_id

    def results(self, results: list[TestResult]) -> None:
        self._store.record_results(self._id, results)

    def started(self, started: list[tuple[str, str, str]]) -> None:
        self._store.record_started(self._id, started)

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
    pool: WorkerPool | None = None,
) -> None:
    recollected = False
    if not plan.job_prefix:  # a resume keeps its inventory
        recollected = recollect_with_services(settings, store, console, plan, deployments)
    rows = store.tests(plan.record.id)
    selected = {s.name for s in plan.suites}
    last = store.last_outcomes(settings.env, plan.record.number)
    failed_before = frozenset(
        n for n, o in (last[1] if last else {}).items() if o in (Outcome.FAILED, Outcome.ERROR)
    )
    pending: dict[str, list[str]] = {}
    collectable: dict[str, list[str]] = {}
    totals: dict[str, int] = {}
    done: dict[str, int] = {}
    failed: dict[str, int] = {}
    for row in rows:
        totals[row.suite] = totals.get(row.suite, 0) + 1
        if row.outcome is None:
            if not settings.failed_only or _runs_first(row.nodeid, last):
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
    setup = pytest_setup(settings, plan.record, deployments)
    # Suites with nothing left to run (all collection errors, or finished before a resume).
    for suite in plan.suites:
        if suite.name in selected and not pending.get(suite.name):
            progress = state.suites[suite.name]
            progress.status = SuiteStatus.FAILED if progress.failed else SuiteStatus.PASSED
            recorder.suite_status(suite.name, progress.status)
    count = sum(len(v) for k, v in pending.items() if k in selected)
    if not count:
        return
    serial_pending = {
        s.name: pending[s.name] for s in plan.suites if s.serial and s.name in pending
    }
    parallel = [s for s in plan.suites if not s.serial and pending.get(s.name)]
    on_jobs = settings.config.tests.executor == "cloudrun-jobs"
    where = "Cloud Run Jobs" if on_jobs else plural(settings.workers, "worker")
    line = f"  running {plural(count, 'test')} on {where}"
    if failed_before & {n for ids in pending.values() for n in ids}:
        line += ", the ones that failed last time first"
    console.print(line)

    def fresh_env() -> dict[str, str]:
        return target.test_env(settings.config, deployments)

    watch = _ServiceWatch(store, console, plan.record.id, target)
    display = LiveDisplay(console, state) if console.is_terminal else LineDisplay(console)
    with display:
        if on_jobs:
            from deployloop.stages.jobs import run_on_jobs

            run_on_jobs(
                settings, console, plan, deployments, setup,
                _pending_tests(store, settings, plan, pending, last), recorder, display, state,
                on_attempt=lambda n, r: store.record_attempt(plan.record.id, n, r),
                on_poll=watch,
            )
            parallel, serial_pending = [], {}
        if parallel:
            names = {s.name for s in parallel}
            tests = [
                t for t in _pending_tests(store, settings, plan, pending, last)
                if t.suite in names
            ]
            owned = pool is None  # a resume's: started here, closed here
            if pool is None:
                pool = WorkerPool(
                    setup, plan.pytest_dir, worker_groups(parallel, settings.workdir),
                    settings.workers, plan.job_prefix, settings.config.tests.suite_timeout_s,
                    settings.config.tests.test_timeout_s, settings.config.tests.fork_workers,
                )
            try:
                pool.deployed(
                    lambda: {**setup.process_env(with_plugin=True), **fresh_env()},
                    recollect=recollected,
                )
                groups = {g.markers: g for g in pool.groups}
                unplaced = run_on_pool(
                    pool,
                    tests,
                    {s.name: groups[s.markers] for s in parallel},
                    {s.name: s.split for s in parallel},
                    recorder,
                    display,
                    state,
                    failed_before=failed_before,
                    on_poll=watch,
                )
            finally:
                if owned:
                    pool.close()
            for test in unplaced:
                serial_pending.setdefault(test.suite, []).append(test.nodeid)
        if serial_pending:
            overlapping = suites_covering_others(
                plan.suites,
                {row.nodeid: row.suite for row in rows},
                settings.workdir,
                setup.rootdir or settings.workdir,
            )
            # Serial suites, and the tests of workers that could not collect: a pytest
            # process per suite, one at a time.
            jobs = plan_jobs(
                [s for s in plan.suites if s.name in serial_pending], serial_pending,
                collectable, 1, prefix=f"{plan.job_prefix}serial-", by_node_id=overlapping,
                node_arg=setup.node_arg,
            )
            TestRunner(
                setup, plan.pytest_dir, settings.config.tests.suite_timeout_s, 1, recorder,
                display, state, fresh_env=fresh_env, on_poll=watch,
                test_timeout_s=settings.config.tests.test_timeout_s,
            ).run(jobs)
    if settings.config.tests.reruns:
        rerun_failures(settings, store, console, plan, setup, deployments, target)


def _pending_tests(
    store: Store,
    settings: IterationSettings,
    plan: Plan,
    pending: dict[str, list[str]],
    last: tuple[int, dict[str, Outcome | None]] | None,
) -> list[PendingTest]:
    """Every pending test of the selected suites, with its expected duration."""
    suites = [s for s in plan.suites if pending.get(s.name)]
    known = store.test_durations(settings.env, plan.record.number)
    expected = expected_durations(((s.name, n) for s in suites for n in pending[s.name]), known)
    return [
        PendingTest(s.name, n, s.priority, _runs_first(n, last), expected[n], n in known)
        for s in suites
        for n in pending[s.name]
    ]


def _runs_first(nodeid: str, last: tuple[int, dict[str, Outcome | None]] | None) -> bool:
    """Failed or errored last time, or not run then: its result is the news."""
    if last is None:
        return True
    outcome = last[1].get(nodeid)
    return outcome is None or outcome in (Outcome.FAILED, Outcome.ERROR)


class _ServiceWatch:
    """Services that crash while the tests run: recorded and said at once, since every
    failure after that moment is the crash's (the reports put it first)."""

    EVERY_S = 0.5

    def __init__(
        self, store: Store, console: Console, iteration_id: int, target: DeployTarget
    ) -> None:
        self._store = store
        self._console = console
        self._id = iteration_id
        self._target = target
        self._last = time.monotonic()

    def __call__(self) -> None:
        if time.monotonic() - self._last < self.EVERY_S:
            return
        self._last = time.monotonic()
        for crash in self._target.crashed():
            self._store.record_crash(self._id, crash.service, crash.error or "crashed")
            self._console.print(
                Text.assemble(
                    ("  service crashed: ", "bold red"),
                    f"{crash.service}: {one_line(crash.error or '')}",
                )
            )


def recollect_with_services(
    settings: IterationSettings,
    store: Store,
    console: Console,
    plan: Plan,
    deployments: Sequence[Deployment],
) -> bool:
    """Collect again the suites whose collection failed before deploy: a test module may read
    LOOP_<NAME>_URL at import time, and the URLs of a local deploy exist only now. Returns
    whether it did."""
    if not any(d.url for d in deployments):
        return False
    broken = {
        row.suite
        for row in store.tests(plan.record.id)
        if row.outcome == Outcome.ERROR
        and (row.message or "").startswith((COLLECTION_ERROR, SUITE_NOT_COLLECTED))
    }
    suites = [s for s in plan.suites if s.name in broken]
    if not suites:
        return False
    console.print(f"  collecting {plural(len(suites), 'suite')} again, with the services' URLs")
    setup = pytest_setup(settings, plan.record, deployments)
    inventory = collect_inventory(
        suites,
        setup,
        plan.pytest_dir,
        settings.config.tests.suite_timeout_s,
        name="recollect",
    )
    store.replace_inventory(plan.record.id, {s.name for s in suites}, inventory)
    return True


class _AttemptRecorder:
    """Rerun results go beside the first ones: the first failure stays the test's outcome."""

    def __init__(self, store: Store, iteration_id: int, attempt: int) -> None:
        self._store = store
        self._id = iteration_id
        self._attempt = attempt
        self.failing: set[tuple[str, str]] = set()

    def started(self, started: list[tuple[str, str, str]]) -> None:
        return None  # a rerun's start is not the test's: its first run stands

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
    for rerun in range(1, settings.config.tests.reruns + 1):
        if not failing:
            return
        # After every attempt already recorded: a Cloud Run task's retry is one too.
        attempt = max((r.attempt for r in store.reruns(plan.record.id)), default=1) + 1
        pending: dict[str, list[str]] = {}
        for suite, nodeid in sorted(failing):
            pending.setdefault(suite, []).append(nodeid)
        suites = [s for s in plan.suites if s.name in pending]
        console.print(f"  rerun {rerun}: {len(failing)} failing tests")
        recorder = _AttemptRecorder(store, plan.record.id, attempt)
        state = RunState({s.name: SuiteProgress(s.name, len(pending[s.name])) for s in suites})
        if settings.config.tests.executor == "cloudrun-jobs":
            from deployloop.stages.jobs import run_on_jobs

            tests = [
                PendingTest(s.name, n, s.priority, True, DEFAULT_S)
                for s in suites
                for n in pending[s.name]
            ]
            with LineDisplay(console) as display:
                run_on_jobs(
                    settings, console, plan, deployments, setup, tests, recorder, display,
                    state,
                    # A retried task's results come after this rerun's own.
                    on_attempt=functools.partial(_later_attempt, store, plan.record.id, attempt),
                    on_poll=_ServiceWatch(store, console, plan.record.id, target),
                )
            failing = recorder.failing
            continue
        jobs = plan_jobs(
            suites,
            pending,
            {},
            settings.workers,
            prefix=f"{plan.job_prefix}rerun{rerun}-",
            node_arg=setup.node_arg,
        )
        with LineDisplay(console) as display:
            TestRunner(
                setup,
                plan.pytest_dir,
                settings.config.tests.suite_timeout_s,
                settings.workers,
                recorder,
                display,
                state,
                fresh_env=lambda: target.test_env(settings.config, deployments),
                on_poll=_ServiceWatch(store, console, plan.record.id, target),
                test_timeout_s=settings.config.tests.test_timeout_s,
            ).run(jobs)
        failing = recorder.failing


def _later_attempt(
    store: Store, iteration_id: int, first: int, number: int, result: TestResult
) -> None:
    """The `number`th result (2, 3, ...) of a test within a rerun that is attempt `first`."""
    store.record_attempt(iteration_id, first + number - 1, result)


def _rerunnable(row: TestRow) -> bool:
    # loop's own errors (a collection error, a suite timeout, a crash) would only repeat
    # themselves, slowly; a test's own failure, a network timeout included, may be flaky.
    message = row.message or ""
    return row.outcome in (Outcome.FAILED, Outcome.ERROR) and not (
        message.startswith((COLLECTION_ERROR, NOT_RUN)) or message.endswith(WHILE_RUNNING)
    )
