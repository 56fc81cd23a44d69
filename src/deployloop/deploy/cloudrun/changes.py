"""What `loop plan` shows: how a deployed service differs from the one a deploy would send."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from deployloop.config import ServiceConfig
from deployloop.deploy.cloudrun.merge import main_container, unmanaged_settings
from deployloop.deploy.cloudrun.spec import INGRESS, short_name

if TYPE_CHECKING:
    from google.cloud import run_v2


def describe_changes(
    current: run_v2.Service,
    desired: run_v2.Service,
    service: ServiceConfig,
    unknown_vars: set[str],
) -> tuple[str, ...]:
    """What deploying `desired` (the live service with the config applied: merge.py) would
    change, one short phrase each, values of env vars not shown; then what the live service
    holds that the config does not manage, which the deploy keeps. A field the config leaves
    out is kept as it is."""
    from google.cloud import run_v2

    changes: list[str] = []
    now = main_container(current.template) or run_v2.Container()
    new = main_container(desired.template) or run_v2.Container()
    if now.image != new.image:
        changes.append(f"image {now.image or '(none)'} -> {new.image}")
    now_env, now_secrets = _split_env(now.env)
    new_env, new_secrets = _split_env(new.env)
    for name in sorted((now_env.keys() | new_env.keys()) - unknown_vars):
        if name not in now_env:
            changes.append(f"env {name} added")
        elif name not in new_env:
            changes.append(f"env {name} removed")
        elif now_env[name] != new_env[name]:
            changes.append(f"env {name} changed")
    for name in sorted(now_secrets.keys() | new_secrets.keys()):
        if name not in now_secrets:
            changes.append(f"secret {name} added ({new_secrets[name]})")
        elif name not in new_secrets:
            changes.append(f"secret {name} removed")
        elif now_secrets[name] != new_secrets[name]:
            changes.append(f"secret {name} {now_secrets[name]} -> {new_secrets[name]}")
    template = current.template
    timeout = int(run_v2.RevisionTemplate.pb(template).timeout.seconds)
    account = template.service_account or None
    if account and account.endswith("-compute@developer.gserviceaccount.com"):
        account = None  # the default compute service account is what "not set" means
    ingress = {getattr(run_v2.IngressTraffic, v): k for k, v in INGRESS.items()}
    fields = [
        ("cpu", _cpu(now.resources.limits.get("cpu")), _cpu(service.cpu), {"1"}),
        ("memory", now.resources.limits.get("memory"), service.memory, {"512Mi"}),
        ("min_instances", _int(template.scaling.min_instance_count),
         _opt(service.min_instances), {"0"}),
        ("max_instances", _int(template.scaling.max_instance_count),
         _opt(service.max_instances), {"100"}),
        ("concurrency", _int(template.max_instance_request_concurrency),
         _opt(service.concurrency), {"80"}),
        ("timeout", f"{timeout}s" if timeout else None,
         f"{service.timeout_s}s" if service.timeout_s else None, {"300s"}),
        ("service_account", account, service.service_account, set()),
        ("ingress", ingress.get(current.ingress), service.ingress, {"all"}),
        ("invoker_iam_disabled", str(current.invoker_iam_disabled).lower(),
         None if service.invoker_iam_disabled is None
         else str(service.invoker_iam_disabled).lower(), {"false"}),
    ]
    for label, before, after, defaults in fields:
        change = _field_change(label, before, after, defaults)
        if change:
            changes.append(change)
    for key, value in sorted(service.labels.items()):
        if key not in current.labels:
            changes.append(f"label {key} added")
        elif current.labels[key] != value:
            changes.append(f"label {key} {current.labels[key]} -> {value}")
    changes += _revision_changes(current.template, desired.template)
    tags = [t for t in desired.traffic if t.tag and t.revision == desired.template.revision]
    if desired.template.revision and tags:
        changes.append(
            f"candidate revision tagged {tags[0].tag}, with no traffic: the traffic stays"
            " where it is until promoted"
        )
        return tuple(changes) + _kept(current, desired, service)
    pinned = [
        t for t in current.traffic
        if t.type_ != run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST
        and t.percent
    ]
    if pinned:
        where = ", ".join(f"{t.percent}% on {t.revision}" for t in pinned)
        changes.append(f"traffic {where} -> 100% on the new revision")
    return tuple(changes) + _kept(current, desired, service)


def _kept(
    current: run_v2.Service, desired: run_v2.Service, service: ServiceConfig
) -> tuple[str, ...]:
    kept = unmanaged_settings(current, desired, service)
    return ("kept as deployed: " + "; ".join(kept),) if kept else ()


def _revision_changes(
    now: run_v2.RevisionTemplate, new: run_v2.RevisionTemplate
) -> list[str]:
    """The revision settings beyond the config's basics (port, command, probes, volumes, VPC,
    execution environment, CPU), as `<setting> <before> -> <after>` or `<setting> changed`."""
    from google.cloud import run_v2

    before = main_container(now) or run_v2.Container()
    after = main_container(new) or run_v2.Container()
    out = []
    ports = (_ports(before), _ports(after))
    if ports[0] != ports[1]:
        out.append(f"port {ports[0] or 'default'} -> {ports[1] or 'default'}")
    for label, one, two in (
        ("command", list(before.command), list(after.command)),
        ("args", list(before.args), list(after.args)),
    ):
        if one != two:
            out.append(f"{label} {' '.join(one) or '(image default)'} -> {' '.join(two)}")
    for name in ("startup_probe", "liveness_probe"):
        if run_v2.Probe.pb(getattr(before, name)) != run_v2.Probe.pb(getattr(after, name)):
            path = getattr(after, name).http_get.path
            out.append(f"{name.replace('_', ' ')} -> HTTP {path}" if path else f"{name} changed")
    volumes = ({v.name for v in now.volumes}, {v.name for v in new.volumes})
    out += [f"volume {name} added" for name in sorted(volumes[1] - volumes[0])]
    out += [f"volume {name} removed" for name in sorted(volumes[0] - volumes[1])]
    same_names = volumes[0] & volumes[1]
    for name in sorted(same_names):
        old = next(v for v in now.volumes if v.name == name)
        fresh = next(v for v in new.volumes if v.name == name)
        if run_v2.Volume.pb(old) != run_v2.Volume.pb(fresh):
            out.append(f"volume {name} changed")
    if run_v2.VpcAccess.pb(now.vpc_access) != run_v2.VpcAccess.pb(new.vpc_access):
        out.append(f"VPC access -> {new.vpc_access.connector or 'direct VPC egress'}")
    if now.execution_environment != new.execution_environment:
        out.append(
            f"execution environment {now.execution_environment.name}"
            f" -> {new.execution_environment.name}"
        )
    for label, field in (("cpu boost", "startup_cpu_boost"), ("cpu throttling", "cpu_idle")):
        one, two = getattr(before.resources, field), getattr(after.resources, field)
        if one != two:
            out.append(f"{label} {one} -> {two}")
    return out


def _ports(container: run_v2.Container) -> str:
    return ", ".join(str(p.container_port) for p in container.ports)


def _field_change(label: str, before: str | None, after: str | None, defaults: set[str]) -> str:
    if after is None:  # the config leaves it as deployed
        return ""
    if before == after or (before is None and after in defaults):
        return ""
    return f"{label} {before or 'default'} -> {after}"


def _split_env(env: Sequence[run_v2.EnvVar]) -> tuple[dict[str, str], dict[str, str]]:
    """(plain name -> value, secret name -> 'secret:version')."""
    plain: dict[str, str] = {}
    secrets: dict[str, str] = {}
    for var in env:
        ref = var.value_source.secret_key_ref
        if ref.secret:
            secrets[var.name] = f"{short_name(ref.secret)}:{ref.version or 'latest'}"
        else:
            plain[var.name] = var.value
    return plain, secrets


def _cpu(value: str | None) -> str | None:
    """`1000m` and `1` are the same CPU limit."""
    if value and value.endswith("m") and value[:-1].isdigit() and int(value[:-1]) % 1000 == 0:
        return str(int(value[:-1]) // 1000)
    return value or None


def _int(value: int) -> str | None:
    return str(value) if value else None


def _opt(value: int | None) -> str | None:
    return None if value is None else str(value)
