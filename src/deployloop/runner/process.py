"""pytest as a subprocess: how it is invoked, and how it is stopped without losing results."""

from __future__ import annotations

import os
import re
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from deployloop.children import Child, Children
from deployloop.runner.plugin import deployloop_redact
from deployloop.runner.plugin.deployloop_redact import Redactor
from deployloop.runner.suite_paths import node_arg, project_ini

PLUGIN_DIR = Path(__file__).parent / "plugin"

# pytest writes its reports and runs fixture teardown on SIGINT; a process that still runs
# after this many seconds is killed.
INTERRUPT_GRACE_S = 5.0
_TAIL_BYTES = 64 * 1024
_TAIL_LINE_CHARS = 500


@dataclass(frozen=True)
class Redaction:
    """What loop hides from everything it and its plugin write (see deployloop_redact).

    `names`: variables of the tests' environment always hidden (`[tests] env`); `values`:
    values the tests' environment does not hold (a service's `env`); `patterns`: names that
    look secret. `redactor` is loop's own side: it learns each process's secret-looking values
    (ID tokens are minted per process) as that process is started.
    """

    patterns: tuple[str, ...] = deployloop_redact.DEFAULT_PATTERNS
    names: frozenset[str] = frozenset()
    values: dict[str, str] = field(default_factory=dict)
    redactor: Redactor = field(default_factory=Redactor)

    def plugin_env(self, env: dict[str, str]) -> str:
        """LOOP_REDACT for a pytest process whose environment is `env`."""
        self.redactor.add_env(env, self.patterns, self.names)
        return deployloop_redact.describe(env, self.patterns, self.names, self.values)


