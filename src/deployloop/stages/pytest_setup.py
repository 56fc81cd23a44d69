"""How the stages start pytest: the tests' interpreter and the environment they see."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from deployloop.config import Config, url_env_var
from deployloop.models import Deployment, IterationRecord
from deployloop.runner.plugin.deployloop_redact import Redactor, secret_name
from deployloop.runner.process import PLUGIN_DIR, PytestSetup, Redaction
from deployloop.runner.suite_paths import tests_root
from deployloop.safetext import one_line
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


# What loop's plugin needs of pytest: TestReport and friends exported at the top level.
MIN_PYTEST = (7, 0)
_PROBE = (
    "import sys\n"
    "try:\n"
    "    import pytest\n"
    "except Exception as exc:\n"
    "    print('NOPYTEST', type(exc).__name__ + ': ' + str(exc)); sys.exit(0)\n"
    "try:\n"
    "    import deployloop_plugin\n"
    "except Exception as exc:\n"
    "    print('NOPLUGIN', pytest.__version__, type(exc).__name__ + ': ' + str(exc))\n"
    "    sys.exit(0)\n"
    "print('OK', pytest.__version__)\n"
)


def check_interpreter(python: str, env: Mapping[str, str], workdir: Path) -> str:
    """The tests' interpreter can run loop's pytest plugin: it starts, imports pytest (a
    supported version) and the plugin. Returns pytest's version; raises UsageError with the
    cause and the fix in one line."""
    plugin_path = os.pathsep.join(p for p in (str(PLUGIN_DIR), env.get("PYTHONPATH")) if p)
    try:
        done = subprocess.run(
            [python, "-c", _PROBE],
            cwd=workdir,
            env={**env, "PYTHONPATH": plugin_path},
            capture_output=True,
            text=True,
            errors="replace",
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UsageError(f"tests.python: cannot run {python}: {exc}") from None
    words = (done.stdout.strip().splitlines() or [""])[-1].split(" ", 2)
    if done.returncode != 0 or words[0] not in ("OK", "NOPYTEST", "NOPLUGIN"):
        why = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise UsageError(f"tests.python: {python} does not run: {one_line(why)}")
    if words[0] == "NOPYTEST":
        raise UsageError(
            f"tests.python: {python} has no pytest ({one_line(' '.join(words[1:]))}):"
            f" install it there ({python} -m pip install pytest) or set [tests] python"
        )
    version = words[1]
    if _version(version) < MIN_PYTEST:
        needed = ".".join(map(str, MIN_PYTEST))
        raise UsageError(
            f"tests.python: pytest {version} in {python} is too old for loop (it needs"
            f" {needed} or newer): {python} -m pip install -U pytest"
        )
    if words[0] == "NOPLUGIN":
        raise UsageError(
            f"tests.python: loop's pytest plugin does not load in {python} with pytest"
            f" {version}: {one_line(words[2] if len(words) > 2 else '')}"
        )
    return version


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split(".")[:2]:
        digits = "".join(c for c in piece if c.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


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
