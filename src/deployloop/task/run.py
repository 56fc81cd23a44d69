"""One task: read the share, mint ID tokens, run pytest, stream its results to the bucket.

A test that crashes pytest, or runs past `tests.test_timeout_s`, is an error the task
uploads itself, and the rest of the share runs on in a new pytest, as the local runner does.
The task exits 0 once it got through its share, whatever the tests' outcomes: Cloud Run
retries a task that exits non-zero, and a failing test is a result, not a reason to run the
share again. What is left to `max_retries` is a task that could not go on: its container
killed (memory, a lost machine), SIGTERM, or a pytest that stops before any test.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from deployloop.models import NOT_RUN, WHILE_RUNNING
from deployloop.runner.cloudrun_jobs.bucket import open_bucket, retrying
from deployloop.runner.cloudrun_jobs.layout import (
    PROJECT_ENV,
    RESULTS_ENV,
    SHARE_VERSION,
    chunk_name,
    end_name,
    share_name,
    split_url,
)
from deployloop.runner.execute import crash_reason
from deployloop.runner.process import PytestProcess, PytestSetup, Redaction
from deployloop.runner.tail import Tail

if TYPE_CHECKING:
    from google.cloud.storage import Bucket

FLUSH_S = 2.0  # how often what pytest reported goes to the bucket
_NORMAL_EXITS = (0, 1, 5)
MAX_FRUITLESS = 3
_TAIL_CHARS = 4000


class TaskError(Exception):
    """Why the task cannot run its share; printed as one line to the task's log."""


class _Stream:
    """What the task's pytest processes write, uploaded as numbered chunks of what grew
    since the last one, one process after another; and the tests the task itself stopped.
    The files are read once: `take` hands the same bytes to the task's own _Watch."""

    def __init__(self, bucket: Bucket, folder: str, task: int, attempt: int) -> None:
        self.bucket = bucket
        self.folder = folder
        self.task = task
        self.attempt = attempt
        self.number = 0
        self._reportlog: Tail | None = None
        self._events: Tail | None = None
        self._pending = {"reportlog": b"", "events": b""}
        self._stopped: list[dict[str, str]] = []

    def follow(self, reportlog: Tail, events: Tail) -> None:
        """The next pytest's files; the last one's end is read first, and a line it left
        unfinished (killed mid-write) is ended, so the two never run together."""
        for key in self._pending:
            if self._pending[key] and not self._pending[key].endswith(b"\n"):
                self._pending[key] += b"\n"
        self._reportlog, self._events = reportlog, events

    def stopped(self, nodeid: str, message: str, output: str) -> None:
        self._stopped.append({"nodeid": nodeid, "message": message, "output": output})

    def flush(self) -> None:
        """Upload what `take` gathered since the last flush, and the stopped tests."""
        if not any(self._pending.values()) and not self._stopped:
            return
        self.number += 1
        body: dict[str, Any] = {
            k: v.decode("utf-8", errors="surrogateescape") for k, v in self._pending.items()
        }
        body["stopped"] = self._stopped
        _upload(
            self.bucket,
            chunk_name(self.folder, self.task, self.attempt, self.number),
            json.dumps(body, ensure_ascii=True),
        )
        self._pending = {"reportlog": b"", "events": b""}
        self._stopped = []

    def take(self) -> tuple[bytes, bytes]:
        """What the current pytest wrote since the last call (reportlog, events), kept for
        the next flush."""
        if self._reportlog is None or self._events is None:
            return b"", b""
        reportlog, events = self._reportlog.read(), self._events.read()
        self._pending["reportlog"] += reportlog
        self._pending["events"] += events
        return reportlog, events


def main() -> int:
    try:
        return _run()
    except TaskError as exc:
        print(f"deployloop.task: {exc}", file=sys.stderr, flush=True)
        return 2


def _run() -> int:
    url = os.environ.get(RESULTS_ENV, "")
    if not url.startswith("gs://"):
        raise TaskError(f"{RESULTS_ENV} is not set to gs://...: this runs inside loop's job")
    task = int(os.environ.get("CLOUD_RUN_TASK_INDEX", "0"))
    attempt = int(os.environ.get("CLOUD_RUN_TASK_ATTEMPT", "0"))
    bucket_name, folder = split_url(url)
    bucket = _bucket(bucket_name)
    try:
        return _run_share(bucket, folder, task, attempt)
    except TaskError as exc:
        # Said where loop reads, not only in the task's log: loop names it in every error
        # of the tests this task did not run.
        with contextlib.suppress(TaskError):
            _upload(bucket, end_name(folder, task, attempt), json.dumps(
                {"exit_code": 2, "session_finished": False, "error": str(exc)}
            ))
        raise


