"""pytest plugin of deployloop: results, events and the test inventory as JSON lines, with
secrets redacted before pytest or any other plugin writes them.

loop loads it by name (`-p deployloop_plugin`) from a folder it puts on PYTHONPATH, so it
works in any interpreter that has pytest: it imports the standard library, pytest and its
neighbour `deployloop_redact`, nothing else. Options (each off unless given):

--loop-reportlog FILE   one line per test phase (setup, call, teardown), per collection
                        error, and one at the end of the session: written and flushed as
                        each happens, so a crash or a kill loses nothing already reported.
                        Failure texts and captured output are capped (the whole text stays
                        in pytest's own output).
--loop-events FILE      when collection ended and which test started (the reportlog only
                        says when one finished): a suite's clock and a hang's culprit.
--loop-inventory FILE   with --collect-only: one line per collected item, after `-m`
                        deselection, and one per collector that failed.
--loop-worker FD        run the tests loop sends through this pipe, not the collected
                        ones (see deployloop_worker); needs --loop-events.

Redaction: LOOP_REDACT (see deployloop_redact) names the values to hide. Each report is
scrubbed before the other plugins see it, so the terminal output, JUnit XML and the reportlog
all show `[redacted:NAME]` instead of the value.
"""

from __future__ import annotations

import json
import os
import time
from typing import IO, Any

import pytest

# The neighbouring file, by its top-level name: this folder is on PYTHONPATH, deployloop is
# not necessarily installed in the tests' interpreter.
from deployloop_redact import (  # type: ignore[import-not-found]
    ENV_VAR,
    Redactor,
    from_environment,
)

MAX_TEXT = 20_000
# The last line of a whole inventory (loop reads it before pytest has ended).
INVENTORY_END = '{"inventory": "complete"}\n'
MAX_MESSAGE = 4_000
MAX_SECTION = 10_000


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("deployloop")
    group.addoption("--loop-reportlog", default=None, help="deployloop: write results here")
    group.addoption("--loop-events", default=None, help="deployloop: write run events here")
    group.addoption("--loop-inventory", default=None, help="deployloop: write the inventory here")
    group.addoption("--loop-worker", default=None, help="deployloop: run the tests sent here")
    group.addoption("--loop-zygote", default=None, help="deployloop: fork workers as asked here")


def pytest_configure(config: pytest.Config) -> None:
    redactor = from_environment(os.environ)
    worker_fd = config.getoption("--loop-worker")
    zygote_fd = config.getoption("--loop-zygote")
    if redactor or worker_fd or zygote_fd:  # a worker may learn secrets later
        config.pluginmanager.register(_Scrubber(redactor), "deployloop-scrubber")
    writers: dict[str, _Writer] = {}
    for option, writer in (
        ("--loop-reportlog", _ReportLogWriter),
        ("--loop-events", _EventWriter),
        ("--loop-inventory", _InventoryWriter),
    ):
        path = config.getoption(option)
        if path:
            writers[option] = writer(_open(path))
            config.pluginmanager.register(writers[option], f"deployloop-{option[7:]}")
    events = writers.get("--loop-events")
    if (worker_fd or zygote_fd) and events is not None:
        from deployloop_worker import Worker  # type: ignore[import-not-found]

        def learn(spec: str) -> None:
            os.environ[ENV_VAR] = spec
            from_environment(os.environ, into=redactor)

        worker = Worker(int(worker_fd) if worker_fd else None, events.write, learn)
        config.pluginmanager.register(worker, "deployloop-worker")
        if zygote_fd:
            from deployloop_forks import ForkServer  # type: ignore[import-not-found]

            def become_child(spec: dict[str, Any]) -> None:
                _become_child(config, writers, spec, learn)
                worker.announce()

            config.pluginmanager.register(
                ForkServer(int(zygote_fd), worker, events.write, become_child),
                "deployloop-forks",
            )


def _become_child(
    config: pytest.Config, writers: dict[str, _Writer], spec: dict[str, Any], learn: Any
) -> None:
    """A forked worker's own files, output capture and environment."""
    for option, key in (("--loop-reportlog", "reportlog"), ("--loop-events", "events")):
        if option in writers and spec.get(key):
            writers[option].reopen(spec[key])
    for plugin in config.pluginmanager.get_plugins():
        # pytest's JUnit XML writer: each worker writes its own file at its session's end.
        if type(plugin).__name__ == "LogXML" and spec.get("junit"):
            plugin.logfile = os.path.abspath(spec["junit"])
            config.option.xmlpath = plugin.logfile
    capture = config.pluginmanager.getplugin("capturemanager")
    if capture is not None:
        # The server's capture files are shared with every worker it forked: each worker
        # captures into files of its own (pytest truncates them after each test).
        capture.stop_global_capturing()
        capture.start_global_capturing()
        capture.suspend_global_capture()
    env = {str(k): str(v) for k, v in (spec.get("env") or {}).items()}
    os.environ.update(env)
    if spec.get("redact"):
        learn(spec["redact"])


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    # JUnit XML is written with the user's umask; beside loop's files it is loop's: 0600.
    xml = getattr(config.option, "xmlpath", None)
    if xml and config.getoption("--loop-reportlog"):
        try:
            os.chmod(xml, 0o600)
        except OSError:
            pass


def _open(path: str) -> IO[str]:
    # 0600: the file sits in loop's private state dir and may hold test output.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    return os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape")


def cap(text: str, limit: int) -> str:
    """Head and tail of a long text: the start says what failed, the end where."""
    if len(text) <= limit:
        return text
    head = limit * 3 // 5
    tail = limit - head
    cut = len(text) - head - tail
    return f"{text[:head]}\n[... {cut} characters cut ...]\n{text[-tail:]}"


