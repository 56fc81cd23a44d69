"""The `cloudrun` target with the real google-cloud-run client against an in-process fake.

`cloudrun_fake.FakeCloudRun` serves the Cloud Run Admin API v2 over gRPC on 127.0.0.1; the
client finds it through CLOUDRUN_EMULATOR_HOST. Target-level tests call CloudRunTarget with
short retry waits; end-to-end tests run the real `loop` console script in a subprocess,
which reaches the fake running in a thread of this process.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

import pytest  # noqa: E402
from cloudrun_fake import LATEST, REVISION, FakeCloudRun  # noqa: E402
from conftest import Project, output  # noqa: E402
from registry_fake import FakeRegistry  # noqa: E402

from deployloop.config import Config, parse_config  # noqa: E402
from deployloop.deploy.base import DeployContext, DeployError  # noqa: E402
from deployloop.deploy.cloudrun import (  # noqa: E402
    CloudRunSettings,
    CloudRunTarget,
    image_sha,
    token_env_var,
)
from deployloop.models import Deployment, DeployStatus  # noqa: E402

FAST = CloudRunSettings(
    attempts=4, first_wait_s=0.01, max_wait_s=0.05, poll_slice_s=0.5,
    quota_attempts=8, quota_first_wait_s=0.02, quota_max_wait_s=0.1,
)
SHA = "0123456789abcdef0123456789abcdef01234567"

TWO_SERVICES = """
    [deploy]
    target = "cloudrun"
    project = "demo-proj"
    region = "europe-west1"
    {deploy_extra}

    [[deploy.services]]
    name = "auth"
    image = "europe-docker.pkg.dev/demo-proj/shop/auth:{{git_sha}}"
    allow_unauthenticated = true
    ready_timeout_s = {timeout}

    [[deploy.services]]
    name = "backend"
    image = "europe-docker.pkg.dev/demo-proj/shop/backend:{{git_sha}}-i{{iteration}}"
    depends_on = ["auth"]
    env = {{ MODE = "staging" }}
    secrets = {{ DB_PASSWORD = "db-password:3", API_KEY = "api-key:latest" }}
    ready_timeout_s = {timeout}
    {backend_extra}

    [tests]
    workers = 1

    [[tests.suites]]
    name = "Smoke"
    paths = ["tests/e2e"]
    """


def two_services(timeout: float = 5, backend_extra: str = "", deploy_extra: str = "") -> str:
    text = TWO_SERVICES.format(
        timeout=timeout, backend_extra=backend_extra, deploy_extra=deploy_extra
    )
    return "\n".join(line.removeprefix("    ") for line in text.splitlines())


def config(timeout: float = 5, backend_extra: str = "") -> Config:
    return parse_config(two_services(timeout, backend_extra), "configs/cloudrun.toml")


def ctx(iteration: int = 1, sha: str | None = SHA) -> DeployContext:
    return DeployContext("staging", iteration, sha, Path("/nonexistent"), sys.executable)


def by_name(records: list[Deployment]) -> dict[str, Deployment]:
    return {r.service: r for r in records}


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def flat(text: str) -> str:
    """Rich wraps long lines when not on a terminal: compare with whitespace collapsed."""
    return " ".join(text.split())


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeCloudRun]:
    with FakeCloudRun() as api:
        monkeypatch.setenv("CLOUDRUN_EMULATOR_HOST", api.address)
        yield api


@pytest.fixture
def target(fake: FakeCloudRun) -> Iterator[CloudRunTarget]:
    t = CloudRunTarget(FAST)
    yield t
    t.stop()


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeRegistry]:
    fake_registry = FakeRegistry()
    monkeypatch.setenv("REGISTRY_EMULATOR_HOST", fake_registry.address)
    yield fake_registry
    fake_registry.stop()


def push_images(registry: FakeRegistry, iteration: int = 1) -> None:
    """The images config() names, pushed (without a registry, loop cannot resolve them)."""
    registry.push(f"europe-docker.pkg.dev/demo-proj/shop/auth:{SHA}")
    registry.push(f"europe-docker.pkg.dev/demo-proj/shop/backend:{SHA}-i{iteration}")


# --- deploy ----------------------------------------------------------------------------------


def test_first_deploy_creates_second_updates_with_new_revision(
    fake: FakeCloudRun, target: CloudRunTarget
) -> None:
    first = by_name(target.deploy(config(), ctx(1, f"{SHA}-dirty")))
    assert {r.status for r in first.values()} == {DeployStatus.READY}
    assert first["auth"].revision == "auth-00001-abc"
    assert first["backend"].revision == "backend-00001-abc"
    assert first["auth"].image == f"europe-docker.pkg.dev/demo-proj/shop/auth:{SHA}-dirty"
    assert first["backend"].image == (
        f"europe-docker.pkg.dev/demo-proj/shop/backend:{SHA}-dirty-i1"
    )
    assert first["backend"].started_at and first["backend"].ready_at
    assert get_json(f"{first['backend'].url}/health")["ok"] is True
    assert fake.count("CreateService") == 2 and fake.count("UpdateService") == 0

    second = by_name(target.deploy(config(), ctx(2)))
    assert second["auth"].revision == "auth-00002-abc"
    assert second["backend"].revision == "backend-00002-abc"
    assert second["backend"].url == first["backend"].url
    assert fake.count("CreateService") == 2 and fake.count("UpdateService") == 2
    backend = fake.service("backend")
    assert backend.template.containers[0].image == (
        f"europe-docker.pkg.dev/demo-proj/shop/backend:{SHA}-i2"
    )
    assert fake.serving_revision("backend") == "backend-00002-abc"
    assert backend.template.labels["deployloop-iteration"] == "2"
    assert backend.labels["deployloop-env"] == "staging"


def test_template_carries_every_configured_field(
    fake: FakeCloudRun, target: CloudRunTarget
) -> None:
    extra = """
        service_account = "backend@demo-proj.iam.gserviceaccount.com"
        cpu = "2"
        memory = "1Gi"
        min_instances = 1
        max_instances = 4
        concurrency = 40
        timeout_s = 120
        ingress = "internal-and-cloud-load-balancing"
        labels = { team = "shop" }
        """
    records = by_name(target.deploy(config(backend_extra=extra), ctx()))
    svc = fake.service("backend")
    template = svc.template
    container = template.containers[0]
    env = {v.name: v for v in container.env}
    assert env["MODE"].value == "staging"
    assert env["LOOP_AUTH_URL"].value == records["auth"].url
    assert dict(container.resources.limits) == {"cpu": "2", "memory": "1Gi"}
    assert template.service_account == "backend@demo-proj.iam.gserviceaccount.com"
    assert (template.scaling.min_instance_count, template.scaling.max_instance_count) == (1, 4)
    assert template.max_instance_request_concurrency == 40
    assert template.timeout.total_seconds() == 120
    assert svc.ingress.name == "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER"
    assert svc.labels["team"] == "shop" and template.labels["team"] == "shop"
    assert [t.type_.name for t in svc.traffic] == ["TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST"]


def test_secrets_are_secret_refs_never_values(fake: FakeCloudRun, target: CloudRunTarget) -> None:
    records = by_name(target.deploy(config(), ctx()))
    env = {v.name: v for v in fake.service("backend").template.containers[0].env}
    for var, (secret, version) in {
        "DB_PASSWORD": ("db-password", "3"), "API_KEY": ("api-key", "latest"),
    }.items():
        assert env[var].value == ""
        ref = env[var].value_source.secret_key_ref
        assert (ref.secret, ref.version) == (secret, version)
    # What the running revision sees (the fake has no secret values, only the references).
    seen = get_json(f"{records['backend'].url}/env")
    assert seen["DB_PASSWORD"] == "secret:db-password:3"


def test_git_sha_placeholder_gives_a_valid_tag() -> None:
    tag = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
    assert image_sha(SHA) == SHA
    assert image_sha(f"{SHA}-dirty") == f"{SHA}-dirty"
    assert image_sha(None) == "unknown"
    for value in (SHA, f"{SHA}-dirty", None, "weird sha/with:chars"):
        assert tag.match(image_sha(value))


def test_failed_rollout_reports_the_condition_and_keeps_traffic(
    fake: FakeCloudRun, target: CloudRunTarget
) -> None:
    target.deploy(config(), ctx(1))
    fake.fail_next_rollout("backend", "Container failed to start. Failed to listen on PORT=8080.")
    with pytest.raises(DeployError) as caught:
        target.deploy(config(), ctx(2))
    records = by_name(caught.value.deployments)
    assert records["auth"].status is DeployStatus.READY
    backend = records["backend"]
    assert backend.status is DeployStatus.FAILED
    assert backend.revision == "backend-00002-abc"
    # Against the Cloud Run fake alone its log is not read: where to see it is said.
    assert backend.error == (
        "service 'backend': revision 'backend-00002-abc' not ready:"
        " Container failed to start. Failed to listen on PORT=8080. (console:"
        " https://console.cloud.google.com/run/detail/europe-west1/backend/revisions"
        "?project=demo-proj)"
    )
    assert str(caught.value) == backend.error
    assert fake.serving_revision("backend") == "backend-00001-abc"


def test_rollout_ending_in_an_operation_error(fake: FakeCloudRun, target: CloudRunTarget) -> None:
    fake.fail_next_rollout("auth", "Image not found.", as_operation_error=True)
    with pytest.raises(DeployError) as caught:
        target.deploy(config(), ctx())
    records = by_name(caught.value.deployments)
    # The operation failed: no revision is named as this deploy's, so no log is looked up.
    assert records["auth"].error == (
        "service 'auth': revision 'auth-00001-abc' not ready: Image not found."
    )
    assert records["backend"].status is DeployStatus.SKIPPED
    assert records["backend"].error == "dependency 'auth' failed"
    assert fake.count("CreateService", "backend") == 0


def test_unhealthy_service_fails_its_health_check(
    fake: FakeCloudRun, target: CloudRunTarget
) -> None:
    target.deploy(config(), ctx(1))
    fake.unhealthy("backend", 503)
    with pytest.raises(DeployError) as caught:
        target.deploy(config(timeout=0.3), ctx(2))
    error = by_name(caught.value.deployments)["backend"].error or ""
    assert re.search(r"GET http://127\.0\.0\.1:\d+/health answered 503 after 0\.3 s", error)


def test_transient_errors_are_retried(fake: FakeCloudRun, target: CloudRunTarget) -> None:
    fake.unavailable("CreateService", 2, service="auth")
    fake.unavailable("GetService", 1, service="backend")
    fake.unavailable("GetOperation", 2)  # polling the rollout: bounded retries too
    records = by_name(target.deploy(config(), ctx()))
    assert records["backend"].status is DeployStatus.READY
    assert fake.count("CreateService", "auth") == 3
    assert fake.count("CreateService", "backend") == 1
    assert fake.count("GetService", "backend") == 2  # the client's own retry is off: ours counts
    assert fake.count("GetOperation") == 4


def test_a_lost_answer_to_a_call_that_worked_is_not_a_failed_deploy(
    fake: FakeCloudRun, target: CloudRunTarget
) -> None:
    fake.lose_answer("CreateService", "auth")
    first = by_name(target.deploy(config(), ctx(iteration=1)))
    assert first["auth"].status is DeployStatus.READY, first["auth"].error
    assert first["auth"].revision == "auth-00001-abc"
    fake.lose_answer("UpdateService", "backend")
    second = by_name(target.deploy(config(), ctx(iteration=2)))
    assert second["backend"].status is DeployStatus.READY, second["backend"].error
    assert second["backend"].revision == "backend-00002-abc"  # made once, by the lost call
    assert fake.serving_revision("backend") == "backend-00002-abc"


def test_transient_errors_give_up_after_the_last_attempt(
    fake: FakeCloudRun, target: CloudRunTarget
) -> None:
    fake.unavailable("CreateService", 100, service="auth")
    with pytest.raises(DeployError) as caught:
        target.deploy(config(), ctx())
    assert fake.count("CreateService", "auth") == FAST.attempts
    assert (
        "Cloud Run API still failing for projects/demo-proj/locations/europe-west1/services/auth"
        " after retries: ServiceUnavailable"
    ) in str(caught.value)


def test_permission_denied_fails_at_once(fake: FakeCloudRun, target: CloudRunTarget) -> None:
    target.deploy(config(), ctx(1))
    fake.deny("backend", "UpdateService")
    with pytest.raises(DeployError) as caught:
        target.deploy(config(), ctx(2))
    assert fake.count("UpdateService", "backend") == 1
    error = by_name(caught.value.deployments)["backend"].error or ""
    assert error.startswith(
        "service 'backend': permission denied on"
        " projects/demo-proj/locations/europe-west1/services/backend:"
        " the caller needs run.services.update (roles/run.developer)"
    )
    assert "\n" not in error


def test_public_service_gets_all_users_invoker_once(
    fake: FakeCloudRun, target: CloudRunTarget
) -> None:
    target.deploy(config(), ctx(1))
    bindings = {b.role: list(b.members) for b in fake.services["auth"].policy.bindings}
    assert bindings == {"roles/run.invoker": ["allUsers"]}
    assert "backend" not in {c.service for c in fake.calls if c.method == "SetIamPolicy"}
    target.deploy(config(), ctx(2))
    assert fake.count("SetIamPolicy") == 1  # already public: nothing to set


def test_a_service_made_private_again_loses_public_access(
    fake: FakeCloudRun, target: CloudRunTarget
) -> None:
    target.deploy(config(), ctx(1))
    private = parse_config(
        two_services().replace("allow_unauthenticated = true", "allow_unauthenticated = false"),
        "configs/cloudrun.toml",
    )
    planned = {p.service: p.changes for p in target.plan(private, ctx(2))}
    assert "public access removed (allUsers off roles/run.invoker)" in planned["auth"]
    target.deploy(private, ctx(2))
    assert list(fake.services["auth"].policy.bindings) == []


def test_private_service_health_check_sends_an_id_token(
    fake: FakeCloudRun, monkeypatch: pytest.MonkeyPatch, registry: FakeRegistry
) -> None:
    """Not on the emulator: the health check of a non-public service carries a Bearer token
    whose audience is the service URL (the client still talks to the fake)."""
    from deployloop.deploy import gcp

    client = gcp.services_client()  # built while CLOUDRUN_EMULATOR_HOST is still set
    monkeypatch.delenv("CLOUDRUN_EMULATOR_HOST")
    push_images(registry)
    minted: list[str] = []

    def mint(audience: str, invoker: str | None) -> str:
        minted.append(audience)
        return f"token-{len(minted)}"

    t = CloudRunTarget(FAST, client_factory=lambda: client, id_token=mint)
    records = by_name(t.deploy(config(), ctx()))
    assert minted == [records["backend"].url]  # auth is public: no token
    assert "Bearer token-1" in fake.services["backend"].auth_headers
    assert not any(fake.services["auth"].auth_headers)

    env = t.test_env(config(), list(records.values()))
    assert env == {"LOOP_BACKEND_ID_TOKEN": "token-2"}
    assert t.test_env(config(), list(records.values())) == {"LOOP_BACKEND_ID_TOKEN": "token-3"}
    t.stop()


def test_test_env_is_empty_on_the_emulator(fake: FakeCloudRun, target: CloudRunTarget) -> None:
    records = target.deploy(config(), ctx())
    assert target.test_env(config(), records) == {}
    assert token_env_var("my-api.v2") == "LOOP_MY_API_V2_ID_TOKEN"


def test_missing_credentials_name_the_login_command(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("CLOUDRUN_EMULATOR_HOST", raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    t = CloudRunTarget(FAST)
    with pytest.raises(DeployError) as caught:
        t.deploy(config(), ctx())
    message = str(caught.value)
    assert "gcloud auth application-default login" in message and "\n" not in message
    assert "CLOUDRUN_EMULATOR_HOST" in message  # the other way forward: the fake
    assert {d.status for d in caught.value.deployments} == {DeployStatus.FAILED}
    with pytest.raises(DeployError) as planned:
        t.plan(config(), ctx())
    assert str(planned.value) == message


def test_loop_run_without_credentials_stops_in_one_line_before_an_iteration(
    project: Project, tmp_path: Path
) -> None:
    cloudrun_project(project)
    env = {"GOOGLE_APPLICATION_CREDENTIALS": str(tmp_path / "missing.json")}
    for command in ("plan", "run"):
        result = project.run(command, "--env", "cloudrun", env=env)
        assert result.returncode == 3, output(result)
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: no Google Cloud credentials")
        assert "CLOUDRUN_EMULATOR_HOST" in lines[0]
    assert not (project.state / "runs").exists()  # no iteration: nothing was tried


# --- rollback --------------------------------------------------------------------------------


def test_rollback_sends_traffic_back(fake: FakeCloudRun, target: CloudRunTarget) -> None:
    target.deploy(config(), ctx(1))
    fake.fail_next_rollout("backend", "Container failed to start.")
    with pytest.raises(DeployError):
        target.deploy(config(), ctx(2))
    assert fake.serving_revision("auth") == "auth-00002-abc"

    done = target.rollback(
        config(), {"auth": "auth-00001-abc", "backend": "backend-00001-abc"}, "deploy failed"
    )
    assert [(r.service, r.from_revision, r.to_revision, r.reason) for r in done] == [
        ("auth", "auth-00002-abc", "auth-00001-abc", "deploy failed"),
        ("backend", "backend-00002-abc", "backend-00001-abc", "deploy failed"),
    ]
    assert fake.serving_revision("auth") == "auth-00001-abc"
    traffic = fake.service("auth").traffic
    assert [(t.type_.name, t.revision, t.percent) for t in traffic] == [
        ("TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION", "auth-00001-abc", 100)
    ]
    url = fake.service("auth").uri
    assert get_json(f"{url}/revision") == {"revision": "auth-00001-abc"}
    assert fake.services["auth"].count == 2  # moving traffic made no revision

    # The next deploy sends the traffic to its own new revision again.
    records = by_name(target.deploy(config(), ctx(3)))
    assert records["auth"].revision == "auth-00003-abc"
    assert fake.serving_revision("auth") == "auth-00003-abc"


def test_rollback_to_a_missing_revision_fails_clearly(
    fake: FakeCloudRun, target: CloudRunTarget
) -> None:
    target.deploy(config(), ctx(1))
    with pytest.raises(DeployError) as caught:
        target.rollback(
            config(), {"auth": "auth-00001-abc", "backend": "backend-00009-zzz"}, "worse"
        )
    assert str(caught.value) == (
        "rollback failed: service 'backend': update"
        " projects/demo-proj/locations/europe-west1/services/backend: InvalidArgument:"
        " Revision named 'backend-00009-zzz' does not exist. (rolled back: auth -> auth-00001-abc)"
    )


# --- plan ------------------------------------------------------------------------------------


def test_plan_shows_changes_and_changes_nothing(fake: FakeCloudRun, target: CloudRunTarget) -> None:
    planned = target.plan(config(), ctx(1))
    assert [(p.service, p.artifact, p.changes) for p in planned] == [
        ("auth", f"europe-docker.pkg.dev/demo-proj/shop/auth:{SHA}", ("new service",)),
        ("backend", f"europe-docker.pkg.dev/demo-proj/shop/backend:{SHA}-i1", ("new service",)),
    ]
    assert fake.mutating_calls() == []

    target.deploy(config(), ctx(1))
    before = len(fake.mutating_calls())
    same = target.plan(config(), ctx(1))
    assert [p.changes for p in same] == [(), ()]

    changed = config(backend_extra='memory = "1Gi"\nlabels = { team = "shop" }').model_copy()
    backend = changed.deploy.services[1].model_copy(
        update={
            "env": {"MODE": "prod", "NEW_FLAG": "1"},
            "secrets": {"DB_PASSWORD": "db-password:4"},
        }
    )
    changed = changed.model_copy(
        update={"deploy": changed.deploy.model_copy(
            update={"services": [changed.deploy.services[0], backend]}
        )}
    )
    planned = by_plan(target.plan(changed, ctx(2, "fedcba")))
    assert planned["backend"] == (
        f"image europe-docker.pkg.dev/demo-proj/shop/backend:{SHA}-i1"
        " -> europe-docker.pkg.dev/demo-proj/shop/backend:fedcba-i2",
        "env MODE changed",
        "env NEW_FLAG added",
        "secret API_KEY removed",
        "secret DB_PASSWORD db-password:3 -> db-password:4",
        "memory default -> 1Gi",
        "label team added",
    )
    assert len(fake.mutating_calls()) == before

    target.rollback(config(), {"auth": "auth-00001-abc"}, "test")
    calls = len(fake.calls)
    planned = by_plan(target.plan(config(), ctx(1)))
    assert planned["auth"] == ("traffic 100% on auth-00001-abc -> 100% on the new revision",)
    assert {c.method for c in fake.calls[calls:]} == {"GetService", "GetIamPolicy"}


# --- candidate revisions ----------------------------------------------------------------------


def candidate_config(promote: bool = True) -> Config:
    extra = 'traffic = "candidate"' + ("\npromote = true" if promote else "")
    return parse_config(two_services(deploy_extra=extra), "configs/cloudrun.toml")


def test_a_candidate_gets_no_traffic_and_is_reached_by_its_tag(
    fake: FakeCloudRun, target: CloudRunTarget
) -> None:
    first = by_name(target.deploy(candidate_config(), ctx(1)))
    rev1 = first["backend"].revision
    assert first["backend"].tag == "loop-it1"
    assert rev1 is not None and rev1.startswith("backend-loop1-")
    assert fake.serving_revision("backend") == rev1  # a new service: nothing to keep
    second = by_name(target.deploy(candidate_config(), ctx(2)))
    backend = second["backend"]
    assert backend.status is DeployStatus.READY, backend.error
    assert backend.tag == "loop-it2" and backend.revision != rev1
    # The traffic stays on what served it; the candidate answers at its tag's URL.
    assert fake.serving_revision("backend") == rev1
    assert backend.url is not None
    assert get_json(backend.url + "/revision") == {"revision": backend.revision}
    assert get_json(fake.service("backend").uri + "/revision") == {"revision": rev1}
    # The previous candidate's tag is gone; the dependents saw the candidates' URLs.
    assert fake.tags("backend") == {"loop-it2": backend.revision}
    env = get_json(backend.url + "/env")
    assert env["LOOP_AUTH_URL"] == second["auth"].url


def test_promotion_moves_the_traffic_to_exactly_the_tested_revisions(
    fake: FakeCloudRun, target: CloudRunTarget
) -> None:
    target.deploy(candidate_config(), ctx(1))
    tested = target.deploy(candidate_config(), ctx(2))
    assert sorted(target.promote(candidate_config(), tested)) == ["auth", "backend"]
    for record in tested:
        assert fake.serving_revision(record.service) == record.revision
        assert fake.tags(record.service) == {"loop-it2": record.revision}


def test_promotion_is_all_or_none(fake: FakeCloudRun, target: CloudRunTarget) -> None:
    first = by_name(target.deploy(candidate_config(), ctx(1)))
    tested = target.deploy(candidate_config(), ctx(2))
    fake.deny("backend", "UpdateService")
    with pytest.raises(DeployError) as caught:
        target.promote(candidate_config(), tested)
    message = str(caught.value)
    assert message.startswith("promotion of 'backend' failed: permission denied"), message
    assert message.endswith("traffic of auth put back where it was"), message
    assert fake.serving_revision("auth") == first["auth"].revision
    assert fake.serving_revision("backend") == first["backend"].revision


# --- ingress ----------------------------------------------------------------------------------


def test_an_internal_service_is_ready_on_its_conditions_and_plan_says_where_tests_must_run(
    fake: FakeCloudRun, target: CloudRunTarget
) -> None:
    internal = config(backend_extra='ingress = "internal"')
    planned = by_plan(target.plan(internal, ctx(1)))
    assert planned["backend"][-1].startswith("internal ingress: its URL answers only inside")
    records = by_name(target.deploy(internal, ctx(1)))
    assert records["backend"].status is DeployStatus.READY, records["backend"].error
    # Its URL answers 404 from here, as Cloud Run's does from outside the VPC.
    with pytest.raises(urllib.error.HTTPError) as refused:
        get_json(f"{records['backend'].url}/health")
    assert refused.value.code == 404
    assert "tests must run where they can reach it" in by_plan(
        target.plan(internal, ctx(2))
    )["backend"][-1]


# --- retries sized to the real API ------------------------------------------------------------


def test_an_exhausted_quota_is_waited_out_longer_than_other_errors(
    fake: FakeCloudRun, target: CloudRunTarget
) -> None:
    target.deploy(config(), ctx(1))
    # Six refusals: more than `attempts` (4) allows any other transient error.
    fake.exhausted("UpdateService", 6, service="backend")
    records = by_name(target.deploy(config(), ctx(2)))
    assert records["backend"].status is DeployStatus.READY, records["backend"].error
    assert fake.count("UpdateService", "backend") == 6 + 1  # six refused, one through
    fake.unavailable("UpdateService", 6, service="backend")
    with pytest.raises(DeployError, match="still failing for .* after retries"):
        target.deploy(config(), ctx(3))
    fake.exhausted("UpdateService", 100, service="backend")
    with pytest.raises(DeployError) as caught:
        target.deploy(config(), ctx(4))
    assert "quota still exhausted" in str(caught.value) and "Write requests" in str(caught.value)


def test_a_revision_name_conflict_fails_at_once_with_cloud_runs_words(
    fake: FakeCloudRun, target: CloudRunTarget
) -> None:
    target.deploy(config(), ctx(1))
    updates = fake.count("UpdateService", "backend")
    fake.revision_conflict("backend")
    with pytest.raises(DeployError) as caught:
        target.deploy(config(), ctx(2))
    assert fake.count("UpdateService", "backend") == updates + 1  # not retried
    assert "with different configuration already exists" in str(caught.value)


def test_a_rollout_past_its_deadline_names_the_operation_still_running(
    fake: FakeCloudRun
) -> None:
    target = CloudRunTarget(
        CloudRunSettings(attempts=2, first_wait_s=0.01, max_wait_s=0.05, poll_slice_s=0.2,
                         operation_margin_s=0.0)
    )
    try:
        fake.stuck("auth")
        with pytest.raises(DeployError) as caught:
            target.deploy(config(timeout=1), ctx(1))
    finally:
        target.stop()
    message = str(caught.value)
    assert re.search(
        r"rollout of projects/demo-proj/locations/europe-west1/services/auth not finished"
        r" after 1 s: operation projects/demo-proj/locations/europe-west1/operations/\S+ is"
        r" still running", message
    ), message


# --- the revision tested is the one this deploy made -------------------------------------------


def test_a_rollout_reported_done_while_still_reconciling_is_waited_for(
    fake: FakeCloudRun, target: CloudRunTarget
) -> None:
    target.deploy(config(), ctx(1))
    fake.lag("backend", gets=3)
    gets = fake.count("GetService", "backend")
    records = by_name(target.deploy(config(), ctx(2)))
    assert records["backend"].status is DeployStatus.READY, records["backend"].error
    assert records["backend"].revision == "backend-00002-abc"
    # One GetService before the update; then three still reconciling, and one caught up.
    assert fake.count("GetService", "backend") - gets == 1 + 3 + 1


def test_a_teammates_deploy_landing_meanwhile_is_not_credited_to_the_iteration(
    fake: FakeCloudRun, target: CloudRunTarget
) -> None:
    target.deploy(config(), ctx(1))
    fake.concurrent_deploy("backend")
    with pytest.raises(DeployError) as caught:
        target.deploy(config(), ctx(2))
    message = str(caught.value)
    assert message.startswith("service 'backend': another deploy replaced this one"), message
    assert "'backend-00003-abc' has deploy id 'teammate'" in message


# --- what loop does not manage ---------------------------------------------------------------

BACKEND = "projects/demo-proj/locations/europe-west1/services/backend"


def team_backend() -> Any:
    """The backend as a team runs it on shared staging, set up with gcloud and the console:
    port 8000, a VPC connector, Cloud SQL, a secret volume, probes, gen2, a sidecar, its own
    annotation and env var. None of it is in loop's config."""
    from google.cloud import run_v2

    main = run_v2.Container(
        name="app",
        image="europe-docker.pkg.dev/demo-proj/shop/backend:old",
        ports=[run_v2.ContainerPort(container_port=8000)],
        env=[run_v2.EnvVar(name="FEATURE_X", value="on"),
             run_v2.EnvVar(name="MODE", value="manual")],
        volume_mounts=[run_v2.VolumeMount(name="cloudsql", mount_path="/cloudsql"),
                       run_v2.VolumeMount(name="certs", mount_path="/certs")],
        startup_probe=run_v2.Probe(http_get=run_v2.HTTPGetAction(path="/ready"),
                                   period_seconds=5, failure_threshold=10),
        liveness_probe=run_v2.Probe(http_get=run_v2.HTTPGetAction(path="/live")),
        resources=run_v2.ResourceRequirements(limits={"cpu": "2", "memory": "1Gi"}),
    )
    sidecar = run_v2.Container(name="otel", image="otel/collector:0.99")
    template = run_v2.RevisionTemplate(
        containers=[main, sidecar],
        vpc_access=run_v2.VpcAccess(
            connector="projects/demo-proj/locations/europe-west1/connectors/staging",
            egress=run_v2.VpcAccess.VpcEgress.PRIVATE_RANGES_ONLY,
        ),
        volumes=[
            run_v2.Volume(name="cloudsql", cloud_sql_instance=run_v2.CloudSqlInstance(
                instances=["demo-proj:europe-west1:shop-db"])),
            run_v2.Volume(name="certs", secret=run_v2.SecretVolumeSource(secret="tls-certs")),
        ],
        execution_environment=run_v2.ExecutionEnvironment.EXECUTION_ENVIRONMENT_GEN2,
        annotations={"team.example.com/owner": "payments"},
        labels={"cost-center": "shop"},
    )
    return run_v2.Service(template=template, labels={"cost-center": "shop"})


