"""Deploy targets: bring the services of an environment up and prove they are ready.

Targets are imported lazily: `loop status` never needs them, and some are costly to import.
"""

from __future__ import annotations

import os

from deployloop.config import Config, ConfigError
from deployloop.deploy.base import DeployContext, DeployError, DeployTarget

__all__ = [
    "DeployContext", "DeployError", "DeployTarget", "deploy_notes", "make_target", "preflight",
]


def deploy_notes(config: Config) -> list[str]:
    """What a deploy of this config should say before it starts ("note: ..." when something
    is not checked, "warning: ..." when something looks wrong): for `loop plan` and each
    iteration's deploy."""
    from deployloop.deploy.secret_lookalikes import lookalike_warnings

    notes = []
    if config.deploy.target == "cloudrun":
        from deployloop.deploy.cloudrun.registry import AS_WRITTEN_NOTE, used_as_written

        if used_as_written():
            notes.append(f"note: {AS_WRITTEN_NOTE}")
        if _secrets_skipped(config):
            from deployloop.deploy.cloudrun.secrets import SKIPPED_NOTE

            notes.append(f"note: {SKIPPED_NOTE}")
    return notes + [f"warning: {w}" for w in lookalike_warnings(config)]


def _secrets_skipped(config: Config) -> bool:
    from deployloop.deploy import gcp

    reads = any(s.secrets or s.volumes for s in config.deploy.services)
    return reads and gcp.emulator_host() is not None and not os.environ.get(
        gcp.SECRETMANAGER_EMULATOR_ENV, ""
    ).strip()


def preflight(config: Config) -> None:
    """What stops every deploy of this config before it starts, as one DeployError line, so
    that `loop run` says it before an iteration is recorded and `loop plan` says it instead of
    a plan: for cloudrun (not against the fake), Google credentials that are missing, or that
    cannot mint the ID tokens its private services need; with the cloudrun-jobs executor, a
    results bucket that cannot be listed."""
    if config.tests.executor == "cloudrun-jobs":
        jobs_preflight(config)
    if config.deploy.target != "cloudrun":
        return
    from deployloop.deploy import gcp

    if gcp.emulator_host() is not None:
        return
    try:
        credentials = gcp.default_credentials()
    except gcp.CredentialsError as exc:
        raise DeployError(str(exc), []) from None
    private = [s.name for s in config.deploy.services if not s.public]
    if private and config.deploy.invoker_service_account is None:
        problem = gcp.id_token_problem(credentials)
        if problem is not None:
            raise DeployError(
                f"private services {', '.join(private)} need ID tokens, and {problem}", []
            )


def jobs_preflight(config: Config) -> None:
    """The cloudrun-jobs executor can start: credentials, and a results bucket loop may
    list (DeployError: exit 3 before anything is deployed)."""
    from deployloop.deploy import gcp
    from deployloop.runner.cloudrun_jobs.bucket import BucketError, check_bucket
    from deployloop.runner.cloudrun_jobs.job import job_location

    jobs = config.tests.cloudrun_jobs
    assert jobs is not None  # the config requires it with this executor
    storage_emulated = bool(os.environ.get(gcp.STORAGE_EMULATOR_ENV, "").strip())
    if gcp.emulator_host() is not None and not storage_emulated:
        raise DeployError(
            "executor cloudrun-jobs against the Cloud Run emulator (CLOUDRUN_EMULATOR_HOST)"
            " needs a Cloud Storage emulator too: set STORAGE_EMULATOR_HOST",
            [],
        )
    if gcp.emulator_host() is None or not storage_emulated:
        try:
            gcp.default_credentials()
        except gcp.CredentialsError as exc:
            raise DeployError(str(exc), []) from None
    project, _region = job_location(config)
    try:
        check_bucket(project, jobs.results_bucket)
    except BucketError as exc:
        raise DeployError(str(exc), []) from None


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
