"""One `loop run` per environment at a time: two would run the same tests into the same files.

The lock is a file outside the state dir, named after the state dir's real path and the env:
deleting the state dir mid-run must not delete the lock with it (a second run could then
start alongside the first). The kernel releases it when loop exits however it exits, so a
crash never leaves it stale, and a read command can tell an orphaned `running` iteration
(nobody holds the lock) from a live one.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import stat
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import IO

from deployloop.safetext import one_line

# A read command probing the lock holds it for an instant; a run that starts then waits.
_ACQUIRE_WAIT_S = 2.0


class EnvLocked(Exception):
    """Another `loop run` holds the env (`loop run` exits 2)."""


def lock_path(state_dir: Path, env: str) -> Path:
    real = os.path.realpath(state_dir)
    key = hashlib.sha256(real.encode("utf-8", "surrogateescape")).hexdigest()[:20]
    base = Path(tempfile.gettempdir()) / f"deployloop-{os.getuid()}"
    return base / f"{key}-{env}.lock"


def _open(path: Path) -> IO[str]:
    """The lock file, in a folder that must be this user's alone: /tmp is shared, and a
    folder or a link planted there by someone else must not steer loop's writes."""
    folder = path.parent
    try:
        folder.mkdir(mode=0o700)
    except FileExistsError:
        pass
    info = os.lstat(folder)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise OSError(
            errno.EPERM, f"{folder} is not a private folder of this user (remove it, or set TMPDIR)"
        )
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    return os.fdopen(fd, "r+", encoding="utf-8")


class EnvLock:
    def __init__(self, state_dir: Path, env: str) -> None:
        self._path = lock_path(state_dir, env)
        self._env = env
        self._file: IO[str] | None = None

    def __enter__(self) -> EnvLock:
        try:
            handle = _open(self._path)
        except OSError as exc:
            raise EnvLocked(
                f"{self._path}: cannot take the env's lock: {exc.strerror or exc}"
            ) from None
        deadline = time.monotonic() + _ACQUIRE_WAIT_S
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
                handle.seek(0)
                holder = one_line(handle.read(40).strip()) or "?"
                handle.close()
                raise EnvLocked(
                    f"another `loop run` (pid {holder}) is running env {self._env!r};"
                    " wait for it, or stop it (Ctrl-C) and use --resume"
                ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._file = handle
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._file is not None:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None


@contextmanager
def unless_running(state_dir: Path, env: str) -> Iterator[bool]:
    """True when no `loop run` holds env's lock, which stays held (shared) while the caller
    acts on that: a run that starts meanwhile waits for it (see _ACQUIRE_WAIT_S)."""
    try:
        handle = _open(lock_path(state_dir, env))
    except OSError:
        yield False  # cannot tell: act as if a run held it
        return
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        handle.close()  # closing drops the lock
