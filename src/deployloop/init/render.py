"""The commented config `loop init` writes, and writing it in place atomically."""

from __future__ import annotations

import os
import secrets
import shlex
from collections.abc import Sequence
from pathlib import Path

from deployloop.init.base import MANY_FILES, InitError
from deployloop.init.pytest_config import PytestConfig
from deployloop.init.suites import Suite, title
from deployloop.safetext import one_line

# --- writing ---------------------------------------------------------------------------------


def render(
    *,
    env: str,
    where: str,
    pytest_config: PytestConfig,
    file_count: int,
    suites: Sequence[Suite],
    markers: Sequence[tuple[str, int]],
    python: str | None,
    shown: str,
) -> str:
    workers = min(4, os.cpu_count() or 1)
    args = f" --env {env}"
    config_dir = shown.rsplit("/", 1)[0] if "/" in shown else "."
    if config_dir != "configs":  # not where loop looks by default
        args += f" --config-dir {shlex.quote(config_dir)}"
    patterns = " ".join(pytest_config.python_files)
    found = (
        f"deployloop config for the env {_q(env)}, written by `loop init` from the"
        f" {file_count} test file{'s' if file_count > 1 else ''} ({_comment(patterns)})"
        f" found under {_comment(where)}."
    )
    lines = [
        *_wrapped(found, "# "),
        *_wrapped(
            f"Check it with `loop plan{args}` (it lists every test it finds), then run the loop"
            f" with `loop run{args}`. One file per environment: <config dir>/<env>.toml.",
            "# ",
        ),
        "# Paths and commands are relative to the folder loop runs in (the project root).",
        "# Unknown keys are errors, so a typo is caught before anything runs.",
        "",
        "# When the loop stops: the pass rate to reach, and how many iterations it may take.",
        "[loop]",
        "target_pass_rate = 100.0        # percent of executed tests (passed + failed + errors)",
        "max_iterations = 5              # stop after this many iterations, target reached or not",
        "stall_iterations = 3            # stop after 3 iterations without improvement; 0 = never",
        "# A fix step run after an iteration that missed the target (a script, a person, a",
        "# coding agent); it gets LOOP_REPORT_MD and LOOP_SUMMARY_JSON. Without one, the next",
        "# iteration runs the same code again, which tells flaky tests from broken ones and no",
        "# more: stall_iterations then ends the loop.",
        '# between_iterations = ["{python}", "scripts/fix.py"]',
        "",
        "# What to deploy before the tests run. \"none\" deploys nothing: right for tests that",
        "# need no service, or for services that already run somewhere (give each a url).",
        "[deploy]",
        'target = "none"                 # local | command | cloudrun | none',
        "",
        "# TODO if the tests need a service: add one [[deploy.services]] table per service and",
        "# set target (\"local\" starts `command` on this machine, with {python} the interpreter",
        "# running loop and {port} a free port); the tests get its URL as LOOP_<NAME>_URL.",
        "# [[deploy.services]]",
        '# name = "myservice"',
        '# command = ["{python}", "-m", "myservice", "--port", "{port}"]',
        '# health_path = "/health"       # ready when GET <url><health_path> answers 2xx',
        "# ready_timeout_s = 30",
        '# # url = "https://myservice.staging.example.com"   # for target "none" or "command"',
        "",
        "# How the tests run: pytest processes started by loop, never your tests imported by it.",
        "[tests]",
    ]
    if python is not None:
        setting = f"python = {_q(python)}"
        lines.append(f"{setting:<31} # the project's interpreter: it has pytest")
    else:
        lines.append('# python = ".venv/bin/python"   # interpreter for pytest; default: the one'
                     " running loop")
    lines += [
        f"workers = {workers}                     # pytest workers running the tests",
        "suite_timeout_s = 900           # a suite still running after this is stopped",
        "pytest_args = []                # added to every pytest command, e.g. [\"-x\"]",
        '# env = { E2E_ENV = "staging" } # extra environment for the tests',
        "",
        "# The suites: a name for the reports, the files or folders each runs, and a priority",
        "# (lower runs first). One suite per test file, but one per folder for a folder with",
        f"# more than {MANY_FILES} test files. Rename, merge or split them as you like.",
    ]
    lines += _priority_comment(suites)
    if markers:
        used = ", ".join(f"{name} ({count} file{'s' if count > 1 else ''})"
                         for name, count in markers)
        lines += [
            "# Markers in use (@pytest.mark.<name>, files using each):",
            *_wrapped(used, "#   "),
            "# A suite can select tests by marker with a -m expression. Its tests then run twice",
            "# unless the other suites leave them out (markers = \"not <name>\"):",
        ]
        example = markers[0][0]
        lines += [
            "# [[tests.suites]]",
            f"# name = {_q(title(example) or example)}",
            f"# paths = [{_q(_common_paths(suites))}]",
            f"# priority = {max(s.priority for s in suites) + 1}",
            f"# markers = {_q(example)}",
        ]
    for suite in suites:
        lines += [
            "",
            "[[tests.suites]]",
            f"name = {_q(suite.name)}",
            *_paths_lines(suite.paths),
            f"priority = {suite.priority}",
        ]
    lines += [
        "",
        "# A failure you know about and cannot fix yet: it stays a failure, and the reports",
        "# show the reason next to it. The format:",
        "# [[known_issues]]",
        '# id = "login-503"',
        '# match = "login failed: HTTP 503"   # regex over the failure message',
        '# reason = "the staging identity provider is down on Mondays; TICKET-12"',
        "# expires = 2026-12-31                # after this date it is reported as expired",
        "",
    ]
    return "\n".join(lines)


