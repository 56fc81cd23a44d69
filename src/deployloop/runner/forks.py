"""loop's side of the fork server (plugin/deployloop_forks): one pytest process per worker
group collects once, and each worker is a fork of it.

`ForkServer` wraps that process: it reads its events (ready, forked, exit, stale, nofork)
and sends it fork requests. `ForkedWorker` is one fork, driven like a PytestProcess: poll,
interrupt, kill, the tail of its output (the server's log, which its forks share).
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from deployloop.children import Children
from deployloop.runner.process import INTERRUPT_GRACE_S, PytestProcess
from deployloop.runner.tail import Tail


class ForkServer:
    def __init__(
        self,
        proc: PytestProcess,
        events: Path,
        pipe: int,
        has_env: bool,
        children: Children | None = None,
    ) -> None:
        self.proc = proc
        # Each fork is a process group of its own: tracked like loop's own children, so
        # a loop killed outright still has them stopped by its watchdog.
        self.children = children
        self.events = Tail(events)
        self.pipe: int | None = pipe
        self.has_env = has_env  # started with the services' environment
        self.started = time.monotonic()
        self.ready = False
        self.grouped: frozenset[str] = frozenset()
        self.stale: list[str] | None = None  # a module read a variable the deploy changed
        self.nofork: str | None = None  # why it cannot fork
        self.retired = False  # told to stop: it ends once its forks have
        self.inventory: Path | None = None  # what it collected, as --loop-inventory writes it
        self.collected = 0  # how many items, as it said when ready
        self._forks: dict[str, ForkedWorker] = {}
        self._outbox = b""

    def pump(self) -> None:
        for event in self.events.lines():
            kind = event.get("event")
            if kind == "ready":
                self.ready = True
                self.grouped = frozenset(str(f) for f in event.get("grouped") or ())
                self.collected = int(event.get("count") or 0)
            elif kind == "forked":
                fork = self._forks.get(str(event.get("name")))
                if fork is not None:
                    fork.started_as(int(event["pid"]))
            elif kind == "exit":
                for fork in self._forks.values():
                    if fork.pid == event.get("pid"):
                        fork.ended(int(event.get("code", -9)))
            elif kind == "stale":
                self.stale = [str(n) for n in event.get("stale") or ()]
                self._refused(str(event.get("name")))
            elif kind == "nofork":
                self.nofork = str(event.get("reason"))
                self._refused(str(event.get("name")))
        if self.proc.poll() is not None:
            # The server is gone: no fork of it is reaped or reported any more. Each is
            # stopped with what it started, and ends as killed.
            for fork in self._forks.values():
                if fork.returncode is None:
                    fork.kill()
                    fork.ended(-signal.SIGKILL)
            self.events.close()
        self._flush()

    def fork(self, name: str, spec: dict[str, Any]) -> ForkedWorker:
        fork = ForkedWorker(self, name)
        self._forks[name] = fork
        self.send({"fork": {"name": name, **spec}})
        return fork

    def send(self, message: dict[str, Any]) -> None:
        self._outbox += (json.dumps(message) + "\n").encode("utf-8", "surrogateescape")
        self._flush()

    def retire(self) -> None:
        if not self.retired:
            self.retired = True
            self.send({"stop": True})

    def close_pipe(self) -> None:
        if self.pipe is not None:
            os.close(self.pipe)
            self.pipe = None

    def _refused(self, name: str) -> None:
        fork = self._forks.get(name)
        if fork is not None and fork.pid is None:
            fork.refused = True
            fork.ended(0)

    def _flush(self) -> None:
        if self.pipe is None or not self._outbox:
            return
        try:
            sent = os.write(self.pipe, self._outbox)
        except BlockingIOError:
            return
        except OSError:
            self._outbox = b""
            return
        self._outbox = self._outbox[sent:]
        if not self._outbox and self.retired:
            self.close_pipe()


class ForkedWorker:
    """One fork of a server, with PytestProcess's ways of stopping it."""

    def __init__(self, server: ForkServer, name: str) -> None:
        self.name = name
        self.pid: int | None = None
        self.returncode: int | None = None
        self.refused = False  # the server did not fork it (stale or nofork)
        self._server = server
        self._interrupted_at: float | None = None
        self._pending: int | None = None  # a signal asked for before the pid was known

    def started_as(self, pid: int) -> None:
        self.pid = pid
        if self._server.children is not None:
            self._server.children.adopt(pid, signal.SIGINT, "pytest")
        if self._pending is not None:
            self._signal(self._pending)

    def ended(self, code: int) -> None:
        """It exited (the server reaped it): whatever its tests left in its group goes too."""
        if self.returncode is not None:
            return
        if self.pid is not None:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            if self._server.children is not None:
                self._server.children.forget(self.pid)
        self.returncode = code

    def poll(self) -> int | None:
        if self.returncode is None:
            self._server.pump()
            if (
                self.returncode is None
                and self._interrupted_at is not None
                and time.monotonic() - self._interrupted_at > INTERRUPT_GRACE_S
            ):
                self._signal(signal.SIGKILL)
        return self.returncode

    def interrupt(self) -> None:
        if self._interrupted_at is None and self.returncode is None:
            self._interrupted_at = time.monotonic()
            self._signal(signal.SIGINT)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def stop(self) -> int:
        self.interrupt()
        while self.poll() is None:
            time.sleep(0.02)
        assert self.returncode is not None
        return self.returncode

    @property
    def was_interrupted(self) -> bool:
        return self._interrupted_at is not None

    def tail(self, lines: int = 15) -> str:
        return self._server.proc.tail(lines)

    def _signal(self, sig: int) -> None:
        if self.pid is None:
            self._pending = sig
            return
        if self.returncode is not None:
            return  # reaped: the pid may be another process's by now
        try:
            os.killpg(self.pid, sig)  # its group: the fork and what its test started
        except (ProcessLookupError, PermissionError):
            pass
