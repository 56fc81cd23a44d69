"""Deploy targets `local`, `command` and `none`, with real processes and real HTTP."""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from deployloop.config import Config, parse_config
from deployloop.deploy import DeployContext, DeployError, make_target
from deployloop.deploy import local as local_module
from deployloop.deploy.command import CommandTarget
from deployloop.deploy.local import LocalTarget
from deployloop.deploy.none import NoneTarget
from deployloop.deploy.readiness import NotReady, wait_ready
from deployloop.models import Deployment, DeployStatus

# One small service, its behaviour picked by --mode.
SERVICE = r"""
import argparse, json, os, signal, subprocess, sys, time, urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--mode", default="ok")
parser.add_argument("--pidfile")
args = parser.parse_args()

if args.mode == "crash":
    print("starting up", flush=True)
    print("RuntimeError: AUTH_SECRET is not set", file=sys.stderr, flush=True)
    sys.exit(3)
if args.mode == "needs-auth":
    # A backend that cannot start without its auth service, as a real one would.
    with urllib.request.urlopen(os.environ["LOOP_AUTH_URL"] + "/health", timeout=2) as r:
        assert r.status == 200
if args.mode == "slow-start":
    time.sleep(0.7)
if args.mode == "ignore-term":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if args.pidfile:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    with open(args.pidfile, "w") as f:
        json.dump({"service": os.getpid(), "child": child.pid}, f)

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/env":
            body = json.dumps(dict(os.environ)).encode()
            code = 200
        elif self.path == "/health":
            code, body = (503, b"warming up") if args.mode == "unhealthy" else (200, b"ok")
        else:
            code, body = 404, b"not found"
        self.send_response(code)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass

print(f"listening on {args.port}", flush=True)
ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()
"""

# A deploy script: shows what it was given, then exits with the code it is told to.
DEPLOY_SCRIPT = r"""
import os, sys
print("deploying", os.environ["LOOP_ENV"], os.environ["LOOP_ITERATION"],
      repr(os.environ["LOOP_GIT_SHA"]), flush=True)
if int(sys.argv[1]):
    print("error: image push denied", flush=True)
sys.exit(int(sys.argv[1]))
"""


@pytest.fixture
def service_script(tmp_path: Path) -> Path:
    path = tmp_path / "service.py"
    path.write_text(SERVICE)
    return path


@pytest.fixture
def ctx(tmp_path: Path) -> DeployContext:
    return DeployContext(
        env="staging",
        iteration=7,
        git_sha="abc123",
        log_dir=tmp_path / "logs",
        python=sys.executable,
        base_env=dict(os.environ),
    )


@pytest.fixture
def local_target() -> Iterator[LocalTarget]:
    target = LocalTarget()
    yield target
    target.stop()


def make_config(target: str, services: list[dict[str, Any]], **deploy: Any) -> Config:
    """A config from TOML text, the way users write it."""
    lines = ["[deploy]", f"target = {json.dumps(target)}"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in deploy.items()]
    for service in services:
        lines.append("[[deploy.services]]")
        for key, value in service.items():
            if isinstance(value, dict):
                pairs = ", ".join(f"{k} = {json.dumps(v)}" for k, v in value.items())
                lines.append(f"{key} = {{ {pairs} }}")
            else:
                lines.append(f"{key} = {json.dumps(value)}")
    lines += ["[tests]", "[[tests.suites]]", 'name = "smoke"', 'paths = ["tests/e2e"]']
    return parse_config("\n".join(lines) + "\n", source="test.toml")


def local_service(
    name: str, script: Path, mode: str = "ok", *extra: str, **fields: Any
) -> dict[str, Any]:
    command = ["{python}", str(script), "--port", "{port}", "--mode", mode, *extra]
    return {"name": name, "command": command, **fields}


def by_name(deployments: list[Deployment]) -> dict[str, Deployment]:
    return {d.service: d for d in deployments}


