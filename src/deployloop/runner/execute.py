"""Run the jobs as pytest processes, several at once, recording each result as it arrives.

One thread polls everything: it tails each process's reportlog (written by loop's plugin),
applies suite timeouts and notices exits. A process that crashes keeps every result it
reported; the tests it never reported become errors with the reason; suites it never reached
run again in a new process.
Ctrl-C stops every process gracefully and leaves unreported tests pending for `--resume`.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from rich.text import Text

from deployloop.models import (
    NOT_RUN,
    PYTEST_OUTPUT,
    WHILE_RUNNING,
    Outcome,
    SuiteStatus,
    TestResult,
)
from deployloop.runner.jobs import Job, retry_job
from deployloop.runner.process import PytestProcess, PytestSetup, error_line, internal_error
from deployloop.runner.reportlog import ReportLogReader
from deployloop.runner.tail import Tail
from deployloop.store import now_iso

POLL_S = 0.05
_NORMAL_EXITS = (0, 1, 5)  # all passed, some failed, nothing to run


class Recorder(Protocol):
    def results(self, results: list[TestResult]) -> None: ...

    def started(self, started: list[tuple[str, str, str]]) -> None:
        """(suite, node id, time) of tests pytest has just started."""
        ...

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
    # Per pytest process, the test it is running and since when (monotonic): a hang shows.
    running: dict[str, tuple[str, float]] = field(default_factory=dict)

    def longest_running(self) -> tuple[str, float] | None:
        """The test that has been running longest, and for how many seconds."""
        if not self.running:
            return None
        nodeid, since = min(self.running.values(), key=lambda item: item[1])
        return nodeid, time.monotonic() - since

    @property
    def total(self) -> int:
        return sum(s.total for s in self.suites.values())

    @property
    def done(self) -> int:
        return sum(s.done for s in self.suites.values())

    @property
    def failed(self) -> int:
        return sum(s.failed for s in self.suites.values())


class Batch:
    """What one poll gathered: test starts and results, written together (one transaction
    each per poll, not one per test); each result counted in its suite's progress."""

    def __init__(self, recorder: Recorder, state: RunState) -> None:
        self._recorder = recorder
        self._state = state
        self._results: list[TestResult] = []
        self._started: list[tuple[str, str, str]] = []

    def start(self, suite: str, nodeid: str, at: str) -> None:
        self._started.append((suite, nodeid, at))

    def result(self, result: TestResult) -> None:
        self._results.append(result)
        progress = self._state.suites[result.suite]
        progress.done += 1
        if result.outcome in (Outcome.FAILED, Outcome.ERROR):
            progress.failed += 1

    def flush(self) -> None:
        if self._started:
            started, self._started = self._started, []
            self._recorder.started(started)
        if self._results:
            results, self._results = self._results, []
            self._recorder.results(results)


class Display(Protocol):
    def refresh(self, state: RunState) -> None: ...

    def suite_finished(self, suite: SuiteProgress) -> None: ...

    def note(self, text: Text) -> None:
        """A line the user should see now (above a live table)."""
        ...


class Interrupted(Exception):
    """Ctrl-C reached the test phase; every process has been stopped."""


# How loop's own errors for tests pytest never reported begin and end: they are not the
# tests' failures (reruns skip them).

# The suite clock of a job whose pytest has not finished collecting yet.
COLLECTING = "(collecting)"


