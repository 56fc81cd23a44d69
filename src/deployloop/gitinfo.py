"""The git commit an iteration tested, so every report says what code it judged."""

from __future__ import annotations

import subprocess
from pathlib import Path


def git_sha(workdir: Path) -> str | None:
    """HEAD's SHA, with `-dirty` when tracked files differ from it; None outside git."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=workdir, capture_output=True, text=True,
            timeout=10, check=True,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=workdir,
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{sha}-dirty" if status else sha or None
