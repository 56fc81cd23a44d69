"""Evidence: what the services logged while the tests ran, where the analysis reads it.

Local services write their own `services/<name>.log`; a target whose services log elsewhere
(Cloud Run, to Cloud Logging) copies the iteration's entries there now, before the analysis.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from rich.console import Console

from deployloop.deploy.base import DeployTarget
from deployloop.models import Deployment
from deployloop.safetext import shown_text
from deployloop.stages.plan import Plan
from deployloop.stages.settings import IterationSettings


def collect_service_logs(
    settings: IterationSettings,
    console: Console,
    plan: Plan,
    deployments: Sequence[Deployment],
    target: DeployTarget,
) -> None:
    until = datetime.now(UTC).isoformat(timespec="milliseconds")
    note = target.collect_logs(
        settings.config, deployments, plan.record.started_at, until, plan.services_dir
    )
    if note:
        console.print(f"  note: {shown_text(note)}", highlight=False)
