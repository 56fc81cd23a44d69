"""Secrets, checked before anything deploys: declared-equal values that come from two
secrets, secrets that do not exist or are disabled, service accounts that cannot read them,
and names that look like one value read from two places. The Cloud Run and Secret Manager
fakes answer the real Google clients."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from cloudrun_fake import FakeCloudRun
from conftest import Project, output
from secretmanager_fake import FakeSecretManager, State

PROJECT = "demo-proj"
AUTH_SA = "auth@demo-proj.iam.gserviceaccount.com"
BACKEND_SA = "backend@demo-proj.iam.gserviceaccount.com"


def config(auth_secret: str, backend_secret: str, extra: str = "") -> str:
    return f"""
        [loop]
        max_iterations = 1

        [deploy]
        target = "cloudrun"
        project = "{PROJECT}"
        region = "europe-west1"
        {extra}

        [[deploy.services]]
        name = "auth"
        image = "europe-docker.pkg.dev/{PROJECT}/shop/auth:1"
        service_account = "{AUTH_SA}"
        secrets = {{ JWT_SIGNING_KEY = "{auth_secret}" }}
        allow_unauthenticated = true

        [[deploy.services]]
        name = "backend"
        image = "europe-docker.pkg.dev/{PROJECT}/shop/backend:1"
        service_account = "{BACKEND_SA}"
        secrets = {{ JWT_SECRET_KEY = "{backend_secret}" }}
        allow_unauthenticated = true

        [[tests.suites]]
        name = "Smoke"
        paths = ["tests"]
    """


SAME = '[[deploy.same_secret]]\nrefs = ["auth.JWT_SIGNING_KEY", "backend.JWT_SECRET_KEY"]'


@pytest.fixture
def apis() -> Iterator[tuple[FakeCloudRun, FakeSecretManager]]:
    with FakeCloudRun() as run, FakeSecretManager() as secrets:
        secrets.add(PROJECT, "jwt-signing-key", readers=(f"serviceAccount:{AUTH_SA}",
                                                         f"serviceAccount:{BACKEND_SA}"))
        secrets.add(PROJECT, "jwt-secret", readers=(f"serviceAccount:{BACKEND_SA}",))
        yield run, secrets


def env_of(apis: tuple[FakeCloudRun, FakeSecretManager]) -> dict[str, str]:
    run, secrets = apis
    return {"CLOUDRUN_EMULATOR_HOST": run.address, "SECRETMANAGER_EMULATOR_HOST": secrets.address,
            "GRPC_VERBOSITY": "ERROR"}


def test_keys_declared_equal_but_read_from_two_secrets_stop_loop_plan(
    project: Project, apis: tuple[FakeCloudRun, FakeSecretManager]
) -> None:
    """The hand-written report's 7 WebSocket 403s: auth signs with one secret, the backend
    checks with another. Both secrets exist; the declaration says they must be one."""
    project.config(config("jwt-signing-key:latest", "jwt-secret:latest", SAME), env="staging")
    project.write("tests/test_smoke.py", "def test_a():\n    pass\n")
    for command in ("plan", "run"):
        result = project.run(command, "--env", "staging", env=env_of(apis))
        assert result.returncode == 2, output(result)
        (line,) = result.stderr.strip().splitlines()
        assert line.endswith(
            "deploy.same_secret[0].refs: auth.JWT_SIGNING_KEY reads secret 'jwt-signing-key'"
            " and backend.JWT_SECRET_KEY reads secret 'jwt-secret': they must come from the"
            " same secret"
        ), line
        assert line.startswith("error: configs/staging.toml:"), line
    assert apis[0].mutating_calls() == []


def test_without_a_declaration_lookalike_names_are_a_warning(
    project: Project, apis: tuple[FakeCloudRun, FakeSecretManager]
) -> None:
    project.config(config("jwt-signing-key:latest", "jwt-secret:latest"), env="staging")
    project.write("tests/test_smoke.py", "def test_a():\n    pass\n")
    result = project.run("plan", "--env", "staging", env=env_of(apis))
    assert result.returncode == 0, output(result)
    assert ("warning: auth.JWT_SIGNING_KEY and backend.JWT_SECRET_KEY look like one value read"
            " from two secrets, 'jwt-signing-key' and 'jwt-secret'") in result.stdout
    project.config(config("jwt-signing-key:latest", "jwt-signing-key:1", SAME), env="staging")
    again = project.run("plan", "--env", "staging", env=env_of(apis))
    assert again.returncode == 0 and "look like one value" not in again.stdout, output(again)


def test_a_missing_or_disabled_secret_stops_the_deploy_before_any_service(
    project: Project, apis: tuple[FakeCloudRun, FakeSecretManager]
) -> None:
    run, secrets = apis
    project.config(config("jwt-signing-key:latest", "jwt-signing-kee:latest", SAME.replace(
        "refs", "# refs").replace("[[deploy.same_secret]]", "")), env="staging")
    project.write("tests/test_smoke.py", "def test_a():\n    pass\n")
    plan = project.run("plan", "--env", "staging", env=env_of(apis))
    assert plan.returncode == 3, output(plan)
    assert plan.stderr.strip() == (
        "error: service backend: JWT_SECRET_KEY reads secret 'jwt-signing-kee' version latest:"
        f" no such secret or version in project {PROJECT}"
    )
    result = project.run("run", "--env", "staging", env=env_of(apis))
    assert result.returncode == 3, output(result)
    assert run.mutating_calls() == []  # auth, whose secret is fine, was not deployed either
    deployed = {d["service"]: d for d in project.summary(env="staging")["deployments"]}
    assert "no such secret" in deployed["backend"]["error"]
    assert deployed["auth"]["error"] == "not deployed: another service's secret is missing"

    secrets.add(PROJECT, "jwt-signing-key", State.ENABLED, State.DISABLED,
                readers=(f"serviceAccount:{AUTH_SA}",))
    project.config(config("jwt-signing-key:latest", "jwt-signing-key:1"), env="staging")
    disabled = project.run("plan", "--env", "staging", env=env_of(apis))
    assert disabled.returncode == 3, output(disabled)
    assert "JWT_SIGNING_KEY reads secret 'jwt-signing-key' version latest: that version is" \
        " disabled" in disabled.stderr


def test_a_service_account_without_access_is_a_warning_beside_its_deploy(
    project: Project, apis: tuple[FakeCloudRun, FakeSecretManager]
) -> None:
    run, _ = apis
    project.config(config("jwt-secret:latest", "jwt-secret:latest"), env="staging")
    project.write("tests/test_smoke.py", "def test_a():\n    pass\n")
    plan = project.run("plan", "--env", "staging", env=env_of(apis))
    assert plan.returncode == 0, output(plan)
    assert "has no role that reads secret 'jwt-secret'" in plan.stdout, output(plan)
    result = project.run("run", "--env", "staging", env=env_of(apis))
    assert result.returncode == 0, output(result)
    deployed = {d["service"]: d for d in project.summary(env="staging")["deployments"]}
    assert f"{AUTH_SA} has no role that reads secret 'jwt-secret'" in deployed["auth"]["warning"]
    assert deployed["backend"]["warning"] is None


def test_against_the_cloud_run_fake_alone_the_check_is_skipped_and_said(
    project: Project, apis: tuple[FakeCloudRun, FakeSecretManager]
) -> None:
    run, _ = apis
    project.config(config("nothing-here:latest", "nothing-here:latest"), env="staging")
    project.write("tests/test_smoke.py", "def test_a():\n    pass\n")
    result = project.run("run", "--env", "staging", env={
        "CLOUDRUN_EMULATOR_HOST": run.address, "GRPC_VERBOSITY": "ERROR",
    })
    assert result.returncode == 0, output(result)
    assert result.stdout.count("note: secrets not checked with Secret Manager:") == 1
    assert result.stdout.count(
        "note: service logs not read from Cloud Logging: CLOUDRUN_EMULATOR_HOST is set and"
        " LOGGING_EMULATOR_HOST is not"
    ) == 1


def test_values_declared_equal_are_compared_without_being_shown(project: Project) -> None:
    project.service()
    project.config("""
        [deploy]
        target = "local"

        [[deploy.services]]
        name = "auth"
        command = ["{python}", "svc.py", "--port", "{port}"]
        env = { JWT_SIGNING_KEY = "s3cr3t-one" }

        [[deploy.services]]
        name = "backend"
        command = ["{python}", "svc.py", "--port", "{port}"]
        env = { JWT_SECRET_KEY = "s3cr3t-two" }

        [[deploy.same_secret]]
        refs = ["auth.JWT_SIGNING_KEY", "backend.JWT_SECRET_KEY"]

        [[tests.suites]]
        name = "Smoke"
        paths = ["tests"]
    """)
    project.write("tests/test_smoke.py", "def test_a():\n    pass\n")
    result = project.run("plan")
    assert result.returncode == 2, output(result)
    assert ("auth.JWT_SIGNING_KEY and backend.JWT_SECRET_KEY hold different values (not shown)"
            in result.stderr)
    assert "s3cr3t" not in result.stdout + result.stderr
