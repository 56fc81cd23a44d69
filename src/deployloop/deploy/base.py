"""What every deploy target provides, and the records it returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from deployloop.config import Config
from deployloop.models import Deployment


class DeployError(Exception):
    """A deploy that failed or a service that never became ready (`loop run` exits 3)."""

    def __init__(self, message: str, deployments: list[Deployment]) -> None:
        super().__init__(message)
        self.deployments = deployments


@dataclass(frozen=True)
class DeployContext:
    env: str
    iteration: int
    git_sha: str | None
    log_dir: Path  # the iteration's folder for service logs
    python: str  # interpreter that runs loop: fills `{python}` in argv
    base_env: dict[str, str] = field(default_factory=dict)  # os.environ at start


class DeployTarget(Protocol):
    def deploy(self, config: Config, ctx: DeployContext) -> list[Deployment]:
        """Bring every service up in dependency order; return one record per service.

        Raises DeployError (carrying the records made so far) when a service fails.
        """
        ...

    def stop(self) -> None:
        """Stop whatever this target started; safe to call twice or after a failure."""
        ...