def seed_team_backend(fake: FakeCloudRun) -> str:
    """team_backend() live, serving its first revision, which carries the team's tag
    `stable`; returns that revision's name."""
    from google.cloud import run_v2

    first = fake.seed(BACKEND, team_backend())
    fake.set_traffic("backend", [
        run_v2.TrafficTarget(type_=LATEST, percent=100),
        run_v2.TrafficTarget(type_=REVISION, revision=first, tag="stable", percent=0),
    ])
    return first


def test_an_update_keeps_every_setting_the_config_does_not_manage(
    fake: FakeCloudRun, target: CloudRunTarget
) -> None:
    from google.cloud import run_v2

    first = seed_team_backend(fake)
    records = by_name(target.deploy(config(), ctx(1)))
    assert records["backend"].status is DeployStatus.READY, records["backend"].error
    svc = fake.service("backend")
    template = svc.template
    app, otel = template.containers
    # What the config sets, set:
    assert app.image == f"europe-docker.pkg.dev/demo-proj/shop/backend:{SHA}-i1"
    env = {v.name: v.value or v.value_source.secret_key_ref.secret for v in app.env}
    assert env["MODE"] == "staging" and env["DB_PASSWORD"] == "db-password"
    assert env["LOOP_AUTH_URL"].startswith("http://127.0.0.1:")
    # and everything else as the team left it:
    assert env["FEATURE_X"] == "on"
    assert [p.container_port for p in app.ports] == [8000]
    assert [m.mount_path for m in app.volume_mounts] == ["/cloudsql", "/certs"]
    assert app.startup_probe.http_get.path == "/ready"
    assert app.startup_probe.failure_threshold == 10
    assert app.liveness_probe.http_get.path == "/live"
    assert dict(app.resources.limits) == {"cpu": "2", "memory": "1Gi"}
    assert (otel.name, otel.image) == ("otel", "otel/collector:0.99")
    assert template.vpc_access.connector.endswith("/connectors/staging")
    assert template.vpc_access.egress == run_v2.VpcAccess.VpcEgress.PRIVATE_RANGES_ONLY
    assert [v.name for v in template.volumes] == ["cloudsql", "certs"]
    assert template.volumes[0].cloud_sql_instance.instances == ["demo-proj:europe-west1:shop-db"]
    assert template.execution_environment == run_v2.ExecutionEnvironment.EXECUTION_ENVIRONMENT_GEN2
    assert template.annotations["team.example.com/owner"] == "payments"
    assert template.labels["cost-center"] == "shop" and svc.labels["cost-center"] == "shop"
    # The new revision takes the traffic; the team's tag stays on its revision.
    assert fake.serving_revision("backend") == records["backend"].revision
    tags = [(t.tag, t.revision, t.percent) for t in svc.traffic if t.tag]
    assert tags == [("stable", first, 0)]


