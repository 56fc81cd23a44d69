"""The between-iterations hook: the fix step (a script, a person, a coding agent)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from deployloop.children import Children


class HookError(Exception):
    """The hook could not run or exited non-zero: the loop stops (exit 1)."""


def run_between_iterations(
    argv: Sequence[str],
    *,
    env_name: str,
    iteration: int,
    report_md: Path,
    summary_json: Path,
    workdir: Path,
    children: Children | None = None,
) -> None:
    command = [part.replace("{python}", sys.executable) for part in argv]
    env = dict(os.environ)
    env.update(
        LOOP_ENV=env_name,
        LOOP_ITERATION=str(iteration),
        LOOP_REPORT_MD=str(report_md.resolve()),
        LOOP_SUMMARY_JSON=str(summary_json.resolve()),
    )
    # The hook shares the terminal: a person may be asked to fix something and press enter,
    # and Ctrl-C reaches it as well as loop.
    try:
        if children is not None:
            code = children.run_in_foreground(command, env=env, cwd=workdir)
        else:
            code = subprocess.run(command, cwd=workdir, env=env, check=False).returncode
    except OSError as exc:
        raise HookError(
            f"loop.between_iterations: cannot run {command[0]!r}: {exc.strerror}"
        ) from None
    if code != 0:
        raise HookError(f"loop.between_iterations ({' '.join(command)}) exited with {code}")
