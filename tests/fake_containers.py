"""Revisions of the fake Cloud Run that really run: each image maps to a local command.

Cloud Run starts a revision's container with `PORT` set and counts the revision ready once
the container listens on it. Here an image whose repository ends with a key of the map (e.g.
`shop/auth` for `europe-west1-docker.pkg.dev/p/shop/auth:staging`) runs that key's command
instead, as a local process: `{python}` is this interpreter, `{port}` the port it must
listen on (also in `PORT`). It sees what a container would: the revision's plain env vars,
`PORT`, `K_SERVICE`, `K_REVISION`, `K_CONFIGURATION`, and only `PATH` and `LANG` of this
machine. Secret references get no value (the fake has none), so a variable fed from Secret
Manager is unset.

Each process runs in the directory the fake was started in, in its own session, its output
in `<logs>/<service>/<revision>.log`, each line stamped with the time it was written (as
Cloud Logging records it; logging_fake.py serves these lines as the revision's entries).
A process that exits, or does not listen within `start_timeout_s`, fails its revision with
Cloud Run's message and the end of that log.
`keep_only` stops the processes of revisions that no longer serve traffic or carry a tag
(Cloud Run scales those to zero); `stop_all` stops the rest.

The same file may list what is `[[running]]` when the fake starts: services a team deployed
some other way, each serving its first revision (`service` is the full resource name, `image`,
`env`); `{env:NAME}` is this machine's variable, `{uri:ID}` the URL of a service listed before.

The same map runs the tasks of Cloud Run jobs (jobs_fake.py): the image's command, then the
container's args, without PORT (`task_argv` gives its command line, `machine_env` what it
sees of this machine's env).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deployloop.log_lines import stamp, unstamped

STOP_GRACE_S = 5.0


@dataclass
class Container:
    service: str
    revision: str
    process: subprocess.Popen[bytes]
    port: int
    log: Path


@dataclass(frozen=True)
class Running:
    """A service deployed before the fake started (see the module's docstring)."""

    service: str  # projects/P/locations/R/services/ID
    image: str
    env: dict[str, str] = field(default_factory=dict)


def _read(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SystemExit(f"{path}: cannot read the image map: {exc}") from None


def read_running(path: Path) -> list[Running]:
    """The `[[running]]` tables of the file, `{env:NAME}` filled in (`{uri:ID}` is left for
    when the service it names is up)."""
    out = []
    for i, entry in enumerate(_read(path).get("running", [])):
        where = f"{path}: running[{i}]"
        if not (isinstance(entry, dict) and isinstance(entry.get("service"), str)
                and isinstance(entry.get("image"), str)
                and isinstance(entry.get("env", {}), dict)):
            raise SystemExit(f"{where}: needs service and image (strings), env (a table)")
        env = {str(k): _fill_env(str(v), where) for k, v in entry.get("env", {}).items()}
        out.append(Running(_fill_env(entry["service"], where),
                           _fill_env(entry["image"], where), env))
    return out


def _fill_env(text: str, where: str) -> str:
    def value(match: re.Match[str]) -> str:
        if match[1] not in os.environ:
            raise SystemExit(f"{where}: {{env:{match[1]}}}: {match[1]} is not set")
        return os.environ[match[1]]

    return re.sub(r"\{env:([A-Za-z_][A-Za-z0-9_]*)\}", value, text)


def read_image_map(path: Path) -> dict[str, list[str]]:
    """The `[images]` table of a TOML file: repository suffix -> command (a list of strings)."""
    data = _read(path)
    images = data.get("images")
    if not isinstance(images, dict) or not images:
        raise SystemExit(f"{path}: needs an [images] table: \"<repository>\" = [command...]")
    out: dict[str, list[str]] = {}
    for key, command in images.items():
        if not (isinstance(command, list) and command and all(isinstance(a, str) for a in command)):
            raise SystemExit(f"{path}: images.{key}: must be a non-empty list of strings")
        out[key] = command
    return out


def machine_env() -> dict[str, str]:
    """What a container sees of this machine's environment: PATH and LANG only."""
    return {k: os.environ[k] for k in ("PATH", "LANG") if k in os.environ}


def task_argv(command: Sequence[str]) -> list[str]:
    """A job task's command line (jobs_fake.py): `{python}` is this interpreter."""
    return [a.replace("{python}", sys.executable) for a in command]


def repository(image: str) -> str:
    """`host/path/name` of `host/path/name:tag` or `...@sha256:...`."""
    name = image.split("@", 1)[0]
    head, sep, tag = name.rpartition(":")
    return head if sep and "/" not in tag else name


class Containers:
    def __init__(
        self,
        images: Mapping[str, Sequence[str]],
        logs: Path,
        workdir: Path | None = None,
        start_timeout_s: float = 15.0,
    ) -> None:
        self.images = dict(images)
        self.logs = logs
        self.workdir = workdir or Path.cwd()
        self.start_timeout_s = start_timeout_s
        self._running: dict[str, Container] = {}  # by revision name
        self._lock = threading.Lock()

    def command_for(self, image: str) -> Sequence[str] | None:
        repo = repository(image)
        for key, command in self.images.items():
            if repo == key or repo.endswith("/" + key):
                return command
        return None

    def start(
        self, service: str, revision: str, image: str, env: Mapping[str, str]
    ) -> str | None:
        """Run `revision`; None once it listens, else why it failed (Cloud Run's words)."""
        command = self.command_for(image)
        if command is None:
            return None
        port = _free_port()
        argv = [a.replace("{python}", sys.executable).replace("{port}", str(port))
                for a in command]
        log = self.logs / service / f"{revision}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        container_env = {
            **{k: os.environ[k] for k in ("PATH", "LANG") if k in os.environ},
            **env,
            "PORT": str(port),
            "K_SERVICE": service,
            "K_REVISION": revision,
            "K_CONFIGURATION": service,
            "PYTHONUNBUFFERED": "1",
        }
        try:
            process = subprocess.Popen(
                argv, cwd=self.workdir, env=container_env, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )
        except OSError as exc:
            return f"The container could not start: {argv[0]}: {exc.strerror}"
        copying = threading.Thread(target=_copy_stamped, args=(process, log), daemon=True)
        copying.start()
        container = Container(service, revision, process, port, log)
        if not _listens(container, self.start_timeout_s):
            _stop(process)
            copying.join(5)
            tail = [unstamped(line) for line in
                    log.read_text(encoding="utf-8", errors="replace").splitlines()[-5:]]
            return (
                "The user-provided container failed to start and listen on the port defined"
                f" provided by the PORT={port} environment variable within the allocated"
                " timeout. Logs for this revision might contain more information."
                + (" Last lines: " + " | ".join(tail) if tail else "")
            )
        with self._lock:
            self._running[revision] = container
        return None

    def address(self, revision: str) -> tuple[str, int] | None:
        with self._lock:
            container = self._running.get(revision)
        return ("127.0.0.1", container.port) if container is not None else None

    def running(self) -> list[str]:
        with self._lock:
            return sorted(self._running)

    def keep_only(self, service: str, revisions: set[str]) -> None:
        """Stop `service`'s processes whose revision is not in `revisions`."""
        with self._lock:
            gone = [c for r, c in self._running.items()
                    if c.service == service and r not in revisions]
            for container in gone:
                del self._running[container.revision]
        for container in gone:
            _stop(container.process)

    def stop_all(self) -> None:
        with self._lock:
            gone = list(self._running.values())
            self._running.clear()
        for container in gone:
            _stop(container.process)


def _copy_stamped(process: subprocess.Popen[bytes], log: Path) -> None:
    assert process.stdout is not None
    with open(log, "a", encoding="utf-8") as out:
        for raw in process.stdout:
            out.write(stamp(time.time()) + raw.decode("utf-8", "replace"))
            out.flush()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _listens(container: Container, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if container.process.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", container.port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.02)
    return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to its session, then SIGKILL after a grace period, as Cloud Run does."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        except ProcessLookupError:
            pass
