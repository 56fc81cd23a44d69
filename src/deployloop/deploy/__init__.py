"""Deploy targets: bring the services of an environment up and prove they are ready.

Targets are imported lazily: `loop status` never needs them, and some are costly to import.
"""

from __future__ import annotations

from deployloop.config import Config, ConfigError
from deployloop.deploy.base import DeployContext, DeployError, DeployTarget

__all__ = ["DeployContext", "DeployError", "DeployTarget", "make_target"]


def make_target(config: Config) -> DeployTarget:
    """The target named by `deploy.target`."""
    target = config.deploy.target
    if target == "local":
        from deployloop.deploy.local import LocalTarget

        return LocalTarget()
    if target == "command":
        from deployloop.deploy.command import CommandTarget

        return CommandTarget()
    if target == "none":
        from deployloop.deploy.none import NoneTarget

        return NoneTarget()
    if target == "cloudrun":
        from deployloop.deploy.cloudrun import CloudRunTarget

        return CloudRunTarget()
    raise ConfigError(f"deploy.target: {target!r} is not available in this version")
