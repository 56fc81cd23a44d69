"""The run_v2.Service a deploy sends, built from the config (merge.py applies it to the
deployed one for an update); and reading a rollout's outcome back from the service Cloud Run
reports."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING

from deployloop.config import Config, ServiceConfig, url_env_var
from deployloop.config.models import ProbeConfig, VpcConfig
from deployloop.deploy.base import DeployContext
from deployloop.deploy.cloudrun.errors import Failed, one_line, strip_redundant
from deployloop.deploy.local import fill

if TYPE_CHECKING:
    from google.cloud import run_v2

# Labels and annotations this target adds; Cloud Run rejects only the run.googleapis.com,
# cloud.googleapis.com, serving.knative.dev and autoscaling.knative.dev namespaces.
LABEL_ENV = "deployloop-env"
LABEL_ITERATION = "deployloop-iteration"
ANNOTATION_DEPLOY_ID = "deployloop/deploy-id"  # unique per deploy: always a new revision
ANNOTATION_GIT_SHA = "deployloop/git-sha"
# What an update may take away again (merge.py): the env vars and volumes loop set.
ANNOTATION_MANAGED_ENV = "deployloop/env"
ANNOTATION_MANAGED_VOLUMES = "deployloop/volumes"

INGRESS = {
    "all": "INGRESS_TRAFFIC_ALL",
    "internal": "INGRESS_TRAFFIC_INTERNAL_ONLY",
    "internal-and-cloud-load-balancing": "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER",
}


def image_for(service: ServiceConfig, ctx: DeployContext) -> str:
    """The image with `{git_sha}` and `{iteration}` filled (see the package docstring)."""
    return fill(service.image or "", git_sha=image_sha(ctx.git_sha), iteration=ctx.iteration)


def image_sha(git_sha: str | None) -> str:
    """`{git_sha}` in an image: valid in a tag ([A-Za-z0-9_.-], at most 128) and a path."""
    if not git_sha:
        return "unknown"
    return re.sub(r"[^A-Za-z0-9_.-]", "-", git_sha).lower()[:128]


def service_path(config: Config, service: ServiceConfig) -> str:
    return f"{parent_path(config)}/services/{service.cloud_run_name}"


def parent_path(config: Config) -> str:
    return f"projects/{config.deploy.project}/locations/{config.deploy.region}"


def short_name(resource: str) -> str:
    """`backend-00002-xyz` from `projects/.../services/backend/revisions/backend-00002-xyz`."""
    return resource.rsplit("/", 1)[-1]


def token_env_var(service_name: str) -> str:
    """`LOOP_<NAME>_ID_TOKEN`, next to `LOOP_<NAME>_URL`."""
    return url_env_var(service_name).removesuffix("_URL") + "_ID_TOKEN"


def label_value(value: str) -> str:
    """A Cloud Run label value: lower-case letters, digits, '_' and '-', at most 63."""
    return re.sub(r"[^a-z0-9_-]", "-", value.lower())[:63]


LOOP_TAG_PREFIX = "loop-it"  # candidate revisions' tags: loop-it7 for iteration 7


def candidate_tag(iteration: int) -> str:
    return f"{LOOP_TAG_PREFIX}{iteration}"


def candidate_revision(service: ServiceConfig, iteration: int, deploy_id: str) -> str:
    """The name a candidate revision is given, so that traffic can name it (with its tag)
    in the very update that creates it. Cloud Run wants the service's name first, and at most
    63 characters."""
    suffix = f"-loop{iteration}-{deploy_id[:5]}"
    return service.cloud_run_name[: 63 - len(suffix)] + suffix


def base_url(url: str, tag: str | None) -> str:
    """A tag's URL (https://TAG---service-hash.a.run.app) without the tag: the service's own,
    which ID tokens name as their audience."""
    if tag and f"//{tag}---" in url:
        return url.replace(f"//{tag}---", "//", 1)
    return url


def build_service(
    service: ServiceConfig,
    ctx: DeployContext,
    image: str,
    dependency_urls: Mapping[str, str],
    deploy_id: str,
    candidate: bool = False,
) -> run_v2.Service:
    """The Service the config describes: what a create sends; an update applies it to the
    live service (merge.py)."""
    from google.cloud import run_v2

    values: dict[str, str] = dict(service.env)
    for dep, url in dependency_urls.items():
        if url:
            values[url_env_var(dep)] = url
    env = [run_v2.EnvVar(name=k, value=v) for k, v in values.items() if k not in service.secrets]
    for var, ref in service.secrets.items():
        secret, version = ref.split(":", 1)
        env.append(
            run_v2.EnvVar(
                name=var,
                value_source=run_v2.EnvVarSource(
                    secret_key_ref=run_v2.SecretKeySelector(secret=secret, version=version)
                ),
            )
        )
    container = run_v2.Container(image=image, env=env)
    limits = {k: v for k, v in (("cpu", service.cpu), ("memory", service.memory)) if v}
    if limits:
        container.resources = run_v2.ResourceRequirements(limits=limits)
    if service.cpu_boost is not None:
        container.resources.startup_cpu_boost = service.cpu_boost
    if service.cpu_throttling is not None:
        container.resources.cpu_idle = service.cpu_throttling  # idle CPU: only in requests
    if service.command is not None:
        container.command = service.command
    if service.args is not None:
        container.args = service.args
    if service.port is not None:
        container.ports = [run_v2.ContainerPort(container_port=service.port)]
    if service.startup_probe is not None:
        container.startup_probe = _probe(service.startup_probe)
    if service.liveness_probe is not None:
        container.liveness_probe = _probe(service.liveness_probe)
    volumes = _volumes(service)
    container.volume_mounts = [mount for _, mount in volumes]
    annotations = {
        ANNOTATION_DEPLOY_ID: deploy_id,
        ANNOTATION_GIT_SHA: ctx.git_sha or "",
        ANNOTATION_MANAGED_ENV: ",".join(sorted(var.name for var in env)),
    }
    if volumes:
        annotations[ANNOTATION_MANAGED_VOLUMES] = ",".join(v.name for v, _ in volumes)
    template = run_v2.RevisionTemplate(
        containers=[container],
        labels={**service.labels, LABEL_ITERATION: str(ctx.iteration)},
        annotations=annotations,
        volumes=[volume for volume, _ in volumes],
    )
    if service.execution_environment is not None:
        template.execution_environment = getattr(
            run_v2.ExecutionEnvironment,
            f"EXECUTION_ENVIRONMENT_{service.execution_environment.upper()}",
        )
    if service.vpc is not None:
        template.vpc_access = vpc_access(service.vpc)
    if service.service_account:
        template.service_account = service.service_account
    if service.min_instances is not None or service.max_instances is not None:
        template.scaling = run_v2.RevisionScaling(
            min_instance_count=service.min_instances or 0,
            max_instance_count=service.max_instances or 0,
        )
    if service.concurrency is not None:
        template.max_instance_request_concurrency = service.concurrency
    if service.timeout_s is not None:
        template.timeout = timedelta(seconds=service.timeout_s)  # proto-plus: a Duration
    traffic = [
        run_v2.TrafficTarget(
            type_=run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST,
            percent=100,
        )
    ]
    if candidate:
        # Named, and tagged with no traffic: on an update merge.py keeps the traffic where it
        # was; a new service has none to keep.
        template.revision = candidate_revision(service, ctx.iteration, deploy_id)
        traffic.append(
            run_v2.TrafficTarget(
                type_=run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION,
                revision=template.revision,
                tag=candidate_tag(ctx.iteration),
                percent=0,
            )
        )
    svc = run_v2.Service(
        template=template,
        labels={**service.labels, LABEL_ENV: label_value(ctx.env)},
        traffic=traffic,
    )
    if service.ingress is not None:
        svc.ingress = getattr(run_v2.IngressTraffic, INGRESS[service.ingress])
    if service.invoker_iam_disabled is not None:
        svc.invoker_iam_disabled = service.invoker_iam_disabled
    return svc


def _probe(probe: ProbeConfig) -> run_v2.Probe:
    from google.cloud import run_v2

    return run_v2.Probe(
        http_get=run_v2.HTTPGetAction(path=probe.path),
        period_seconds=probe.period_s,
        failure_threshold=probe.failure_threshold,
        initial_delay_seconds=probe.initial_delay_s,
        timeout_seconds=probe.timeout_s,
    )


def vpc_access(vpc: VpcConfig) -> run_v2.VpcAccess:
    from google.cloud import run_v2

    egress = run_v2.VpcAccess.VpcEgress
    access = run_v2.VpcAccess(
        egress=egress.ALL_TRAFFIC if vpc.egress == "all-traffic" else egress.PRIVATE_RANGES_ONLY
    )
    if vpc.connector is not None:
        access.connector = vpc.connector
    else:
        access.network_interfaces = [
            run_v2.VpcAccess.NetworkInterface(
                network=vpc.network or "", subnetwork=vpc.subnetwork or ""
            )
        ]
    return access


CLOUD_SQL_MOUNT = "/cloudsql"  # where Cloud Run's Cloud SQL volume has always been


def volume_names(service: ServiceConfig) -> list[str]:
    """The names of the volumes the config asks for: Cloud SQL's, then each secret's."""
    names = ["cloudsql"] if service.cloudsql_instances else []
    return names + [f"secret-{n}" for n in range(1, len(service.volumes or ()) + 1)]


def _volumes(service: ServiceConfig) -> list[tuple[run_v2.Volume, run_v2.VolumeMount]]:
    """The volumes the config asks for, each with its mount in the service's container."""
    from google.cloud import run_v2

    out = []
    names = iter(volume_names(service))
    if service.cloudsql_instances:
        out.append((
            run_v2.Volume(
                name=next(names),
                cloud_sql_instance=run_v2.CloudSqlInstance(instances=service.cloudsql_instances),
            ),
            run_v2.VolumeMount(name="cloudsql", mount_path=CLOUD_SQL_MOUNT),
        ))
    for volume in service.volumes or ():
        name = next(names)
        out.append((
            run_v2.Volume(
                name=name,
                secret=run_v2.SecretVolumeSource(
                    secret=volume.secret,
                    items=[run_v2.VersionToPath(
                        path=volume.file or volume.secret, version=volume.version
                    )],
                ),
            ),
            run_v2.VolumeMount(name=name, mount_path=volume.mount_path),
        ))
    return out


