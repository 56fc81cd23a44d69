"""How the stages start pytest: the tests' interpreter and the environment they see."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from deployloop.config import Config, url_env_var
from deployloop.models import Deployment, IterationRecord
from deployloop.runner.process import PytestSetup
from deployloop.stages.settings import IterationSettings, UsageError


def test_environment(
    config: Config, env_name: str, number: int, deployments: Sequence[Deployment]
) -> dict[str, str]:
    """What the tests see: the caller's environment, `[tests] env`, then LOOP_* (ours win)."""
    env = dict(os.environ)
    env.update(config.tests.env)
    env["LOOP_ENV"] = env_name
    env["LOOP_ITERATION"] = str(number)
    for d in deployments:
        if d.url:
            env[url_env_var(d.service)] = d.url
    return env


def resolve_python(config: Config, workdir: Path) -> str:
    """The tests' interpreter; a missing one is a usage error before anything starts."""
    python = config.tests.python
    if python is None:
        return sys.executable
    found = str(workdir / python) if os.sep in python else shutil.which(python)
    if found is None or not os.access(found, os.X_OK) or os.path.isdir(found):
        raise UsageError(f"tests.python: {python!r} is not an executable interpreter")
    return found


def pytest_setup(
    settings: IterationSettings, record: IterationRecord, deployments: Sequence[Deployment]
) -> PytestSetup:
    return PytestSetup(
        python=resolve_python(settings.config, settings.workdir),
        workdir=settings.workdir,
        pytest_args=tuple(settings.config.tests.pytest_args),
        env=test_environment(settings.config, settings.env, record.number, deployments),
    )
