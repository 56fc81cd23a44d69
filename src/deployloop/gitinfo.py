"""The git commit an iteration tested, so every report says what code it judged."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path


def git_sha(workdir: Path) -> str | None:
    """HEAD's SHA, with `-dirty` when tracked files differ from it; None outside git."""
    try:
        sha = _git(workdir, "rev-parse", "HEAD").strip()
        status = _git(workdir, "status", "--porcelain", "--untracked-files=no").strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{sha}-dirty" if status else sha or None


def code_state(workdir: Path, ignore: tuple[Path, ...] = ()) -> str | None:
    """An identity of the code in the work tree: HEAD plus a digest of every uncommitted
    change, untracked files included. Two iterations with the same state tested the same code,
    so a test that passed in one and failed in the other is flaky, not fixed or broken."""
    try:
        head = _git(workdir, "rev-parse", "HEAD").strip()
        diff = _git(workdir, "diff", "HEAD", "--binary")
        untracked = _git(workdir, "ls-files", "--others", "--exclude-standard", "-z")
    except (OSError, subprocess.SubprocessError):
        return None
    digest = hashlib.sha256(diff.encode("utf-8", errors="surrogateescape"))
    skip = [p.resolve() for p in ignore]
    names = [n for n in untracked.split("\0") if n and not _ignored(workdir / n, skip)]
    for name in sorted(names):
        digest.update(name.encode("utf-8", errors="surrogateescape") + b"\0")
        path = workdir / name
        if path.is_file() and path.stat().st_size <= _MAX_UNTRACKED_BYTES:
            digest.update(path.read_bytes())
    return f"{head}+{digest.hexdigest()[:16]}" if diff or names else head


_MAX_UNTRACKED_BYTES = 1 << 20


def _ignored(path: Path, skip: list[Path]) -> bool:
    # loop's own state and Python's bytecode change on every run without a change of code.
    if "__pycache__" in path.parts or path.suffix == ".pyc":
        return True
    resolved = path.resolve()
    return any(resolved == s or s in resolved.parents for s in skip)


def _git(workdir: Path, *args: str) -> str:
    # Bytes, decoded leniently: a diff of a file that is not UTF-8 must not stop the loop.
    out = subprocess.run(
        ["git", *args], cwd=workdir, capture_output=True, timeout=20, check=True
    ).stdout
    return out.decode("utf-8", errors="surrogateescape")


def folder_state(folder: Path) -> str:
    """An identity of the code in a folder outside the work tree (a service's own
    repository): its git state (HEAD, uncommitted and untracked changes) when it is in a git
    checkout, else a digest of its files' names and contents."""
    state = code_state(folder) if (folder / ".git").exists() or _in_git(folder) else None
    if state is not None:
        return f"git:{state}"
    digest = hashlib.sha256()
    for path in sorted(_files(folder)):
        digest.update(str(path.relative_to(folder)).encode("utf-8", "surrogateescape") + b"\0")
        try:
            if path.stat().st_size <= _MAX_UNTRACKED_BYTES:
                digest.update(path.read_bytes())
            else:  # a large file: its size and time stand for it
                stat = path.stat()
                digest.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
        except OSError:
            continue
    return f"files:{digest.hexdigest()[:16]}"


_SKIPPED_DIRS = frozenset({".git", "__pycache__", ".venv", "venv", "node_modules", ".mypy_cache",
                           ".pytest_cache", ".ruff_cache", ".tox", ".loop"})


def _files(folder: Path) -> list[Path]:
    out = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if d not in _SKIPPED_DIRS]
        out += [Path(root, name) for name in files if not name.endswith(".pyc")]
    return out


def _in_git(folder: Path) -> bool:
    try:
        return _git(folder, "rev-parse", "--is-inside-work-tree").strip() == "true"
    except (OSError, subprocess.SubprocessError):
        return False


def file_digests(workdir: Path, paths: set[str]) -> dict[str, str]:
    """sha256 of each test file: a test that starts passing while its file changed is shown."""
    out = {}
    for path in paths:
        full = workdir / path
        if full.is_file():
            out[path] = hashlib.sha256(full.read_bytes()).hexdigest()
    return out
