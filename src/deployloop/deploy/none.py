"""The `none` target: the services run already; only check that each `url` is ready."""

from __future__ import annotations

import threading
from collections.abc import Mapping

from deployloop.config import Config, ServiceConfig
from deployloop.deploy.base import DeployContext, TargetDefaults
from deployloop.deploy.readiness import check_url, deploy_in_waves
from deployloop.models import Deployment


class NoneTarget(TargetDefaults):
    def deploy(self, config: Config, ctx: DeployContext) -> list[Deployment]:
        return check_all(config)

    def stop(self) -> None:
        """Nothing to stop: this target started nothing."""


def check_all(config: Config) -> list[Deployment]:
    """Readiness of every service's configured url, in dependency order."""

    def bring_up(
        service: ServiceConfig, ready: Mapping[str, Deployment], abort: threading.Event
    ) -> Deployment:
        return check_url(service, abort)

    return deploy_in_waves(config.deploy.services, bring_up)
