"""An update changes only what the config manages, on top of the service as deployed.

Cloud Run's UpdateService replaces the whole resource with what it is sent: a template built
from the config alone would wipe whatever a team set some other way (a port, a VPC connector,
Cloud SQL, volumes, probes, the execution environment, sidecars, annotations, revision
tags). So an update starts from the live service (its etag too: a concurrent change fails
rather than being overwritten) and sets, field by field, what the config sets, as `gcloud run
deploy` does.

Env vars and volumes are the lists loop also removes from: the names it set are kept in
annotations of the template, so one dropped from the config is removed at the next deploy,
while one someone else set stays. A candidate revision (`traffic = "candidate"`) leaves the
traffic where it is and adds its own tag.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from deployloop.config import ServiceConfig, url_env_var
from deployloop.deploy.cloudrun.spec import (
    ANNOTATION_DEPLOY_ID,
    ANNOTATION_GIT_SHA,
    ANNOTATION_MANAGED_ENV,
    ANNOTATION_MANAGED_VOLUMES,
    LOOP_TAG_PREFIX,
    short_name,
    volume_names,
)

if TYPE_CHECKING:
    from google.cloud import run_v2


def copy_of(service: run_v2.Service) -> run_v2.Service:
    """A copy to merge into, leaving `service` as it was (the plan compares the two)."""
    from google.cloud import run_v2

    copy = run_v2.Service()
    run_v2.Service.pb(copy).CopyFrom(run_v2.Service.pb(service))
    return copy


def main_container(template: run_v2.RevisionTemplate) -> run_v2.Container | None:
    """The container that serves requests: with several (sidecars), the one with a port."""
    index = _main_index(template)
    return None if index is None else template.containers[index]


def _main_index(template: run_v2.RevisionTemplate) -> int | None:
    containers = list(template.containers)
    for index, container in enumerate(containers):
        if container.ports:
            return index
    return 0 if containers else None


def managed_env(template: run_v2.RevisionTemplate) -> set[str]:
    """The env vars a deploy of loop set in this template."""
    return set(_names(template.annotations.get(ANNOTATION_MANAGED_ENV, "")))


def merge_for_update(
    current: run_v2.Service, desired: run_v2.Service, service: ServiceConfig
) -> run_v2.Service:
    """`current`, changed only where the config (through `desired`, built from it) says."""
    from google.cloud import run_v2

    template = current.template
    new = desired.template
    wanted = new.containers[0]
    container = main_container(template)
    if container is None:
        template.containers = [wanted]
    else:
        container.image = wanted.image
        container.env = _merged_env(container.env, wanted.env, managed_env(template))
        for key, value in wanted.resources.limits.items():
            container.resources.limits[key] = value
        if service.cpu_boost is not None:
            container.resources.startup_cpu_boost = service.cpu_boost
        if service.cpu_throttling is not None:
            container.resources.cpu_idle = service.cpu_throttling
        for name, is_set in (
            ("command", service.command is not None),
            ("args", service.args is not None),
            ("ports", service.port is not None),
            ("startup_probe", service.startup_probe is not None),
            ("liveness_probe", service.liveness_probe is not None),
        ):
            if is_set:
                setattr(container, name, getattr(wanted, name))
        if _manages_volumes(service):
            _replace_volumes(template, container, new, wanted)
    if service.execution_environment is not None:
        template.execution_environment = new.execution_environment
    if service.vpc is not None:
        template.vpc_access = new.vpc_access
    for key, value in new.labels.items():
        template.labels[key] = value
    for key, value in new.annotations.items():  # the managed env vars' names among them
        template.annotations[key] = value
    if service.service_account:
        template.service_account = service.service_account
    if service.min_instances is not None:
        template.scaling.min_instance_count = service.min_instances
    if service.max_instances is not None:
        template.scaling.max_instance_count = service.max_instances
    if service.concurrency is not None:
        template.max_instance_request_concurrency = service.concurrency
    if service.timeout_s is not None:
        template.timeout = new.timeout
    for key, value in desired.labels.items():
        current.labels[key] = value
    if service.ingress is not None:
        current.ingress = desired.ingress
    if service.invoker_iam_disabled is not None:
        current.invoker_iam_disabled = service.invoker_iam_disabled
    # The live template's revision name (a team's --revision-suffix) is taken: sending it
    # again is the 409 "revision with different configuration already exists". A candidate
    # brings its own; otherwise Cloud Run names the revision.
    template.revision = new.revision
    if new.revision:  # a candidate: the traffic stays where it is
        current.traffic = _candidate_traffic(current, [t for t in desired.traffic if t.tag])
        return current
    current.traffic = [
        run_v2.TrafficTarget(
            type_=run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST,
            percent=100,
        ),
        *tags_kept(current.traffic),
    ]
    return current


def _candidate_traffic(
    current: run_v2.Service, candidate: Sequence[run_v2.TrafficTarget]
) -> list[run_v2.TrafficTarget]:
    """The traffic as it is, pinned: what follows the latest revision now goes to the one
    that serves it (else the new revision would take it over); older candidates' tags are
    dropped (they serve nothing); then the new candidate's tag."""
    from google.cloud import run_v2

    kinds = run_v2.TrafficTargetAllocationType
    serving = short_name(current.latest_ready_revision)
    out = []
    for target in current.traffic:
        if target.tag.startswith(LOOP_TAG_PREFIX) and not target.percent:
            continue
        if target.type_ == kinds.TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST and serving:
            target = run_v2.TrafficTarget(
                type_=kinds.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION,
                revision=serving, percent=target.percent, tag=target.tag,
            )
        out.append(target)
    if not current.traffic and serving:  # no targets: all of it follows the latest
        out.append(run_v2.TrafficTarget(
            type_=kinds.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION, revision=serving, percent=100,
        ))
    return out + list(candidate)


