"""What `loop init` returns and refuses, and the conventions it looks for."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class InitResult:
    path: Path  # the config written
    suites: tuple[str, ...]  # suite names, in the order written
    python: str | None  # the tests' interpreter written to [tests] python, None = loop's own
    notes: tuple[str, ...]  # one-line things the user should know/do next (TODOs), may be empty


class InitError(Exception):
    """Nothing was written; the message names what to fix, in one line."""


ENV_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
# Past this many files of its own, a folder is one suite: a suite per file would bury the
# report's table under rows, and each suite costs a row and a scheduling unit.
MANY_FILES = 12
DEFAULT_PYTHON_FILES = ("test_*.py", "*_test.py")
FALLBACK_ROOTS = ("tests", "test", "e2e")
PROJECT_VENVS = (".venv", "venv", "env")
# pytest's own default norecursedirs, and what else never holds a project's tests.
SKIPPED_DIRS = (
    "*.egg", ".*", "_darcs", "build", "CVS", "dist", "node_modules", "venv", "{arch}",
    ".venv", ".git", ".loop", "site-packages", "__pycache__", "*.egg-info",
)
# Folder names that say what kind of tests they hold: a natural edge between suites.
KINDS = frozenset({
    "e2e", "end2end", "endtoend", "end_to_end", "integration", "smoke", "acceptance",
    "functional", "system", "regression", "contract",
})
BUILTIN_MARKS = frozenset({
    "parametrize", "skip", "skipif", "xfail", "usefixtures", "filterwarnings",
    "tryfirst", "trylast",
})
MARK = re.compile(r"\bpytest\s*\.\s*mark\s*\.\s*([A-Za-z_][A-Za-z0-9_]*)")
# Marks sit at the top of tests; a generated data file of megabytes is not worth reading whole.
MARK_SCAN_BYTES = 1_000_000
PRIORITY_TOKEN = re.compile(r"(?:priority|prio|p)(\d{1,3})")
PROBE_TIMEOUT_S = 30
