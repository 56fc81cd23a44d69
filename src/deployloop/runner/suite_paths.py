"""Which suite a collected test belongs to, by the paths in the config.

A suite's path is a folder, a file or a node id (`file::Class::test`); a test belongs to the
suite whose path names it most specifically. Paths resolve once, files once per file: the
matching runs for every test against every path.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from deployloop.config import SuiteConfig

_NODE_ID = 10_000  # a node id beats a file, which beats any folder (scored by its depth)
_FILE = 5_000


@dataclass(frozen=True)
class _Spec:
    suite: SuiteConfig
    target: Path
    rest: str  # what follows `file::` in a node-id path, else ""
    length: int


class SuitePaths:
    def __init__(
        self, suites: Sequence[SuiteConfig], workdir: Path, rootdir: Path | None = None
    ) -> None:
        self._workdir = workdir
        self._rootdir = rootdir or workdir
        self._specs = []
        for suite in suites:
            for spec in suite.paths:
                spec_file, _, rest = spec.partition("::")
                self._specs.append(_Spec(suite, self._resolve(spec_file), rest, len(spec)))
        self._files: dict[str, tuple[Path, frozenset[Path]]] = {}

    def scores(self, nodeid: str, path: str = "") -> dict[str, int]:
        """Per suite whose paths hold the test, how specifically (higher: more)."""
        if path:
            item_file, parents = self._file(path)
        else:  # a node id's file is relative to pytest's rootdir
            item_file, parents = self._file(str(self._rootdir / file_of(nodeid)))
        _, _, item_rest = nodeid.partition("::")
        out: dict[str, int] = {}
        for spec in self._specs:
            score = _score(spec, item_file, parents, item_rest)
            if score is not None and score > out.get(spec.suite.name, -1):
                out[spec.suite.name] = score
        return out

    def owner(self, nodeid: str, path: str = "") -> str | None:
        """The suite that names the test most specifically (the first such, on a tie)."""
        scores = self.scores(nodeid, path)
        return max(scores, key=lambda name: scores[name]) if scores else None

    def _file(self, path: str) -> tuple[Path, frozenset[Path]]:
        if path not in self._files:
            resolved = self._resolve(path)
            self._files[path] = (resolved, frozenset(resolved.parents))
        return self._files[path]

    def _resolve(self, path: str) -> Path:
        p = Path(path)
        return (p if p.is_absolute() else self._workdir / p).resolve()


def _score(spec: _Spec, item_file: Path, parents: frozenset[Path], item_rest: str) -> int | None:
    if spec.rest:
        if item_file == spec.target and (
            item_rest == spec.rest
            or item_rest.startswith(spec.rest + "::")
            or item_rest.startswith(spec.rest + "[")
        ):
            return _NODE_ID + spec.length
        return None
    if item_file == spec.target:
        return _FILE + spec.length
    if spec.target in parents:
        return len(spec.target.parts)
    return None


def file_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def tests_root(suites: Sequence[SuiteConfig], workdir: Path) -> Path:
    """The folder pytest's node ids are relative to (`--rootdir`): the working directory,
    or, when suite paths lie outside it (tests kept in a repository beside the project), the
    nearest folder above it that holds them all. pytest names a test outside its rootdir
    relative to whatever path it was given, so the same test would get one id when its
    folder is collected and another when it runs by id."""
    root = workdir.resolve()
    outside = False
    for suite in suites:
        for spec in suite.paths:
            path = Path(spec.partition("::")[0])
            target = (path if path.is_absolute() else workdir / path).resolve()
            if not target.is_relative_to(root):
                root = Path(os.path.commonpath([root, target]))
                outside = True
    return root if outside else workdir


def node_arg(nodeid: str, workdir: Path, rootdir: Path | None) -> str:
    """How to name a test by its node id on a pytest command line run in `workdir`."""
    if rootdir is None or rootdir == workdir:
        return nodeid
    file, sep, rest = nodeid.partition("::")
    return os.path.relpath(rootdir / file, workdir) + sep + rest


# pytest's config files, in the order it reads them, with the section that makes one count.
_INI_FILES = (
    ("pytest.ini", None),
    (".pytest.ini", None),
    ("pyproject.toml", "[tool.pytest"),
    ("tox.ini", "[pytest]"),
    ("setup.cfg", "[tool:pytest]"),
)


def project_ini(workdir: Path) -> Path | None:
    """The project's own pytest config file in `workdir`. With suites outside the project,
    pytest would look for one from a folder above it and miss this one (its addopts,
    markers, pythonpath): loop names it with `-c`."""
    for name, section in _INI_FILES:
        path = workdir / name
        try:
            if section is None:
                if path.is_file():
                    return path
            elif section in path.read_text(encoding="utf-8", errors="replace"):
                return path
        except OSError:
            continue
    return None
