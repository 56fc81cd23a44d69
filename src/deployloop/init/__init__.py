"""`loop init`: write a commented `configs/<env>.toml` from the tests found in a project.

The config it writes runs the tests as they are, with no service (`target = "none"`), so
`loop plan` and `loop run` work at once on tests that need none; comments show what to add.

Finding the tests never imports them (nor runs pytest, but for one `import pytest` probe of
an interpreter): test files are found by name, the way pytest would find them, under the
project's `testpaths` if its pytest config sets them, else under `tests/`, `test/` and `e2e/`,
else anywhere in the project.

Suites:
- a folder with at most 12 test files of its own gives one suite per file; a folder with more
  gives one suite for the folder, its subfolders included;
- a folder named like a kind of test (`e2e`, `integration`, `smoke`, ...) is never swallowed by
  a folder suite above it: it is decided on its own;
- names come from the path below the deepest folder holding every suite, one part per folder,
  joined by " / ", with `test_`/`_test` and folders named `tests` dropped and each word
  capitalized: `tests/test_priority1_critical.py` is "Priority 1 Critical", `tests/api/
  test_users.py` beside `tests/test_health.py` is "Api / Users". Two suites that would share a
  name get their path added to it;
- priorities: `priority<N>` or `p<N>` in a file or folder name gives N; smoke suites run
  before every numbered one; the rest run after the numbered ones. With neither, all are 1.
"""

from __future__ import annotations

import os
from pathlib import Path

from deployloop.init.base import ENV_NAME, InitError, InitResult
from deployloop.init.discover import choose_python, find_test_files, markers_in_use, test_roots
from deployloop.init.pytest_config import read_pytest_config
from deployloop.init.render import render, shown_path, write_atomic
from deployloop.init.suites import plan_suites
from deployloop.safetext import one_line

__all__ = ["InitError", "InitResult", "init_project"]


def init_project(workdir: Path, env: str, config_dir: Path, *, force: bool = False) -> InitResult:
    """Find the tests under `workdir` and write `config_dir/<env>.toml` for them.

    A relative `config_dir` is taken from `workdir`, where loop will run. Raises InitError,
    having written nothing, for a bad env name, an existing config (unless `force`), no test
    files, or no interpreter with pytest.
    """
    if not ENV_NAME.fullmatch(env):
        raise InitError(
            f"env name {env!r}: use letters, digits, '.', '_' and '-', starting with a letter"
            " or digit"
        )
    workdir = Path(os.path.abspath(workdir))
    config_dir = config_dir if config_dir.is_absolute() else workdir / config_dir
    path = config_dir / f"{env}.toml"
    shown = one_line(shown_path(path, workdir))
    if not force and (path.exists() or path.is_symlink()):
        raise InitError(f"{shown} already exists: edit it, or pass --force to replace it")

    notes: list[str] = []
    pytest_config = read_pytest_config(workdir)
    roots, where = test_roots(workdir, pytest_config, notes)
    files, unusable = find_test_files(roots, workdir, pytest_config)
    if unusable:
        notes.append(
            f"left out {unusable} test file(s) whose path has control characters or bytes that"
            " are not UTF-8: rename them to run them under loop"
        )
    if not files:
        patterns = one_line(" ".join(pytest_config.python_files))
        raise InitError(
            f"no test files ({patterns}) found under {where}: set testpaths in the project's"
            " pytest config (pytest.ini or pyproject.toml) to the folder that holds them"
        )
    suites = plan_suites(files, workdir, pytest_config.python_files)
    markers = markers_in_use(files)
    python = choose_python(workdir, notes)

    text = render(
        env=env,
        where=where,
        pytest_config=pytest_config,
        file_count=len(files),
        suites=suites,
        markers=markers,
        python=python,
        shown=shown,
    )
    write_atomic(path, text, replace=force, shown=shown)

    notes.insert(0, f"no services configured: add [[deploy.services]] in {shown} if the tests"
                    " need one")
    if all(s.priority == 1 for s in suites) and len(suites) > 1:
        notes.append(
            f"every suite has priority 1 (no priority<N>, p<N> or smoke in the file names):"
            f" set priority in {shown} to run the critical ones first"
        )
    if markers:
        names = ", ".join(name for name, _ in markers)
        notes.append(
            f"found {len(markers)} marker(s) in use: {names} (see the comment in {shown})"
        )
    return InitResult(path, tuple(s.name for s in suites), python, tuple(notes))
