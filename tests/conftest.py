"""Shared fixtures: a throwaway project in tmp_path, run with the real `loop` console script.

`project` writes a config, test files and service scripts into tmp_path and runs `loop`
there as a subprocess, the way a user would: cwd = the project, state in `.loop/`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# google-auth looks for a metadata server when it finds no other credentials: a packet off
# this machine. Every test, and every `loop` they start, is told there is none.
os.environ["NO_GCE_CHECK"] = "true"

LOOP = Path(sys.executable).parent / "loop"
ROOT = Path(__file__).resolve().parent.parent

# Variables of the outer pytest (or the user's shell, or an outer `loop run`) that must not
# leak into the projects: LOOP_STATE_DIR would move their state, LOOP_<NAME>_URL would point
# their tests at someone else's services.
_STRIPPED_ENV = ("PYTEST_ADDOPTS", "PYTEST_PLUGINS", "PYTEST_CURRENT_TEST")

# A small HTTP service for the `local` target. Its behaviour is picked by --mode:
#   ok         /health answers 200; /env answers the environment it was started with
#   unhealthy  /health answers 503 forever
#   crash      prints a message and exits 3 before listening
# --pidfile writes its pid, so a test can check that loop stopped it.
SERVICE = r'''
import argparse, json, os, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--mode", default="ok")
parser.add_argument("--name", default="svc")
parser.add_argument("--pidfile")
args = parser.parse_args()

if args.pidfile:  # written whole or not at all: a test may be polling for it
    with open(args.pidfile + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.replace(args.pidfile + ".tmp", args.pidfile)
if args.mode == "crash":
    print(f"{args.name}: starting", flush=True)
    print(f"{args.name}: RuntimeError: SERVICE_SECRET is not set", file=sys.stderr, flush=True)
    sys.exit(3)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/health":
            code = 503 if args.mode == "unhealthy" else 200
            body = {"ok": code == 200, "name": args.name}
        elif self.path == "/env":
            code = 200
            body = dict(os.environ)
        else:
            code, body = 404, {"error": "not found"}
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()
'''


def loop_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items()
        if k not in _STRIPPED_ENV and not k.startswith("LOOP_")
    }
    # Startup cost, paid by every `loop` and pytest process here (~100 of them):
    # - the dev venv has hypothesis, whose pytest plugin costs ~0.45 s of every pytest start
    #   (~0.75 s); the projects here do not use it.
    # - PYTHONDONTWRITEBYTECODE (set in some sandboxes) makes every `loop` compile deployloop
    #   from source again (~0.2 s a run); users have their bytecode cache.
    env["PYTEST_ADDOPTS"] = "-p no:hypothesispytest"
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.update(extra or {})
    return env


class Project:
    """A project folder: configs/<env>.toml, test files, scripts; `loop` runs in it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._popened: list[subprocess.Popen[str]] = []

    # --- files -------------------------------------------------------------------------------

    def write(self, relpath: str, text: str) -> Path:
        path = self.root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return path

    def config(self, toml: str, env: str = "local") -> Path:
        return self.write(f"configs/{env}.toml", toml)

    def service(self, relpath: str = "svc.py") -> Path:
        return self.write(relpath, SERVICE)

    @property
    def state(self) -> Path:
        return self.root / ".loop"

    def iteration_dir(self, number: int, env: str = "local") -> Path:
        return self.state / "runs" / env / f"iteration-{number}"

    # --- loop ----------------------------------------------------------------------------------

    def run(
        self, *args: str, timeout: float = 60, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(LOOP), *args],
            cwd=self.root,
            env=loop_env(env),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def popen(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [str(LOOP), *args],
            cwd=self.root,
            env=loop_env(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        self._popened.append(proc)
        return proc

    def json(self, *args: str) -> Any:
        """Run a `loop` command that prints JSON; fail with its output if it does not."""
        result = self.run(*args)
        assert result.returncode == 0, output(result)
        try:
            return json.loads(result.stdout)
        except json.JSONDecodeError:
            pytest.fail(f"`loop {' '.join(args)}` did not print JSON:\n{output(result)}")

    def summary(self, iteration: int | None = None, env: str = "local") -> dict[str, Any]:
        args = ["summarize", "--env", env, "--format", "json"]
        if iteration is not None:
            args += ["--iteration", str(iteration)]
        data: dict[str, Any] = self.json(*args)
        return data

    def status(self, env: str = "local") -> dict[str, Any]:
        data: dict[str, Any] = self.json("status", "--env", env, "--format", "json")
        return data

    def history(self, env: str = "local") -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = self.json("history", "--env", env, "--format", "json")
        return data

    def cleanup(self) -> None:
        for proc in self._popened:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            if proc.stdout:
                proc.stdout.close()
            if proc.stderr:
                proc.stderr.close()


def shop_checkout(root: Path, env: str) -> Project:
    """A git checkout of the shop example with this repository's configs/<env>.toml, as a
    new user has it: one commit, the repository's own ignore rules (a fix written to an
    ignored file would be no change of code to loop, and its fixed tests would read as
    flaky)."""
    project = Project(root)
    shutil.copytree(
        ROOT / "examples",
        project.root / "examples",
        ignore=shutil.ignore_patterns("__pycache__", "fixes", ".pytest_cache"),
    )
    (project.root / "configs").mkdir()
    shutil.copy(ROOT / "configs" / f"{env}.toml", project.root / "configs" / f"{env}.toml")
    shutil.copy(ROOT / ".gitignore", project.root / ".gitignore")
    for argv in (
        ["git", "init", "-q"],
        ["git", "add", "-A"],
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "example"],
    ):
        subprocess.run(argv, cwd=project.root, check=True, capture_output=True)
    return project


def output(result: subprocess.CompletedProcess[str]) -> str:
    """Everything a `loop` run printed, for assertion messages."""
    return (
        f"exit {result.returncode}\n--- stdout ---\n{result.stdout}"
        f"\n--- stderr ---\n{result.stderr}"
    )


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    proj = Project(tmp_path)
    yield proj
    proj.cleanup()


def wait_for(
    condition: Callable[[], Any], timeout: float = 20, interval: float = 0.1, what: str = ""
) -> Any:
    """Poll until condition() is truthy; return it. Fails after a generous timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what or condition}")
        time.sleep(interval)


def read_pid(path: Path, timeout: float = 30) -> int:
    """The pid a process writes to `path`, once it is there (written whole)."""
    text = wait_for(
        lambda: path.exists() and path.read_text().strip(), timeout=timeout, what=str(path)
    )
    return int(text)


def pids_where(test: Callable[[Path], bool]) -> list[int]:
    """The processes whose /proc/<pid> folder passes `test` (one that ends meanwhile, or
    is not ours to read, is left out)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if test(proc):
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not reaped by its parent) counts as dead.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
