"""Rollback: send traffic back to the last passing iteration's revisions when this one made
things worse (`[deploy] rollback_on_failure`)."""

from __future__ import annotations

from rich.console import Console

from deployloop.analysis.figures import figures
from deployloop.deploy import DeployError
from deployloop.deploy.base import DeployTarget, Rollback, RollbackError
from deployloop.models import IterationRecord
from deployloop.safetext import shown_text
from deployloop.stages.settings import IterationSettings
from deployloop.store import Store


def roll_back_if_worse(
    settings: IterationSettings,
    store: Store,
    console: Console,
    record: IterationRecord,
    target: DeployTarget,
    deploy_error: str | None,
) -> list[Rollback]:
    """Send traffic back to the revisions of the last passing iteration when this one is below
    its target and its deploy failed or its pass rate dropped below the previous iteration's.
    An iteration that reached its target keeps what it tested: its report describes it."""
    reason = _rollback_reason(store, record, settings.target_pass_rate, deploy_error)
    if reason is None:
        return []
    revisions = store.last_good_revisions(settings.env, record.number)
    if not revisions:
        console.print(
            f"  [yellow]no rollback[/]: {shown_text(reason)}, but no earlier iteration passed"
        )
        return []
    try:
        done = target.rollback(settings.config, revisions, reason)
    except RollbackError as exc:
        # Record what did move, so the report says what is deployed.
        console.print(f"  [red]rollback failed[/]: {shown_text(str(exc))}", highlight=False)
        done = exc.done
    except DeployError as exc:
        console.print(f"  [red]rollback failed[/]: {shown_text(str(exc))}", highlight=False)
        return []
    for rollback in done:
        store.record_rollback(record.id, rollback.service, rollback.to_revision)
        console.print(
            f"  [yellow]rolled back[/] {rollback.service}: {rollback.from_revision or '?'}"
            f" -> {rollback.to_revision} ({rollback.reason})",
            highlight=False,
        )
    return done


def _rollback_reason(
    store: Store, record: IterationRecord, target_pass_rate: float, deploy_error: str | None
) -> str | None:
    if deploy_error is not None:
        return "deploy failed"
    previous = store.iteration(record.env, record.number - 1)
    now = figures(store.tests(record.id)).pass_rate
    if previous is None or now is None or now >= target_pass_rate:
        return None
    before = figures(store.tests(previous.id)).pass_rate
    if now is not None and before is not None and now < before:
        return f"pass rate dropped from {before:.1f}% to {now:.1f}%"
    return None