def _manages_volumes(service: ServiceConfig) -> bool:
    """Cloud SQL and secret volumes are one list: the config sets it when it gives either."""
    return service.cloudsql_instances is not None or service.volumes is not None


def _replace_volumes(
    template: run_v2.RevisionTemplate,
    container: run_v2.Container,
    new: run_v2.RevisionTemplate,
    wanted: run_v2.Container,
) -> None:
    """The volumes loop made last time (and any of the names it makes now) give way to the
    config's; every other volume and mount stays."""
    mine = set(_names(template.annotations.get(ANNOTATION_MANAGED_VOLUMES, "")))
    mine |= {volume.name for volume in new.volumes}
    template.volumes = [v for v in template.volumes if v.name not in mine] + list(new.volumes)
    container.volume_mounts = [
        m for m in container.volume_mounts if m.name not in mine
    ] + list(wanted.volume_mounts)
    if not new.volumes:
        template.annotations.pop(ANNOTATION_MANAGED_VOLUMES, None)


def _names(text: str) -> list[str]:
    return [name for name in text.split(",") if name]


def tags_kept(traffic: Sequence[run_v2.TrafficTarget]) -> list[run_v2.TrafficTarget]:
    """The revision tags of `traffic`, with no share of it: a deploy or a rollback moves the
    traffic, and leaves every tag (and its URL) where it was."""
    from google.cloud import run_v2

    kept = []
    for target in traffic:
        if target.tag:
            kept.append(
                run_v2.TrafficTarget(
                    type_=target.type_, revision=target.revision, tag=target.tag, percent=0
                )
            )
    return kept


def unmanaged_settings(
    current: run_v2.Service, desired: run_v2.Service, service: ServiceConfig
) -> tuple[str, ...]:
    """What the live service holds that the config does not manage and a team set on
    purpose (Cloud Run's own defaults, which GetService reports filled in, are left out): a
    deploy keeps each of them, and `loop plan` says so. `desired` is what the deploy sends
    (merged or not: only the env vars it manages are read)."""
    from google.cloud import run_v2

    template = current.template
    kept: list[str] = []
    mine = set(_names(template.annotations.get(ANNOTATION_MANAGED_VOLUMES, "")))
    mine |= set(volume_names(service))
    volumes_managed = _manages_volumes(service)
    container = main_container(template)
    if container is not None:
        # A dependency's URL var is loop's even while that URL is not known (`loop plan`).
        ours = managed_env(template) | managed_env(desired.template)
        ours |= {url_env_var(d) for d in service.depends_on}
        theirs = [v.name for v in container.env if v.name not in ours]
        if theirs:
            kept.append("env " + ", ".join(theirs))
        ports = [p.container_port for p in container.ports]
        if ports and ports != [8080] and service.port is None:
            kept.append("port " + ", ".join(str(p) for p in ports))
        if (container.command and service.command is None) or (
            container.args and service.args is None
        ):
            kept.append("command/args")
        for probe_name in ("startup_probe", "liveness_probe"):
            if getattr(service, probe_name) is not None:
                continue
            pb = run_v2.Probe.pb(getattr(container, probe_name))
            if pb.HasField("http_get") or pb.HasField("grpc"):
                kept.append(probe_name.replace("_", " "))
        mounts = [
            m.mount_path for m in container.volume_mounts
            if not (volumes_managed and m.name in mine)
        ]
        if mounts:
            kept.append("volume mounts " + ", ".join(mounts))
    main = _main_index(template)
    kept += [
        f"sidecar {c.name or i + 1}" for i, c in enumerate(template.containers) if i != main
    ]
    pb = run_v2.RevisionTemplate.pb(template)
    if pb.HasField("vpc_access") and service.vpc is None:
        vpc = template.vpc_access
        kept.append(f"VPC access {vpc.connector or 'direct'}")
    for volume in template.volumes:
        if volumes_managed and volume.name in mine:
            continue
        kind = run_v2.Volume.pb(volume).WhichOneof("volume_type")
        what = {"cloud_sql_instance": "Cloud SQL volume", "secret": "secret volume"}
        kept.append(f"{what.get(kind or '', 'volume')} {volume.name}")
    if template.execution_environment and service.execution_environment is None:
        kept.append(f"execution environment {template.execution_environment.name}")
    if template.session_affinity:
        kept.append("session affinity")
    if template.encryption_key:
        kept.append("encryption key")
    ours = {ANNOTATION_DEPLOY_ID, ANNOTATION_GIT_SHA, ANNOTATION_MANAGED_ENV,
            ANNOTATION_MANAGED_VOLUMES}
    others = sorted(k for k in template.annotations if k not in ours)
    if others:
        kept.append("annotations " + ", ".join(others))
    kept += [f"tag {t.tag}" for t in current.traffic if t.tag]
    return tuple(kept)


def _merged_env(
    now: Sequence[run_v2.EnvVar], wanted: Sequence[run_v2.EnvVar], managed_before: set[str]
) -> list[run_v2.EnvVar]:
    """The config's vars set or replaced in place; a var loop set before and the config
    dropped is removed; every other var is kept, in its place."""
    by_name = {var.name: var for var in wanted}
    out = []
    for var in now:
        if var.name in by_name:
            out.append(by_name.pop(var.name))
        elif var.name not in managed_before:
            out.append(var)
    out.extend(by_name.values())
    return out
