"""Deploy: bring every service up through the deploy target and record where it runs."""

from __future__ import annotations

import os
import sys

from rich.console import Console

from deployloop.deploy import DeployContext, deploy_notes
from deployloop.deploy.base import DeployTarget
from deployloop.models import Deployment
from deployloop.safetext import shown_text
from deployloop.stages.plan import Plan
from deployloop.stages.settings import IterationSettings
from deployloop.store import Store


def deploy_services(
    settings: IterationSettings,
    store: Store,
    console: Console,
    plan: Plan,
    target: DeployTarget,
) -> list[Deployment]:
    config = settings.config
    if not config.deploy.services:
        return []
    names = ", ".join(s.name for s in config.deploy.services)
    console.print(f"  deploying ({config.deploy.target}): {names}")
    ctx = DeployContext(
        env=settings.env,
        iteration=plan.record.number,
        git_sha=plan.record.git_sha,
        log_dir=plan.services_dir,
        python=sys.executable,
        base_env=dict(os.environ),
        children=settings.children,
    )
    for note in deploy_notes(config):
        console.print(f"  {shown_text(note)}", highlight=False)
    deployments = target.deploy(config, ctx)
    store.record_deployments(plan.record.id, deployments)
    revisions = sorted(f"{d.service}@{d.revision}" for d in deployments if d.revision)
    if revisions:
        # A new revision is new code even when the work tree is the same.
        base = plan.record.code_key or ""
        store.set_code_key(plan.record.id, base + "|" + ",".join(revisions))
    for d in deployments:
        shown = shown_text(f"{d.service} {d.url or ''}")
        console.print(f"  [green]ready[/] {shown}", highlight=False)
        if d.warning:
            console.print(
                f"  [yellow]warning[/] {shown_text(d.service)}: {shown_text(d.warning)}",
                highlight=False,
            )
    return list(deployments)
