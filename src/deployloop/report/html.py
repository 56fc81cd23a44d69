"""`.loop/runs/<env>/index.html`: the whole loop of an env on one page.

One self-contained file (styles and the one script inline, the chart an inline SVG, nothing
fetched; it works from file://): the pass rate over the iterations, the iteration table with
each one's verdict, and for the latest iteration its suites (executed of collected), root
causes, failure patterns with their service log lines, flags and deployments; then the diff
between any two iterations, worked out in the page from each test's outcomes (only tests that
failed somewhere are carried). Built with a Jinja2 template, autoescaped.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from deployloop.models import Figures, IterationRecord, PastResults, Summary
from deployloop.report._format import (
    clusters_in_order,
    format_percent,
    integrity_line,
    label,
    one_line,
    pass_rate,
    revision_text,
    safe_summary,
    suites_in_order,
    verdict_detail,
    verdict_word,
)

_FAILING = frozenset("FE")


@dataclass
class _Chart:
    width: int
    height: int
    target: float | None
    dots: list[dict[str, object]] = field(default_factory=list)
    points: list[str] = field(default_factory=list)

    def y(self, rate: float) -> float:
        return round(10 + (self.height - 30) * (1 - rate / 100), 1)


def render_index(
    env: str,
    iterations: Sequence[IterationRecord],
    figures: Mapping[int, Figures],
    latest: Summary | None,
    history: PastResults,
) -> str:
    """`figures`: each iteration's totals by iteration id (store.iteration_figures)."""
    import jinja2

    templates = jinja2.Environment(
        loader=jinja2.PackageLoader("deployloop.report", "templates"),
        autoescape=True, trim_blocks=False,
    )
    rows = [_iteration_row(r, figures.get(r.id, Figures())) for r in iterations]
    chart = _chart(rows, latest.iteration.target_pass_rate if latest else None)
    outcomes = {
        test.nodeid: test.outcomes for test in history.tests if _FAILING & set(test.outcomes)
    }
    return templates.get_template("index.html.j2").render(
        env=env,
        written=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        iterations=rows,
        chart=chart,
        latest=_latest(latest) if latest is not None else None,
        # Inside <script>: no "<" at all ("</script>", "<!--" would change how the browser
        # reads the block), nor "&" or ">"; JSON reads \u003c as "<".
        outcomes_json=json.dumps(outcomes, sort_keys=True)
        .replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"),
    )


def _iteration_row(record: IterationRecord, figures: Figures) -> dict[str, object]:
    rate = pass_rate(figures)
    left_out = record.left_out is not None
    verdict = f"left out: {one_line(record.left_out or '')}" if left_out else (
        f"{figures.passed}/{figures.executed} passed, target"
        f" {record.target_pass_rate:g}%" if figures.executed else "no test executed"
    )
    return {
        "number": record.number,
        "status": record.status.value,
        "status_label": label(record.status),
        "started": record.started_at[:16].replace("T", " "),
        "collected": figures.collected,
        "executed": figures.executed,
        "passed": figures.passed,
        "failed": figures.failed,
        "errors": figures.errors,
        "skipped": figures.skipped,
        "rate": None if left_out else rate,
        "rate_text": "left out" if left_out else format_percent(rate),
        "verdict": verdict,
    }


def _chart(rows: Sequence[dict[str, object]], target: float | None) -> _Chart:
    """One point per iteration with a pass rate (left-out ones have none), in order."""
    chart = _Chart(width=max(320, 60 + 50 * len(rows)), height=200, target=target)
    rated = [(row["number"], row["rate"]) for row in rows if row["rate"] is not None]
    for index, (number, rate) in enumerate(rated):
        x = 50 + index * 50
        y = chart.y(float(rate))  # type: ignore[arg-type]
        chart.dots.append({"x": x, "y": y, "number": number, "rate": round(float(rate), 1)})  # type: ignore[arg-type]
        chart.points.append(f"{x},{y}")
    return chart


def _latest(summary: Summary) -> dict[str, object]:
    summary = safe_summary(summary)
    insights = summary.insights
    flags = [f"Integrity: {integrity_line(flag)}" for flag in insights.integrity]
    flags += [f"Flaky: {h.test}: {one_line(h.reason)}" for h in insights.flaky]
    flags += [f"Broken: {h.test}: {one_line(h.reason)}" for h in insights.broken]
    flags += [f"False green: {g.subject}: {one_line(g.reason)}" for g in insights.false_greens]
    if insights.outage:
        flags.insert(0, f"Outage: {one_line(insights.outage)}")
    return {
        "number": summary.iteration.number,
        "verdict_word": verdict_word(summary.iteration.status),
        "verdict": one_line(verdict_detail(summary)),
        "flags": flags,
        "suites": [
            {
                "name": s.name, "priority": s.priority, "status": s.status.value,
                "executed": s.figures.executed, "collected": s.figures.collected,
                "share": round(100 * s.figures.executed / s.figures.collected)
                if s.figures.collected else 0,
                "rate_text": format_percent(pass_rate(s.figures)),
            }
            for s in suites_in_order(summary)
        ],
        "root_causes": summary.root_causes,
        "clusters": [
            {"count": c.count, "label": one_line(c.label), "tests": c.tests, "suites": c.suites,
             "category": c.category.value, "service_logs": c.service_logs}
            for c in clusters_in_order(summary)
        ],
        "deployments": [
            {"service": d.service, "status": d.status.value, "revision": revision_text(d),
             "image": d.image or "", "note": one_line(d.error or d.warning or "")}
            for d in summary.deployments
        ],
    }
