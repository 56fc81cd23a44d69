"""Reports stay well-formed whatever the tests named or said: XML that parses, a page whose
script still runs, markdown whose code blocks close, workflow commands that keep their place.
(Found by a review that fed hostile text to each writer.)"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import replace

from test_report import make_summary

from deployloop.models import (
    Cluster,
    KeptTest,
    Outcome,
    PastResults,
    ServiceLog,
    TestRow,
)
from deployloop.report.github import error_annotations, step_summary
from deployloop.report.html import render_index
from deployloop.report.junit import summary_to_junit
from deployloop.report.markdown import MAX_SHORT_CHARS, summary_to_markdown


def test_junit_parses_with_noncharacters_and_keeps_parameters_whole() -> None:
    summary = make_summary()
    row = TestRow("tests/t.py::TestX::test_a[a::b]", summary.suites[0].name, "tests/t.py",
                  Outcome.FAILED, 0.1, "bad \uffff\ufffe \x00 \udc80", "E \uffff")
    root = ET.fromstring(summary_to_junit(summary, [row]))
    (case,) = root.iter("testcase")
    assert (case.get("classname"), case.get("name")) == ("tests.t.TestX", "test_a[a::b]")


def test_the_pages_script_block_holds_no_markup_a_test_name_brings() -> None:
    summary = make_summary()
    bad = "tests/t.py::test_x[<!--<script>]</script>"
    history = PastResults((KeptTest("s", bad, "tests/t.py", "FP"),), (), (), {}, {}, {}, {})
    page = render_index("staging", [summary.iteration], {}, summary, history)
    block = page.split('<script id="outcomes" type="application/json">', 1)[1]
    block = block.split("</script>", 1)[0]
    assert "<" not in block and ">" not in block and "\\u003c!--" in block


def test_the_short_report_closes_its_code_block_and_keeps_its_limit() -> None:
    summary = make_summary()
    logs = tuple(ServiceLog(f"svc{i}", tuple(f"line {j} " * 30 for j in range(8)))
                 for i in range(60))
    cluster = replace(summary.clusters[0], service_logs=logs)
    huge = replace(summary, clusters=(cluster, *summary.clusters[1:]))
    short = summary_to_markdown(huge, short=True)
    assert len(short) <= MAX_SHORT_CHARS
    assert len(re.findall(r"^```", short, re.MULTILINE)) % 2 == 0
    unbroken = replace(summary, iteration=replace(summary.iteration, env="e" * 70_000))
    assert len(summary_to_markdown(unbroken, short=True)) <= MAX_SHORT_CHARS


def test_github_outputs_keep_their_shape() -> None:
    summary = make_summary()
    nodeid = "t\udce9st/a,b.py::test_a"
    label = "AssertionError: assert '<details><summary>x' in body"
    cluster = Cluster(label, "sig", (nodeid,), ("s",))
    odd = replace(summary, clusters=(cluster,))
    row = TestRow(nodeid, "s", "t\udce9st/a,b.py", Outcome.FAILED, 0.1, label,
                  "t\udce9st/a,b.py:12: AssertionError")
    (annotation,) = error_annotations(odd, [row])
    assert annotation.startswith("::error file=t\\xe9st/a%2Cb.py,line=12,title="), annotation
    text = step_summary(odd)
    assert "<details>" not in text and "&lt;details&gt;" in text