def test_a_revision_name_the_team_chose_is_not_sent_again(
    fake: FakeCloudRun, target: CloudRunTarget
) -> None:
    named = team_backend()
    named.template.revision = "backend-release-42"  # gcloud run deploy --revision-suffix
    assert fake.seed(BACKEND, named) == "backend-release-42"
    records = by_name(target.deploy(config(), ctx(1)))
    assert records["backend"].status is DeployStatus.READY, records["backend"].error
    assert records["backend"].revision != "backend-release-42"


def test_an_env_var_loop_set_goes_when_the_config_drops_it_and_no_other(
    fake: FakeCloudRun, target: CloudRunTarget
) -> None:
    fake.seed(BACKEND, team_backend())
    target.deploy(config(), ctx(1))
    dropped = config(backend_extra="")
    backend = dropped.deploy.services[1].model_copy(update={"env": {}})
    dropped = dropped.model_copy(update={"deploy": dropped.deploy.model_copy(
        update={"services": [dropped.deploy.services[0], backend]})})
    planned = by_plan(target.plan(dropped, ctx(2)))
    assert planned["backend"][:2] == (
        f"image europe-docker.pkg.dev/demo-proj/shop/backend:{SHA}-i1"
        f" -> europe-docker.pkg.dev/demo-proj/shop/backend:{SHA}-i2",
        "env MODE removed",
    ), planned["backend"]
    target.deploy(dropped, ctx(2))
    names = [v.name for v in fake.service("backend").template.containers[0].env]
    assert "MODE" not in names  # loop set it; the config no longer does
    assert "FEATURE_X" in names  # the team's, never loop's