def gone(pid: int) -> bool:
    """True once pid no longer runs (a zombie waiting for init to reap it counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


def wait_gone(pid: int, within_s: float = 2.0) -> bool:
    deadline = time.monotonic() + within_s
    while not gone(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def unused_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def http_service() -> Iterator[str]:
    """A service deployed by someone else: answers /health 200."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/health" else 404)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


# --- local target ---------------------------------------------------------------------------


def test_local_starts_dependencies_first_and_gives_dependents_their_urls(
    local_target: LocalTarget, service_script: Path, ctx: DeployContext
) -> None:
    config = make_config(
        "local",
        [
            local_service("auth", service_script),
            local_service(
                "backend",
                service_script,
                "needs-auth",
                depends_on=["auth"],
                env={"FEATURE_FLAG": "on"},
            ),
            local_service("worker", service_script),
        ],
    )

    deployments = local_target.deploy(config, ctx)

    assert [d.service for d in deployments] == ["auth", "backend", "worker"]
    assert all(d.status is DeployStatus.READY for d in deployments)
    records = by_name(deployments)
    auth, backend = records["auth"], records["backend"]
    assert auth.url and auth.url.startswith("http://127.0.0.1:")
    assert auth.ready_at and backend.started_at and backend.started_at >= auth.ready_at
    assert backend.revision is None

    env = httpx.get(f"{backend.url}/env").json()
    assert env["LOOP_AUTH_URL"] == auth.url
    assert env["LOOP_ENV"] == "staging"
    assert env["LOOP_ITERATION"] == "7"
    assert env["FEATURE_FLAG"] == "on"
    assert backend.url == f"http://127.0.0.1:{env['PORT']}"
    assert "listening on" in (ctx.log_dir / "backend.log").read_text()


def test_local_starts_independent_services_at_once(
    local_target: LocalTarget, service_script: Path, ctx: DeployContext
) -> None:
    config = make_config(
        "local",
        [
            local_service("one", service_script, "slow-start"),
            local_service("two", service_script, "slow-start"),
        ],
    )

    deployments = local_target.deploy(config, ctx)

    assert [d.status for d in deployments] == [DeployStatus.READY] * 2
    # At once: each started before the other was ready (one after the other, the second
    # would start only once the first answered). No wall-clock bound: machines are noisy.
    assert max(d.started_at or "" for d in deployments) < min(
        d.ready_at or "" for d in deployments
    )


def test_local_service_that_exits_fails_fast_with_its_log_and_skips_dependents(
    local_target: LocalTarget, service_script: Path, ctx: DeployContext
) -> None:
    config = make_config(
        "local",
        [
            local_service("auth", service_script, "crash", ready_timeout_s=20),
            local_service("backend", service_script, depends_on=["auth"]),
            local_service("frontend", service_script, depends_on=["backend"]),
        ],
    )

    started = time.monotonic()
    with pytest.raises(DeployError) as caught:
        local_target.deploy(config, ctx)

    assert time.monotonic() - started < 5  # the exit is noticed, not the 20 s timeout
    message = str(caught.value)
    assert "auth" in message and "exited with code 3" in message
    assert "RuntimeError: AUTH_SECRET is not set" in message
    records = by_name(caught.value.deployments)
    assert records["auth"].status is DeployStatus.FAILED
    assert records["auth"].error and "\n" not in records["auth"].error
    assert records["backend"].status is DeployStatus.SKIPPED
    assert records["backend"].error == "dependency 'auth' failed"
    assert records["frontend"].status is DeployStatus.SKIPPED
    assert "backend" in (records["frontend"].error or "")


