"""How the stages start pytest: the tests' interpreter and the environment they see."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from deployloop.config import Config, url_env_var
from deployloop.models import Deployment, IterationRecord
from deployloop.runner.plugin.deployloop_redact import Redactor, secret_name
from deployloop.runner.process import PytestSetup, Redaction
from deployloop.runner.suite_paths import tests_root
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
        rootdir=tests_root(settings.config.tests.suites, settings.workdir),
        children=settings.children,
        redaction=settings.redaction,
    )


def redaction_for(config: Config, environ: Mapping[str, str]) -> Redaction:
    """What a run hides: secret-looking variables of its environment, `[tests] env`, the
    services' `env` (ID tokens join as they are minted, through Redaction.plugin_env)."""
    patterns = tuple(config.redaction.names)
    names = frozenset(config.tests.env)
    values: dict[str, str] = {}
    for service in config.deploy.services:
        for name, value in service.env.items():
            label = name if values.get(name, value) == value else f"{service.name}.{name}"
            values[label] = value
    redactor = Redactor()
    redactor.add_env(environ, patterns)
    redactor.add_env(config.tests.env, patterns, always=names)
    for label, value in values.items():
        redactor.add(label, value, anywhere=secret_name(label.rsplit(".", 1)[-1], patterns))
    return Redaction(patterns, names, values, redactor)
