"""One `loop run` per environment at a time: two would run the same tests into the same files."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType
from typing import IO


class EnvLocked(Exception):
    """Another `loop run` holds the env (`loop run` exits 2)."""


class EnvLock:
    """An exclusive lock on `<state>/locks/<env>.lock`, released when loop exits however it
    exits (the kernel drops it with the process), so a crash never leaves it stale."""

    def __init__(self, state_dir: Path, env: str) -> None:
        self._path = state_dir / "locks" / f"{env}.lock"
        self._env = env
        self._file: IO[str] | None = None

    def __enter__(self) -> EnvLock:
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(self._path, "a+", encoding="utf-8")  # noqa: SIM115 (closed in __exit__)
        except OSError as exc:
            raise EnvLocked(f"{self._path}: cannot take the env's lock: {exc.strerror}") from None
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
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
