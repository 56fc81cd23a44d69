"""The processes loop starts (services, pytest, the deploy command, the fix step): none of
them outlives loop.

Services and pytest run in sessions of their own, so the kernel ends none of them with loop.
Two things make sure something does:
- a watchdog process (`deployloop/watchdog.py`) learns each process group through a pipe and
  stops them all when that pipe closes without a goodbye, that is when loop was killed;
- a record file per `loop run` (`<state>/procs/<env>/<pid>.json`) lists the same groups, with
  each leader's start time so a recycled pid is never mistaken for ours. When the watchdog
  was killed too (a whole process group killed, a reboot), the next loop command for that env
  reaps what the record names.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from deployloop import watchdog
from deployloop.logpump import LogPump
from deployloop.runner.plugin.deployloop_redact import Redactor

# How long a stopped process may take (pytest's fixture teardown) before SIGKILL.
STOP_GRACE_S = 5.0
# The next loop command waits less: what it reaps was orphaned, not working.
REAP_GRACE_S = 2.0


@dataclass(frozen=True)
class Child:
    popen: subprocess.Popen[bytes]
    pump: LogPump | None
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid


@dataclass(frozen=True)
class _Entry:
    target: int  # a process group id, or -pid for a single process
    stop: int  # the signal that asks it to stop
    started: str | None  # the leader's start time (/proc/<pid>/stat), None where unknown
    boot: str | None  # the kernel boot id, so a record from before a reboot is stale
    program: str


class Children:
    """Starts loop's child processes and keeps the watchdog and the record up to date.

    `umask` is given to every child: loop writes its own files 0600 under a 0077 umask, but
    the user's tests and services must see the umask the user set. `redactor` hides secrets
    in their output. `watch=False` (for `loop plan`, which keeps no record) starts no
    watchdog.
    """

    def __init__(
        self,
        record: Path | None = None,
        redactor: Redactor | None = None,
        umask: int | None = None,
        watch: bool = True,
    ) -> None:
        self._record = record
        self._redactor = redactor or Redactor()
        self._umask = -1 if umask is None else umask
        self._lock = threading.Lock()
        self._entries: dict[int, _Entry] = {}
        self._pipe: IO[str] | None = None
        self._watchdog: subprocess.Popen[str] | None = None
        self._closed = False
        self._owner = _Entry(os.getpid(), 0, _start_time(os.getpid()), _boot_id(), "loop")
        if watch:
            self._start_watchdog()
        with self._lock:
            self._write_record()  # the owner, at once: the next command must see a live run

    # --- starting and forgetting ------------------------------------------------------------

    def start(
        self,
        argv: list[str],
        *,
        env: Mapping[str, str],
        log: Path,
        cwd: Path | None = None,
        stop_signal: int = signal.SIGTERM,
        through_loop: bool = True,
        pass_fds: tuple[int, ...] = (),
        stamped: bool = False,
    ) -> Child:
        """Start argv as the leader of a new session (its group id is its pid), its output
        going to `log` through loop's redaction. Raises OSError if it cannot start.

        `through_loop=False`: the output goes to `log` directly, and is redacted there once
        the process has ended (`finished`). For a process that may leave something running
        after loop has gone (a deploy script starting a server in the background): a pipe
        would end with loop, and the server with it, at its next write.
        `stamped`: each line of the log starts with the time it was written (log_lines)."""
        if self._closed:
            raise OSError("loop is stopping: no new process is started")
        pump = LogPump(log, self._redactor, stamped) if through_loop else None
        direct = None if pump is not None else _open_private(log)
        try:
            process = subprocess.Popen(
                argv,
                cwd=cwd,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=pump.write_fd if pump is not None else direct,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                umask=self._umask,
                pass_fds=pass_fds,
            )
        except BaseException:
            if pump is not None:
                pump.close(0)
            raise
        finally:
            if direct is not None:
                os.close(direct)
        if pump is not None:
            pump.child_started()
        self._add(process.pid, stop_signal, argv[0] if argv else "?")
        return Child(process, pump, log)

    def finished(self, child: Child, output_wait_s: float = 1.0) -> None:
        """`child` has exited and its group been killed: forget it, and let its log catch up
        (a grandchild that left the group may hold the pipe: not waited for long)."""
        self.forget(child.popen.pid)
        if child.pump is not None:
            child.pump.close(output_wait_s)
        else:
            redact_file(child.log, self._redactor)

    def run_in_foreground(self, argv: list[str], *, env: Mapping[str, str], cwd: Path) -> int:
        """Run argv in loop's own process group, on the terminal (the fix step may ask a
        person something); tracked as one process, since its group is loop's.

        Ctrl-C reaches it from the terminal as it reaches loop; SIGTERM (and SIGHUP) reach
        loop only, which passes them on. Either way loop waits for it to end, then goes on
        stopping (the KeyboardInterrupt is raised again)."""
        if self._closed:
            raise OSError("loop is stopping: no new process is started")
        process = subprocess.Popen(argv, cwd=cwd, env=dict(env), umask=self._umask)
        self._add(-process.pid, signal.SIGTERM, argv[0] if argv else "?")
        try:
            code = process.wait()
        except BaseException:
            try:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            except BaseException:  # a second Ctrl-C: stop waiting
                process.kill()
                process.wait()
            self.forget(-process.pid)
            raise
        self.forget(-process.pid)
        return code

    def adopt(self, pid: int, stop_signal: int, program: str) -> None:
        """A process group loop did not start itself but must stop like its own: a pytest
        worker forked by a fork server, in a group of its own."""
        self._add(pid, stop_signal, program)

    def forget(self, target: int) -> None:
        """`target` (a group id, or -pid) has ended and been reaped."""
        with self._lock:
            if self._entries.pop(target, None) is None:
                return
            self._tell(f"del {target}")
            self._write_record()

    # --- the end ----------------------------------------------------------------------------

    def close(self) -> None:
        """loop is ending normally: stop anything still tracked, release the watchdog."""
        with self._lock:
            self._closed = True
            left = {e.target: e.stop for e in self._entries.values()}
            self._entries.clear()
        if left:
            watchdog.stop(left, STOP_GRACE_S)
        self._tell("done")
        if self._pipe is not None:
            try:
                self._pipe.close()
            except OSError:
                pass
            self._pipe = None
        if self._watchdog is not None:
            try:
                self._watchdog.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                self._watchdog.kill()
                self._watchdog.wait()
            self._watchdog = None
        if self._record is not None:
            self._record.unlink(missing_ok=True)

    def __enter__(self) -> Children:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- internals --------------------------------------------------------------------------

    def _start_watchdog(self) -> None:
        record = str(self._record) if self._record is not None else "-"
        try:
            # -I -S: no site-packages, no user paths: it imports only the standard library.
            self._watchdog = subprocess.Popen(
                [sys.executable, "-I", "-S", watchdog.__file__, record, str(STOP_GRACE_S)],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                text=True,
            )
        except OSError:
            return  # the record still lets the next loop command reap
        self._pipe = self._watchdog.stdin

    def _add(self, target: int, stop: int, program: str) -> None:
        pid = abs(target)
        entry = _Entry(target, int(stop), _start_time(pid), _boot_id(), Path(program).name)
        with self._lock:
            late = self._closed
            if not late:
                self._entries[target] = entry
                self._tell(f"add {target} {int(stop)}")
                self._write_record()
        if late:  # started by another thread while close() ran: it must not outlive loop
            watchdog.stop({target: int(stop)}, STOP_GRACE_S)

    def _tell(self, line: str) -> None:
        if self._pipe is None:
            return
        try:
            self._pipe.write(line + "\n")
            self._pipe.flush()
        except (OSError, ValueError):
            self._pipe = None  # the watchdog is gone; the record remains

    def _write_record(self) -> None:
        if self._record is None:
            return
        data = json.dumps(
            {"owner": asdict(self._owner), "children": [asdict(e) for e in self._entries.values()]}
        )
        try:
            self._record.parent.mkdir(parents=True, exist_ok=True)
            tmp = self._record.with_name(self._record.name + ".tmp")
            tmp.write_text(data, encoding="utf-8")
            tmp.replace(self._record)
        except OSError:
            pass  # the disk is full or the state dir is gone: the watchdog still knows


def live_runs(record_dir: Path) -> list[int]:
    """The pids of `loop run`s whose records are in `record_dir` and that still run."""
    try:
        records = list(record_dir.glob("*.json"))
    except OSError:
        return []
    live = []
    for path in records:
        owner, _ = _read_record(path)
        if owner is not None and _same_process(owner):
            live.append(abs(owner.target))
    return live


def reap_orphans(record_dir: Path, own_pid: int | None = None) -> list[str]:
    """Stop what the records in `record_dir` name, for `loop run`s that are gone (killed):
    a record whose owner still runs is left alone, whatever the lock says. Returns what was
    stopped."""
    try:
        records = [p for p in record_dir.glob("*.json") if p.stem != str(own_pid)]
    except OSError:
        return []
    found: dict[int, int] = {}
    names: list[str] = []
    done = []
    for path in records:
        owner, entries = _read_record(path)
        if owner is not None and _same_process(owner):
            continue  # a live run (another TMPDIR, another lock): not an orphan
        done.append(path)
        for entry in entries:
            if _still_ours(entry):
                found[entry.target] = entry.stop
                names.append(f"{entry.program} (pid {abs(entry.target)})")
    if found:
        watchdog.stop(found, REAP_GRACE_S)
    for path in done:
        path.unlink(missing_ok=True)
    return names


def _read_record(path: Path) -> tuple[_Entry | None, list[_Entry]]:
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
        owner = _Entry(**data["owner"]) if data.get("owner") else None
        return owner, [_Entry(**item) for item in data.get("children", [])]
    except (OSError, ValueError, TypeError, AttributeError, KeyError):
        return None, []


def _same_process(entry: _Entry) -> bool:
    """Whether the process the entry names is the one that wrote it (not a recycled pid)."""
    if entry.boot is None or entry.boot != _boot_id() or entry.started is None:
        return False
    return _start_time(abs(entry.target)) == entry.started


def _still_ours(entry: _Entry) -> bool:
    """Whether the process (group) the entry names is still the one loop started: a pid
    number is reused once its process and every group and session it leads are gone."""
    if entry.boot is None or entry.boot != _boot_id():
        return False
    pid = abs(entry.target)
    started = _start_time(pid)
    if started is not None:
        return started == entry.started
    if entry.target < 0:
        return False  # a single process that is gone
    # The leader is gone; its group lives on while any member does, and the number cannot
    # have been reused meanwhile.
    return watchdog.exists(entry.target)


def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22 (starttime), counted after the command name, which may hold spaces.
    return stat.rsplit(")", 1)[1].split()[19]


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _open_private(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)


def redact_file(path: Path, redactor: Redactor) -> None:
    """Redact a log a process wrote directly, by writing a redacted copy over it. Output a
    background process still writes goes to the replaced file: it is lost, not leaked."""
    if not redactor:
        return
    try:
        text = path.read_bytes().decode("utf-8", "surrogateescape")
        clean = redactor.redact(text)
        if clean == text:
            return
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(clean.encode("utf-8", "surrogateescape"))
        tmp.replace(path)
    except OSError:
        pass
