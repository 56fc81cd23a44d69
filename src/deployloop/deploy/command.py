"""The `command` target: a deploy script of the user's, then readiness of every service.

The script's exit code is not trusted on its own: a zero exit still needs every service's
`url` to answer its health check.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from deployloop.config import Config
from deployloop.deploy.base import DeployContext, DeployError, TargetDefaults
from deployloop.deploy.local import (
    STOP_GRACE_S,
    cannot_run,
    exit_reason,
    fill,
    loop_env,
    stop_children,
    with_log_tail,
)
from deployloop.deploy.none import check_all
from deployloop.models import Deployment, DeployStatus

LOG_NAME = "deploy-command.log"
# A deploy may build and push images: allow it far more than the services' start-up time.
COMMAND_EXTRA_S = 600.0


class CommandTarget(TargetDefaults):
    def deploy(self, config: Config, ctx: DeployContext) -> list[Deployment]:
        problem = run_deploy_command(config, ctx)
        if problem is not None:
            records = [
                Deployment(s.name, DeployStatus.FAILED, url=s.url, error=problem)
                for s in config.deploy.services
            ]
            raise DeployError(problem, records)
        return check_all(config)

    def stop(self) -> None:
        """Nothing to stop: what the command deployed stays deployed."""


def command_timeout_s(config: Config) -> float:
    return sum(s.ready_timeout_s for s in config.deploy.services) + COMMAND_EXTRA_S


def run_deploy_command(config: Config, ctx: DeployContext) -> str | None:
    """Run `deploy.command`; None when it exited 0, else a one-line reason with its log tail."""
    argv = [fill(arg, python=ctx.python) for arg in config.deploy.command or []]
    ctx.log_dir.mkdir(parents=True, exist_ok=True)
    log_path = ctx.log_dir / LOG_NAME
    env = {**ctx.base_env, **loop_env(ctx), "LOOP_GIT_SHA": ctx.git_sha or ""}
    children = ctx.spawner()
    try:
        # Its output goes to the log directly (redacted once it ends): what it starts in the
        # background may outlive loop, and a pipe to loop would end with loop.
        child = children.start(argv, env=env, log=log_path, through_loop=False)
    except OSError as exc:
        return f"deploy command: {cannot_run(argv, exc)}"
    timeout_s = command_timeout_s(config)
    try:
        returncode = child.popen.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        stop_children([(children, child)], STOP_GRACE_S)
        return _failure(f"timed out after {timeout_s:.0f} s and was killed", log_path)
    except BaseException:
        stop_children([(children, child)], STOP_GRACE_S)  # Ctrl-C: it runs in its own session
        raise
    # What it left running (a server started in the background) is what it deployed: it
    # stays, untracked.
    children.finished(child)
    if returncode != 0:
        return _failure(exit_reason(returncode), log_path)
    return None


def _failure(reason: str, log_path: Path) -> str:
    return with_log_tail(f"deploy command {reason}", log_path)
