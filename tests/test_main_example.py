"""The README's main example, as a new user runs it: `loop run` in a git checkout of the shop
example, its fix step between iterations. The fix lands and the next iteration shows the
failing tests as fixed, not as flaky."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import ROOT, output, shop_checkout


def test_the_main_example_fixes_its_failures_in_two_iterations(tmp_path: Path) -> None:
    project = shop_checkout(tmp_path / "checkout", "local")
    result = project.run("run", timeout=180)
    assert result.returncode == 0, output(result)
    assert "vs iteration 1: 5 fixed, 0 new failures" in result.stdout, output(result)
    second = project.summary(2)
    assert second["totals"]["failed"] == 0 and not second["flaky"], second["flaky"]
    # The cluster carries the backend's own line saying why it refused the stream, and only
    # that: the other tests' refusals (401s they expect) logged meanwhile are left out.
    (cluster,) = project.summary(1)["clusters"]
    (log,) = cluster["service_logs"]
    assert log["service"] == "backend" and len(log["lines"]) == 1, log
    assert "GET /events refused (403): token audience ['auth']" in log["lines"][0]
    report = (project.iteration_dir(1) / "report.md").read_text()
    assert "Service log, `backend`, while these tests ran:" in report


def test_a_fresh_clone_starts_with_the_bug() -> None:
    """A fix file committed by mistake (a demo run writes one) would make the main example
    start green for everyone who clones the repository."""
    tracked = subprocess.run(
        ["git", "ls-files", "examples/shop/fixes"], cwd=ROOT, capture_output=True, text=True
    )
    if tracked.returncode != 0:
        pytest.skip("not a git checkout")
    assert tracked.stdout == "", f"committed: {tracked.stdout}"
