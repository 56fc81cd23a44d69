"""The `local` target: each service's command as a subprocess on a free port of 127.0.0.1."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

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
from deployloop.models import Deployment, DeployStatus

STOP_GRACE_S = 5.0
LOG_TAIL_LINES = 10
_LOG_TAIL_BYTES = 64 * 1024
_LOG_LINE_CHARS = 300


class LocalTarget(TargetDefaults):
    """Starts services as process groups of their own, so stop() takes their children too."""

    def __init__(self) -> None:
        self._processes: list[subprocess.Popen[bytes]] = []
        self._lock = threading.Lock()

    def deploy(self, config: Config, ctx: DeployContext) -> list[Deployment]:
        self.stop()  # a second deploy replaces the first: no orphans, no port clashes
        ctx.log_dir.mkdir(parents=True, exist_ok=True)

        def bring_up(
            service: ServiceConfig, ready: Mapping[str, Deployment], abort: threading.Event
        ) -> Deployment:
            return self._bring_up(service, ctx, ready, abort)

        try:
            return deploy_in_waves(config.deploy.services, bring_up)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        with self._lock:
            processes, self._processes = self._processes, []
        stop_process_groups(processes, STOP_GRACE_S)

    def _bring_up(
        self,
        service: ServiceConfig,
        ctx: DeployContext,
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
            process = start_process(argv, service_env(service, ctx, port, ready), log_path)
        except OSError as exc:
            return failed_or_abandoned(record, cannot_run(argv, exc), abort)
        with self._lock:
            self._processes.append(process)
        record.url = url  # only once something may listen there

        def alive() -> str | None:
            if process.poll() is not None:
                return exit_reason(process.returncode)
            return ABANDONED if abort.is_set() else None

        try:
            wait_ready(url, service.health_path, service.ready_timeout_s, alive=alive)
        except NotReady as exc:
            reason = str(exc) if str(exc) == ABANDONED else with_log_tail(str(exc), log_path)
            return failed_or_abandoned(record, reason, abort)
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
    env = {**ctx.base_env, **service.env}
    env["PORT"] = str(port)
    env.update(loop_env(ctx))
    for name, record in ready.items():
        if record.url:
            env[url_env_var(name)] = record.url
    return env


def loop_env(ctx: DeployContext) -> dict[str, str]:
    return {"LOOP_ENV": ctx.env, "LOOP_ITERATION": str(ctx.iteration)}


def start_process(argv: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start argv in a session of its own, output to log_path (the child keeps the file open)."""
    with log_path.open("wb") as log:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )


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
    """One line: the reason, where the log is, and its last lines."""
    lines = log_tail(log_path, LOG_TAIL_LINES)
    if not lines:
        return f"{reason} (log: {log_path}, empty)"
    return f"{reason} (log: {log_path}) | last log lines: " + " | ".join(lines)


def log_tail(path: Path, count: int) -> list[str]:
    """The last `count` non-blank lines, each shortened: they go into one-line errors."""
    try:
        with path.open("rb") as log:
            log.seek(max(0, log.seek(0, os.SEEK_END) - _LOG_TAIL_BYTES))
            data = log.read()
    except OSError:
        return []
    lines = [line.strip() for line in data.decode("utf-8", "replace").splitlines()]
    return [_shorten(line) for line in lines if line][-count:]


def _shorten(line: str) -> str:
    return line if len(line) <= _LOG_LINE_CHARS else line[: _LOG_LINE_CHARS - 3] + "..."


def stop_process_groups(processes: Iterable[subprocess.Popen[bytes]], grace_s: float) -> None:
    """SIGTERM every group, wait up to grace_s for the leaders, then SIGKILL what is left.

    The SIGKILL goes to every group, even one whose leader exited: children it left behind
    in the group would otherwise outlive the loop.
    """
    processes = list(processes)
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


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    # With start_new_session the process group id is the leader's pid.
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass  # the whole group is gone already
