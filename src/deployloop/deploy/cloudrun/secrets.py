"""Every secret a service reads, checked with Secret Manager before anything deploys.

A revision whose secret is missing, disabled, or unreadable by its service account never
starts, and Cloud Run says so only after the deploy (as a failed revision, minutes later).
Here, for each secret env var and secret volume of the config:
  - the version exists and is enabled (an error: the deploy stops, naming service, variable,
    secret and version);
  - the service's runtime service account holds a role that reads it on the secret itself
    (a warning when not: a grant on the project does not show in the secret's policy).
A caller that may not read a secret's metadata or policy gets a warning, not an error: the
deploy decides then. SECRETMANAGER_EMULATOR_HOST points the client at a fake.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from deployloop.config import Config, ServiceConfig
from deployloop.deploy import gcp
from deployloop.deploy.cloudrun.errors import api_errors

# Roles that include secretmanager.versions.access.
_READERS = frozenset({
    "roles/secretmanager.secretAccessor", "roles/secretmanager.admin", "roles/owner",
})
SKIPPED_NOTE = (
    "secrets not checked with Secret Manager: CLOUDRUN_EMULATOR_HOST is set and"
    f" {gcp.SECRETMANAGER_EMULATOR_ENV} is not"
)


@dataclass
class SecretFindings:
    errors: list[str] = field(default_factory=list)
    warnings: dict[str, list[str]] = field(default_factory=dict)  # by service
    skipped: bool = False  # no Secret Manager to ask (the Cloud Run fake alone)


def check_secrets(config: Config) -> SecretFindings:
    findings = SecretFindings()
    refs = [(s, what, name, version) for s in config.deploy.services
            for what, name, version in _refs(s)]
    if not refs:
        return findings
    try:
        client = gcp.secret_manager_client()
    except gcp.CredentialsError as exc:  # `loop run` says so before; said here too
        for service, what, _, _ in refs:
            _warn(findings, service, f"{what}: not checked: {exc}")
        return findings
    if client is None:
        findings.skipped = True
        return findings
    from google.api_core import exceptions as gexc
    from google.cloud import secretmanager_v1

    project = config.deploy.project
    enabled = secretmanager_v1.SecretVersion.State.ENABLED
    policies: dict[str, frozenset[str] | None] = {}
    try:
        for service, what, name, version in refs:
            path = f"projects/{project}/secrets/{name}/versions/{version}"
            where = f"service {service.name}: {what} reads secret {name!r} version {version}"
            try:
                found = client.get_secret_version(name=path, timeout=30)
            except gexc.NotFound:
                findings.errors.append(f"{where}: no such secret or version in project"
                                       f" {project}")
                continue
            except gexc.PermissionDenied:
                _warn(findings, service, f"{what}: cannot read secret {name!r}'s metadata"
                      " (secretmanager.versions.get): not checked")
                continue
            except api_errors() as exc:
                _warn(findings, service, f"{what}: secret {name!r} not checked: {exc}")
                continue
            if found.state != enabled:
                state = secretmanager_v1.SecretVersion.State(found.state).name.lower()
                findings.errors.append(f"{where}: that version is {state}")
                continue
            _check_reader(client, findings, service, what, project, name, policies)
    finally:
        client.transport.close()  # type: ignore[no-untyped-call]
    return findings


def _refs(service: ServiceConfig) -> list[tuple[str, str, str]]:
    """(what reads it, secret, version) for each secret env var and volume."""
    out = []
    for var, ref in service.secrets.items():
        name, version = ref.split(":", 1)
        out.append((var, name, version))
    for volume in service.volumes or ():
        out.append((f"volume {volume.mount_path}", volume.secret, volume.version))
    return out


def _check_reader(
    client: object,
    findings: SecretFindings,
    service: ServiceConfig,
    what: str,
    project: str | None,
    name: str,
    policies: dict[str, frozenset[str] | None],
) -> None:
    account = service.service_account
    if account is None:
        return  # the default compute account: its project roles are not in the policy
    if name not in policies:
        policies[name] = _readers(client, f"projects/{project}/secrets/{name}")
    readers = policies[name]
    if readers is None:
        _warn(findings, service, f"{what}: cannot read secret {name!r}'s IAM policy: who may"
              " read it was not checked")
    elif f"serviceAccount:{account}" not in readers:
        _warn(findings, service, f"{what}: {account} has no role that reads secret {name!r}"
              " on the secret (roles/secretmanager.secretAccessor); unless the project"
              " grants it, the revision will not start")


def _readers(client: object, resource: str) -> frozenset[str] | None:
    from google.api_core import exceptions as gexc

    try:
        policy = client.get_iam_policy(request={"resource": resource}, timeout=30)  # type: ignore[attr-defined]
    except (gexc.PermissionDenied, gexc.NotFound):
        return None
    except api_errors():
        return None
    return frozenset(m for b in policy.bindings if b.role in _READERS for m in b.members)


def _warn(findings: SecretFindings, service: ServiceConfig, text: str) -> None:
    findings.warnings.setdefault(service.name, []).append(text)
