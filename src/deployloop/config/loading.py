"""Reading a config file and turning every problem in it into one line: path:line: key."""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import (
    ValidationError,
)

from deployloop.config.cross_checks import cross_check, masked
from deployloop.config.keys import Problem, at_line
from deployloop.config.models import Config, ConfigError
from deployloop.config.problems import check_document, pydantic_problems, report, unshadowed
from deployloop.config.toml_text import MAX_NESTING, long_number_line, toml_error, too_deep
from deployloop.env_refs import substitute
from deployloop.safetext import one_line


def config_path(config_dir: Path, env: str) -> Path:
    return config_dir / f"{env}.toml"


def load_config(config_dir: Path, env: str) -> Config:
    """Read and validate the config of `env`; raise ConfigError with a one-line reason."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", env):
        raise ConfigError(f"--env {env!r}: use letters, digits, '.', '_' and '-' only")
    path = config_path(config_dir, env)
    try:
        # is_file() and glob() raise, rather than answer False, on a folder loop may not enter.
        if not path.is_file():
            known = sorted(p.stem for p in config_dir.glob("*.toml")) if config_dir.is_dir() else []
            hint = f" (found: {', '.join(known)})" if known else f" (no configs in {config_dir}/)"
            raise ConfigError(f"{path}: no config for env {env!r}{hint}")
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return parse_config(text, source=str(path))


def parse_config(text: str, source: str, environ: Mapping[str, str] | None = None) -> Config:
    """Validate a config's text; raise ConfigError, one line per problem, each naming
    `source`, the line and the key (see _problem_line), in the order of the file.

    Text that is not TOML stops at its first error. Otherwise every check runs and reports
    all it finds: the document checks, pydantic, and the checks that span keys. These read
    the document, not the model, so that they run when pydantic refuses it too.
    """
    # Editors on Windows start UTF-8 files with a byte order mark; TOML has no place for it.
    text = text.removeprefix("\ufeff")
    line = too_deep(text, MAX_NESTING)
    if line is not None:
        raise ConfigError(
            at_line(
                source,
                line,
                f"arrays or tables nested too deeply (more than {MAX_NESTING} levels)",
            )
        )
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(toml_error(source, text, exc)) from None
    except ValueError:
        # tomllib hands a decimal to int(), which refuses more than
        # sys.get_int_max_str_digits() digits with a plain ValueError.
        raise ConfigError(
            at_line(source, long_number_line(text), "not valid TOML: integer too long")
        ) from None
    except RecursionError:  # too_deep missed a way to nest; cannot name the line
        raise ConfigError(at_line(source, 1, "arrays or tables nested too deeply")) from None
    raw, unset = _with_environment(raw, os.environ if environ is None else environ)
    document = unset + check_document(raw)
    config: Config | None = None
    refused: list[Problem] = []
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        refused = pydantic_problems(exc)
    # A value pydantic refused is left out of the checks that span keys: `name = "a b"`
    # would make every `depends_on = ["a"]` an unknown service too.
    spanning = cross_check(masked(raw, [p.key for p in refused]))
    problems = document + unshadowed(refused + spanning, document)
    # `comand = [...]` makes `command` missing too: the typo is the one thing to fix.
    meant = {p.meant for p in problems if p.meant is not None}
    problems = [p for p in problems if not (p.missing and p.key in meant)]
    if config is not None and not problems:
        return config
    raise ConfigError(report(source, text, problems) or f"{source}: not a valid config")


def _with_environment(
    raw: dict[str, Any], environ: Mapping[str, str]
) -> tuple[dict[str, Any], list[Problem]]:
    """The document with every `{env:NAME}` in its strings replaced (env_refs), in place, and
    a problem for each variable that is not set. Iterative, as check_document is: dotted keys
    nest deeper than recursion goes."""
    problems: list[Problem] = []
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(raw, ())]
    while stack:
        container, key = stack.pop()
        items = container.items() if isinstance(container, dict) else enumerate(container)
        for name, value in list(items):
            if isinstance(value, str):
                if "{env:" not in value:
                    continue
                text, missing = substitute(value, environ)
                container[name] = text
                for variable in missing:
                    problems.append(Problem(
                        (*key, name),
                        f"{{env:{variable}}}: the environment variable {variable} is not set"
                        f" (export {variable}=..., or write the value here)",
                    ))
            elif isinstance(value, dict | list):
                stack.append((value, (*key, name)))
    return raw, problems


def check_markers(config: Config, source: str) -> None:
    """Raise ConfigError for each suite whose `markers` pytest's -m would refuse.

    Not part of load_config: pytest's parser costs ~0.18 s to import, and `loop status`
    loads configs and must start fast. `loop run` and `loop plan` call it.
    """
    if all(suite.markers is None for suite in config.tests.suites):
        return  # nothing to check: pytest's parser is not imported
    from _pytest.mark.expression import Expression

    lines = []
    for i, suite in enumerate(config.tests.suites):
        if suite.markers is None:
            continue
        try:
            Expression.compile(suite.markers)
        except RecursionError:
            reason = "nested too deeply"
        except SyntaxError as exc:  # pytest >= 8.4
            reason = f"at column {exc.offset}: {exc.msg}"
        except Exception as exc:  # pytest < 8.4: ParseError, whose text has the column
            reason = str(exc)
        else:
            continue
        lines.append(
            f"{source}: tests.suites[{i}].markers: not a valid -m expression: {one_line(reason)}"
        )
    if lines:
        raise ConfigError("\n".join(lines))
