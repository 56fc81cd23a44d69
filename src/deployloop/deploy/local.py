"""The `local` target: each service's command as a subprocess on a free port of 127.0.0.1."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from deployloop.children import Child, Children
from deployloop.config import Config, ServiceConfig, url_env_var
from deployloop.deploy.base import DeployContext, TargetDefaults
from deployloop.deploy.readiness import (
    ABANDONED,
    NotReady,
    deploy_in_waves,
    failed_or_abandoned,
    now_iso,
    wait_ready,
)
from deployloop.log_lines import unstamped
from deployloop.models import Deployment, DeployStatus
from deployloop.safetext import one_line

STOP_GRACE_S = 5.0
_ERROR_LINE = re.compile(r"(?i)\b(error|exception|fatal|panic|critical)\b")
# Python's (and most languages') last traceback line: `pkg.SomeError: what happened`.
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Fault)\b(:|$)")
LOG_TAIL_LINES = 10
_LOG_TAIL_BYTES = 64 * 1024
_LOG_LINE_CHARS = 300


@dataclass
class _Running:
    service: str
    child: Child
    children: Children
    log_path: Path
    ready: bool = False


class LocalTarget(TargetDefaults):
    """Starts services as process groups of their own, so stop() takes their children too."""

    def __init__(self) -> None:
        self._running: list[_Running] = []
        self._lock = threading.Lock()

    def deploy(self, config: Config, ctx: DeployContext) -> list[Deployment]:
        self.stop()  # a second deploy replaces the first: no orphans, no port clashes
        ctx.log_dir.mkdir(parents=True, exist_ok=True)
        children = ctx.spawner()

        def bring_up(
            service: ServiceConfig, ready: Mapping[str, Deployment], abort: threading.Event
        ) -> Deployment:
            return self._bring_up(service, ctx, children, ready, abort)

        try:
            return deploy_in_waves(config.deploy.services, bring_up)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        with self._lock:
            running, self._running = self._running, []
        stop_children([(r.children, r.child) for r in running], STOP_GRACE_S)

    def crashed(self) -> list[Deployment]:
        out = []
        with self._lock:
            gone = [r for r in self._running if r.ready and r.child.popen.poll() is not None]
            self._running = [r for r in self._running if r not in gone]
        for run in gone:
            code = run.child.popen.returncode
            # What it left in its group goes now, while the group id is still its own (the
            # pid of a reaped leader may be reused once its group is empty).
            stop_children([(run.children, run.child)], 0.5)
            reason = f"{exit_reason(code)} during the tests at {now_iso()}"
            line = first_error_line(run.log_path)
            out.append(
                Deployment(
                    run.service,
                    DeployStatus.CRASHED,
                    error=f"{reason}: {line}" if line else f"{reason} (log: {run.log_path})",
                )
            )
        return out

    def _bring_up(
        self,
        service: ServiceConfig,
        ctx: DeployContext,
        children: Children,
        ready: Mapping[str, Deployment],
        abort: threading.Event,
    ) -> Deployment:
        if abort.is_set():  # a sibling failed before this one got going
            return failed_or_abandoned(
                Deployment(service.name, DeployStatus.PENDING), ABANDONED, abort
            )
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log_path = ctx.log_dir / f"{service.name}.log"
        record = Deployment(service.name, DeployStatus.PENDING, started_at=now_iso())
        argv = [fill(arg, port=port, python=ctx.python) for arg in service.command or []]
        try:
            child = children.start(
                argv, env=service_env(service, ctx, port, ready), log=log_path, stamped=True
            )
        except OSError as exc:
            return failed_or_abandoned(record, cannot_run(argv, exc), abort)
        run = _Running(service.name, child, children, log_path)
        with self._lock:
            self._running.append(run)
        record.url = url  # only once something may listen there

        def alive() -> str | None:
            if child.popen.poll() is not None:
                return exit_reason(child.popen.returncode)
            return ABANDONED if abort.is_set() else None

        try:
            wait_ready(url, service.health_path, service.ready_timeout_s, alive=alive)
        except NotReady as exc:
            reason = str(exc) if str(exc) == ABANDONED else with_log_tail(str(exc), log_path)
            return failed_or_abandoned(record, reason, abort)
        run.ready = True
        record.status = DeployStatus.READY
        record.ready_at = now_iso()
        return record


def fill(arg: str, **values: object) -> str:
    """Replace `{name}` placeholders; plain replace, so other braces (JSON, globs) survive."""
    for name, value in values.items():
        arg = arg.replace("{" + name + "}", str(value))
    return arg


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def service_env(
    service: ServiceConfig, ctx: DeployContext, port: int, ready: Mapping[str, Deployment]
) -> dict[str, str]:
    """The loop's own variables win over `service.env`: the service must get its real port."""
    # Line by line, so each log line's time is when it was written (log_lines); a service's
    # own setting wins.
    env = {"PYTHONUNBUFFERED": "1", **ctx.base_env, **service.env}
    env["PORT"] = str(port)
    env.update(loop_env(ctx))
    for name, record in ready.items():
        if record.url:
            env[url_env_var(name)] = record.url
    return env