def test_local_service_never_ready_fails_after_its_timeout_and_is_stopped(
    local_target: LocalTarget, service_script: Path, ctx: DeployContext, tmp_path: Path
) -> None:
    pidfile = tmp_path / "pids.json"
    config = make_config(
        "local",
        [
            local_service(
                "api", service_script, "unhealthy", "--pidfile", str(pidfile), ready_timeout_s=1
            )
        ],
    )

    started = time.monotonic()
    with pytest.raises(DeployError) as caught:
        local_target.deploy(config, ctx)

    assert 0.9 <= time.monotonic() - started < 4
    [record] = caught.value.deployments
    assert record.status is DeployStatus.FAILED
    assert record.error and "answered 503 after 1.0 s" in record.error
    assert "listening on" in record.error  # the log tail
    pids = json.loads(pidfile.read_text())
    assert wait_gone(pids["service"]) and wait_gone(pids["child"])


def test_local_failure_abandons_the_rest_of_its_wave(
    local_target: LocalTarget, service_script: Path, ctx: DeployContext
) -> None:
    config = make_config(
        "local",
        [
            local_service("slow", service_script, "unhealthy", ready_timeout_s=20),
            local_service("broken", service_script, "crash"),
        ],
    )

    started = time.monotonic()
    with pytest.raises(DeployError) as caught:
        local_target.deploy(config, ctx)

    assert time.monotonic() - started < 5
    records = by_name(caught.value.deployments)
    assert records["broken"].status is DeployStatus.FAILED
    assert records["slow"].status is DeployStatus.SKIPPED
    assert "broken" in str(caught.value) and "slow" not in str(caught.value)


def test_local_command_that_cannot_run_is_a_clean_failure(
    local_target: LocalTarget, ctx: DeployContext
) -> None:
    config = make_config(
        "local", [{"name": "api", "command": ["no-such-program-xyz", "--port", "{port}"]}]
    )

    with pytest.raises(DeployError) as caught:
        local_target.deploy(config, ctx)

    [record] = caught.value.deployments
    assert record.status is DeployStatus.FAILED
    assert record.error == (
        "service 'api': cannot run 'no-such-program-xyz': No such file or directory"
    )


def test_stop_kills_the_whole_process_group_and_can_be_called_twice(
    local_target: LocalTarget, service_script: Path, ctx: DeployContext, tmp_path: Path
) -> None:
    pidfile = tmp_path / "pids.json"
    config = make_config(
        "local", [local_service("api", service_script, "ok", "--pidfile", str(pidfile))]
    )
    [record] = local_target.deploy(config, ctx)
    pids = json.loads(pidfile.read_text())
    assert not gone(pids["service"]) and not gone(pids["child"])

    local_target.stop()
    local_target.stop()

    assert wait_gone(pids["service"]) and wait_gone(pids["child"])
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{record.url}/health")