def test_plan_shows_what_a_deploy_keeps_and_changes_only_what_the_config_sets(
    fake: FakeCloudRun, target: CloudRunTarget
) -> None:
    seed_team_backend(fake)
    changes = by_plan(target.plan(config(), ctx(1)))["backend"]
    assert changes == (
        "image europe-docker.pkg.dev/demo-proj/shop/backend:old"
        f" -> europe-docker.pkg.dev/demo-proj/shop/backend:{SHA}-i1",
        "env MODE changed",  # LOOP_AUTH_URL: unknown until auth is deployed
        "secret API_KEY added (api-key:latest)",
        "secret DB_PASSWORD added (db-password:3)",
        "kept as deployed: env FEATURE_X; port 8000; startup probe; liveness probe;"
        " volume mounts /cloudsql, /certs; sidecar otel;"
        " VPC access projects/demo-proj/locations/europe-west1/connectors/staging;"
        " Cloud SQL volume cloudsql; secret volume certs;"
        " execution environment EXECUTION_ENVIRONMENT_GEN2;"
        " annotations team.example.com/owner; tag stable",
    ), changes
    assert fake.mutating_calls() == []


def test_a_rollback_keeps_the_teams_tags(fake: FakeCloudRun, target: CloudRunTarget) -> None:
    first = seed_team_backend(fake)
    target.deploy(config(), ctx(1))
    target.rollback(config(), {"backend": first}, "test")
    assert fake.serving_revision("backend") == first
    tags = [(t.tag, t.revision) for t in fake.service("backend").traffic if t.tag]
    assert tags == [("stable", first)]


