"""Run the jobs as pytest processes, several at once, recording each result as it arrives.

One thread polls everything: it tails each process's reportlog, applies suite timeouts and
notices exits. A process that crashes keeps every result it reported; the tests it never
reported become errors with the reason; suites it never reached run again in a new process.
Ctrl-C stops every process gracefully and leaves unreported tests pending for `--resume`.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

from deployloop.models import Outcome, SuiteStatus, TestResult
from deployloop.runner.jobs import Job, retry_job
from deployloop.runner.process import PytestProcess, PytestSetup, error_line
from deployloop.runner.reportlog import ReportLogReader
from deployloop.store import now_iso

POLL_S = 0.05
_NORMAL_EXITS = (0, 1, 5)  # all passed, some failed, nothing to run


class Recorder(Protocol):
    def results(self, results: list[TestResult]) -> None: ...

    def suite_status(self, suite: str, status: SuiteStatus, error: str | None = None) -> None: ...


@dataclass
class SuiteProgress:
    name: str
    total: int
    done: int = 0
    failed: int = 0
    status: SuiteStatus = SuiteStatus.PENDING
    jobs_left: int = 0
    problem: SuiteStatus | None = None  # TIMEOUT or CRASHED once any of its jobs had that
    started: float | None = None
    finished: float | None = None


@dataclass
class RunState:
    """What the progress display reads while tests run."""

    suites: dict[str, SuiteProgress]
    started: float = field(default_factory=time.monotonic)

    @property
    def total(self) -> int:
        return sum(s.total for s in self.suites.values())

    @property
    def done(self) -> int:
        return sum(s.done for s in self.suites.values())

    @property
    def failed(self) -> int:
        return sum(s.failed for s in self.suites.values())


class Display(Protocol):
    def refresh(self, state: RunState) -> None: ...

    def suite_finished(self, suite: SuiteProgress) -> None: ...


class Interrupted(Exception):
    """Ctrl-C reached the test phase; every process has been stopped."""


@dataclass
class _Running:
    job: Job
    proc: PytestProcess
    reportlog: Path
    reader: ReportLogReader
    remaining: dict[str, dict[str, None]]  # suite -> node ids not reported yet, in order
    active: str | None
    active_since: float
    inbox: list[TestResult] = field(default_factory=list)
    timed_out: str | None = None
    handle: IO[bytes] | None = None


class TestRunner:
    def __init__(
        self,
        setup: PytestSetup,
        out_dir: Path,
        suite_timeout_s: float,
        workers: int,
        recorder: Recorder,
        display: Display,
        state: RunState,
        fresh_env: Callable[[], dict[str, str]] = dict,
    ) -> None:
        self._setup = setup
        self._out_dir = out_dir
        self._timeout = suite_timeout_s
        self._workers = workers
        self._recorder = recorder
        self._display = display
        self.state = state
        self._batch: list[TestResult] = []  # written together: one transaction per poll
        # Made again for each process: short-lived credentials (ID tokens) stay fresh.
        self._fresh_env = fresh_env

    def run(self, jobs: list[Job]) -> None:
        """Run every job; raises Interrupted after a graceful stop on Ctrl-C."""
        for job in jobs:
            for suite in job.suites:
                self.state.suites[suite].jobs_left += 1
        queue = deque(jobs)
        running: list[_Running] = []
        try:
            while queue or running:
                while queue and len(running) < self._workers:
                    running.append(self._start(queue.popleft()))
                for run in list(running):
                    self._pump(run)
                    self._check_timeout(run)
                    if run.proc.poll() is not None:
                        self._pump(run)
                        running.remove(run)
                        queue.extendleft(self._finish(run))
                self._display.refresh(self.state)
                time.sleep(POLL_S)
        except KeyboardInterrupt:
            self._stop_all(running)
            raise Interrupted() from None

    # --- one job ----------------------------------------------------------------------------

    def _start(self, job: Job) -> _Running:
        reportlog = self._out_dir / f"{job.name}.reportlog.jsonl"
        argv = self._setup.argv(
            list(job.args),
            job.markers,
            [f"--report-log={reportlog}", f"--junitxml={self._out_dir / job.name}.junit.xml"],
        )
        reportlog.unlink(missing_ok=True)
        proc = PytestProcess(
            argv,
            {**self._setup.process_env(with_plugin=False), **self._fresh_env()},
            self._setup.workdir,
            self._out_dir / f"{job.name}.log",
        )
        owner = {n: suite for suite, ids in job.expected for n in ids}
        inbox: list[TestResult] = []
        run = _Running(
            job=job,
            proc=proc,
            reportlog=reportlog,
            reader=ReportLogReader(owner.get, inbox.append),
            remaining={suite: dict.fromkeys(ids) for suite, ids in job.expected},
            active=job.suites[0],
            active_since=time.monotonic(),
            inbox=inbox,
        )
        now = time.monotonic()
        for suite in job.suites:
            progress = self.state.suites[suite]
            if progress.status == SuiteStatus.PENDING:
                progress.status = SuiteStatus.RUNNING
                progress.started = now
                self._recorder.suite_status(suite, SuiteStatus.RUNNING)
        return run

    def _pump(self, run: _Running) -> None:
        if run.handle is None:
            try:
                run.handle = open(run.reportlog, "rb")  # noqa: SIM115 (closed in _finish)
            except FileNotFoundError:
                return  # pytest has not configured its plugins yet
        data = run.handle.read()
        if data:
            run.reader.feed(data)
        for result in run.inbox:
            self._on_result(run, result)
        run.inbox.clear()
        self._flush()

    def _on_result(self, run: _Running, result: TestResult) -> None:
        ids = run.remaining.get(result.suite)
        if ids is None or result.nodeid not in ids:
            return  # reported twice, or by an overlapping path: the first report stands
        del ids[result.nodeid]
        self._record(result)
        if result.suite != run.active or not ids:
            # The clock of a suite starts when the tests before it are done.
            run.active = result.suite if ids else self._next_suite(run, result.suite)
            run.active_since = time.monotonic()

    def _next_suite(self, run: _Running, after: str) -> str | None:
        order = run.job.suites
        for suite in order[order.index(after) + 1 :]:
            if run.remaining[suite]:
                return suite
        return None

    def _check_timeout(self, run: _Running) -> None:
        if run.timed_out or run.active is None:
            return
        if time.monotonic() - run.active_since > self._timeout:
            run.timed_out = run.active
            run.proc.interrupt()

    def _finish(self, run: _Running) -> list[Job]:
        """Account for every test the process did not report; return jobs to run again."""
        if run.handle is not None:
            run.handle.close()
        code = run.proc.returncode
        assert code is not None
        crashed = code not in _NORMAL_EXITS or not run.reader.session_finished
        partial = run.reader.unfinished()
        stopped_suite = run.timed_out or (run.active if crashed else None)
        leftovers: list[tuple[str, tuple[str, ...]]] = []
        output = run.proc.tail(20)
        for suite in run.job.suites:
            ids = run.remaining[suite]
            if not ids:
                continue
            if _after(run.job, suite, stopped_suite) and run.job.attempt < 3:
                leftovers.append((suite, tuple(ids)))
                continue
            if suite == stopped_suite and run.timed_out:
                reason = f"suite timed out after {self._timeout:g} s (tests.suite_timeout_s)"
                self._mark_problem(suite, SuiteStatus.TIMEOUT)
            elif crashed:
                reason = _crash_reason(code, run.reader.session_finished, output)
                self._mark_problem(suite, SuiteStatus.CRASHED)
            else:
                reason = "collected before the run, but pytest did not report it"
            self._unreported(suite, list(ids), reason, partial, output)
        self._flush()
        for suite in run.job.suites:
            if not any(s == suite for s, _ in leftovers):
                self._job_done(suite)
        if leftovers:
            return [retry_job(run.job, leftovers)]
        return []

    def _unreported(
        self,
        suite: str,
        ids: list[str],
        reason: str,
        partial: dict[str, tuple[Outcome, float, str | None, str | None]],
        output: str,
    ) -> None:
        results = []
        for index, nodeid in enumerate(ids):
            if nodeid in partial and partial[nodeid][0] in (Outcome.FAILED, Outcome.ERROR):
                outcome, duration, message, text = partial[nodeid]
                results.append(TestResult(nodeid, suite, outcome, duration, message, text,
                                          now_iso()))
                continue
            running = index == 0
            message = (f"{reason} while this test was running" if running
                       else f"not run: {reason} before this test started")
            longrepr = message + "\n\nlast lines of pytest output:\n" + output
            results.append(TestResult(nodeid, suite, Outcome.ERROR, 0.0, message, longrepr,
                                      now_iso()))
        for result in results:
            self._record(result)

    def _record(self, result: TestResult) -> None:
        self._batch.append(result)
        progress = self.state.suites[result.suite]
        progress.done += 1
        if result.outcome in (Outcome.FAILED, Outcome.ERROR):
            progress.failed += 1

    def _flush(self) -> None:
        if self._batch:
            batch, self._batch = self._batch, []
            self._recorder.results(batch)

    def _mark_problem(self, suite: str, status: SuiteStatus) -> None:
        self.state.suites[suite].problem = status

    def _job_done(self, suite: str) -> None:
        progress = self.state.suites[suite]
        progress.jobs_left -= 1
        if progress.jobs_left > 0:
            return
        if progress.problem is not None:
            progress.status = progress.problem
        else:
            progress.status = SuiteStatus.FAILED if progress.failed else SuiteStatus.PASSED
        progress.finished = time.monotonic()
        self._recorder.suite_status(suite, progress.status)
        self._display.suite_finished(progress)

    def _stop_all(self, running: list[_Running]) -> None:
        for run in running:
            run.proc.interrupt()
        # Results pytest reports while it winds down are still recorded; a second Ctrl-C
        # stops waiting for that.
        try:
            while any(run.proc.poll() is None for run in running):
                for run in running:
                    self._pump(run)
                time.sleep(POLL_S)
        except KeyboardInterrupt:
            pass
        for run in running:
            if run.proc.poll() is None:
                run.proc.stop()
            self._pump(run)
            if run.handle is not None:
                run.handle.close()
        for progress in self.state.suites.values():
            if progress.status == SuiteStatus.RUNNING:
                progress.status = SuiteStatus.INTERRUPTED
                self._recorder.suite_status(progress.name, SuiteStatus.INTERRUPTED)


def _after(job: Job, suite: str, stopped: str | None) -> bool:
    """Whether `suite` comes after the one the process stopped in: it never started."""
    return stopped is not None and job.suites.index(suite) > job.suites.index(stopped)


def _crash_reason(code: int, session_finished: bool, output: str) -> str:
    if code < 0:
        return f"pytest was killed by signal {-code}"
    if code == 4:
        return f"pytest usage error (exit 4): {error_line(output)}"
    if code == 3:
        return "pytest crashed (exit 3: internal error or os._exit)"
    if not session_finished:
        return f"pytest exited with code {code} without finishing its session"
    return f"pytest exited with code {code}"

