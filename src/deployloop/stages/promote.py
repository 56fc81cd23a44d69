"""Promote: with candidate revisions (`[deploy] traffic = "candidate"`, `promote = true`), move
the traffic to exactly the revisions an iteration tested, once it reached its target. Every
service or none; an iteration below its target leaves the traffic where it was."""

from __future__ import annotations

from rich.console import Console

from deployloop.analysis.figures import figures
from deployloop.deploy import DeployError
from deployloop.deploy.base import DeployTarget
from deployloop.models import Deployment, DeployStatus, IterationRecord
from deployloop.safetext import shown_text
from deployloop.stages.settings import IterationSettings
from deployloop.store import Store


def promote_if_passed(
    settings: IterationSettings,
    store: Store,
    console: Console,
    record: IterationRecord,
    target: DeployTarget,
) -> list[str]:
    """The services promoted; none when the iteration is below its target or a promotion
    failed (said on the console; what was moved is put back by the target)."""
    deploy = settings.config.deploy
    if deploy.traffic != "candidate":
        return []
    deployments = store.deployments(record.id)
    rate = figures(store.tests(record.id)).pass_rate
    passed = rate is not None and rate >= settings.target_pass_rate
    ready = bool(deployments) and all(d.status is DeployStatus.READY for d in deployments)
    stays = _where_traffic_stays(deployments)
    if record.partial or settings.suite_globs:
        console.print(
            "  candidate revisions not promoted: only some tests ran (--failed-only or"
            f" --suite); {stays}", highlight=False,
        )
        return []
    if not (passed and ready):
        console.print(
            f"  candidate revisions not promoted: the iteration is below its target; {stays}",
            highlight=False,
        )
        return []
    if not deploy.promote:
        console.print(
            f"  candidate revisions passed; {stays} (`promote = true` moves it to them)",
            highlight=False,
        )
        return []
    try:
        promoted = target.promote(settings.config, deployments)
    except DeployError as exc:
        console.print(f"  [red]promotion failed[/]: {shown_text(str(exc))}", highlight=False)
        return []
    store.record_promotion(record.id, promoted)
    for d in deployments:
        if d.service in promoted:
            console.print(
                f"  [green]promoted[/] {shown_text(d.service)}: all traffic on {d.revision}",
                highlight=False,
            )
    return promoted


def _where_traffic_stays(deployments: list[Deployment]) -> str:
    serving = [f"{d.service} on {d.serving}" for d in deployments if d.serving]
    if not serving:
        return "traffic stays where it was"
    return shown_text("traffic stays where it was: " + "; ".join(serving))