REVISION_SETTINGS = """
port = 8080
command = ["gunicorn"]
args = ["--bind", ":8080", "shop.backend:app"]
vpc = { connector = "projects/demo-proj/locations/europe-west1/connectors/loop" }
cloudsql_instances = ["demo-proj:europe-west1:loop-db"]
startup_probe = { path = "/ready", period_s = 5, failure_threshold = 12 }
liveness_probe = { path = "/live" }
execution_environment = "gen2"
cpu_boost = true
cpu_throttling = false
timeout_s = 120
volumes = [{ secret = "signing-key", mount_path = "/keys", version = "2", file = "key.pem" }]
"""


def test_the_revision_settings_of_the_config_are_deployed(
    fake: FakeCloudRun, target: CloudRunTarget
) -> None:
    from google.cloud import run_v2

    records = by_name(target.deploy(config(backend_extra=REVISION_SETTINGS), ctx(1)))
    assert records["backend"].status is DeployStatus.READY, records["backend"].error
    template = fake.service("backend").template
    (app,) = template.containers
    assert [p.container_port for p in app.ports] == [8080]
    assert (list(app.command), list(app.args)) == (
        ["gunicorn"], ["--bind", ":8080", "shop.backend:app"]
    )
    assert app.startup_probe.http_get.path == "/ready"
    assert (app.startup_probe.period_seconds, app.startup_probe.failure_threshold) == (5, 12)
    assert app.liveness_probe.http_get.path == "/live"
    assert app.resources.startup_cpu_boost is True and app.resources.cpu_idle is False
    assert template.vpc_access.connector.endswith("/connectors/loop")
    assert template.execution_environment == run_v2.ExecutionEnvironment.EXECUTION_ENVIRONMENT_GEN2
    assert int(run_v2.RevisionTemplate.pb(template).timeout.seconds) == 120
    volumes = {v.name: v for v in template.volumes}
    assert list(volumes["cloudsql"].cloud_sql_instance.instances) == [
        "demo-proj:europe-west1:loop-db"
    ]
    key = volumes["secret-1"].secret
    assert (key.secret, key.items[0].path, key.items[0].version) == ("signing-key", "key.pem", "2")
    assert {m.name: m.mount_path for m in app.volume_mounts} == {
        "cloudsql": "/cloudsql", "secret-1": "/keys"
    }


