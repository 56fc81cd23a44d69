"""The README's main example, as a new user runs it: `loop run` in a git checkout of the shop
example, its fix step between iterations. The fix lands and the next iteration shows the
failing tests as fixed, not as flaky."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from conftest import Project, output

ROOT = Path(__file__).resolve().parent.parent


def test_the_main_example_fixes_its_failures_in_two_iterations(tmp_path: Path) -> None:
    project = Project(tmp_path / "checkout")
    shutil.copytree(
        ROOT / "examples",
        project.root / "examples",
        ignore=shutil.ignore_patterns("__pycache__", "fixes", ".pytest_cache"),
    )
    (project.root / "configs").mkdir()
    shutil.copy(ROOT / "configs" / "local.toml", project.root / "configs" / "local.toml")
    # The repository's own ignore rules: a fix written to an ignored file would be no
    # change of code to loop, and its fixed tests would read as flaky.
    shutil.copy(ROOT / ".gitignore", project.root / ".gitignore")
    for argv in (
        ["git", "init", "-q"],
        ["git", "add", "-A"],
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "example"],
    ):
        subprocess.run(argv, cwd=project.root, check=True, capture_output=True)
    result = project.run("run", timeout=180)
    assert result.returncode == 0, output(result)
    assert "vs iteration 1: 5 fixed, 0 new failures" in result.stdout, output(result)
    second = project.summary(2)
    assert second["totals"]["failed"] == 0 and not second["flaky"], second["flaky"]
