"""One task: read the share, mint ID tokens, run pytest, stream its results to the bucket.

The task exits 0 whenever pytest finished its session, whatever the tests' outcomes: Cloud
Run retries a task that exits non-zero, and a failing test is a result, not a reason to run
the share again. A pytest that crashed or was stopped exits non-zero, so `max_retries`
gives the share a second attempt.
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
from deployloop.runner.process import PytestSetup, Redaction
from deployloop.runner.tail import Tail

if TYPE_CHECKING:
    from google.cloud.storage import Bucket

FLUSH_S = 2.0  # how often what pytest reported goes to the bucket
_NORMAL_EXITS = (0, 1, 5)
_TAIL_CHARS = 4000


class TaskError(Exception):
    """Why the task cannot run its share; printed as one line to the task's log."""


@dataclass
class _Stream:
    """The plugin's two files, uploaded as numbered chunks of what each grew by."""

    bucket: Bucket
    folder: str
    task: int
    attempt: int
    reportlog: Tail
    events: Tail
    number: int = 0

    def flush(self) -> None:
        reportlog, events = self.reportlog.read(), self.events.read()
        if not reportlog and not events:
            return
        self.number += 1
        body = {
            "reportlog": reportlog.decode("utf-8", errors="surrogateescape"),
            "events": events.decode("utf-8", errors="surrogateescape"),
        }
        _upload(
            self.bucket,
            chunk_name(self.folder, self.task, self.attempt, self.number),
            json.dumps(body, ensure_ascii=True),
        )


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
    args = [str(t["arg"]) for t in share.get("tests", [])]
    print(
        f"deployloop.task: task {task} attempt {attempt}: {len(args)} tests", flush=True
    )
    out = Path(tempfile.mkdtemp(prefix="loop-task-"))
    reportlog, events = out / "reportlog.jsonl", out / "events.jsonl"
    argv = setup.argv(
        args,
        None,
        ["-p", "deployloop_plugin", f"--loop-reportlog={reportlog}", f"--loop-events={events}"],
    )
    stream = _Stream(bucket, folder, task, attempt, Tail(reportlog), Tail(events))
    proc = setup.start(argv, setup.process_env(with_plugin=True), out / "pytest.log")
    stopping: list[int] = []

    def on_term(signum: int, _frame: FrameType | None) -> None:
        # Cloud Run stops a task (timeout, cancel) with SIGTERM, then SIGKILL: pytest
        # reports what it can while it winds down, and that is uploaded.
        stopping.append(signum)
        proc.interrupt()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    flush_s = float(share.get("flush_s", FLUSH_S))
    last = time.monotonic()
    while proc.poll() is None:
        time.sleep(0.1)
        if time.monotonic() - last >= flush_s:
            stream.flush()
            last = time.monotonic()
    stream.flush()
    code = proc.returncode
    assert code is not None
    finished = _session_finished(reportlog)
    output = proc.tail(30)
    _upload(
        bucket,
        end_name(folder, task, attempt),
        json.dumps(
            {
                "exit_code": code,
                "session_finished": finished,
                "stopped_by": signal.Signals(stopping[0]).name if stopping else None,
                "output": output[-_TAIL_CHARS:],
            }
        ),
    )
    print(output, flush=True)
    if code in _NORMAL_EXITS and finished and not stopping:
        return 0
    return code if code > 0 else 128 - code


def _session_finished(reportlog: Path) -> bool:
    try:
        with open(reportlog, "rb") as handle:
            handle.seek(max(0, reportlog.stat().st_size - 4096))
            return b'"SessionFinish"' in handle.read()
    except OSError:
        return False


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