def test_stop_kills_a_service_that_ignores_sigterm(
    local_target: LocalTarget,
    service_script: Path,
    ctx: DeployContext,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(local_module, "STOP_GRACE_S", 0.3)
    pidfile = tmp_path / "pids.json"
    config = make_config(
        "local", [local_service("api", service_script, "ignore-term", "--pidfile", str(pidfile))]
    )
    local_target.deploy(config, ctx)
    pids = json.loads(pidfile.read_text())

    started = time.monotonic()
    local_target.stop()

    assert time.monotonic() - started < 2
    assert wait_gone(pids["service"]) and wait_gone(pids["child"])


def test_deploying_again_replaces_the_running_services(
    local_target: LocalTarget, service_script: Path, ctx: DeployContext, tmp_path: Path
) -> None:
    pidfile = tmp_path / "pids.json"
    config = make_config(
        "local", [local_service("api", service_script, "ok", "--pidfile", str(pidfile))]
    )
    local_target.deploy(config, ctx)
    first = json.loads(pidfile.read_text())

    [record] = local_target.deploy(config, ctx)

    assert wait_gone(first["service"])
    assert record.status is DeployStatus.READY
    assert httpx.get(f"{record.url}/health").status_code == 200


# --- command target -------------------------------------------------------------------------


def deploy_script(tmp_path: Path) -> Path:
    path = tmp_path / "deploy.py"
    path.write_text(DEPLOY_SCRIPT)
    return path


def test_command_target_failing_command_fails_every_service(
    tmp_path: Path, ctx: DeployContext, http_service: str
) -> None:
    script = deploy_script(tmp_path)
    config = make_config(
        "command",
        [{"name": "auth", "url": http_service}, {"name": "api", "url": http_service}],
        command=["{python}", str(script), "4"],
    )

    with pytest.raises(DeployError) as caught:
        CommandTarget().deploy(config, ctx)

    message = str(caught.value)
    assert "exited with code 4" in message and "error: image push denied" in message
    assert [d.status for d in caught.value.deployments] == [DeployStatus.FAILED] * 2


def test_command_target_zero_exit_still_needs_ready_services(
    tmp_path: Path, ctx: DeployContext
) -> None:
    script = deploy_script(tmp_path)
    config = make_config(
        "command",
        [{"name": "api", "url": unused_url(), "ready_timeout_s": 0.5}],
        command=["{python}", str(script), "0"],
    )

    with pytest.raises(DeployError) as caught:
        CommandTarget().deploy(config, ctx)

    [record] = caught.value.deployments
    assert record.status is DeployStatus.FAILED
    assert record.error and "connection refused" in record.error


def test_command_target_runs_the_command_then_checks_readiness(
    tmp_path: Path, ctx: DeployContext, http_service: str
) -> None:
    script = deploy_script(tmp_path)
    config = make_config(
        "command", [{"name": "api", "url": http_service}], command=["{python}", str(script), "0"]
    )

    [record] = CommandTarget().deploy(config, ctx)

    assert record.status is DeployStatus.READY and record.url == http_service
    assert "deploying staging 7 'abc123'" in (ctx.log_dir / "deploy-command.log").read_text()


def test_command_target_missing_program(ctx: DeployContext, http_service: str) -> None:
    config = make_config(
        "command", [{"name": "api", "url": http_service}], command=["./no-such-deploy.sh"]
    )

    with pytest.raises(DeployError, match="cannot run './no-such-deploy.sh'"):
        CommandTarget().deploy(config, ctx)


# --- none target and readiness --------------------------------------------------------------


def test_none_target_ready_when_url_answers(ctx: DeployContext, http_service: str) -> None:
    config = make_config("none", [{"name": "api", "url": http_service + "/"}])

    [record] = NoneTarget().deploy(config, ctx)

    assert record.status is DeployStatus.READY
    assert record.url == http_service and record.ready_at


def test_none_target_fails_on_wrong_health_path_and_skips_dependents(
    ctx: DeployContext, http_service: str
) -> None:
    config = make_config(
        "none",
        [
            {
                "name": "auth",
                "url": http_service,
                "health_path": "/healthz",
                "ready_timeout_s": 0.5,
            },
            {"name": "api", "url": http_service, "depends_on": ["auth"]},
        ],
    )

    with pytest.raises(DeployError, match=r"/healthz answered 404 after 0\.5 s"):
        NoneTarget().deploy(config, ctx)


def test_wait_ready_gives_up_at_once_when_the_process_is_gone() -> None:
    started = time.monotonic()
    with pytest.raises(NotReady, match="^exited with code 1$"):
        wait_ready(unused_url(), "/health", 10, alive=lambda: "exited with code 1")
    assert time.monotonic() - started < 1


def test_make_target_picks_the_configured_target(service_script: Path) -> None:
    local = make_config("local", [local_service("api", service_script)])
    none = make_config("none", [{"name": "api", "url": "http://example.test"}])
    command = make_config("command", [], command=["true"])

    assert isinstance(make_target(local), LocalTarget)
    assert isinstance(make_target(none), NoneTarget)
    assert isinstance(make_target(command), CommandTarget)
