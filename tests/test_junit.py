"""junit.xml: one file per iteration, a <testsuite> per configured suite, every test once with
its final outcome, and counts that equal summary.json's."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import xmlschema
from conftest import Project, output

TESTS = '''
import os, pytest
from pathlib import Path

def test_passes():
    pass

def test_fails():
    assert 1 == 2, "one is not two \\x1b[31m with a control character"

@pytest.fixture
def broken():
    raise RuntimeError("fixture failed")

def test_errors(broken):
    pass

@pytest.mark.skip(reason="not here")
def test_skipped():
    pass

@pytest.mark.xfail(reason="known bug")
def test_xfails():
    assert False

@pytest.mark.xfail(reason="fixed already")
def test_xpasses():
    pass

class TestGroup:
    def test_in_a_class(self):
        pass

def test_flaky(tmp_path_factory):
    marker = Path(os.environ["MARK"])
    if not marker.exists():
        marker.write_text("x")
        assert False, "first time fails"
'''


def test_junit_xml_holds_every_test_once_and_the_summary_counts(project: Project) -> None:
    project.config(f"""
        [loop]
        max_iterations = 1

        [deploy]
        target = "none"

        [tests]
        reruns = 1
        env = {{ MARK = "{project.root / 'mark'}" }}

        [[tests.suites]]
        name = "Main"
        paths = ["tests/test_main.py"]

        [[tests.suites]]
        name = "Other"
        paths = ["tests/test_other.py"]
        priority = 2

        [[known_issues]]
        id = "one-two"
        match = "one is not two"
        reason = "TICKET-1"
    """)
    project.write("tests/test_main.py", TESTS)
    project.write("tests/test_other.py", "def test_other():\n    pass\n")
    result = project.run("run")
    assert result.returncode == 1, output(result)
    summary = project.summary()
    path = project.iteration_dir(1) / "junit.xml"
    xmlschema.XMLSchema(str(Path(__file__).parent / "junit.xsd")).validate(str(path))
    root = ET.parse(path).getroot()
    totals = summary["totals"]
    assert root.tag == "testsuites"
    assert {k: int(root.get(k, -1)) for k in ("tests", "failures", "errors", "skipped")} == {
        "tests": totals["collected"], "failures": totals["failed"], "errors": totals["errors"],
        "skipped": totals["collected"] - totals["executed"],
    }
    suites = {s.get("name"): s for s in root.iter("testsuite")}
    assert list(suites) == ["Main", "Other"]
    for expected in summary["suites"]:
        element = suites[expected["name"]]
        assert int(element.get("tests", -1)) == expected["collected"]
        assert int(element.get("failures", -1)) == expected["failed"]
        assert int(element.get("errors", -1)) == expected["errors"]
        cases = element.findall("testcase")
        assert len(cases) == expected["collected"]
        # A CI's "passed" is tests - failures - errors - skipped: loop's passed.
        assert expected["collected"] - expected["failed"] - expected["errors"] - int(
            element.get("skipped", -1)
        ) == expected["passed"]
    cases = {
        next(p.get("value") for p in c.iter("property") if p.get("name") == "nodeid"): c
        for c in root.iter("testcase")
    }
    assert len(cases) == totals["collected"] == 9
    grouped = cases["tests/test_main.py::TestGroup::test_in_a_class"]
    assert (grouped.get("classname"), grouped.get("name")) == (
        "tests.test_main.TestGroup", "test_in_a_class"
    )
    failed = cases["tests/test_main.py::test_fails"]
    failure = failed.find("failure")
    assert failure is not None and "one is not two" in failure.get("message", "")
    assert "\x1b" not in failure.get("message", "")
    props = {p.get("name"): p.get("value") for p in failed.iter("property")}
    assert props["known_issue"] == "one-two" and props["rerun.2"] == "failed"
    assert cases["tests/test_main.py::test_errors"].find("error") is not None
    xpassed = cases["tests/test_main.py::test_xpasses"].find("skipped")
    assert xpassed is not None and xpassed.get("message", "").startswith("xpassed")
    flaky = {p.get("name"): p.get("value")
             for p in cases["tests/test_main.py::test_flaky"].iter("property")}
    assert flaky["rerun.2"] == "passed" and "flaky" in flaky
    again = project.run("summarize", "--format", "junit")
    assert again.returncode == 0 and again.stdout == path.read_text(), output(again)


def test_report_md_stays_short_enough_to_paste_and_report_full_md_has_everything(
    project: Project,
) -> None:
    """A GitHub comment holds 65,536 characters: report.md stays under 60,000 however big the
    run, and says what it left out and where it is."""
    project.config("""
        [loop]
        max_iterations = 1

        [deploy]
        target = "none"

        [tests]
        workers = 2

        [[tests.suites]]
        name = "Big"
        paths = ["tests"]
    """)
    project.write("tests/test_big.py", """
        import pytest

        @pytest.mark.parametrize("n", range(700))
        def test_case(n):
            kind = f"Error{n % 40}"  # 40 failure patterns
            assert n % 7 == 0, f"{kind}: " + "the service answered something long " * 12
    """)
    result = project.run("run", timeout=300)
    assert result.returncode == 1, output(result)
    short = (project.iteration_dir(1) / "report.md").read_text()
    full = (project.iteration_dir(1) / "report-full.md").read_text()
    assert len(short) < 60_000 < len(full), (len(short), len(full))
    assert "more in report-full.md" in short
    failing = project.summary()["totals"]["failed"]
    assert failing == 600
    # Every failing test is in the full report; the short one names where the rest is.
    assert sum(f"test_case[{n}]" in full for n in range(700) if n % 7) == failing
    again = project.run("summarize", "--format", "markdown")
    assert again.stdout == short


def test_in_github_actions_a_step_summary_and_one_annotation_per_pattern(
    project: Project,
) -> None:
    project.config("""
        [loop]
        max_iterations = 1

        [deploy]
        target = "none"

        [[tests.suites]]
        name = "Main"
        paths = ["tests"]
    """)
    project.write("tests/test_a.py", """
        def test_ok():
            pass


        def test_bad():
            value = 2
            assert value == 1, "50% off, then: a, b\\nsecond line"


        def test_also_bad():
            raise KeyError("token")
    """)
    plain = project.run("run")
    assert "::error" not in plain.stdout and "::group::" not in plain.stdout
    step = project.root / "step-summary.md"
    step.write_text("# an earlier step\n")
    result = project.run("run", env={"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(step)})
    assert result.returncode == 1, output(result)
    summary = step.read_text()
    assert summary.startswith("# an earlier step\n")  # appended, never replaced
    assert "### deployloop: local iteration 2: FAILED" in summary
    assert "| **TOTAL** | 3 | 3 | 1 | 2 | 0 | 0 |" in summary
    assert "#### Failure patterns (2)" in summary
    errors = [line for line in result.stdout.splitlines() if line.startswith("::error ")]
    assert len(errors) == 2, result.stdout
    bad = next(line for line in errors if "value == 1" in line or "50%25" in line)
    # At the assertion's line; the message escaped so it cannot end the command early.
    assert bad.startswith("::error file=tests/test_a.py,line=7,title=1 failing%3A "), bad
    assert "50%25 off" in bad and "%0A" in bad
    assert result.stdout.index("::group::iteration 2 report") < result.stdout.index(
        "::endgroup::"
    )
