"""Report: write the iteration's report.md and summary.json where the hook and CI read them."""

from __future__ import annotations

from pathlib import Path

from deployloop.layout import StateLayout
from deployloop.models import Summary


def write_reports(layout: StateLayout, summary: Summary) -> tuple[Path, Path]:
    from deployloop.report.json_report import summary_to_json
    from deployloop.report.markdown import summary_to_markdown

    record = summary.iteration
    md = layout.report_md(record.env, record.number)
    js = layout.summary_json(record.env, record.number)
    md.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(md, summary_to_markdown(summary))
    _write_atomic(js, summary_to_json(summary))
    return md, js


def _write_atomic(path: Path, text: str) -> None:
    # A reader (the between-iterations hook, a CI step) never sees half a file.
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
