"""Finding the test files, the markers they use, and an interpreter that has pytest."""

from __future__ import annotations

import fnmatch
import glob
import importlib.util
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from deployloop.init.base import (
    BUILTIN_MARKS,
    FALLBACK_ROOTS,
    MARK,
    MARK_SCAN_BYTES,
    PROBE_TIMEOUT_S,
    PROJECT_VENVS,
    SKIPPED_DIRS,
    InitError,
)
from deployloop.init.pytest_config import PytestConfig
from deployloop.safetext import has_unsafe, one_line

# --- finding the test files ------------------------------------------------------------------


def test_roots(
    workdir: Path, pytest_config: PytestConfig, notes: list[str]
) -> tuple[list[Path], str]:
    """Where to look, and how to name that place in a message."""
    if pytest_config.testpaths:
        roots: list[Path] = []
        for entry in pytest_config.testpaths:
            entry = entry.split("::", 1)[0]
            if glob.has_magic(entry):
                roots.extend(workdir / p for p in sorted(glob.glob(entry, root_dir=workdir)))
            elif (workdir / entry).exists():
                roots.append(workdir / entry)
        where = (
            ", ".join(one_line(t) for t in pytest_config.testpaths)
            + f" (testpaths in {pytest_config.source})"
        )
        if roots:
            return roots, where
        # pytest, too, falls back to looking everywhere when no testpaths entry exists.
        notes.append(f"none of the testpaths in {pytest_config.source} exists; looked elsewhere")
    found = [
        workdir / name
        for name in FALLBACK_ROOTS
        if (workdir / name).is_dir() and _any_test_file(workdir / name, pytest_config)
    ]
    if found:
        return found, ", ".join(f"{p.name}/" for p in found)
    return [workdir], "the project root"


def _any_test_file(root: Path, pytest_config: PytestConfig) -> bool:
    return next(_walk_test_files(root, pytest_config), None) is not None


def find_test_files(
    roots: Sequence[Path], workdir: Path, pytest_config: PytestConfig
) -> tuple[list[Path], int]:
    """The test files under `roots`, each once, and how many were left out for a path no
    config could hold."""
    files: list[Path] = []
    seen: set[str] = set()
    unusable = 0
    for root in roots:
        if root.is_file():
            # pytest collects a file it is given whatever its name, but only Python ones.
            found: Iterable[Path] = [root] if root.suffix == ".py" else []
        else:
            found = _walk_test_files(root, pytest_config)
        for path in found:
            key = os.path.normcase(os.path.realpath(path))
            if key in seen:  # testpaths that overlap, or a file linked twice
                continue
            seen.add(key)
            if not _usable(relative_path(path, workdir)):
                unusable += 1
                continue
            files.append(path)
    return files, unusable


def _walk_test_files(root: Path, pytest_config: PytestConfig) -> Iterator[Path]:
    skipped = SKIPPED_DIRS + pytest_config.norecursedirs
    patterns = pytest_config.python_files
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(
            d for d in dirnames
            if not any(fnmatch.fnmatchcase(d, p) for p in skipped)
            and not (here / d / "pyvenv.cfg").exists()  # a virtualenv under any name
        )
        for name in sorted(filenames):
            if name in ("conftest.py", "__init__.py") or not name.endswith(".py"):
                continue
            path = here / name
            if _matches(path, patterns):
                yield path


def _matches(path: Path, patterns: Sequence[str]) -> bool:
    # As pytest does: a pattern with a slash matches the end of the path, else the name.
    return any(
        fnmatch.fnmatch(path.as_posix(), "*/" + pattern.lstrip("/"))
        if "/" in pattern
        else fnmatch.fnmatch(path.name, pattern)
        for pattern in patterns
    )


def _usable(rel: str) -> bool:
    # config.py refuses control characters in paths; lone surrogates cannot be written out.
    return not has_unsafe(rel) and "\t" not in rel and "\n" not in rel


def relative_path(path: Path, workdir: Path) -> str:
    """`path` as a config holds it: relative to `workdir` (with `..` when outside), posix."""
    return Path(os.path.relpath(path, workdir)).as_posix()


# --- markers and interpreter -----------------------------------------------------------------


def markers_in_use(files: Iterable[Path]) -> list[tuple[str, int]]:
    """(marker, number of files using it), most used first: what -m could select by."""
    counts: Counter[str] = Counter()
    for path in files:
        try:
            with path.open("rb") as f:
                text = f.read(MARK_SCAN_BYTES).decode("utf-8", errors="replace")
        except OSError:
            continue
        counts.update(set(MARK.findall(text)) - BUILTIN_MARKS)
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


def choose_python(workdir: Path, notes: list[str]) -> str | None:
    without: list[str] = []
    for venv in PROJECT_VENVS:
        python = workdir / venv / "bin" / "python"
        if not (python.is_file() and os.access(python, os.X_OK)):
            continue
        if _has_pytest(python, workdir):
            return f"{venv}/bin/python"
        without.append(f"{venv}/bin/python")
    # An activated virtual environment kept elsewhere (virtualenvwrapper, poetry's cache):
    # the one the user runs the tests with by hand.
    active = os.environ.get("VIRTUAL_ENV")
    if active:
        python = Path(active) / "bin" / "python"
        own = Path(sys.prefix).resolve() == Path(active).resolve()
        if not own and python.is_file() and os.access(python, os.X_OK):
            if _has_pytest(python, workdir):
                return str(python)
            without.append(str(python))
    if not _loop_has_pytest():
        raise InitError(
            "no Python with pytest found: install pytest in .venv or set [tests] python"
        )
    if without:
        notes.append(
            f"{without[0]} has no pytest, so the tests run with loop's own Python"
            f" ({sys.executable}): if they need the project's packages, install pytest there"
            f" and set [tests] python = \"{without[0]}\""
        )
    else:
        notes.append(
            f"no project virtual environment found: the tests run with loop's own Python"
            f" ({sys.executable}); if they import the project's packages, set [tests] python"
            " to the interpreter you run them with"
        )
    return None


def _has_pytest(python: Path, workdir: Path) -> bool:
    try:
        done = subprocess.run(
            [str(python), "-c", "import pytest"],
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=PROBE_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def _loop_has_pytest() -> bool:
    # In-process: loop depends on pytest, so this only fails in a broken install.
    return importlib.util.find_spec("pytest") is not None
