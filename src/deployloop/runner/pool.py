"""The processes of the test phase: long-lived pytest workers that run the tests loop sends
them (plugin/deployloop_worker), forked from one fork server per `-m` group that collected
once (plugin/deployloop_forks, runner/forks), or started one by one where forking is off.

Servers (or workers) start before the plan and collect while it and the deploy run; the
services' environment reaches each worker before its first test. What each worker runs, and
what happens when one crashes or hangs, is runner/phase's business.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deployloop.models import (
    TestResult,
)
from deployloop.runner.forks import ForkedWorker, ForkServer
from deployloop.runner.process import PytestProcess, PytestSetup
from deployloop.runner.reportlog import ReportLogReader
from deployloop.runner.schedule import (
    PendingTest,
)
from deployloop.runner.tail import Tail

# Work each worker holds beyond the test it runs: enough that it never waits on loop's
# polling (POLL_S) between two tests, little enough that the last pieces spread evenly.
AHEAD_S = 0.5
# A test handed out this many times without a result (its worker died each time before it
# started) is an error rather than a crash loop.
MAX_HANDOUTS = 3
_NORMAL_EXITS = (0, 1, 5)


@dataclass(frozen=True)
class WorkerGroup:
    """Workers that collect the same paths with the same `-m` expression."""

    markers: str | None
    paths: tuple[str, ...]
    suites: int  # how many suites it collects: the collection timeout scales with it

    @property
    def label(self) -> str:
        return f"-m {self.markers!r}" if self.markers else "the suites"


@dataclass
class _Worker:
    name: str
    group: WorkerGroup
    proc: PytestProcess | ForkedWorker
    pipe: int | None  # loop's end of the pipe the worker reads
    reportlog: Tail
    events: Tail
    reader: ReportLogReader
    started: float
    has_env: bool  # started with, or sent, the services' environment
    inbox: list[TestResult] = field(default_factory=list)
    outbox: bytes = b""
    ready: bool = False
    grouped: frozenset[str] = frozenset()
    outstanding: dict[str, PendingTest] = field(default_factory=dict)  # handed out, no result
    outstanding_s: float = 0.0
    costs: dict[str, float] = field(default_factory=dict)  # what each was handed out as
    started_tests: set[str] = field(default_factory=set)  # started, not reported yet
    current: str | None = None
    current_since: float = 0.0
    stop_sent: bool = False
    stale: bool = False  # collected with values the services' deploy changed
    stopped_for: str | None = None  # why loop interrupted it
    fifo: Path | None = None  # a forked worker's command pipe


class WorkerPool:
    def __init__(
        self,
        setup: PytestSetup,
        out_dir: Path,
        groups: Sequence[WorkerGroup],
        workers: int,
        prefix: str,
        suite_timeout_s: float,
        test_timeout_s: float | None,
        fork: bool = True,
    ) -> None:
        self._setup = setup
        self._fork = fork and hasattr(os, "fork")
        self._servers: dict[WorkerGroup, ForkServer] = {}
        self._old_servers: list[ForkServer] = []  # retired: they end after their forks
        self._no_fork: set[WorkerGroup] = set()  # groups whose server could not fork
        self._server_deaths: dict[WorkerGroup, int] = {}  # servers that died after collecting
        self._out_dir = out_dir
        self._groups = list(groups)
        self._size = workers
        self._prefix = prefix
        self._suite_timeout = suite_timeout_s
        self._test_timeout = test_timeout_s
        self._alive: list[_Worker] = []
        self._count = 0
        self._server_count = 0
        self._env: Callable[[], dict[str, str]] | None = None  # set once the deploy is done
        self._env_base = setup.process_env(with_plugin=True)
        self._collect_failures: dict[WorkerGroup, int] = {}
        self.notes: list[str] = []  # what the user should know about the workers, said once

    @property
    def groups(self) -> list[WorkerGroup]:
        return list(self._groups)

    # --- life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start collecting before the deploy ends: a fork server per group (its workers are
        forks of it), or the workers themselves, the groups taking turns."""
        if self._fork:
            for group in self._groups:
                self._start_server(group)
            return
        for i in range(self._size if self._groups else 0):
            self._start_worker(self._groups[i % len(self._groups)])

    def deployed(self, env: Callable[[], dict[str, str]], recollect: bool) -> None:
        """The services are up: `env` makes a worker's environment (ID tokens are minted
        afresh). Workers already started get the difference; with `recollect` (a module
        could not be collected without the services) they are replaced instead."""
        self._env = env
        if recollect:
            for group in list(self._servers):
                self._retire_server(group)
        for worker in list(self._alive):
            if recollect:
                self._send(worker, {"stop": True})
                worker.stop_sent = True
                worker.stale = True
            elif not worker.has_env:
                self._send_env(worker)

    def close(self) -> None:
        """Stop every worker and server still running (they have been told to stop, or
        loop is)."""
        for group in list(self._servers):
            self._retire_server(group)
        for worker in self._alive:
            self._close_pipe(worker)
        for server in self._old_servers:
            server.close_pipe()
        procs: list[PytestProcess | ForkedWorker] = [w.proc for w in self._alive]
        procs += [s.proc for s in self._old_servers]
        deadline = time.monotonic() + 2.0
        while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
            time.sleep(0.02)
        for proc in procs:
            if proc.poll() is None:
                proc.stop()
        for worker in self._alive:
            worker.reportlog.close()
            worker.events.close()
            self._forget_fifo(worker)
        self._alive.clear()
        self._old_servers.clear()

    def phase_done(self) -> None:
        """Every test has its result: each worker ends its session now, and each server
        once its forks have."""
        for worker in self._alive:
            if not worker.stop_sent:
                self._send(worker, {"stop": True})
                worker.stop_sent = True
            self._flush_outbox(worker)
        for group in list(self._servers):
            self._retire_server(group)

    def kill_all(self) -> None:
        """loop itself failed: no pytest outlives it."""
        for worker in self._alive:
            worker.proc.kill()
        for server in [*self._servers.values(), *self._old_servers]:
            server.proc.kill()

    # --- workers ------------------------------------------------------------------------------

    def _start_worker(self, group: WorkerGroup) -> _Worker:
        self._count += 1
        name = f"{self._prefix}worker-{self._count:02d}"
        base = self._out_dir / name
        reportlog, events = Path(f"{base}.reportlog.jsonl"), Path(f"{base}.events.jsonl")
        proc, pipe = self._spawn(group, base, "--loop-worker")
        return self._add_worker(name, group, proc, pipe, reportlog, events, self._env is not None)

    def _start_server(self, group: WorkerGroup) -> ForkServer:
        self._server_count += 1
        base = self._out_dir / f"{self._prefix}server-{self._server_count:02d}"
        inventory = Path(f"{base}.inventory.jsonl")
        proc, pipe = self._spawn(group, base, "--loop-zygote", [f"--loop-inventory={inventory}"])
        server = ForkServer(
            proc,
            Path(f"{base}.events.jsonl"),
            pipe,
            has_env=self._env is not None,
            children=self._setup.children,
        )
        server.inventory = inventory
        self._servers[group] = server
        return server

    def _spawn(
        self, group: WorkerGroup, base: Path, pipe_option: str, more: Sequence[str] = ()
    ) -> tuple[PytestProcess, int]:
        """A pytest of `group` with loop's plugin, its files named after `base`, reading
        loop's messages through a pipe given as `pipe_option`; returns it and loop's
        (non-blocking) end of that pipe."""
        reportlog, events = Path(f"{base}.reportlog.jsonl"), Path(f"{base}.events.jsonl")
        reportlog.unlink(missing_ok=True)
        events.unlink(missing_ok=True)
        read_end, write_end = os.pipe()
        argv = self._setup.argv(
            list(group.paths),
            group.markers,
            [
                "-p",
                "deployloop_plugin",
                f"--loop-reportlog={reportlog}",
                f"--loop-events={events}",
                f"--junitxml={base}.junit.xml",
                *more,
                f"{pipe_option}={read_end}",
            ],
        )
        env = dict(self._env_base)
        if self._env is not None:
            env.update(self._env())
        try:
            proc = self._setup.start(argv, env, Path(f"{base}.log"), (read_end,))
        except BaseException:
            os.close(write_end)
            raise
        finally:
            os.close(read_end)
        os.set_blocking(write_end, False)
        return proc, write_end

    def _add_worker(
        self,
        name: str,
        group: WorkerGroup,
        proc: PytestProcess | ForkedWorker,
        pipe: int,
        reportlog: Path,
        events: Path,
        has_env: bool,
        fifo: Path | None = None,
    ) -> _Worker:
        inbox: list[TestResult] = []
        worker = _Worker(
            name=name,
            group=group,
            proc=proc,
            pipe=pipe,
            reportlog=Tail(reportlog),
            events=Tail(events),
            reader=ReportLogReader(lambda nodeid: None, inbox.append),
            started=time.monotonic(),
            has_env=has_env,
            inbox=inbox,
            fifo=fifo,
        )
        # Only the tests handed to this worker count: a collection error of a module
        # loop did not send is the inventory's business.
        worker.reader = ReportLogReader(
            lambda nodeid: t.suite if (t := worker.outstanding.get(nodeid)) else None,
            inbox.append,
        )
        self._alive.append(worker)
        return worker

    def shared_collection(
        self, markers: str | None, paths: tuple[str, ...]
    ) -> _ServerCollection | None:
        """The collection a fork server is making of exactly these paths with this `-m`,
        for the plan's inventory (None: the plan collects on its own)."""
        for group, server in self._servers.items():
            # The same paths in another order collect the same items: the inventory sorts
            # them into suites, each in its own paths' order.
            if group.markers == markers and set(group.paths) == set(paths):
                return _ServerCollection(server)
        return None

    def _retire_server(self, group: WorkerGroup) -> None:
        server = self._servers.pop(group, None)
        if server is not None:
            server.retire()
            self._old_servers.append(server)

    def _fork_worker(self, group: WorkerGroup, server: ForkServer) -> _Worker:
        """A worker forked from the group's server: collected already, the services'
        environment given with the request."""
        assert self._env is not None
        self._count += 1
        name = f"{self._prefix}worker-{self._count:02d}"
        base = self._out_dir / name
        reportlog, events = Path(f"{base}.reportlog.jsonl"), Path(f"{base}.events.jsonl")
        fifo = Path(f"{base}.fifo")
        for path in (reportlog, events, fifo):
            path.unlink(missing_ok=True)
        os.mkfifo(fifo, 0o600)
        # Read and write: opening never waits for the worker, and the worker sees the end
        # of its commands when loop closes this (or exits).
        pipe = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
        changed, redact = self._services_env()
        spec = {
            "fifo": str(fifo),
            "reportlog": str(reportlog),
            "events": str(events),
            "junit": f"{base}.junit.xml",
            "env": changed,
            "redact": redact,
            # A server started with the services' environment collected with it: a value
            # that differs now is minted per worker (an ID token), not a stale URL.
            "check_stale": not server.has_env,
        }
        proc = server.fork(name, spec)
        return self._add_worker(name, group, proc, pipe, reportlog, events, True, fifo)

    def _forget_fifo(self, worker: _Worker) -> None:
        if worker.fifo is not None:
            worker.fifo.unlink(missing_ok=True)

    def _services_env(self) -> tuple[dict[str, str], str]:
        """What the deploy added to the tests' environment (fresh ID tokens included), and
        LOOP_REDACT for the whole of it: loop's redactor learns the new values too."""
        assert self._env is not None
        full = {**self._env_base, **self._env()}
        changed = {k: v for k, v in full.items() if self._env_base.get(k) != v}
        return changed, self._setup.redaction.plugin_env(full)

    def _send_env(self, worker: _Worker) -> None:
        changed, redact = self._services_env()
        self._send(worker, {"env": changed, "redact": redact})
        worker.has_env = True

    def _send(self, worker: _Worker, message: dict[str, Any]) -> None:
        worker.outbox += (json.dumps(message) + "\n").encode("utf-8", "surrogateescape")
        self._flush_outbox(worker)

    def _flush_outbox(self, worker: _Worker) -> None:
        # Non-blocking: a worker busy with a long test reads its pipe only when it needs
        # the next one; loop never waits on it.
        if worker.pipe is None or not worker.outbox:
            return
        try:
            sent = os.write(worker.pipe, worker.outbox)
        except BlockingIOError:
            return
        except (BrokenPipeError, OSError):
            worker.outbox = b""  # it has gone: its exit is handled by the run
            return
        worker.outbox = worker.outbox[sent:]
        if not worker.outbox and worker.stop_sent:
            self._close_pipe(worker)

    def _close_pipe(self, worker: _Worker) -> None:
        if worker.pipe is not None:
            os.close(worker.pipe)
            worker.pipe = None

    def _collect_limit(self, worker: _Worker) -> float:
        return self._server_limit(worker.group)

    def _server_limit(self, group: WorkerGroup) -> float:
        """How long collecting a group may take: each suite's imports what one suite may."""
        return self._suite_timeout * max(1, group.suites)


class _ServerCollection:
    def __init__(self, server: ForkServer) -> None:
        self._server = server

    def wait(self, timeout_s: float) -> tuple[Path, str] | None:
        server = self._server
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            server.pump()
            if server.ready and server.inventory is not None:
                # Every item it said it collected is in the file, or the plan collects on
                # its own: a partial inventory would drop tests without a word.
                if _item_lines(server.inventory) >= server.collected:
                    return server.inventory, server.proc.tail(30)
                return None
            if server.proc.poll() is not None:
                return None
            time.sleep(0.02)
        return None


def _item_lines(inventory: Path) -> int:
    """How many collected items (not collection errors) an inventory file lists."""
    count = 0
    try:
        lines = inventory.read_bytes().splitlines()
    except OSError:
        return -1
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        count += isinstance(record, dict) and "error" not in record
    return count
