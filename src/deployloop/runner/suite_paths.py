"""Which suite a collected test belongs to, by the paths in the config.

A suite's path is a folder, a file or a node id (`file::Class::test`); a test belongs to the
suite whose path names it most specifically. Paths resolve once, files once per file. The
paths are indexed by what they name, so a test is matched by looking up its own file, that
file's folders and its node id's prefixes: a few dict look-ups a test, however many suites
there are (scoring every test against every path took seconds on 10,000 tests x 200 suites).
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
    order: int  # place in the config: on a tie, the suite whose matching path came first wins
    suite: str
    target: Path
    rest: str  # what follows `file::` in a node-id path, else ""
    length: int


_Match = tuple[int, str, int]  # spec order, suite name, score


class SuitePaths:
    def __init__(
        self, suites: Sequence[SuiteConfig], workdir: Path, rootdir: Path | None = None
    ) -> None:
        self._workdir = workdir
        self._rootdir = rootdir or workdir
        # A plain path (file or folder: which one is only known from the test's side) by what
        # it resolves to; a node-id path by its file and what follows `file::`.
        self._plain: dict[Path, list[_Spec]] = {}
        self._node: dict[tuple[Path, str], list[_Spec]] = {}
        self._node_files: set[Path] = set()
        texts = [(suite.name, text) for suite in suites for text in suite.paths]
        for order, (suite_name, spec_text) in enumerate(texts):
            spec_file, _, rest = spec_text.partition("::")
            spec = _Spec(order, suite_name, self._resolve(spec_file), rest, len(spec_text))
            if rest:
                self._node.setdefault((spec.target, rest), []).append(spec)
                self._node_files.add(spec.target)
            else:
                self._plain.setdefault(spec.target, []).append(spec)
        # Per file as pytest reports it: the file resolved, and what its plain paths score.
        self._files: dict[str, tuple[Path, list[_Match]]] = {}
        # The owner of every test of a file that no node-id path points into: its file's.
        self._file_owners: dict[str, str | None] = {}

    def scores(self, nodeid: str, path: str = "") -> dict[str, int]:
        """Per suite whose paths hold the test, how specifically (higher: more); in the order
        of each suite's first matching path in the config."""
        if path:
            item_file, matches = self._file(path)
        else:  # a node id's file is relative to pytest's rootdir
            item_file, matches = self._file(os.path.join(self._rootdir, file_of(nodeid)))
        _, _, item_rest = nodeid.partition("::")
        if item_rest and item_file in self._node_files:
            matches = sorted(matches + self._node_matches(item_file, item_rest))
        out: dict[str, int] = {}
        for _, suite, score in matches:
            if score > out.get(suite, -1):
                out[suite] = score
        return out

    def owner(self, nodeid: str, path: str = "") -> str | None:
        """The suite that names the test most specifically (the first such, on a tie)."""
        key = path or os.path.join(self._rootdir, file_of(nodeid))
        if key in self._file_owners:
            return self._file_owners[key]
        scores = self.scores(nodeid, path)
        best = max(scores, key=lambda name: scores[name]) if scores else None
        if self._files[key][0] not in self._node_files:
            self._file_owners[key] = best
        return best

    def _file(self, path: str) -> tuple[Path, list[_Match]]:
        if path not in self._files:
            resolved = self._resolve(path)
            matches = [
                (spec.order, spec.suite, _FILE + spec.length)
                for spec in self._plain.get(resolved, ())
            ]
            for parent in resolved.parents:
                matches += [
                    (spec.order, spec.suite, len(parent.parts))
                    for spec in self._plain.get(parent, ())
                ]
            self._files[path] = (resolved, sorted(matches))
        return self._files[path]

    def _node_matches(self, item_file: Path, item_rest: str) -> list[_Match]:
        """Node-id paths that name this test: its whole id after `file::`, or a prefix of it
        that ends where `::` (a class's member) or `[` (a parametrized case) begins. Every such
        place is tried, inside brackets too, as the path-by-path comparison did."""
        out: list[_Match] = []
        cut = len(item_rest)
        while cut > 0:
            for spec in self._node.get((item_file, item_rest[:cut]), ()):
                out.append((spec.order, spec.suite, _NODE_ID + spec.length))
            # The next place before this one (`::` may start one character back: `a:::b`).
            cut = max(item_rest.rfind("::", 0, cut + 1), item_rest.rfind("[", 0, cut))
        return out

    def _resolve(self, path: str) -> Path:
        p = Path(path)
        return (p if p.is_absolute() else self._workdir / p).resolve()


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