@dataclass
class _Running:
    job: Job
    proc: PytestProcess
    reportlog: Tail
    events: Tail
    reader: ReportLogReader
    owner: dict[str, str]  # node id -> suite
    remaining: dict[str, dict[str, None]]  # suite -> node ids not reported yet, in order
    active: str  # the suite whose clock runs, or COLLECTING
    active_since: float
    current: str | None = None  # the test that started last
    inbox: list[TestResult] = field(default_factory=list)
    timed_out: str | None = None
    test_timed_out: str | None = None  # the node id stopped by tests.test_timeout_s


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
        on_poll: Callable[[], None] = lambda: None,
        test_timeout_s: float | None = None,
    ) -> None:
        self._setup = setup
        self._out_dir = out_dir
        self._timeout = suite_timeout_s
        self._workers = workers
        self._recorder = recorder
        self._display = display
        self.state = state
        self._batch = Batch(recorder, state)
        # Made again for each process: short-lived credentials (ID tokens) stay fresh.
        self._fresh_env = fresh_env
        self._on_poll = on_poll  # e.g. a look at the services, which may crash meanwhile
        self._test_timeout = test_timeout_s

    def run(self, jobs: list[Job]) -> None:
        """Run every job; raises Interrupted after a graceful stop on Ctrl-C."""
        for job in jobs:
            for suite in job.suites:
                self.state.suites[suite].jobs_left += 1
        queue = deque(jobs)
        running: list[_Running] = []
        try:
            while queue or running:
                while queue and len(running) < self._workers and _may_start(queue[0], running):
                    running.append(self._start(queue.popleft()))
                for run in list(running):
                    self._pump(run)
                    self._check_timeout(run)
                    if run.proc.poll() is not None:
                        self._pump(run)
                        running.remove(run)
                        queue.extendleft(self._finish(run))
                self._display.refresh(self.state)
                self._on_poll()
                time.sleep(POLL_S)
        except KeyboardInterrupt:
            self._stop_all(running)
            raise Interrupted() from None
        except BaseException:
            # Whatever broke (the store, the disk), no pytest outlives loop.
            for run in running:
                run.proc.kill()
            raise

    # --- one job ----------------------------------------------------------------------------

    def _start(self, job: Job) -> _Running:
        base = self._out_dir / job.name
        reportlog = Path(f"{base}.reportlog.jsonl")
        events = Path(f"{base}.events.jsonl")
        argv = self._setup.argv(
            list(job.args),
            job.markers,
            [
                "-p",
                "deployloop_plugin",
                f"--loop-reportlog={reportlog}",
                f"--loop-events={events}",
                f"--junitxml={base}.junit.xml",
            ],
        )
        reportlog.unlink(missing_ok=True)
        events.unlink(missing_ok=True)
        proc = self._setup.start(
            argv,
            {**self._setup.process_env(with_plugin=True), **self._fresh_env()},
            self._out_dir / f"{job.name}.log",
        )
        owner = {n: suite for suite, ids in job.expected for n in ids}
        inbox: list[TestResult] = []
        run = _Running(
            job=job,
            proc=proc,
            reportlog=Tail(reportlog),
            events=Tail(events),
            reader=ReportLogReader(owner.get, inbox.append),
            owner=owner,
            remaining={suite: dict.fromkeys(ids) for suite, ids in job.expected},
            active=COLLECTING,
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
        for event in run.events.lines():
            self._on_event(run, event)
        data = run.reportlog.read()
        if data:
            run.reader.feed(data)
        for result in run.inbox:
            self._on_result(run, result)
        run.inbox.clear()
        self._flush()

    def _on_event(self, run: _Running, event: dict[str, Any]) -> None:
        # A suite's clock starts when its first test starts (the first suite's, when
        # collection ends): pytest's start-up and collection count against no suite.
        if event.get("event") == "collected" and run.active == COLLECTING:
            run.active, run.active_since = run.job.suites[0], time.monotonic()
        elif event.get("event") == "start":
            run.current = str(event.get("nodeid"))
            suite = run.owner.get(run.current)
            if suite is not None and suite != run.active:
                run.active, run.active_since = suite, time.monotonic()
            if suite is not None:
                self.state.running[run.job.name] = (run.current, time.monotonic())
                self._batch.start(suite, run.current, now_iso())

    def _on_result(self, run: _Running, result: TestResult) -> None:
        ids = run.remaining.get(result.suite)
        if ids is None or result.nodeid not in ids:
            return  # reported twice, or by an overlapping path: the first report stands
        del ids[result.nodeid]
        if self.state.running.get(run.job.name, ("",))[0] == result.nodeid:
            del self.state.running[run.job.name]
        self._record(result)

    def _check_timeout(self, run: _Running) -> None:
        if run.timed_out is not None or run.test_timed_out is not None:
            return
        if time.monotonic() - run.active_since > self._limit(run):
            run.timed_out = run.active
            run.proc.interrupt()
            return
        current = self.state.running.get(run.job.name)
        if (
            self._test_timeout is not None
            and current is not None
            and time.monotonic() - current[1] > self._test_timeout
        ):
            run.test_timed_out = current[0]
            run.proc.interrupt()

    def _limit(self, run: _Running) -> float:
        # A process collects every suite it runs before the first test: each suite's
        # imports may take what one suite may, so pytest's start-up and a slow import of a
        # later suite are not charged to the first.
        if run.active == COLLECTING:
            return self._timeout * len(run.job.suites)
        return self._timeout

    def _finish(self, run: _Running) -> list[Job]:
        """Account for every test the process did not report; return jobs to run again."""
        self.state.running.pop(run.job.name, None)
        run.reportlog.close()
        run.events.close()
        code = run.proc.returncode
        assert code is not None
        crashed = code not in _NORMAL_EXITS or not run.reader.session_finished
        # Where the process stopped: suites after that one never started and run again in a
        # new process; one that stopped while collecting would stop the same way again.
        stopped = run.timed_out or (run.active if crashed else None)
        leftovers: list[tuple[str, tuple[str, ...]]] = []
        output = run.proc.tail(20)
        if run.test_timed_out is not None:
            # One test hung: it is the error; every test after it runs on in a new process.
            return self._after_test_timeout(run, output)
        for suite in run.job.suites:
            ids = list(run.remaining[suite])
            if not ids:
                continue
            if _after(run.job, suite, stopped) and run.job.attempt < 3:
                leftovers.append((suite, tuple(ids)))
                continue
            if run.timed_out == COLLECTING:
                limit = self._limit(run)
                reason = f"collection timed out after {limit:g} s (tests.suite_timeout_s"
                reason += f" x {len(run.job.suites)} suites)" if len(run.job.suites) > 1 else ")"
                self._mark_problem(suite, SuiteStatus.TIMEOUT)
            elif suite == run.timed_out:
                reason = f"suite timed out after {self._timeout:g} s (tests.suite_timeout_s)"
                self._mark_problem(suite, SuiteStatus.TIMEOUT)
            elif crashed:
                reason = crash_reason(code, run.reader.session_finished, output)
                self._mark_problem(suite, SuiteStatus.CRASHED)
            else:
                reason = "collected before the run, but pytest did not report it"
            self._unreported(run, suite, ids, reason, output)
        self._flush()
        for suite in run.job.suites:
            if not any(s == suite for s, _ in leftovers):
                self._job_done(suite)
        if leftovers:
            return [retry_job(run.job, leftovers, self._setup.node_arg)]
        return []

    def _after_test_timeout(self, run: _Running, output: str) -> list[Job]:
        hung = run.test_timed_out
        assert hung is not None
        suite = run.owner[hung]
        reason = f"test timed out after {self._test_timeout:g} s (tests.test_timeout_s)"
        if hung in run.remaining[suite]:  # not reported as it was stopped
            self._unreported(run, suite, [hung], reason, output)
            del run.remaining[suite][hung]
        self._flush()
        leftovers = [(s, tuple(ids)) for s, ids in run.remaining.items() if ids]
        for name in run.job.suites:
            if not any(s == name for s, _ in leftovers):
                self._job_done(name)
        # Each new process gets past one hung test: it always ends.
        return [retry_job(run.job, leftovers, self._setup.node_arg)] if leftovers else []

    def _unreported(
        self, run: _Running, suite: str, ids: list[str], reason: str, output: str
    ) -> None:
        partial = run.reader.unfinished()
        for nodeid in ids:
            if nodeid in partial and partial[nodeid][0] in (Outcome.FAILED, Outcome.ERROR):
                outcome, duration, message, text = partial[nodeid]
            else:
                outcome, duration, text = Outcome.ERROR, 0.0, None
                if nodeid == run.current:
                    message = f"{reason}{WHILE_RUNNING}"
                else:
                    message = f"{NOT_RUN}{reason} before this test started"
            longrepr = (text or message or "") + PYTEST_OUTPUT + output
            self._record(TestResult(nodeid, suite, outcome, duration, message, longrepr, now_iso()))

    def _record(self, result: TestResult) -> None:
        self._batch.result(result)

    def _flush(self) -> None:
        self._batch.flush()

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
            for run in running:
                run.proc.kill()  # a second Ctrl-C: stop waiting for teardowns
        for run in running:
            if run.proc.poll() is None:
                run.proc.stop()
            self._pump(run)
            run.reportlog.close()
            run.events.close()
        for progress in self.state.suites.values():
            if progress.status == SuiteStatus.RUNNING:
                progress.status = SuiteStatus.INTERRUPTED
                self._recorder.suite_status(progress.name, SuiteStatus.INTERRUPTED)


def _may_start(job: Job, running: list[_Running]) -> bool:
    """A serial suite's process runs alone: it waits for the others, and they for it."""
    if job.serial:
        return not running
    return not any(run.job.serial for run in running)


def _after(job: Job, suite: str, stopped: str | None) -> bool:
    """Whether `suite` comes after the one the process stopped in: it never started."""
    if stopped is None or stopped == COLLECTING:
        return False
    return job.suites.index(suite) > job.suites.index(stopped)


def crash_reason(code: int, session_finished: bool, output: str) -> str:
    if code < 0:
        return f"pytest was killed by signal {-code}"
    if code == 4:
        return f"pytest usage error (exit 4): {error_line(output)}"
    if code == 3:
        internal = internal_error(output)
        if internal:
            return f"pytest crashed (exit 3, internal error): {internal}"
        return "pytest crashed (exit 3: internal error or os._exit)"
    if not session_finished:
        return f"pytest exited with code {code} without finishing its session"
    return f"pytest exited with code {code}"
