"""Old iterations' raw pytest files: compressed, or dropped past `[state] keep_raw_iterations`.

The raw files (reportlog and events JSON lines, JUnit XML, logs under
`.loop/runs/<env>/iteration-<N>/pytest/`) are what a run reads while it runs and a person reads
when a report is not enough; twenty iterations of 10,000 tests leave about 250 MB of them. The
store keeps every result, and each iteration's reports (report.md, summary.json, ...) stay
where they are: only the raw pytest files of older iterations are gzipped, and with `keep` set,
deleted beyond the newest `keep` iterations.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from deployloop.layout import StateLayout

# Raw pytest output: what is compressed (and dropped). Anything else in the folder stays.
RAW_SUFFIXES = (".jsonl", ".log", ".xml")
# The iteration just finished and the one before stay as they are: a resume reads the first,
# and a person comparing the two reads both.
UNCOMPRESSED_ITERATIONS = 2

_ITERATION_DIR = re.compile(r"iteration-(\d+)")


@dataclass(frozen=True)
class Tidied:
    compressed: int = 0  # files gzipped
    dropped: int = 0  # raw files (gzipped or not) deleted
    freed_bytes: int = 0


def tidy_raw_files(layout: StateLayout, env: str, current: int, keep: int | None) -> Tidied:
    """Gzip the raw pytest files of env's iterations older than `current - 1`, and delete those
    of iterations older than the newest `keep` (None: keep all). Iterations after `current`
    (none, normally) are left alone. Never raises for a file it cannot touch: the loop goes on
    with the file as it was."""
    compressed = dropped = freed = 0
    runs = layout.iteration_dir(env, 1).parent
    if not runs.is_dir():
        return Tidied()
    for number, folder in _iterations(runs):
        drop = keep is not None and number <= current - keep
        # The newest ones stay readable as they are, unless dropped.
        squeeze = number <= current - UNCOMPRESSED_ITERATIONS
        pytest_dir = folder / "pytest"
        if number > current or not (drop or squeeze) or not pytest_dir.is_dir():
            continue
        for path in sorted(pytest_dir.iterdir()):
            if not path.is_file() or path.is_symlink():
                continue
            if drop and (_is_raw(path) or _is_gzipped_raw(path)):
                freed += _size(path)
                if _unlink(path):
                    dropped += 1
            elif _is_raw(path):
                before = _size(path)
                if _gzip(path):
                    compressed += 1
                    freed += before - _size(path.with_name(path.name + ".gz"))
    return Tidied(compressed, dropped, freed)


def _iterations(runs: Path) -> list[tuple[int, Path]]:
    found = []
    for folder in runs.iterdir():
        match = _ITERATION_DIR.fullmatch(folder.name)
        if match and folder.is_dir() and not folder.is_symlink():
            found.append((int(match.group(1)), folder))
    return sorted(found)


def _is_raw(path: Path) -> bool:
    return path.suffix in RAW_SUFFIXES


def _is_gzipped_raw(path: Path) -> bool:
    return path.suffix == ".gz" and Path(path.stem).suffix in RAW_SUFFIXES


def _gzip(path: Path) -> bool:
    """path -> path.gz (0600, like everything loop writes), written aside and renamed, so a
    kill midway leaves the original whole."""
    target = path.with_name(path.name + ".gz")
    partial = path.with_name(path.name + ".gz.tmp")
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with open(path, "rb") as source, os.fdopen(fd, "wb") as raw:
            with gzip.GzipFile(filename=path.name, mode="wb", fileobj=raw, mtime=0) as out:
                shutil.copyfileobj(source, out, 1 << 20)
        os.replace(partial, target)
        path.unlink()
    except OSError:
        _unlink(partial)
        return False
    return True


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _unlink(path: Path) -> bool:
    try:
        path.unlink()
    except OSError:
        return False
    return True
