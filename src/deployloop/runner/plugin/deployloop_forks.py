"""Fork-server mode of loop's pytest plugin (`--loop-zygote=FD`): collect once, then fork a
worker per request, each starting with the collection done.

A pytest start and collection cost about a second of CPU: eight workers started one by one
on a two-core machine cost seconds before the first test. A forked worker costs a few
milliseconds and shares the collected modules' memory.

loop sends JSON lines through FD: {"fork": {"name", "fifo", "reportlog", "events", "junit",
"env", "redact"}} forks a worker that reads its own commands from the named pipe `fifo` and
writes its own files; {"stop": true} (or the pipe closing) ends the server once every worker
it forked has ended. The server writes to its events file "forked" (name, pid), "exit" (pid,
exit code) for each worker, "stale" when the services' environment changed a value a module
read while it was collected (loop then starts a server with that environment), and "nofork"
when forking is not safe here (threads running: only the forking one would go on in the
child; loop then starts plain workers).

The server ignores SIGINT: loop stops each worker on its own terms (their fixtures tear
down), and the server, which ran nothing, ends after them.
"""

from __future__ import annotations

import atexit
import gc
import json
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from deployloop_worker import Worker, stale_names  # type: ignore[import-not-found]

_REAP_EVERY_S = 0.05


class ForkServer:
    def __init__(
        self,
        fd: int,
        worker: Worker,
        write_event: Callable[[dict[str, Any]], None],
        become_child: Callable[[dict[str, Any]], None],
    ) -> None:
        self._fd = fd
        self._worker = worker
        self._event = write_event
        self._become_child = become_child
        self._children: set[int] = set()
        self._buffer = b""
        self._exitstatus = 0

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session: pytest.Session) -> bool | None:
        if session.config.option.collectonly:
            return None
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        spec: dict[str, Any] | None = None
        try:
            spec = self._serve()
        finally:
            if spec is None:
                signal.signal(signal.SIGINT, previous)
        if spec is None:
            return True  # the server: every worker has ended
        # A forked worker: its own files, environment and commands; then pytest's session
        # goes on as a worker's.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.close(self._fd)
        # At exit, a fork would tear down every object the server collected, writing to
        # (and so copying) every page it shares with the server: seconds for a big suite.
        # Its session is over by then (reports written, files closed): it leaves at once.
        atexit.register(self._leave)
        self._become_child(spec)
        commands = open(spec["fifo"], "rb")  # noqa: SIM115 (the session's own)
        return bool(self._worker.run_tests(session, commands))

    def _serve(self) -> dict[str, Any] | None:
        """Fork workers as loop asks; returns a worker's spec in that worker, None in the
        server once loop says stop and every worker has ended."""
        done = False
        while not done or self._children:
            self._reap()
            if done:
                time.sleep(_REAP_EVERY_S)
                continue
            ready = select.select([self._fd], [], [], _REAP_EVERY_S)[0]
            if not ready:
                continue
            data = os.read(self._fd, 65536)
            if not data:
                done = True
                continue
            self._buffer += data
            *lines, self._buffer = self._buffer.split(b"\n")
            for line in lines:
                try:
                    message = json.loads(line.decode("utf-8", "surrogateescape"))
                except ValueError:
                    continue
                if not isinstance(message, dict):
                    continue
                if message.get("stop"):
                    done = True
                elif isinstance(message.get("fork"), dict):
                    if self._fork(message["fork"]):
                        return dict(message["fork"])
        return None

    def _fork(self, spec: dict[str, Any]) -> bool:
        """True in the forked worker."""
        stale = stale_names(spec.get("env") or {}) if spec.get("check_stale", True) else []
        if stale:
            self._event({"event": "stale", "stale": stale, "name": spec.get("name")})
            return False
        if threading.active_count() > 1:
            others = [t.name for t in threading.enumerate() if t is not threading.current_thread()]
            reason = "threads running after collection: " + ", ".join(others)
            self._event({"event": "nofork", "reason": reason, "name": spec.get("name")})
            return False
        # What the server collected stays out of the forks' garbage collections, which would
        # otherwise copy every shared page they visit.
        gc.freeze()
        pid = os.fork()
        if pid == 0:
            # A group of its own (set on both sides, whichever runs first): loop stops a
            # fork with whatever its test started, and not the server or the other forks.
            os.setpgid(0, 0)
            self._children.clear()
            return True
        try:
            os.setpgid(pid, pid)
        except OSError:
            pass  # it has set it itself, or already exited
        self._children.add(pid)
        self._event({"event": "forked", "name": spec.get("name"), "pid": pid})
        return False

    def pytest_sessionfinish(self, exitstatus: int) -> None:
        self._exitstatus = int(exitstatus)

    def _leave(self) -> None:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(self._exitstatus)

    def _reap(self) -> None:
        for pid in list(self._children):
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done, status = pid, 0
            if done:
                self._children.discard(pid)
                self._event({"event": "exit", "pid": pid, "code": _exit_code(status)})


def _exit_code(status: int) -> int:
    """A wait status as an exit code, negative for a signal (os.waitstatus_to_exitcode is
    Python 3.9+; the tests' interpreter may be older)."""
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    return os.WEXITSTATUS(status)