def tag_url(svc: run_v2.Service, tag: str) -> str | None:
    """The URL Cloud Run gives a revision tag (in the traffic statuses)."""
    for status in svc.traffic_statuses:
        if status.tag == tag and status.uri:
            return str(status.uri)
    return None


def check_rollout(svc: run_v2.Service, previous: str | None, deploy_id: str) -> str:
    """The short name of the revision this deploy created, or Failed saying why not ready.
    The service's template must still be this deploy's: on shared staging a teammate's deploy
    may land meanwhile, and its revision must never be credited to this iteration."""
    created = short_name(svc.latest_created_revision)
    ready = short_name(svc.latest_ready_revision)
    theirs = svc.template.annotations.get(ANNOTATION_DEPLOY_ID, "")
    if theirs != deploy_id:
        raise Failed(
            f"another deploy replaced this one while it rolled out (revision"
            f" '{created or '?'}' has deploy id {theirs or 'none'!r}, not this iteration's"
            f" {deploy_id!r}): the revision would not be the one built here; deploy again"
            " when no one else deploys this service"
        )
    if svc.terminal_condition.state != condition_state("CONDITION_SUCCEEDED"):
        message = strip_redundant(condition_message(svc) or "no reason given")
        raise Failed(f"revision '{created or '?'}' not ready: {message}")
    if not created or created == previous:
        raise Failed(f"the deploy created no new revision (latest is '{created or '?'}')")
    if ready != created:
        raise Failed(
            f"revision '{created}' not ready: the latest ready revision is '{ready or 'none'}'"
        )
    return created


