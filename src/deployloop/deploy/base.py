"""What every deploy target provides, and the records it returns."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from deployloop.children import Children
from deployloop.config import Config
from deployloop.models import Deployment


class DeployError(Exception):
    """A deploy that failed or a service that never became ready (`loop run` exits 3)."""

    def __init__(self, message: str, deployments: list[Deployment]) -> None:
        super().__init__(message)
        self.deployments = deployments


class RollbackError(DeployError):
    """Some services could not be rolled back; `done` holds those that were."""

    def __init__(self, message: str, done: list[Rollback]) -> None:
        super().__init__(message, [])
        self.done = done


@dataclass(frozen=True)
class DeployContext:
    env: str
    iteration: int
    git_sha: str | None
    log_dir: Path  # the iteration's folder for service logs
    python: str  # interpreter that runs loop: fills `{python}` in argv
    base_env: dict[str, str] = field(default_factory=dict)  # os.environ at start
    # Starts the services' processes (tracked, so none outlives loop; output redacted).
    # None: a throwaway one, without a watchdog (`loop plan` starts nothing long-lived).
    children: Children | None = None

    def spawner(self) -> Children:
        return self.children or Children(watch=False)


@dataclass(frozen=True)
class Rollback:
    service: str
    from_revision: str | None
    to_revision: str
    reason: str


@dataclass(frozen=True)
class PlannedDeploy:
    """What `loop plan` shows for one service: what would deploy, and what would change."""

    service: str
    artifact: str  # image with placeholders filled, command, or url
    changes: tuple[str, ...]  # empty: nothing differs from what runs now (or unknown)


class DeployTarget(Protocol):
    def deploy(self, config: Config, ctx: DeployContext) -> list[Deployment]:
        """Bring every service up in dependency order; return one record per service.

        Raises DeployError (carrying the records made so far) when a service fails.
        """
        ...

    def stop(self) -> None:
        """Stop whatever this target started; safe to call twice or after a failure."""
        ...

    def test_env(self, config: Config, deployments: Sequence[Deployment]) -> dict[str, str]:
        """Extra environment for one pytest process, made fresh for each (ID tokens)."""
        ...

    def crashed(self) -> list[Deployment]:
        """Services that were ready and have stopped since (their process exited), each
        reported once, with the status CRASHED and what happened in `error`."""
        ...

    def rollback(self, config: Config, revisions: Mapping[str, str], reason: str) -> list[Rollback]:
        """Send each service's traffic to the given revision; return what was rolled back."""
        ...

    def promote(self, config: Config, deployments: Sequence[Deployment]) -> list[str]:
        """Move each service's traffic to its tested candidate revision, all or none; return
        the services promoted. Raises DeployError saying what failed and what was put back."""
        ...

    def plan(self, config: Config, ctx: DeployContext) -> list[PlannedDeploy]:
        """What deploy() would do, changing nothing."""
        ...

    def collect_logs(
        self,
        config: Config,
        deployments: Sequence[Deployment],
        since: str,
        until: str,
        folder: Path,
    ) -> str | None:
        """Write what the services logged between `since` and `until` (ISO times) into
        folder/<service>.log in log_lines' form, when they log elsewhere (Cloud Logging);
        return a note when they could not be read. Never raises."""
        ...


class TargetDefaults:
    """For targets with no revisions and no credentials: nothing to add, nothing to roll back."""

    def test_env(self, config: Config, deployments: Sequence[Deployment]) -> dict[str, str]:
        return {}

    def crashed(self) -> list[Deployment]:
        return []

    def rollback(self, config: Config, revisions: Mapping[str, str], reason: str) -> list[Rollback]:
        return []

    def promote(self, config: Config, deployments: Sequence[Deployment]) -> list[str]:
        return []

    def collect_logs(
        self,
        config: Config,
        deployments: Sequence[Deployment],
        since: str,
        until: str,
        folder: Path,
    ) -> str | None:
        return None  # local services write there themselves; others log where loop cannot see

    def plan(self, config: Config, ctx: DeployContext) -> list[PlannedDeploy]:
        return [
            PlannedDeploy(s.name, " ".join(s.command) if s.command else (s.url or ""), ())
            for s in config.deploy.services
        ]