class _Writer:
    def __init__(self, out: IO[str]) -> None:
        self._out = out

    def write(self, record: dict[str, Any]) -> None:
        self._out.write(json.dumps(record) + "\n")
        self._out.flush()

    def reopen(self, path: str) -> None:
        self._out.close()
        self._out = _open(path)

    def pytest_unconfigure(self) -> None:
        self._out.close()


class _ReportLogWriter(_Writer):
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        record: dict[str, Any] = {
            "$report_type": "TestReport",
            "nodeid": report.nodeid,
            "when": report.when,
            "outcome": report.outcome,
            "duration": report.duration,
        }
        if hasattr(report, "wasxfail"):
            record["wasxfail"] = str(report.wasxfail)
        longrepr = report.longrepr
        if isinstance(longrepr, tuple) and len(longrepr) == 3:  # a skip: (path, line, reason)
            reason = str(longrepr[2])
            if reason.startswith("Skipped: "):  # str.removeprefix is Python 3.9+
                reason = reason[len("Skipped: "):]
            record["skip_reason"] = cap(reason, MAX_MESSAGE)
        elif longrepr is not None:
            record["longrepr"] = cap(report.longreprtext, MAX_TEXT)
            crash = getattr(longrepr, "reprcrash", None)
            if crash is not None:
                record["message"] = cap(str(crash.message), MAX_MESSAGE)
                record["crash_location"] = [str(crash.path), crash.lineno]
        if report.sections:
            record["sections"] = [[t, cap(c, MAX_SECTION)] for t, c in report.sections]
        self.write(record)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.write(
                {
                    "$report_type": "CollectReport",
                    "nodeid": report.nodeid,
                    "outcome": "failed",
                    "longrepr": cap(str(report.longrepr), MAX_TEXT),
                }
            )

    def pytest_sessionfinish(self, exitstatus: int) -> None:
        self.write({"$report_type": "SessionFinish", "exitstatus": int(exitstatus)})


class _EventWriter(_Writer):
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.write({"event": "collected"})

    def pytest_runtest_logstart(self, nodeid: str) -> None:
        self.write({"event": "start", "nodeid": nodeid, "at": time.time()})


class _InventoryWriter(_Writer):
    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            path = str(getattr(report, "fspath", "") or report.nodeid.split("::")[0])
            error = cap(str(report.longrepr), MAX_TEXT)
            self.write({"nodeid": report.nodeid, "path": path, "error": error})

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        # One write: a flush per item costs a system call each, for tens of thousands. It
        # ends with a line saying the inventory is whole: pytest takes another second to end
        # after 10,000 tests (its summary, a gc, freeing every item), which loop need not
        # wait for before reading.
        self._out.write(
            "".join(
                json.dumps({"nodeid": item.nodeid, "path": str(item.path)}) + "\n"
                for item in session.items
            )
            + INVENTORY_END
        )
        self._out.flush()


class _Crash:
    """Where and how a test failed, as pytest's own crash record gives it."""

    def __init__(self, path: str, lineno: int, message: str) -> None:
        self.path = path
        self.lineno = lineno
        self.message = message


class _ScrubbedRepr:
    """A failure text with secrets taken out, in place of pytest's own: the terminal
    reporter, JUnit XML and other plugins read it like the original."""

    def __init__(self, text: str, crash: _Crash | None) -> None:
        self._text = text
        if crash is not None:
            self.reprcrash = crash

    def toterminal(self, out: Any) -> None:
        for line in self._text.splitlines():
            out.line(line)

    def __str__(self) -> str:
        return self._text


class _Scrubber:
    def __init__(self, redactor: Redactor) -> None:
        self._redact = redactor.redact

    @pytest.hookimpl(tryfirst=True)
    def pytest_make_parametrize_id(self, val: object, argname: str) -> str | None:
        # A secret as a parameter would be in the test's node id, which every report names:
        # its id is the redaction instead (the same at collection and when run by id).
        if isinstance(val, (str, bytes)):
            text = val if isinstance(val, str) else val.decode("utf-8", "replace")
            clean = str(self._redact(text))
            if clean != text:
                return clean.replace("[", "").replace("]", "").replace(":", "-")
        return None

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self._scrub(report)
        if hasattr(report, "wasxfail"):
            report.wasxfail = self._redact(str(report.wasxfail))

    @pytest.hookimpl(tryfirst=True)
    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        self._scrub(report)

    def _scrub(self, report: pytest.TestReport | pytest.CollectReport) -> None:
        longrepr = report.longrepr
        if isinstance(longrepr, tuple) and len(longrepr) == 3:
            reason = self._redact(str(longrepr[2]))
            if reason != longrepr[2]:
                report.longrepr = (longrepr[0], longrepr[1], reason)
        elif longrepr is not None:
            text = report.longreprtext
            clean = self._redact(text)
            if clean != text:
                crash = getattr(longrepr, "reprcrash", None)
                report.longrepr = _ScrubbedRepr(  # type: ignore[assignment]
                    clean,
                    _Crash(str(crash.path), crash.lineno, self._redact(str(crash.message)))
                    if crash is not None
                    else None,
                )
        if report.sections:
            report.sections = [(t, self._redact(c)) for t, c in report.sections]
        properties = getattr(report, "user_properties", None)
        if properties and isinstance(report, pytest.TestReport):  # record_property()
            report.user_properties = [
                (name, _redacted_or_same(self._redact, value)) for name, value in properties
            ]


def _redacted_or_same(redact: Any, value: object) -> object:
    text = str(value)
    clean = redact(text)
    return value if clean == text else clean