def _run_share(bucket: Bucket, folder: str, task: int, attempt: int) -> int:
    share = _read_share(bucket, share_name(folder, task))
    workdir = Path.cwd()
    env = dict(os.environ)
    env.update(share.get("env", {}))
    env.update(_id_tokens(share.get("id_tokens", {})))
    redaction = share.get("redaction", {})
    rootdir = share.get("rootdir")
    setup = PytestSetup(
        python=sys.executable,
        workdir=workdir,
        pytest_args=tuple(share.get("pytest_args", [])),
        env=env,
        rootdir=(workdir / rootdir).resolve() if rootdir else None,
        redaction=Redaction(
            patterns=tuple(redaction.get("patterns", ())),
            names=frozenset(redaction.get("names", ())),
            values=dict(redaction.get("values", {})),
        ),
    )
    tests = [(str(t["nodeid"]), str(t["arg"])) for t in share.get("tests", [])]
    print(f"deployloop.task: task {task} attempt {attempt}: {len(tests)} tests", flush=True)
    limit = share.get("test_timeout_s")
    runner = _ShareRunner(
        setup,
        _Stream(bucket, folder, task, attempt),
        Path(tempfile.mkdtemp(prefix="loop-task-")),
        float(share.get("flush_s", FLUSH_S)),
        float(limit) if limit else None,
    )
    signal.signal(signal.SIGTERM, runner.on_term)
    signal.signal(signal.SIGINT, runner.on_term)
    last = runner.run(tests)
    runner.stream.flush()
    _upload(bucket, end_name(folder, task, attempt), json.dumps({
        "exit_code": last.code,
        "session_finished": last.finished,
        "stopped_by": signal.Signals(runner.stopping[0]).name if runner.stopping else None,
        "output": last.output[-_TAIL_CHARS:],
    }))
    print(last.output, flush=True)
    if last.clean and not runner.stopping:
        return 0
    return last.code if last.code > 0 else 128 - last.code


@dataclass(frozen=True)
class _Ended:
    """How one pytest process of the task ended."""

    code: int
    finished: bool  # its session finished (SessionFinish reported)
    reported: frozenset[str]  # node ids whose teardown it reported
    current: str | None  # the test it was running when it ended, not reported
    timed_out: str | None  # the test stopped by tests.test_timeout_s
    output: str

    @property
    def clean(self) -> bool:
        return self.code in _NORMAL_EXITS and self.finished


class _ShareRunner:
    """Runs the share as the local runner runs a job: a test that crashes pytest or runs
    past `tests.test_timeout_s` is an error, and the tests after it run on in a new pytest.
    Only a task that cannot go on (pytest crashing before any test, SIGTERM) is left to
    Cloud Run's retries."""

    def __init__(
        self,
        setup: PytestSetup,
        stream: _Stream,
        out: Path,
        flush_s: float,
        test_timeout_s: float | None,
    ) -> None:
        self.setup = setup
        self.stream = stream
        self.out = out
        self.flush_s = flush_s
        self.test_timeout_s = test_timeout_s
        self.stopping: list[int] = []
        self._proc: PytestProcess | None = None

    def on_term(self, signum: int, _frame: FrameType | None) -> None:
        # Cloud Run stops a task (timeout, cancel) with SIGTERM, then SIGKILL: pytest
        # reports what it can while it winds down, and that is uploaded.
        self.stopping.append(signum)
        if self._proc is not None:
            self._proc.interrupt()

    def run(self, tests: list[tuple[str, str]]) -> _Ended:
        remaining = dict(tests)  # node id -> its argument, in share order
        number = 0
        streak: list[str] = []  # tests that stopped pytest at its first test, in a row
        while True:
            number += 1
            ended = self._one(list(remaining.values()), number)
            for nodeid in ended.reported:
                remaining.pop(nodeid, None)
            if not remaining:
                # Every test reported: a pytest that crashed after that (a native
                # extension at exit) lost nothing, and running the share again would not help.
                return _Ended(0, True, ended.reported, None, None, ended.output)
            if ended.clean or self.stopping:
                return ended
            culprit = ended.timed_out or ended.current
            if culprit is None:
                return ended  # it stopped outside a test: the same would happen again
            streak = streak + [culprit] if ended.reported <= {culprit} else [culprit]
            if culprit in remaining:  # not reported as it was stopped
                if ended.timed_out:
                    limit = self.test_timeout_s or 0.0
                    reason = f"test timed out after {limit:g} s (tests.test_timeout_s)"
                else:
                    reason = crash_reason(ended.code, ended.finished, ended.output)
                self.stream.stopped(culprit, f"{reason}{WHILE_RUNNING}", ended.output)
                del remaining[culprit]
            if len(streak) >= MAX_FRUITLESS and remaining:
                # As the local runner gives up after three workers stopped: a fixture that
                # kills or outlasts every test would cost one pytest per test. Three in one
                # module give up on that module (its fixture), else on the whole share.
                files = {n.split("::")[0] for n in streak[-MAX_FRUITLESS:]}
                message = (
                    f"{NOT_RUN}{MAX_FRUITLESS} pytest processes in a row stopped at their"
                    " first test before this test started"
                )
                for nodeid in list(remaining):
                    if len(files) > 1 or nodeid.split("::")[0] in files:
                        self.stream.stopped(nodeid, message, ended.output)
                        del remaining[nodeid]
                streak = []
            # Each new pytest gets past one test that stopped one: the task always ends.
            if not remaining:
                return _Ended(0, True, ended.reported, None, None, ended.output)

    def _one(self, args: list[str], number: int) -> _Ended:
        reportlog = self.out / f"reportlog-{number}.jsonl"
        events = self.out / f"events-{number}.jsonl"
        argv = self.setup.argv(
            args, None,
            ["-p", "deployloop_plugin", f"--loop-reportlog={reportlog}",
             f"--loop-events={events}"],
        )
        self.stream.follow(Tail(reportlog), Tail(events))
        proc = self.setup.start(
            argv, self.setup.process_env(with_plugin=True), self.out / f"pytest-{number}.log"
        )
        self._proc = proc
        watch = _Watch()
        timed_out: str | None = None
        last = time.monotonic()
        while proc.poll() is None:
            time.sleep(0.1)
            watch.feed(*self.stream.take())
            running = watch.running_for()
            if (
                self.test_timeout_s is not None
                and running is not None
                and running > self.test_timeout_s
                and timed_out is None
            ):
                timed_out = watch.current()
                proc.interrupt()
            # A test running for a second is said at once, not at the next flush: if the
            # container dies under it, loop knows which test it was.
            since = watch.started_at()
            long_running = since is not None and since > last and time.monotonic() - since > 1
            if long_running or time.monotonic() - last >= self.flush_s:
                self.stream.flush()
                last = time.monotonic()
        watch.feed(*self.stream.take())
        self.stream.flush()
        code = proc.returncode
        assert code is not None
        return _Ended(
            code, watch.finished, frozenset(watch.reported), watch.current(), timed_out,
            proc.tail(30),
        )


