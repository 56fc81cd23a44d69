"""Run the pending tests as one Cloud Run Jobs execution and record its results as they
arrive in the bucket.

Each task attempt's chunks feed a ReportLogReader, as a local pytest's reportlog does: the
first result of a test is its outcome, and what a retried task reports again is a second
attempt beside it, as `[tests] reruns` records one. When an attempt ends without finishing
its session (killed, timed out, crashed), the test it was running becomes an error naming
the task and why it stopped; the tests it never reached wait for the retry, or, when there is
none, become errors too. Ctrl-C cancels the execution: nothing keeps running in the project.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rich.text import Text

from deployloop.models import (
    NOT_RUN,
    PYTEST_OUTPUT,
    WHILE_RUNNING,
    Outcome,
    SuiteStatus,
    TestResult,
)
from deployloop.runner.cloudrun_jobs.bucket import BucketError, retrying
from deployloop.runner.cloudrun_jobs.job import ExecutionStatus, JobError, JobRunner, TaskStatus
from deployloop.runner.cloudrun_jobs.layout import (
    RESULTS_ENV,
    SHARE_VERSION,
    chunk_name,
    parse_result,
    share_name,
)
from deployloop.runner.cloudrun_jobs.shares import Share
from deployloop.runner.execute import Batch, Display, Interrupted, Recorder, RunState
from deployloop.runner.process import PytestSetup
from deployloop.runner.reportlog import ReportLogReader
from deployloop.safetext import one_line
from deployloop.store import now_iso

if TYPE_CHECKING:
    from google.cloud.storage import Bucket

POLL_S = 0.5  # how often the bucket is listed for new chunks
STATUS_EVERY_S = 3.0  # how often the execution's status is read
SILENT = (
    "the task ended without writing a result: does the job's image hold deployloop and run"
    " `python -m deployloop.task`?"
)


@dataclass
class _Attempt:
    task: int
    number: int  # Cloud Run's CLOUD_RUN_TASK_ATTEMPT: 0 first
    reader: ReportLogReader
    inbox: list[TestResult]
    next_chunk: int = 1
    current: str | None = None  # started, not reported yet
    end: dict[str, Any] | None = None
    closed: bool = False
    reported: set[str] = field(default_factory=set)


@dataclass
class JobsRun:
    """What one execution runs, and where its objects live."""

    runner: JobRunner
    bucket: Bucket
    folder: str
    shares: list[Share]
    setup: PytestSetup
    env: Mapping[str, str]  # the execution's overrides: LOOP_* and where results go
    share_env: Mapping[str, str]  # [tests] env: in the share, not in the execution's spec
    id_tokens: Mapping[str, str]  # LOOP_<NAME>_ID_TOKEN -> audience, minted in the task
    test_timeout_s: float | None = None  # [tests] test_timeout_s, applied in the task
    flush_s: float = 2.0


class JobsExecutor:
    def __init__(
        self,
        run: JobsRun,
        recorder: Recorder,
        display: Display,
        state: RunState,
        on_attempt: Callable[[int, TestResult], None],
        on_poll: Callable[[], None] = lambda: None,
    ) -> None:
        self._run = run
        self._recorder = recorder
        self._display = display
        self.state = state
        self._on_attempt = on_attempt  # a later attempt's result, numbered from 2
        self._on_poll = on_poll
        self._owner = {t.nodeid: t.suite for s in run.shares for t in s.tests}
        self._share = {s.task: s for s in run.shares}
        self._attempts: dict[tuple[int, int], _Attempt] = {}
        self._seen: dict[str, int] = {}  # node id -> results recorded so far
        self._problem: dict[str, SuiteStatus] = {}
        self._batch = Batch(recorder, state)
        self.execution: str | None = None

    # --- the run --------------------------------------------------------------------------------

    def run(self) -> None:
        """Upload the shares, run the execution, record everything; raises Interrupted after
        cancelling the execution on Ctrl-C, JobError or BucketError when Google fails."""
        run = self._run
        for share in run.shares:
            self._upload_share(share)
        try:
            self.execution = run.runner.run(len(run.shares), run.env)
            self._display.note(Text(f"  execution {self.execution.rsplit('/', 1)[-1]} started"))
            for suite in dict.fromkeys(self._owner.values()):
                progress = self.state.suites[suite]
                progress.status = SuiteStatus.RUNNING
                progress.started = time.monotonic()
                self._recorder.suite_status(suite, SuiteStatus.RUNNING)
            status = self._watch(self.execution)
            self._read_new()
            self._finish(status, run.runner.tasks(self.execution))
        except KeyboardInterrupt:
            self._interrupted()
            raise Interrupted() from None
        except BaseException:
            self._cancel()  # no task keeps running after loop gave up on it
            raise

    def _interrupted(self) -> None:
        """Ctrl-C: cancel the execution, keep what the tasks uploaded, mark the suites. A
        second Ctrl-C stops waiting for Cloud Run, never the bookkeeping."""
        try:
            self._cancel()
        except KeyboardInterrupt:
            pass
        try:
            self._read_new()
        except (KeyboardInterrupt, BucketError):
            pass
        finally:
            self._flush()
            for progress in self.state.suites.values():
                if progress.status in (SuiteStatus.RUNNING, SuiteStatus.PENDING) and (
                    progress.name in self._owner.values()
                ):
                    progress.status = SuiteStatus.INTERRUPTED
                    self._recorder.suite_status(progress.name, SuiteStatus.INTERRUPTED)

    def _watch(self, execution: str) -> ExecutionStatus:
        last_status = 0.0
        status: ExecutionStatus | None = None
        while True:
            self._read_new()
            self._flush()
            self._display.refresh(self.state)
            self._on_poll()
            if time.monotonic() - last_status >= STATUS_EVERY_S or self._all_ended():
                last_status = time.monotonic()
                status = self._run.runner.execution(execution)
                if status.done:
                    return status
            time.sleep(POLL_S)

    def _all_ended(self) -> bool:
        """Every task said its pytest finished: the execution ends any moment now, and is
        asked at each poll rather than every few seconds."""
        return all(self._done(task) for task in self._share)

    def _cancel(self) -> None:
        """Cancel the execution; when Ctrl-C came while RunJob was on its way, the one it
        started is found among the job's by where it writes its results."""
        names = [self.execution] if self.execution else []
        try:
            if not names:
                names = self._run.runner.started_with(RESULTS_ENV, self._run.env[RESULTS_ENV])
            for name in names:
                self._run.runner.cancel(name)
        except JobError as exc:
            self._display.note(Text(f"  could not cancel {', '.join(names)}: {exc}", "red"))

    # --- the bucket -----------------------------------------------------------------------------

    def _upload_share(self, share: Share) -> None:
        setup = self._run.setup
        rootdir = os.path.relpath(setup.rootdir, setup.workdir) if setup.rootdir else None
        body = {
            "version": SHARE_VERSION,
            "task": share.task,
            "pytest_args": list(setup.pytest_args),
            "rootdir": rootdir,
            "env": dict(self._run.share_env),
            "id_tokens": dict(self._run.id_tokens),
            "redaction": {
                "patterns": list(setup.redaction.patterns),
                "names": sorted(setup.redaction.names),
                "values": dict(setup.redaction.values),
            },
            "flush_s": self._run.flush_s,
            "test_timeout_s": self._run.test_timeout_s,
            "tests": [
                {"suite": t.suite, "nodeid": t.nodeid, "arg": setup.node_arg(t.nodeid)}
                for t in share.tests
            ],
        }
        name = share_name(self._run.folder, share.task)
        self._bucket_call(
            f"write gs://{self._run.bucket.name}/{name}",
            lambda: self._run.bucket.blob(name).upload_from_string(
                json.dumps(body), "application/json"
            ),
        )

    def _read_new(self) -> None:
        """Feed every chunk not read yet, in order, per task and attempt."""
        names = [n for task in self._share if not self._done(task) for n in self._list(task)]
        found: dict[tuple[int, int], tuple[set[int], str | None]] = {}
        for name in names:
            parsed = parse_result(name)
            if parsed is None or parsed.task not in self._share:
                continue
            chunks, end = found.setdefault((parsed.task, parsed.attempt), (set(), None))
            if parsed.chunk is None:
                found[(parsed.task, parsed.attempt)] = (chunks, name)
            else:
                chunks.add(parsed.chunk)
        for task, number in sorted(found):
            chunks, end = found[(task, number)]
            attempt = self._attempt(task, number)
            # A later attempt means the ones before it are over: close them first, so that
            # their running test is theirs and the retry's results come after.
            for earlier in range(number):
                before = self._attempt(task, earlier)
                if not before.closed:
                    self._close(before, final=False, status=self._last_attempt(task, before))
            while attempt.next_chunk in chunks:
                name = chunk_name(self._run.folder, task, number, attempt.next_chunk)
                chunk = self._download(name)
                attempt.next_chunk += 1
                self._feed(attempt, chunk)
            if end is not None and attempt.end is None:
                attempt.end = self._download(end)

    def _last_attempt(self, task: int, attempt: _Attempt) -> TaskStatus | None:
        """What Cloud Run says of an attempt it has just retried (its task's last attempt
        result); None when the task said why itself, or Cloud Run cannot be asked."""
        if _clean_end(attempt.end) or self.execution is None:
            return None
        try:
            status = self._run.runner.tasks(self.execution).get(task)
        except JobError:
            return None
        # Once the retry has ended too, the last attempt Cloud Run tells of is the retry.
        return status if status is not None and not status.done else None

    def _latest(self, task: int) -> _Attempt:
        return self._attempt(task, max((n for t, n in self._attempts if t == task), default=0))

    def _done(self, task: int) -> bool:
        """Its last attempt said its pytest finished: nothing more will come."""
        return _clean_end(self._latest(task).end)

    def _list(self, task: int) -> list[str]:
        """The task's objects from the next chunk it owes on: Cloud Storage lists names in
        order, so a long run's thousands of chunks are not listed again at every poll (the
        emulator of the tests lists them all; what was read is skipped either way)."""
        bucket = self._run.bucket
        latest = self._latest(task)
        prefix = f"{self._run.folder}/results/task-{task:04d}/"
        offset = chunk_name(self._run.folder, task, latest.number, latest.next_chunk)
        return list(self._bucket_call(
            f"list gs://{bucket.name}/{prefix}",
            lambda: [
                b.name
                for b in bucket.client.list_blobs(bucket, prefix=prefix, start_offset=offset)
            ],
        ))

    def _download(self, name: str) -> dict[str, Any]:
        bucket = self._run.bucket
        text = self._bucket_call(
            f"read gs://{bucket.name}/{name}", lambda: bucket.blob(name).download_as_text()
        )
        try:
            loaded = json.loads(text)
        except ValueError:
            return {}
        return loaded if isinstance(loaded, dict) else {}

    def _bucket_call(self, what: str, call: Callable[[], Any]) -> Any:
        try:
            return retrying(call)
        except Exception as exc:  # google-cloud-storage raises api_core and requests errors
            raise BucketError(f"cannot {what}: {one_line(str(exc))[:300]}") from None

    # --- results --------------------------------------------------------------------------------

    def _attempt(self, task: int, number: int) -> _Attempt:
        key = (task, number)
        if key not in self._attempts:
            inbox: list[TestResult] = []
            self._attempts[key] = _Attempt(
                task, number, ReportLogReader(self._owner.get, inbox.append), inbox
            )
        return self._attempts[key]

    def _feed(self, attempt: _Attempt, chunk: dict[str, Any]) -> None:
        for line in str(chunk.get("events", "")).splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and event.get("event") == "start":
                nodeid = str(event.get("nodeid"))
                suite = self._owner.get(nodeid)
                if suite is None:
                    continue
                attempt.current = nodeid
                self.state.running[f"task-{attempt.task}"] = (nodeid, time.monotonic())
                if nodeid not in self._seen:
                    self._batch.start(suite, nodeid, now_iso())
        attempt.reader.feed(str(chunk.get("reportlog", "")).encode("utf-8", "surrogateescape"))
        for stop in chunk.get("stopped") or []:
            # A test the task stopped (test_timeout_s) or that crashed its pytest; the task
            # ran the rest in a new one.
            nodeid = str(stop.get("nodeid"))
            suite = self._owner.get(nodeid)
            if suite is None:
                continue
            message = str(stop.get("message", ""))
            self._mark_problem(suite, message)
            attempt.inbox.append(TestResult(
                nodeid, suite, Outcome.ERROR, 0.0, message,
                message + _output(str(stop.get("output", ""))), now_iso(),
            ))
        for result in attempt.inbox:
            if result.nodeid in attempt.reported:
                continue
            attempt.reported.add(result.nodeid)
            if attempt.current == result.nodeid:
                attempt.current = None
                self.state.running.pop(f"task-{attempt.task}", None)
            self._record(result)
        attempt.inbox.clear()

    def _record(self, result: TestResult) -> None:
        seen = self._seen.get(result.nodeid, 0)
        self._seen[result.nodeid] = seen + 1
        if seen:
            self._on_attempt(seen + 1, result)
            return
        self._batch.result(result)

    def _flush(self) -> None:
        self._batch.flush()

    # --- how each task ended --------------------------------------------------------------------

    def _close(self, attempt: _Attempt, final: bool, status: TaskStatus | None = None) -> None:
        """Account for what an attempt did not report. `final`: no attempt comes after it."""
        if attempt.closed:
            return
        attempt.closed = True
        self.state.running.pop(f"task-{attempt.task}", None)
        clean = _clean_end(attempt.end)
        reason = self._reason(attempt, status)
        output = str((attempt.end or {}).get("output", ""))
        share = self._share[attempt.task]
        partial = attempt.reader.unfinished()
        for nodeid, (outcome, duration, message, text) in partial.items():
            if nodeid not in attempt.reported and outcome in (Outcome.FAILED, Outcome.ERROR):
                attempt.reported.add(nodeid)
                self._record(TestResult(
                    nodeid, self._owner[nodeid], outcome, duration, message,
                    (text or "") + _output(output), now_iso(),
                ))
        current = attempt.current
        if current is not None and current not in attempt.reported and not clean:
            attempt.reported.add(current)
            message = f"{reason}{WHILE_RUNNING}"
            self._mark_problem(self._owner[current], reason)
            self._record(TestResult(
                current, self._owner[current], Outcome.ERROR, 0.0, message,
                message + _output(output), now_iso(),
            ))
        if final:
            for test in share.tests:
                if test.nodeid in self._seen:
                    continue
                if clean:
                    message = (
                        f"task {attempt.task} collected it, but its pytest did not report it"
                    )
                else:
                    message = f"{NOT_RUN}{reason} before this test started"
                    self._mark_problem(test.suite, reason)
                self._record(TestResult(
                    test.nodeid, test.suite, Outcome.ERROR, 0.0, message,
                    message + _output(output), now_iso(),
                ))
        elif not clean:
            self._display.note(Text(f"  {reason}; Cloud Run runs its share again", "yellow"))

    def _reason(self, attempt: _Attempt, status: TaskStatus | None) -> str:
        """`task 2 (attempt 1) ended: The configured timeout was reached (Cloud Run)`:
        what the task itself uploaded, then what Cloud Run says of its last attempt."""
        number = attempt.number + 1
        if status is not None and status.done and attempt.end is None:
            number = max(number, status.attempts)  # attempts that uploaded nothing count too
        who = f"task {attempt.task} (attempt {number})"
        end = attempt.end
        if status is not None and status.reason in (SILENT, "never started"):
            return f"{who}: {status.reason}"
        if end is not None and end.get("error"):
            how = f"could not run its tests: {one_line(str(end['error']))}"
        elif end is not None and end.get("stopped_by"):
            how = f"was stopped ({end['stopped_by']})"
        elif end is not None:
            code = int(end.get("exit_code", 0))
            how = (
                f"pytest was killed by signal {-code}" if code < 0
                else f"pytest exited with code {code}"
            )
            if not end.get("session_finished"):
                how += " without finishing its session"
        said = (status.reason if status is not None else "").rstrip(".")
        if end is None:
            # The container went before the task could say anything: Cloud Run says why.
            return f"{who} ended: {said} (Cloud Run)" if said else f"{who} ended early"
        return f"{who} {how}" + (f" (Cloud Run: {said})" if said else "")

    def _finish(self, status: ExecutionStatus, tasks: dict[int, TaskStatus]) -> None:
        for share in self._run.shares:
            task_status = tasks.get(share.task)
            attempt = self._latest(share.task)
            silent = attempt.next_chunk == 1 and attempt.end is None
            if silent and task_status is not None and task_status.succeeded:
                # Its container ran and exited 0 without a word: not loop's task runner.
                task_status = TaskStatus(share.task, 1, True, False, SILENT)
            elif silent and task_status is not None and not task_status.reason:
                task_status = TaskStatus(share.task, 0, True, False, "never started")
            if task_status is None and status.message:
                task_status = TaskStatus(share.task, 0, True, False, status.message)
            self._close(attempt, final=True, status=task_status)
        self._flush()
        now = time.monotonic()
        for suite in dict.fromkeys(self._owner.values()):
            progress = self.state.suites[suite]
            problem = self._problem.get(suite)
            if problem is not None:
                progress.status = problem
            else:
                progress.status = SuiteStatus.FAILED if progress.failed else SuiteStatus.PASSED
            progress.finished = now
            self._recorder.suite_status(suite, progress.status)
            self._display.suite_finished(progress)

    def _mark_problem(self, suite: str, reason: str) -> None:
        timed_out = "timeout" in reason.lower() or "timed out" in reason.lower()
        self._problem[suite] = SuiteStatus.TIMEOUT if timed_out else SuiteStatus.CRASHED


def _clean_end(end: dict[str, Any] | None) -> bool:
    return bool(
        end is not None
        and end.get("exit_code") in (0, 1, 5)
        and end.get("session_finished")
        and not end.get("stopped_by")
    )


def _output(output: str) -> str:
    return PYTEST_OUTPUT + output if output else ""


