"""Report: write the iteration's report.md, summary.json and junit.xml where the hook and CI
read them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from deployloop.layout import StateLayout
from deployloop.models import HistoryRow, Summary, TestRow
from deployloop.store import Store


def write_reports(
    layout: StateLayout,
    summary: Summary,
    rows: Sequence[TestRow] = (),
    reruns: Sequence[HistoryRow] = (),
) -> tuple[Path, Path]:
    """`rows`: every test of the iteration (junit.xml lists each); `reruns` their later
    attempts."""
    from deployloop.report.json_report import summary_to_json
    from deployloop.report.junit import summary_to_junit
    from deployloop.report.markdown import summary_to_markdown

    record = summary.iteration
    md = layout.report_md(record.env, record.number)
    js = layout.summary_json(record.env, record.number)
    md.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(md, summary_to_markdown(summary, short=True))
    _write_atomic(layout.report_full_md(record.env, record.number), summary_to_markdown(summary))
    _write_atomic(js, summary_to_json(summary))
    _write_atomic(layout.junit_xml(record.env, record.number),
                  summary_to_junit(summary, rows, reruns))
    return md, js


def write_index(layout: StateLayout, store: Store, summary: Summary) -> Path:
    """The env's page (report.html): every iteration, the latest one in full."""
    from deployloop.report.html import render_index

    record = summary.iteration
    path = layout.index_html(record.env)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = render_index(
        record.env,
        store.iterations(record.env),
        store.iteration_figures(record.env),
        summary,
        store.past_results(record.env, record.number),
    )
    _write_atomic(path, text)
    return path


def _write_atomic(path: Path, text: str) -> None:
    # A reader (the between-iterations hook, a CI step) never sees half a file.
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