def test_what_the_config_sets_replaces_the_teams_and_the_rest_stays(
    fake: FakeCloudRun, target: CloudRunTarget
) -> None:
    fake.seed(BACKEND, team_backend())
    settings = 'port = 8080\ncloudsql_instances = ["demo-proj:europe-west1:loop-db"]'
    wanted = config(backend_extra=settings)
    changes = by_plan(target.plan(wanted, ctx(1)))["backend"]
    assert "port 8000 -> 8080" in changes and "volume cloudsql changed" in changes, changes
    kept = changes[-1]
    assert kept.startswith("kept as deployed: env FEATURE_X; startup probe; liveness probe;"), kept
    assert "port" not in kept and "Cloud SQL" not in kept and "secret volume certs" in kept
    target.deploy(wanted, ctx(1))
    template = fake.service("backend").template
    app = template.containers[0]
    assert [p.container_port for p in app.ports] == [8080]
    assert app.startup_probe.http_get.path == "/ready"  # the team's, the config has none
    volumes = {v.name: v for v in template.volumes}
    assert list(volumes["cloudsql"].cloud_sql_instance.instances) == [
        "demo-proj:europe-west1:loop-db"
    ]
    assert volumes["certs"].secret.secret == "tls-certs"
    assert [m.mount_path for m in app.volume_mounts] == ["/certs", "/cloudsql"]


def by_plan(planned: list[Any]) -> dict[str, tuple[str, ...]]:
    return {p.service: p.changes for p in planned}


# --- lazy imports ------------------------------------------------------------------------------


