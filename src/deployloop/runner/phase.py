"""One test phase on the worker pool: which worker runs what, and every test's fate.

The queue per worker group is built when the group's first worker has collected (it says
which modules share wider fixtures). Each poll: start or fork workers where work waits,
read what each worker reported, hand out work (schedule.hand_out_budget), apply the
timeouts, and account for the workers that ended: the test a crash or a hang interrupted is
an error saying why, the tests the worker held go back to the queue.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from rich.text import Text

from deployloop.models import (
    NOT_RUN,
    PYTEST_OUTPUT,
    WHILE_RUNNING,
    Outcome,
    SuiteStatus,
    TestResult,
)
from deployloop.runner.execute import (
    POLL_S,
    Batch,
    Display,
    Interrupted,
    Recorder,
    RunState,
    crash_reason,
)
from deployloop.runner.forks import ForkedWorker
from deployloop.runner.pool import (
    _NORMAL_EXITS,
    AHEAD_S,
    MAX_HANDOUTS,
    WorkerGroup,
    WorkerPool,
    _Worker,
)
from deployloop.runner.schedule import PendingTest, WorkQueue, hand_out_budget, make_units
from deployloop.safetext import one_line
from deployloop.store import now_iso


def run_on_pool(
    pool: WorkerPool,
    tests: Sequence[PendingTest],
    group_of: Mapping[str, WorkerGroup],
    split: Mapping[str, str],
    recorder: Recorder,
    display: Display,
    state: RunState,
    failed_before: frozenset[str] = frozenset(),
    on_poll: Callable[[], None] = lambda: None,
) -> list[PendingTest]:
    """Run `tests` on the pool's workers (schedule.make_units orders them); group_of maps
    suite -> group. `failed_before`: node ids that failed last time, said when done.
    Returns the tests of groups whose workers could not collect: not run."""
    phase = _Phase(pool, tests, group_of, split, recorder, display, state, failed_before)
    try:
        while phase.unrecorded:
            phase.step()
            on_poll()
            time.sleep(POLL_S)
        pool.phase_done()
        phase.step_display()
    except KeyboardInterrupt:
        phase.stop_all()
        raise Interrupted() from None
    except BaseException:
        pool.kill_all()
        raise
    return phase.unplaced


class _SuiteClock:
    """How long a suite's tests have been running: time passes only while one does."""

    def __init__(self) -> None:
        self.running = 0
        self.total = 0.0
        self.since = 0.0

    def change(self, by: int, now: float) -> None:
        if self.running > 0:
            self.total += now - self.since
        self.since = now
        self.running = max(0, self.running + by)

    def elapsed(self, now: float) -> float:
        return self.total + (now - self.since if self.running > 0 else 0.0)


def _when(at: object) -> str:
    """The worker's own time of an event, as the store writes times (else now)."""
    if isinstance(at, (int, float)):
        return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds")
    return now_iso()