class _Watch:
    """What the task itself needs of a pytest's two files: which tests it reported, which it
    runs now and since when, whether its session finished."""

    def __init__(self) -> None:
        self.reported: set[str] = set()
        self.finished = False
        self._started: tuple[str, float] | None = None
        self._partial = {"reportlog": b"", "events": b""}

    def feed(self, reportlog: bytes, events: bytes) -> None:
        for event in self._lines("events", events):
            if event.get("event") == "start":
                self._started = (str(event.get("nodeid")), time.monotonic())
        for record in self._lines("reportlog", reportlog):
            kind = record.get("$report_type")
            if kind == "TestReport" and record.get("when") == "teardown":
                self.reported.add(str(record.get("nodeid")))
            elif kind == "SessionFinish":
                self.finished = True

    def _lines(self, key: str, data: bytes) -> list[dict[str, Any]]:
        """Whole JSON lines; a line cut short waits for its end (a torn one is skipped)."""
        *whole, self._partial[key] = (self._partial[key] + data).split(b"\n")
        out = []
        for line in whole:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                out.append(record)
        return out

    def current(self) -> str | None:
        if self._started is None or self._started[0] in self.reported:
            return None
        return self._started[0]

    def started_at(self) -> float | None:
        """When the test running now started (time.monotonic()), if one runs."""
        return None if self.current() is None or self._started is None else self._started[1]

    def running_for(self) -> float | None:
        current = self.current()
        return None if current is None or self._started is None else (
            time.monotonic() - self._started[1]
        )


def _bucket(name: str) -> Bucket:
    from deployloop.deploy.gcp import CredentialsError

    try:
        return open_bucket(os.environ.get(PROJECT_ENV, ""), name)
    except CredentialsError as exc:
        raise TaskError(str(exc)) from None


def _read_share(bucket: Bucket, name: str) -> dict[str, Any]:
    from google.api_core import exceptions

    try:
        text = retrying(lambda: bucket.blob(name).download_as_text())
    except exceptions.NotFound:
        raise TaskError(f"no share at gs://{bucket.name}/{name}") from None
    except exceptions.GoogleAPICallError as exc:
        raise TaskError(f"cannot read gs://{bucket.name}/{name}: {exc}") from None
    share = json.loads(text)
    if share.get("version") != SHARE_VERSION:
        raise TaskError(
            f"the share was written by another version of loop (share version"
            f" {share.get('version')}, this task reads {SHARE_VERSION}): rebuild the tests'"
            " image with the deployloop loop runs"
        )
    return dict(share)


def _upload(bucket: Bucket, name: str, text: str) -> None:
    from google.api_core import exceptions

    try:
        retrying(lambda: bucket.blob(name).upload_from_string(text, "application/json"))
    except exceptions.GoogleAPICallError as exc:
        raise TaskError(f"cannot write gs://{bucket.name}/{name}: {exc}") from None


def _id_tokens(audiences: dict[str, str]) -> dict[str, str]:
    """LOOP_<NAME>_ID_TOKEN for each private service, from the metadata server: the task's
    own service account, which needs roles/run.invoker on the service."""
    if not audiences:
        return {}
    import google.auth.transport.requests
    import google.oauth2.id_token
    from google.auth.exceptions import GoogleAuthError

    request = google.auth.transport.requests.Request()
    tokens = {}
    for name, audience in audiences.items():
        try:
            tokens[name] = str(google.oauth2.id_token.fetch_id_token(request, audience))  # type: ignore[no-untyped-call]
        except GoogleAuthError as exc:
            raise TaskError(
                f"cannot mint an ID token for {audience} from the metadata server: {exc}"
            ) from None
    return tokens