def test_deploy_package_does_not_import_google() -> None:
    code = (
        "import sys, deployloop.deploy, deployloop.deploy.cloudrun, deployloop.deploy.gcp;"
        "print(sorted(m for m in sys.modules if m == 'google' or m.startswith('google.')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    assert result.stdout.strip() == "[]"


# --- end to end: the real `loop` console script -------------------------------------------------

SMOKE_TESTS = """
    import json
    import os
    import urllib.request


    def get(url):
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.load(response)


    def test_backend_is_healthy():
        assert get(os.environ["LOOP_BACKEND_URL"] + "/health")["ok"] is True


    def test_backend_knows_auth_and_gets_secret_refs():
        env = get(os.environ["LOOP_BACKEND_URL"] + "/env")
        assert env["LOOP_AUTH_URL"] == os.environ["LOOP_AUTH_URL"]
        assert env["DB_PASSWORD"] == "secret:db-password:3"
    """


def cloudrun_project(project: Project) -> None:
    project.config(two_services(), env="cloudrun")
    project.write("tests/e2e/test_smoke.py", SMOKE_TESTS)


def emulator_env(fake: FakeCloudRun) -> dict[str, str]:
    return {"CLOUDRUN_EMULATOR_HOST": fake.address, "GRPC_VERBOSITY": "ERROR"}


def deployments(project: Project, iteration: int) -> dict[str, dict[str, Any]]:
    summary = project.summary(iteration, env="cloudrun")
    return {d["service"]: d for d in summary["deployments"]}


def test_loop_run_creates_then_updates(fake: FakeCloudRun, project: Project) -> None:
    cloudrun_project(project)
    fake.unavailable("CreateService", 1, service="backend")  # retried: the run still passes
    first = project.run("run", "--env", "cloudrun", "--max-iterations", "1",
                        env=emulator_env(fake))
    assert first.returncode == 0, output(first)
    deployed = deployments(project, 1)
    assert {n: (d["status"], d["revision"]) for n, d in deployed.items()} == {
        "auth": ("ready", "auth-00001-abc"), "backend": ("ready", "backend-00001-abc"),
    }
    assert deployed["backend"]["url"] == fake.service("backend").uri
    # Outside git there is no SHA: the tag says so.
    image = fake.service("backend").template.containers[0].image
    assert image == "europe-docker.pkg.dev/demo-proj/shop/backend:unknown-i1"
    assert fake.count("CreateService", "backend") == 2

    second = project.run("run", "--env", "cloudrun", "--max-iterations", "1",
                         env=emulator_env(fake))
    assert second.returncode == 0, output(second)
    assert {n: d["revision"] for n, d in deployments(project, 2).items()} == {
        "auth": "auth-00002-abc", "backend": "backend-00002-abc",
    }
    assert fake.count("UpdateService") == 2
    assert fake.serving_revision("backend") == "backend-00002-abc"


def test_loop_run_failed_rollout_exits_3(fake: FakeCloudRun, project: Project) -> None:
    cloudrun_project(project)
    fake.fail_next_rollout("backend", "Container failed to start and listen on PORT=8080.")
    result = project.run("run", "--env", "cloudrun", "--max-iterations", "1",
                         env=emulator_env(fake))
    assert result.returncode == 3, output(result)
    assert (
        "revision 'backend-00001-abc' not ready: Container failed to start and listen on"
        " PORT=8080." in flat(result.stdout + result.stderr)
    )
    deployed = deployments(project, 1)
    assert deployed["backend"]["status"] == "failed"
    assert deployed["auth"]["status"] == "ready"


def test_loop_run_permission_denied_is_one_call_and_one_line(
    fake: FakeCloudRun, project: Project
) -> None:
    cloudrun_project(project)
    fake.deny("auth", "CreateService")
    result = project.run("run", "--env", "cloudrun", "--max-iterations", "1",
                         env=emulator_env(fake))
    assert result.returncode == 3, output(result)
    assert (
        "permission denied on projects/demo-proj/locations/europe-west1/services/auth:"
        " the caller needs run.services.create (roles/run.developer)"
    ) in flat(result.stdout + result.stderr)
    assert fake.count("CreateService") == 1
    assert fake.count("CreateService", "backend") == 0


def test_loop_plan_makes_no_mutating_call(fake: FakeCloudRun, project: Project) -> None:
    cloudrun_project(project)
    result = project.run("plan", "--env", "cloudrun", env=emulator_env(fake))
    assert result.returncode == 0, output(result)
    assert "new service" in result.stdout
    assert fake.mutating_calls() == []
    assert fake.count("GetService") == 2


def rollback_project(project: Project) -> None:
    project.config(two_services(deploy_extra="rollback_on_failure = true"), env="cloudrun")
    project.write("tests/e2e/test_smoke.py", SMOKE_TESTS)
    # A test that fails once the team "breaks" something: its pass rate then drops.
    project.write("tests/e2e/test_release.py", """
        from pathlib import Path

        def test_release_is_not_broken():
            assert not Path("broken").exists(), "release broken"
        """)


def test_failed_deploy_rolls_back_to_the_last_passing_revision(
    fake: FakeCloudRun, project: Project
) -> None:
    rollback_project(project)
    env = emulator_env(fake)
    assert project.run("run", "--env", "cloudrun", "--max-iterations", "1", env=env).returncode == 0
    fake.fail_next_rollout("backend", "Container failed to start and listen on PORT=8080.")
    result = project.run("run", "--env", "cloudrun", "--max-iterations", "1", env=env)
    assert result.returncode == 3, output(result)
    assert "rolled back backend: backend-00002-abc -> backend-00001-abc (deploy failed)" in flat(
        result.stdout
    )
    assert fake.serving_revision("backend") == "backend-00001-abc"
    assert deployments(project, 2)["backend"]["rolled_back_to"] == "backend-00001-abc"


def test_pass_rate_drop_rolls_back_and_a_first_failure_does_not(
    fake: FakeCloudRun, project: Project
) -> None:
    rollback_project(project)
    env = emulator_env(fake)
    (project.root / "broken").write_text("")
    first = project.run("run", "--env", "cloudrun", "--max-iterations", "1", env=env)
    assert first.returncode == 1, output(first)
    assert "rolled back" not in first.stdout  # nothing passed before: nowhere to go back to
    (project.root / "broken").unlink()
    assert project.run("run", "--env", "cloudrun", "--max-iterations", "1", env=env).returncode == 0
    (project.root / "broken").write_text("")
    third = project.run("run", "--env", "cloudrun", "--max-iterations", "1", env=env)
    assert third.returncode == 1, output(third)
    assert "pass rate dropped from 100.0% to" in flat(third.stdout)
    assert fake.serving_revision("backend") == "backend-00002-abc"
    assert fake.serving_revision("auth") == "auth-00002-abc"
    assert {n: d["rolled_back_to"] for n, d in deployments(project, 3).items()} == {
        "auth": "auth-00002-abc", "backend": "backend-00002-abc",
    }


def test_an_iteration_that_reaches_its_target_is_not_rolled_back(
    fake: FakeCloudRun, project: Project
) -> None:
    rollback_project(project)
    env = emulator_env(fake)
    args = ("run", "--env", "cloudrun", "--max-iterations", "1", "--target", "50")
    assert project.run(*args, env=env).returncode == 0
    (project.root / "broken").write_text("")
    second = project.run(*args, env=env)
    assert second.returncode == 0, output(second)  # lower, but still at its target
    assert "rolled back" not in second.stdout
    assert fake.serving_revision("backend") == "backend-00002-abc"


CANDIDATE_TESTS = SMOKE_TESTS + """

    def test_the_fix_is_in():
        assert not os.path.exists("broken.txt"), "broken until the fix lands"
    """


def test_candidate_mode_end_to_end_keeps_staging_until_an_iteration_passes(
    fake: FakeCloudRun, project: Project
) -> None:
    from google.cloud import run_v2

    # What serves shared staging before loop runs: the team's revisions.
    for name in ("auth", "backend"):
        image = f"europe-docker.pkg.dev/demo-proj/shop/{name}:live"
        fake.seed(
            f"projects/demo-proj/locations/europe-west1/services/{name}",
            run_v2.Service(template=run_v2.RevisionTemplate(
                containers=[run_v2.Container(image=image)])),
        )
    live = {name: fake.serving_revision(name) for name in ("auth", "backend")}
    project.config(
        two_services(deploy_extra='traffic = "candidate"\npromote = true'), env="cloudrun"
    )
    project.write("tests/e2e/test_smoke.py", CANDIDATE_TESTS)
    project.write("broken.txt", "yes")

    first = project.run("run", "--env", "cloudrun", "--max-iterations", "1",
                        env=emulator_env(fake))
    assert first.returncode == 1, output(first)
    assert "candidate revisions not promoted" in first.stdout, output(first)
    assert {n: fake.serving_revision(n) for n in live} == live  # staging untouched
    one = deployments(project, 1)
    assert {n: (d["tag"], d["promoted"]) for n, d in one.items()} == {
        "auth": ("loop-it1", False), "backend": ("loop-it1", False),
    }

    (project.root / "broken.txt").unlink()
    second = project.run("run", "--env", "cloudrun", "--max-iterations", "1",
                         env=emulator_env(fake))
    assert second.returncode == 0, output(second)
    two = deployments(project, 2)
    assert {n: (d["tag"], d["promoted"]) for n, d in two.items()} == {
        "auth": ("loop-it2", True), "backend": ("loop-it2", True),
    }
    for name, record in two.items():
        assert fake.serving_revision(name) == record["revision"]
        assert fake.tags(name) == {"loop-it2": record["revision"]}  # loop-it1 cleaned up
    assert "promoted backend: all traffic on " + two["backend"]["revision"] in second.stdout
    report = (project.iteration_dir(2, env="cloudrun") / "report.md").read_text()
    assert f"{two['backend']['revision']} (candidate loop-it2, promoted)" in report
    plan = project.run("plan", "--env", "cloudrun", env=emulator_env(fake))
    assert "candidate revision tagged loop-it3, with no traffic" in plan.stdout, output(plan)


def test_plan_stops_at_user_credentials_that_cannot_mint_tokens_and_names_the_fix(
    fake: FakeCloudRun, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, registry: FakeRegistry
) -> None:
    from deployloop.deploy import gcp

    client = gcp.services_client()  # built while CLOUDRUN_EMULATOR_HOST is still set
    monkeypatch.delenv("CLOUDRUN_EMULATOR_HOST")
    monkeypatch.setenv("NO_GCE_CHECK", "true")
    adc = tmp_path / "adc.json"
    adc.write_text(json.dumps({"type": "authorized_user", "client_id": "c",
                               "client_secret": "s", "refresh_token": "r"}))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(adc))
    push_images(registry)
    t = CloudRunTarget(FAST, client_factory=lambda: client)
    try:
        with pytest.raises(DeployError) as caught:
            t.plan(config(), ctx(1))
        assert str(caught.value) == (
            "private services backend need ID tokens, and user credentials (gcloud auth"
            " application-default login) cannot mint an ID token Cloud Run accepts: set"
            " [deploy] invoker_service_account to a service account with roles/run.invoker,"
            " on which you have roles/iam.serviceAccountTokenCreator"
        )
        with_invoker = parse_config(
            two_services(deploy_extra='invoker_service_account = "loop-invoker@demo-proj'
                                      '.iam.gserviceaccount.com"'),
            "configs/cloudrun.toml",
        )
        assert [p.service for p in t.plan(with_invoker, ctx(1))] == ["auth", "backend"]
    finally:
        t.stop()