def loop_env(ctx: DeployContext) -> dict[str, str]:
    return {"LOOP_ENV": ctx.env, "LOOP_ITERATION": str(ctx.iteration)}


def cannot_run(argv: list[str], exc: OSError) -> str:
    program = argv[0] if argv else ""
    return f"cannot run {program!r}: {exc.strerror or exc}"


def exit_reason(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with code {returncode}"


def with_log_tail(reason: str, log_path: Path) -> str:
    """One line: the reason, the log's line that says why (an exception's own line, else its
    first error line), where the log is, and its last lines."""
    lines = log_tail(log_path, LOG_TAIL_LINES)
    if not lines:
        return f"{reason} (log: {log_path}, empty)"
    cause = first_error_line(log_path)
    said = f"{reason}: {cause}" if cause else reason
    return f"{said} (log: {log_path}) | last log lines: " + " | ".join(lines)


def log_tail(path: Path, count: int) -> list[str]:
    """The last `count` non-blank lines, each shortened: they go into one-line errors."""
    try:
        with path.open("rb") as log:
            log.seek(max(0, log.seek(0, os.SEEK_END) - _LOG_TAIL_BYTES))
            data = log.read()
    except OSError:
        return []
    lines = [unstamped(line).strip() for line in data.decode("utf-8", "replace").splitlines()]
    return [_shorten(line) for line in lines if line][-count:]


def _shorten(line: str) -> str:
    # Log lines go into one-line errors that reach the terminal: no escape sequences.
    line = one_line(line)
    return line if len(line) <= _LOG_LINE_CHARS else line[: _LOG_LINE_CHARS - 3] + "..."


def stop_children(started: Iterable[tuple[Children, Child]], grace_s: float) -> None:
    """SIGTERM every group, wait up to grace_s for the leaders, then SIGKILL what is left.

    The SIGKILL goes to every group, even one whose leader exited: children it left behind
    in the group would otherwise outlive the loop.
    """
    started = list(started)
    processes = [child.popen for _, child in started]
    for process in processes:
        _signal_group(process, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for process in processes:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for process in processes:
        _signal_group(process, signal.SIGKILL)
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass  # stuck in the kernel; nothing more a signal can do
    for children, child in started:
        children.finished(child)


def first_error_line(path: Path) -> str | None:
    """The line of a service's log that says what went wrong: the first exception line
    (`RuntimeError: DATABASE_URL is not set`, not the `Traceback` line above it, nor the
    teardown lines a closing service prints after it), else its first error-looking line,
    else its last line."""
    lines = log_tail(path, 200)
    for pattern in (_EXCEPTION_LINE, _ERROR_LINE):
        for line in lines:
            if pattern.search(line) and not line.startswith("Traceback"):
                return line
    return lines[-1] if lines else None


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    # With start_new_session the process group id is the leader's pid.
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass  # the whole group is gone already