def _paths_lines(paths: Sequence[str]) -> list[str]:
    one = f"paths = [{', '.join(_q(p) for p in paths)}]"
    if len(one) <= 100 or len(paths) == 1:
        return [one]
    return ["paths = [", *(f"    {_q(p)}," for p in paths), "]"]


def _priority_comment(suites: Sequence[Suite]) -> list[str]:
    if all(s.priority == 1 for s in suites):
        return [
            "# Every suite has priority 1: no file or folder name says otherwise (priority<N>,",
            "# p<N>, smoke). Give the critical ones 1 and the rest higher numbers.",
        ]
    return [
        "# Priorities come from the names: priority<N> or p<N> gives N, smoke suites run",
        "# first, the others after the numbered ones.",
    ]


def _common_paths(suites: Sequence[Suite]) -> str:
    paths = [p for s in suites for p in s.paths]
    return (os.path.commonpath(paths) or ".") if len(paths) > 1 else paths[0]


def _wrapped(text: str, prefix: str, width: int = 92) -> list[str]:
    lines: list[str] = []
    line = ""
    for word in text.split(" "):
        if line and len(prefix) + len(line) + 1 + len(word) > width:
            lines.append(prefix + line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    if line:
        lines.append(prefix + line)
    return lines


def _q(value: str) -> str:
    """`value` as a TOML basic string."""
    out = ['"']
    for char in value:
        if char == '"':
            out.append('\\"')
        elif char == "\\":
            out.append("\\\\")
        elif char < " " or char == "\x7f":
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def _comment(text: str) -> str:
    # A comment ends at a newline and TOML allows no control character in it.
    return one_line(text)


def shown_path(path: Path, workdir: Path) -> str:
    try:
        return path.relative_to(workdir).as_posix()
    except ValueError:
        return str(path)


def write_atomic(path: Path, text: str, *, replace: bool, shown: str) -> None:
    """Write `path` whole or not at all; without `replace`, never over a file that appeared
    since the check (a hard link, unlike a rename, refuses to)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        # os.open with 0o666 lets the umask decide, as for any file the user writes.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as exc:
        raise InitError(f"{shown}: cannot write it: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if replace:
            os.replace(tmp, path)
            return
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise InitError(
                f"{shown} already exists: edit it, or pass --force to replace it"
            ) from None
        except OSError:
            # Some file systems have no hard links; the check above is the best left.
            if path.exists() or path.is_symlink():
                raise InitError(
                    f"{shown} already exists: edit it, or pass --force to replace it"
                ) from None
            os.replace(tmp, path)
    except OSError as exc:
        raise InitError(f"{shown}: cannot write it: {exc.strerror or exc}") from None
    finally:
        tmp.unlink(missing_ok=True)