def test_a_concurrent_iam_change_is_not_overwritten(
    fake: FakeCloudRun, target: CloudRunTarget
) -> None:
    # auth is public: loop reads its policy, adds allUsers and writes it back. Someone else
    # binds a member in between: the write fails on the etag, and loop reads again.
    fake.iam_race("auth", "user:teammate@example.com")
    records = by_name(target.deploy(config(), ctx(1)))
    assert records["auth"].status is DeployStatus.READY, records["auth"].error
    members = {m for b in fake.services["auth"].policy.bindings for m in b.members}
    assert members == {"allUsers", "user:teammate@example.com"}
    assert fake.count("SetIamPolicy", "auth") == 2


def test_a_service_made_public_by_disabling_the_invoker_check_needs_no_binding(
    fake: FakeCloudRun, target: CloudRunTarget
) -> None:
    target.deploy(config(), ctx(1))
    open_backend = config(backend_extra="invoker_iam_disabled = true")
    assert "invoker_iam_disabled false -> true" in by_plan(
        target.plan(open_backend, ctx(2))
    )["backend"]
    sets = fake.count("SetIamPolicy", "backend")
    records = by_name(target.deploy(open_backend, ctx(2)))
    assert records["backend"].status is DeployStatus.READY, records["backend"].error
    assert fake.service("backend").invoker_iam_disabled is True
    assert fake.count("SetIamPolicy", "backend") == sets  # no allUsers binding asked for
    assert not any(b.members for b in fake.services["backend"].policy.bindings)


def test_an_organization_policy_refusing_all_users_is_a_warning_not_a_failed_deploy(
    fake: FakeCloudRun, target: CloudRunTarget
) -> None:
    fake.forbid_public("auth")
    records = by_name(target.deploy(config(), ctx(1)))
    auth = records["auth"]
    assert auth.status is DeployStatus.READY, auth.error
    assert auth.warning is not None
    assert auth.warning.startswith(
        "public access refused: One or more users named in the policy do not belong to a"
        " permitted customer"
    ), auth.warning
    assert "invoker_iam_disabled = true" in auth.warning
    assert not any(b.members for b in fake.services["auth"].policy.bindings)


# --- images by digest -------------------------------------------------------------------------


def test_the_revision_runs_the_digest_the_tag_had_when_the_deploy_began(
    fake: FakeCloudRun, target: CloudRunTarget, registry: FakeRegistry
) -> None:
    auth = f"europe-docker.pkg.dev/demo-proj/shop/auth:{SHA}"
    backend = f"europe-docker.pkg.dev/demo-proj/shop/backend:{SHA}-i1"
    digests = {"auth": registry.push(auth), "backend": registry.push(backend)}
    records = by_name(target.deploy(config(), ctx(1)))
    for name, digest in digests.items():
        assert records[name].digest == digest
        image = fake.service(name).template.containers[0].image
        assert image == f"europe-docker.pkg.dev/demo-proj/shop/{name}@{digest}"
    assert records["backend"].image == backend  # the record names the tag too
    registry.push(backend)  # pushed again: what runs does not change
    image = fake.service("backend").template.containers[0].image
    assert image.endswith(digests["backend"])


def test_a_missing_image_fails_before_any_service_is_touched(
    fake: FakeCloudRun, target: CloudRunTarget, registry: FakeRegistry
) -> None:
    registry.push(f"europe-docker.pkg.dev/demo-proj/shop/auth:{SHA}")  # backend's is missing
    missing = f"europe-docker.pkg.dev/demo-proj/shop/backend:{SHA}-i1"
    with pytest.raises(DeployError) as planned:
        target.plan(config(), ctx(1))
    assert str(planned.value) == (
        f"image {missing}: no such image (tag '{SHA}-i1' not found in europe-docker.pkg.dev)"
    )
    with pytest.raises(DeployError) as caught:
        target.deploy(config(), ctx(1))
    assert str(caught.value) == str(planned.value)
    assert fake.mutating_calls() == []  # auth was not deployed either
    records = by_name(caught.value.deployments)
    assert records["auth"].error == "not deployed: another service's image is missing"


def test_the_digest_is_in_summary_json_and_the_report(
    fake: FakeCloudRun, project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_registry = FakeRegistry()
    try:
        cloudrun_project(project)
        digests = {
            name: fake_registry.push(f"europe-docker.pkg.dev/demo-proj/shop/{name}:{tag}")
            for name, tag in (("auth", "unknown"), ("backend", "unknown-i1"))
        }
        env = {**emulator_env(fake), "REGISTRY_EMULATOR_HOST": fake_registry.address}
        result = project.run("run", "--env", "cloudrun", "--max-iterations", "1", env=env)
        assert result.returncode == 0, output(result)
        assert "images used as written" not in result.stdout
        assert {n: d["digest"] for n, d in deployments(project, 1).items()} == digests
        report = (project.iteration_dir(1, env="cloudrun") / "report.md").read_text()
        assert f"backend-00001-abc ({digests['backend'][:19]})" in report
    finally:
        fake_registry.stop()