@dataclass(frozen=True)
class PytestSetup:
    """Everything every pytest process of an iteration shares."""

    python: str
    workdir: Path
    pytest_args: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    # Node ids are relative to this: the working directory, or a folder above it when suite
    # paths lie outside it (see runner.suite_paths.tests_root).
    rootdir: Path | None = None
    children: Children | None = None
    redaction: Redaction = field(default_factory=Redaction)

    def argv(self, args: list[str], markers: str | None, extra: list[str]) -> list[str]:
        # Our options come after the user's, so they win: `--maxfail=0` undoes `-x` or
        # `--maxfail` from addopts (every test of every suite must run), and `--rootdir`
        # makes node ids relative to the working directory, where config paths live too.
        argv = [self.python, "-m", "pytest", *self.pytest_args, *args, *extra]
        rootdir = self.rootdir or self.workdir
        argv += ["--maxfail=0", "--continue-on-collection-errors", "--rootdir", str(rootdir)]
        if rootdir != self.workdir:
            # pytest would look for its config from a folder above the project: keep the
            # project's, and its cache in the project rather than up there.
            ini = project_ini(self.workdir)
            if ini is not None:
                argv += ["-c", str(ini)]
            argv += ["-o", f"cache_dir={self.workdir / '.pytest_cache'}"]
        if markers:
            argv += ["-m", markers]
        return argv

    def process_env(self, *, with_plugin: bool) -> dict[str, str]:
        env = dict(self.env)
        if with_plugin:
            paths = [str(PLUGIN_DIR)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
            env["PYTHONPATH"] = os.pathsep.join(paths)
        return env

    def node_arg(self, nodeid: str) -> str:
        return node_arg(nodeid, self.workdir, self.rootdir)

    def start(
        self, argv: list[str], env: dict[str, str], log_path: Path, pass_fds: tuple[int, ...] = ()
    ) -> PytestProcess:
        """Start one pytest process; its environment gets LOOP_REDACT for the plugin."""
        env = {**env, deployloop_redact.ENV_VAR: self.redaction.plugin_env(env)}
        children = self.children or Children(redactor=self.redaction.redactor, watch=False)
        return PytestProcess(argv, env, self.workdir, log_path, children, pass_fds)


class PytestProcess:
    """One pytest run in its own process group, output to a log file."""

    def __init__(
        self,
        argv: list[str],
        env: dict[str, str],
        cwd: Path,
        log_path: Path,
        children: Children,
        pass_fds: tuple[int, ...] = (),
    ) -> None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.argv = argv
        self.log_path = log_path
        self.started = time.monotonic()
        self._children = children
        # A session of its own: Ctrl-C in the terminal reaches `loop` only, which then stops
        # each pytest on its own terms (SIGINT: fixture teardown runs); and a timeout can
        # kill a test's children too.
        self._child: Child = children.start(
            argv, env=env, log=log_path, cwd=cwd, stop_signal=signal.SIGINT, pass_fds=pass_fds
        )
        self._proc = self._child.popen
        self._interrupted_at: float | None = None
        self.returncode: int | None = None

    @property
    def pid(self) -> int:
        return self._proc.pid

    def poll(self) -> int | None:
        """The exit code once pytest has exited (its leftover children are then killed)."""
        if self.returncode is None:
            code = self._proc.poll()
            if code is None and self._interrupted_at is not None:
                if time.monotonic() - self._interrupted_at > INTERRUPT_GRACE_S:
                    self._signal(signal.SIGKILL)
                    code = self._proc.wait()
            if code is not None:
                self._reap(code)
        return self.returncode

    def interrupt(self) -> None:
        """Ask pytest to stop (SIGINT); poll() kills it if it has not stopped in time."""
        if self._interrupted_at is None and self.returncode is None:
            self._interrupted_at = time.monotonic()
            self._signal(signal.SIGINT)

    def kill(self) -> int:
        """Kill the whole process group at once and reap it."""
        self._signal(signal.SIGKILL)
        if self.returncode is None:
            self._reap(self._proc.wait())
        assert self.returncode is not None
        return self.returncode

    def stop(self) -> int:
        """Interrupt, and wait until the process is gone."""
        self.interrupt()
        while self.poll() is None:
            time.sleep(0.02)
        assert self.returncode is not None
        return self.returncode

    def wait(self, timeout_s: float) -> int:
        """Wait for a normal exit; stop it if it takes longer than timeout_s."""
        deadline = time.monotonic() + timeout_s
        while self.poll() is None:
            if time.monotonic() > deadline:
                return self.stop()
            time.sleep(0.02)
        assert self.returncode is not None
        return self.returncode

    @property
    def was_interrupted(self) -> bool:
        return self._interrupted_at is not None

    def tail(self, lines: int = 15) -> str:
        """The last lines of pytest's output, each shortened: read from the end of the file,
        which may hold hundreds of megabytes a test printed."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(max(0, log.seek(0, os.SEEK_END) - _TAIL_BYTES))
                data = log.read()
        except OSError:
            return ""
        text = data.decode("utf-8", errors="replace")
        return "\n".join(_shorten(line) for line in text.rstrip().splitlines()[-lines:])

    def _signal(self, sig: signal.Signals) -> None:
        try:
            os.killpg(self._proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def _reap(self, code: int) -> None:
        self.returncode = code
        # Whatever the tests started (servers, browsers) must not outlive them.
        self._signal(signal.SIGKILL)
        self._children.finished(self._child)


_ARGPARSE = re.compile(r"^\S.*?: error: (?P<message>.+)$")
_PYTEST_ERROR = re.compile(r"^ERROR: (?!usage:)(?P<message>.+)$")
_E_LINE = re.compile(r"^E\s+(?P<message>\S.*)$")
_INTERNAL = re.compile(r"^INTERNALERROR> (?P<message>\w[\w.]*(?:Error|Exception)\b.*)$")
_CONFTEST = re.compile(r"^(?P<message>ImportError while loading conftest .+?)\.?$")


def internal_error(output: str) -> str | None:
    """The exception line of pytest's own crash (INTERNALERROR, exit 3), if it printed one."""
    found = [m.group("message") for line in output.splitlines() if (m := _INTERNAL.match(line))]
    return found[-1] if found else None


def error_line(output: str) -> str:
    """pytest's own line saying why it stopped before running a test: an option it did not
    take ("unrecognized arguments: ..."), its ERROR line (a bad -m, a missing path, a plugin
    that did not load), or the exception of a conftest that failed to import."""
    internal = internal_error(output)
    if internal:
        return internal
    lines = [line.rstrip() for line in output.splitlines() if line.strip()]
    for pattern in (_ARGPARSE, _PYTEST_ERROR):
        for line in lines:
            match = pattern.match(line)
            if match:
                return match.group("message").strip()
    exceptions = [m.group("message") for line in lines if (m := _E_LINE.match(line))]
    conftest = next((m.group("message") for line in lines if (m := _CONFTEST.match(line))), None)
    if conftest and exceptions:
        return f"{conftest}: {exceptions[-1]}"
    if exceptions:
        return exceptions[-1]
    for line in lines:
        if "error" in line.lower():
            return line.strip()
    return lines[-1].strip() if lines else "(no output)"



def _shorten(line: str) -> str:
    if len(line) <= _TAIL_LINE_CHARS:
        return line
    return line[: _TAIL_LINE_CHARS - 3] + "..."