def condition_message(svc: run_v2.Service) -> str:
    """What the failing condition says: the terminal one first, then any other that failed."""
    terminal = svc.terminal_condition
    if terminal.message:
        return one_line(terminal.message)
    for condition in svc.conditions:
        if condition.state == condition_state("CONDITION_FAILED") and condition.message:
            return one_line(condition.message)
    if terminal.type_:
        return f"condition {terminal.type_} is {terminal.state.name}"
    return ""


def serving_text(svc: run_v2.Service) -> str | None:
    """The revisions that serve the traffic: `rev` alone, or `rev-a 90%, rev-b 10%`."""
    shares: dict[str, int] = {}
    for status in svc.traffic_statuses:
        if status.percent > 0:
            name = short_name(status.revision)
            shares[name] = shares.get(name, 0) + status.percent
    if not shares:
        return None
    if len(shares) == 1:
        return next(iter(shares))
    return ", ".join(f"{name} {percent}%" for name, percent in shares.items())


def serving_share(svc: run_v2.Service, revision: str) -> int | None:
    """Percent of the traffic `revision` serves, from traffic_statuses; None if not reported."""
    if not svc.traffic_statuses:
        return None
    return sum(
        status.percent for status in svc.traffic_statuses
        if short_name(status.revision) == revision
    )


def condition_state(name: str) -> run_v2.Condition.State:
    from google.cloud import run_v2

    state: run_v2.Condition.State = getattr(run_v2.Condition.State, name)
    return state