class _Phase:
    """One test phase over the pool: the queue per group and every test's fate."""

    def __init__(
        self,
        pool: WorkerPool,
        tests: Sequence[PendingTest],
        group_of: Mapping[str, WorkerGroup],
        split: Mapping[str, str],
        recorder: Recorder,
        display: Display,
        state: RunState,
        failed_before: frozenset[str],
    ) -> None:
        self.pool = pool
        self.recorder = recorder
        self.display = display
        self.state = state
        self.split = split
        self.group_of = group_of
        self.waiting: dict[WorkerGroup, list[PendingTest]] = {}  # until a worker is ready
        for test in tests:
            self.waiting.setdefault(group_of[test.suite], []).append(test)
        self.queues: dict[WorkerGroup, WorkQueue] = {}
        self.unrecorded = len(tests)
        self.left: dict[str, int] = {}
        for test in tests:
            self.left[test.suite] = self.left.get(test.suite, 0) + 1
        self.handouts: dict[str, int] = {}
        self.unplaced: list[PendingTest] = []  # of groups whose workers could not collect
        # Durations seen in this run, per suite and (None) over all: (sum, count).
        self.observed: dict[str | None, tuple[float, int]] = {}
        # A suite's time: while at least one of its tests runs (the queue mixes suites, so
        # time spent on other suites' tests is not its own).
        self.suite_clock: dict[str, _SuiteClock] = {}
        self.timed_out: set[str] = set()
        self.before = {t.nodeid for t in tests if t.nodeid in failed_before}
        self.before_total = len(self.before)
        self.before_passed = 0
        self._batch = Batch(recorder, state)
        self._told: set[str] = set()
        # Groups with no work left need no worker: it ends at once.
        for worker in pool._alive:
            if worker.group not in self.waiting and not worker.stop_sent:
                pool._send(worker, {"stop": True})
                worker.stop_sent = True

    # --- one poll -----------------------------------------------------------------------------

    def step(self) -> None:
        self._start_workers()
        for worker in list(self.pool._alive):
            self._pump(worker)
            self._check_worker(worker)
            if worker.proc.poll() is not None:
                self._pump(worker)
                self._finish(worker)
        self._check_suites()
        for worker in self.pool._alive:
            self._hand_out(worker)
            self.pool._flush_outbox(worker)
        self._flush()
        self.step_display()

    def step_display(self) -> None:
        self.display.refresh(self.state)
        for note in self.pool.notes:
            if note not in self._told:
                self._told.add(note)
                self.display.note(Text(f"  {one_line(note)}", style="yellow"))

    def _clock_running(self, suite: str, change: int) -> None:
        clock = self.suite_clock.setdefault(suite, _SuiteClock())
        clock.change(change, time.monotonic())

    def _cost(self, test: PendingTest) -> float:
        """What handing `test` out costs a worker: its own recent mean, else what its suite's
        tests (or all tests) take in this run, else the stand-in."""
        if test.timed:
            return test.expected_s
        seen = self.observed.get(test.suite) or self.observed.get(None)
        return seen[0] / seen[1] if seen else test.expected_s

    def _observe(self, suite: str, duration: float) -> None:
        for key in (suite, None):
            total, count = self.observed.get(key, (0.0, 0))
            self.observed[key] = (total + duration, count + 1)

    def _work_left(self, group: WorkerGroup) -> int:
        queue = self.queues.get(group)
        return len(self.waiting.get(group, ())) + (len(queue) if queue else 0)

    def _start_workers(self) -> None:
        pool = self.pool
        if pool._env is None:
            return
        while len(pool._alive) < pool._size:
            # The groups with more units than workers, the most work per worker first.
            wanted: list[tuple[float, int, WorkerGroup]] = []
            for i, group in enumerate(pool._groups):
                if pool._collect_failures.get(group, 0) >= 2:
                    continue
                mine = [
                    w for w in pool._alive if w.group is group and not (w.stop_sent or w.stale)
                ]
                left = self._work_left(group)
                if left > len(mine):
                    wanted.append((-left / (len(mine) + 1), i, group))
            started = False
            for _, _, group in sorted(wanted, key=lambda item: item[:2]):
                if not pool._fork or group in pool._no_fork:
                    pool._start_worker(group)
                    started = True
                elif self._fork_from_server(group):
                    started = True
                if started:
                    break
            if not started:
                return  # the servers of the groups with work are still collecting

    def _fork_from_server(self, group: WorkerGroup) -> bool:
        """Fork a worker of `group`; False while its server is not ready for that."""
        pool = self.pool
        server = pool._servers.get(group)
        if server is None:
            pool._start_server(group)  # with the services' environment
            return False
        server.pump()
        if server.nofork is not None:
            pool._no_fork.add(group)
            pool.notes.append(
                f"workers for {group.label} start one by one: {server.nofork}"
            )
            pool._retire_server(group)
            return True
        if server.stale is not None:
            self._stale_note(server.stale)
            pool._retire_server(group)
            pool._start_server(group)
            return False
        if server.proc.poll() is not None and server.ready:
            # It died after collecting (killed from outside, out of memory): a new one,
            # twice at most; then the group's workers start one by one.
            pool._retire_server(group)
            deaths = pool._server_deaths.get(group, 0) + 1
            pool._server_deaths[group] = deaths
            if deaths >= 2:
                pool._no_fork.add(group)
                pool.notes.append(
                    f"the fork server for {group.label} ended twice: workers start one by one"
                )
                return True
            pool._start_server(group)
            return False
        if server.proc.poll() is not None and not server.ready:
            pool._retire_server(group)
            if server.has_env:
                why = "pytest could not start or collect: " + crash_reason(
                    server.proc.returncode or 0, False, server.proc.tail(20)
                )
                if server.proc.was_interrupted:
                    why = f"collection timed out after {pool._server_limit(group):g} s"
                self._group_failed(group, why)
            else:
                # Collected without the services' URLs: a new server tries with them.
                pool._start_server(group)
            return False
        if not server.ready:
            if time.monotonic() - server.started > pool._server_limit(group):
                server.proc.interrupt()
            return False
        pool._fork_worker(group, server)
        return True

    def _stale_note(self, names: list[str]) -> None:
        self.pool.notes.append(
            f"a test module reads {', '.join(names)} when it is imported: the workers"
            " started again after the deploy (read it in a fixture to save that time)"
        )

    def _pump(self, worker: _Worker) -> None:
        for event in worker.events.lines():
            self._on_event(worker, event)
        data = worker.reportlog.read()
        if data:
            worker.reader.feed(data)
        for result in worker.inbox:
            test = worker.outstanding.pop(result.nodeid, None)
            if test is None:
                continue  # reported twice: the first report stands
            worker.outstanding_s -= worker.costs.pop(result.nodeid, 0.0)
            self._observe(test.suite, result.duration_s or 0.0)
            if result.nodeid in worker.started_tests:
                worker.started_tests.discard(result.nodeid)
                self._clock_running(test.suite, -1)
            if worker.current == result.nodeid:
                worker.current = None
                self.state.running.pop(worker.name, None)
            self._record(result)
        worker.inbox.clear()

    def _on_event(self, worker: _Worker, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "ready":
            worker.ready = True
            worker.grouped = frozenset(str(f) for f in event.get("grouped") or ())
            self._queue_for(worker)
        elif kind == "env" and event.get("stale"):
            worker.stale = True
            self._stale_note([str(n) for n in event["stale"]])
        elif kind == "missing":
            nodeid = str(event.get("nodeid"))
            test = worker.outstanding.pop(nodeid, None)
            if test is not None:
                worker.outstanding_s -= worker.costs.pop(nodeid, 0.0)
                self._error(
                    test,
                    f"{NOT_RUN}the worker's pytest did not collect this test (it was"
                    " collected before the run)",
                )
        elif kind == "start":
            nodeid = str(event.get("nodeid"))
            test = worker.outstanding.get(nodeid)
            if test is None:
                return
            worker.current, worker.current_since = nodeid, time.monotonic()
            self.state.running[worker.name] = (nodeid, worker.current_since)
            self._batch.start(test.suite, nodeid, _when(event.get("at")))
            if nodeid not in worker.started_tests:
                worker.started_tests.add(nodeid)
                self._clock_running(test.suite, +1)

    def _queue_for(self, worker: _Worker) -> None:
        group = worker.group
        if group in self.queues:
            return
        # The first worker of a group to finish collecting says which modules share
        # fixtures; the others collected the same files.
        units = make_units(self.waiting.pop(group, []), set(worker.grouped), self.split)
        self.queues[group] = WorkQueue(units)

    def _hand_out(self, worker: _Worker) -> None:
        if not worker.ready or not worker.has_env or worker.stop_sent or worker.stale:
            if worker.ready and not worker.has_env and self.pool._env is not None:
                self.pool._send_env(worker)
            return
        queue = self.queues.get(worker.group)
        if queue is None:
            return
        sharing = sum(1 for w in self.pool._alive if w.group is worker.group) or 1
        sent: list[str] = []
        while queue and (len(worker.outstanding) < 2 or worker.outstanding_s < AHEAD_S):
            budget = hand_out_budget(queue.expected_s, sharing, 2 * AHEAD_S)
            for unit in queue.take(budget, self._cost):
                for test in unit.tests:
                    if test.suite in self.timed_out:
                        self._error(test, self._suite_timeout_message())
                        continue
                    worker.outstanding[test.nodeid] = test
                    worker.costs[test.nodeid] = self._cost(test)
                    worker.outstanding_s += worker.costs[test.nodeid]
                    self.handouts[test.nodeid] = self.handouts.get(test.nodeid, 0) + 1
                    sent.append(test.nodeid)
                    self._suite_running(test.suite)
        if sent:
            self.pool._send(worker, {"run": sent})
        if not queue and not self.waiting.get(worker.group):
            # Nothing more for this worker: it runs what it holds, the last test with no
            # next one, and ends.
            self.pool._send(worker, {"stop": True})
            worker.stop_sent = True

    # --- limits -------------------------------------------------------------------------------

    def _check_worker(self, worker: _Worker) -> None:
        if worker.stopped_for is not None or worker.proc.poll() is not None:
            return
        now = time.monotonic()
        if not worker.ready and now - worker.started > self.pool._collect_limit(worker):
            worker.stopped_for = "collect"
            worker.proc.interrupt()
        elif (
            self.pool._test_timeout is not None
            and worker.current is not None
            and now - worker.current_since > self.pool._test_timeout
        ):
            worker.stopped_for = "test"
            worker.proc.interrupt()

    def _check_suites(self) -> None:
        now = time.monotonic()
        for suite, clock in self.suite_clock.items():
            if suite in self.timed_out or not self.left.get(suite):
                continue
            if clock.elapsed(now) <= self.pool._suite_timeout:
                continue
            self.timed_out.add(suite)
            self.state.suites[suite].problem = SuiteStatus.TIMEOUT
            for queue in self.queues.values():
                for test in queue.drop_suite(suite):
                    self._error(test, self._suite_timeout_message())
            for worker in self.pool._alive:
                current = worker.outstanding.get(worker.current or "")
                if current is not None and current.suite == suite and not worker.stopped_for:
                    worker.stopped_for = "suite"
                    worker.proc.interrupt()

    def _suite_timeout_message(self) -> str:
        return (
            f"{NOT_RUN}suite timed out after {self.pool._suite_timeout:g} s"
            " (tests.suite_timeout_s) before this test started"
        )

    # --- a worker ended -----------------------------------------------------------------------

    def _finish(self, worker: _Worker) -> None:
        pool = self.pool
        pool._alive.remove(worker)
        pool._close_pipe(worker)
        self.state.running.pop(worker.name, None)
        worker.reportlog.close()
        worker.events.close()
        code = worker.proc.returncode
        assert code is not None
        held = list(worker.outstanding.values())
        worker.outstanding.clear()
        worker.costs.clear()
        for test in held:  # stopped, whatever their results
            if test.nodeid in worker.started_tests:
                self._clock_running(test.suite, -1)
        worker.started_tests.clear()
        output = worker.proc.tail(20)
        pool._forget_fifo(worker)
        if worker.stale or (isinstance(worker.proc, ForkedWorker) and worker.proc.refused):
            self._put_back(worker.group, held)
            return
        if not worker.ready:
            self._collection_failed(worker, code, output, held)
            return
        reason = self._stop_reason(worker, code, output)
        partial = worker.reader.unfinished()
        rest: list[PendingTest] = []
        for test in held:
            if test.nodeid == worker.current:
                if test.nodeid in partial and partial[test.nodeid][0] in (
                    Outcome.FAILED,
                    Outcome.ERROR,
                ):
                    outcome, duration, message, text = partial[test.nodeid]
                else:
                    outcome, duration, message, text = (
                        Outcome.ERROR, 0.0, f"{reason}{WHILE_RUNNING}", None,
                    )
                longrepr = (text or message or "") + PYTEST_OUTPUT + output
                if worker.stopped_for != "test":  # a hung test is its own error only
                    crash = SuiteStatus.TIMEOUT if worker.stopped_for == "suite" else None
                    self.state.suites[test.suite].problem = crash or SuiteStatus.CRASHED
                self._record(
                    TestResult(test.nodeid, test.suite, outcome, duration, message, longrepr,
                               now_iso())
                )
            elif test.suite in self.timed_out:
                self._error(test, self._suite_timeout_message(), output)
            elif self.handouts.get(test.nodeid, 0) >= MAX_HANDOUTS:
                self._error(
                    test,
                    f"{NOT_RUN}{MAX_HANDOUTS} workers stopped before this test started;"
                    f" the last: {reason}",
                    output,
                )
            else:
                rest.append(test)
        self._put_back(worker.group, rest)

    def _stop_reason(self, worker: _Worker, code: int, output: str) -> str:
        if worker.stopped_for == "test":
            return f"test timed out after {self.pool._test_timeout:g} s (tests.test_timeout_s)"
        if worker.stopped_for == "suite":
            return f"suite timed out after {self.pool._suite_timeout:g} s (tests.suite_timeout_s)"
        if code in _NORMAL_EXITS and worker.reader.session_finished:
            return "the worker's pytest ended its session before this test"
        return crash_reason(code, worker.reader.session_finished, output)

    def _collection_failed(
        self, worker: _Worker, code: int, output: str, held: list[PendingTest]
    ) -> None:
        self._put_back(worker.group, held)
        if not worker.has_env:
            return  # collected without the services' URLs: a new worker tries with them
        pool = self.pool
        pool._collect_failures[worker.group] = pool._collect_failures.get(worker.group, 0) + 1
        others = [w for w in pool._alive if w.group is worker.group and not w.stale]
        if others:
            return  # the workers that did collect run the rest
        if worker.stopped_for == "collect":
            why = f"collection timed out after {pool._collect_limit(worker):g} s"
            why += " (tests.suite_timeout_s per suite collected)"
        else:
            why = "pytest could not start or collect: " + crash_reason(
                code, worker.reader.session_finished, output
            )
        self._group_failed(worker.group, why)

    def _group_failed(self, group: WorkerGroup, why: str) -> None:
        """Every worker of the group failed to collect: its tests go back to the caller,
        which runs them suite by suite, where one suite's broken conftest does not take the
        others down."""
        lost = self.waiting.pop(group, [])
        if group in self.queues:
            lost += self.queues[group].drain()
        self.unplaced += lost
        self.unrecorded -= len(lost)
        self.pool.notes.append(
            f"the workers for {group.label} could not collect ({why}): their tests run"
            " suite by suite"
        )

    def _put_back(self, group: WorkerGroup, tests: list[PendingTest]) -> None:
        if not tests:
            return
        if group in self.queues:
            self.queues[group].put_back(tests)
        else:
            self.waiting[group] = tests + self.waiting.get(group, [])

    # --- results ------------------------------------------------------------------------------

    def _error(self, test: PendingTest, message: str, output: str = "") -> None:
        longrepr = message + (PYTEST_OUTPUT + output if output else "")
        self._record(
            TestResult(test.nodeid, test.suite, Outcome.ERROR, 0.0, message, longrepr, now_iso())
        )

    def _record(self, result: TestResult) -> None:
        self._batch.result(result)
        self.unrecorded -= 1
        if result.nodeid in self.before:
            self.before.discard(result.nodeid)
            self.before_passed += result.outcome == Outcome.PASSED
            if not self.before:
                self._failed_before_done()
        self.left[result.suite] -= 1
        if self.left[result.suite] == 0:
            self._flush()
            self._suite_done(result.suite)

    def _failed_before_done(self) -> None:
        total, passed = self.before_total, self.before_passed
        elapsed = time.monotonic() - self.state.started
        what = "test that failed" if total == 1 else f"{total} tests that failed"
        what += " last time is" if total == 1 else " last time are"
        text = Text(f"  the {what} done ({elapsed:.1f} s into the tests): ")
        text.append(f"{passed} pass now", style="green" if passed else "")
        if passed < total:
            text.append(f", {total - passed} still fail", style="red")
        self.display.note(text)

    def _suite_running(self, suite: str) -> None:
        progress = self.state.suites[suite]
        if progress.status == SuiteStatus.PENDING:
            progress.status = SuiteStatus.RUNNING
            progress.started = time.monotonic()
            self.recorder.suite_status(suite, SuiteStatus.RUNNING)

    def _suite_done(self, suite: str) -> None:
        progress = self.state.suites[suite]
        if progress.problem is not None:
            progress.status = progress.problem
        else:
            progress.status = SuiteStatus.FAILED if progress.failed else SuiteStatus.PASSED
        if progress.started is None:
            progress.started = time.monotonic()
            self.recorder.suite_status(suite, SuiteStatus.RUNNING)
        progress.finished = time.monotonic()
        self.recorder.suite_status(suite, progress.status)
        self.display.suite_finished(progress)

    def _flush(self) -> None:
        self._batch.flush()

    # --- Ctrl-C -------------------------------------------------------------------------------

    def stop_all(self) -> None:
        alive = self.pool._alive
        for worker in alive:
            self.pool._close_pipe(worker)
            worker.proc.interrupt()
        for group in list(self.pool._servers):
            self.pool._retire_server(group)  # they end once their workers have
        # Results reported while the workers wind down are still recorded; a second
        # Ctrl-C stops waiting for that.
        try:
            while any(w.proc.poll() is None for w in alive):
                for worker in alive:
                    self._pump(worker)
                self._flush()
                time.sleep(POLL_S)
        except KeyboardInterrupt:
            for worker in alive:
                worker.proc.kill()
        for worker in alive:
            if worker.proc.poll() is None:
                worker.proc.stop()
            self._pump(worker)
            worker.reportlog.close()
            worker.events.close()
        self._flush()
        for worker in alive:
            self.pool._forget_fifo(worker)
        alive.clear()
        for progress in self.state.suites.values():
            if progress.status == SuiteStatus.RUNNING:
                progress.status = SuiteStatus.INTERRUPTED
                self.recorder.suite_status(progress.name, SuiteStatus.INTERRUPTED)
