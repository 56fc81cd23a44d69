"""The project's pytest config, read as pytest reads it (never run)."""

from __future__ import annotations

import configparser
import shlex
import tomllib
from dataclasses import dataclass
from pathlib import Path

from deployloop.init.base import DEFAULT_PYTHON_FILES, InitError
from deployloop.safetext import one_line

# --- the project's pytest config -------------------------------------------------------------


@dataclass(frozen=True)
class PytestConfig:
    source: str | None  # the file it came from, None when there is none
    testpaths: tuple[str, ...]
    python_files: tuple[str, ...]
    norecursedirs: tuple[str, ...]


def read_pytest_config(workdir: Path) -> PytestConfig:
    """The options that say where pytest looks, from the file pytest itself would read in
    `workdir` (the same files, in pytest's order of precedence)."""
    found = _pytest_options(workdir)
    source, options = found if found else (None, {})
    return PytestConfig(
        source=source,
        testpaths=_words(options.get("testpaths")),
        python_files=_words(options.get("python_files")) or DEFAULT_PYTHON_FILES,
        norecursedirs=_words(options.get("norecursedirs")),
    )


def _pytest_options(workdir: Path) -> tuple[str, dict[str, object]] | None:
    for name in ("pytest.toml", ".pytest.toml"):
        if (workdir / name).is_file():
            table = _toml(workdir / name).get("pytest", {})
            return name, dict(table) if isinstance(table, dict) else {}
    for name in ("pytest.ini", ".pytest.ini"):
        if (workdir / name).is_file():
            # pytest takes these files as its config even without a [pytest] section.
            return name, _ini_section(workdir / name, "pytest") or {}
    if (workdir / "pyproject.toml").is_file():
        tool = _toml(workdir / "pyproject.toml").get("tool", {})
        table = tool.get("pytest") if isinstance(tool, dict) else None
        if isinstance(table, dict):
            ini_options = table.get("ini_options")
            if isinstance(ini_options, dict):
                return "pyproject.toml", dict(ini_options)
            native = {k: v for k, v in table.items() if k != "ini_options"}
            if native:
                return "pyproject.toml", native
    for name, section in (("tox.ini", "pytest"), ("setup.cfg", "tool:pytest")):
        if (workdir / name).is_file():
            options = _ini_section(workdir / name, section)
            if options is not None:
                return name, options
    return None


def _toml(path: Path) -> dict[str, object]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InitError(f"{path.name}: cannot read it ({one_line(str(exc))}); pytest could not"
                        " either: fix it first") from None


def _ini_section(path: Path, section: str) -> dict[str, object] | None:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        parser.read_string(path.read_text(encoding="utf-8"), source=path.name)
    except (OSError, UnicodeDecodeError, configparser.Error) as exc:
        raise InitError(f"{path.name}: cannot read it ({one_line(str(exc))}); pytest could not"
                        " either: fix it first") from None
    if not parser.has_section(section):
        return None
    return dict(parser.items(section))


def _words(value: object) -> tuple[str, ...]:
    """An option pytest reads as a list of args: a TOML list, or a string split like a shell
    line (which is what pytest does with INI values)."""
    if isinstance(value, list):
        return tuple(str(v) for v in value if str(v))
    if isinstance(value, str):
        try:
            return tuple(shlex.split(value))
        except ValueError:  # an unclosed quote: pytest would refuse it, a plain split is closer
            return tuple(value.split())
    return ()
