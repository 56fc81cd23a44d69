"""The env's HTML page, opened in a real browser (headless Chromium): the figures it shows
equal summary.json's, the trend has one point per iteration, and the diff it works out in the
page is the summary's. Skipped, saying why, only where no Chromium is installed (.ci/run
installs Debian's)."""

from __future__ import annotations

import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import output, shop_checkout

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# As root on a closed network: no sandbox, and nothing Chromium would fetch for itself.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


class _Page(HTMLParser):
    """What the test reads off the rendered DOM: table cells by data attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[int, dict[str, str]] = {}
        self.points: list[tuple[int, float]] = []
        self.diff: dict[str, int] = {}
        self._row: int | None = None
        self._field: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "tr" and a.get("data-iteration"):
            self._row = int(a["data-iteration"] or 0)
            self.rows[self._row] = {}
        elif tag == "td" and self._row is not None and a.get("data-field"):
            self._field = a["data-field"]
        elif tag == "circle" and a.get("data-iteration"):
            self.points.append((int(a["data-iteration"] or 0), float(a["data-pass-rate"] or 0)))
        elif tag == "h4" and a.get("data-group"):
            self.diff[a["data-group"] or ""] = int(a["data-count"] or 0)

    def handle_endtag(self, tag: str) -> None:
        if tag == "tr":
            self._row = None
        if tag == "td":
            self._field = None

    def handle_data(self, data: str) -> None:
        if self._row is not None and self._field is not None:
            self.rows[self._row][self._field] = data.strip()


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (apt install chromium)")
def test_the_html_report_of_a_two_iteration_run_in_headless_chromium(tmp_path: Path) -> None:
    project = shop_checkout(tmp_path / "checkout", "local")
    result = project.run("run", timeout=180)
    assert result.returncode == 0, output(result)
    written = project.run("report")
    assert written.returncode == 0, output(written)
    page = project.root / written.stdout.strip()
    assert page == project.state / "runs" / "local" / "index.html"
    assert "http://" not in page.read_text().split("<body>")[0]  # nothing fetched
    browser = [str(CHROMIUM), *FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*browser, "--dump-dom", page.as_uri()], capture_output=True,
                         text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    parsed = _Page()
    parsed.feed(dom.stdout)
    for number in (1, 2):
        totals = project.summary(number)["totals"]
        shown = parsed.rows[number]
        assert {k: int(shown[k]) for k in ("executed", "passed", "failed", "errors")} == {
            k: totals[k] for k in ("executed", "passed", "failed", "errors")
        }
        assert shown["pass_rate"] == f"{totals['pass_rate']:.1f}%"
    assert [n for n, _ in parsed.points] == [1, 2]
    assert parsed.points[0][1] == round(project.summary(1)["totals"]["pass_rate"], 1)
    # The page's diff of 1 -> 2, worked out by its script, is the summary's.
    diff = project.summary(2)["diff"]
    assert parsed.diff["fixed"] == len(diff["fixed"]) == 5
    assert parsed.diff["new failures"] == len(diff["new_failures"]) == 0
    shot = tmp_path / "report.png"
    subprocess.run([*browser, "--window-size=1200,1600", f"--screenshot={shot}", page.as_uri()],
                   capture_output=True, timeout=120, check=True)
    assert shot.stat().st_size > 10_000


def test_the_shop_examples_two_iterations_leave_every_ci_report(tmp_path: Path) -> None:
    """The issue's "done when", without the browser: junit.xml (validated), a short report.md,
    and in GitHub Actions a step summary and annotations, read back."""
    import xmlschema

    project = shop_checkout(tmp_path / "checkout", "local")
    step = tmp_path / "step-summary.md"
    result = project.run("run", timeout=180, env={
        "GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(step),
    })
    assert result.returncode == 0, output(result)
    schema = xmlschema.XMLSchema(str(Path(__file__).parent / "junit.xsd"))
    for number in (1, 2):
        schema.validate(str(project.iteration_dir(number) / "junit.xml"))
        assert len((project.iteration_dir(number) / "report.md").read_text()) < 60_000
    summary = step.read_text()
    assert "### deployloop: local iteration 1: FAILED" in summary
    assert "### deployloop: local iteration 2: PASSED" in summary
    (annotation,) = [line for line in result.stdout.splitlines() if line.startswith("::error")]
    assert annotation.startswith("::error file=examples/shop/tests/test_"), annotation
    assert "events stream rejected" in annotation
