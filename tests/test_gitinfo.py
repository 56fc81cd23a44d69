"""The code identity changes with the code, and only with it."""

from __future__ import annotations

import subprocess
from pathlib import Path

from deployloop.gitinfo import code_state, git_sha


def git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=repo,
        check=True,
        capture_output=True,
    )


def test_code_state_follows_code_not_loops_state(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    (tmp_path / "app.py").write_text("x = 1\n")
    git(tmp_path, "add", "app.py")
    git(tmp_path, "commit", "-qm", "one")
    state = tmp_path / ".loop"
    clean = code_state(tmp_path, ignore=(state,))
    assert clean is not None and clean == git_sha(tmp_path)

    # loop's state and bytecode are not code.
    (state / "runs").mkdir(parents=True)
    (state / "loop.db").write_bytes(b"\0" * 10)
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"\1")
    assert code_state(tmp_path, ignore=(state,)) == clean

    # An untracked file a fix wrote, and an edit of a tracked one, are.
    (tmp_path / "fix.json").write_text("{}")
    with_fix = code_state(tmp_path, ignore=(state,))
    assert with_fix not in (None, clean)
    (tmp_path / "app.py").write_text("x = 2\n")
    assert code_state(tmp_path, ignore=(state,)) not in (clean, with_fix)


def test_outside_git_there_is_no_identity(tmp_path: Path) -> None:
    assert code_state(tmp_path) is None
    assert git_sha(tmp_path) is None
