"""`loop run --env staging` with the shipped configs/staging.toml, against the fake Admin API
whose revisions run the shop's real services (fake_containers.py): the whole Cloud Run path,
create, update, candidate tags, promotion, with real processes behind each revision."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cloudrun_fake import FakeCloudRun
from conftest import ROOT, Project, loop_env, output, pids_where, shop_checkout
from fake_containers import Containers, read_image_map, read_running
from logging_fake import FakeLogging

PROJECT_ENV = {"GCP_PROJECT": "deployloop-demo", "GCP_REGION": "europe-west1"}
IMAGES = "europe-west1-docker.pkg.dev/deployloop-demo/shop"
SHOP_IMAGES = ROOT / "examples" / "shop" / "images.toml"


def deployments(project: Project, iteration: int) -> dict[str, dict[str, Any]]:
    summary = project.summary(iteration, env="staging")
    return {d["service"]: d for d in summary["deployments"]}


def revision_processes(root: Path) -> list[int]:
    """Processes still running a fake revision (Cloud Run's K_REVISION) started in `root`."""

    def is_revision(proc: Path) -> bool:
        environ = b"\0" + (proc / "environ").read_bytes()
        return b"\0K_REVISION=" in environ and (proc / "cwd").resolve() == root.resolve()

    return pids_where(is_revision)


def test_make_demo_staging_reaches_green_in_two_iterations(tmp_path: Path) -> None:
    """What `make demo-staging` runs: the fake holding the team's release, its revisions
    running the shop's services, and `loop run --env staging` with the shipped config and
    fix step."""
    project = shop_checkout(tmp_path / "checkout", "staging")
    result = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "cloudrun_fake.py"),
         "--images", "examples/shop/images.toml", "--logs", str(tmp_path / "logs"),
         "--", str(Path(sys.executable).parent / "loop"), "run", "--env", "staging"],
        cwd=project.root, env=loop_env(PROJECT_ENV), capture_output=True, text=True,
        timeout=240, stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, output(result)
    assert "fake: shop-backend was deployed before, serving shop-backend-00001-abc" in (
        result.stdout
    )
    first, second = deployments(project, 1), deployments(project, 2)
    assert project.summary(1, env="staging")["totals"]["failed"] == 5
    assert {d["tag"] for d in first.values()} == {"loop-it1"}
    assert not any(d["promoted"] or d["warning"] for d in first.values()), first
    # The team's release kept the traffic, and the reports say so.
    assert {n: d["serving"] for n, d in first.items()} == {
        "auth": "shop-auth-00001-abc", "backend": "shop-backend-00001-abc",
    }
    report = (project.iteration_dir(1, env="staging") / "report.md").read_text()
    assert "not promoted; traffic on shop-backend-00001-abc)" in report
    # The candidate backend's own line, read back from (the fake) Cloud Logging.
    (cluster,) = project.summary(1, env="staging")["clusters"]
    (log,) = cluster["service_logs"]
    assert log["service"] == "backend", log
    assert "GET /events refused (403): token audience ['auth']" in log["lines"][0], log
    assert "not promoted: the iteration is below its target; traffic stays" in result.stdout
    assert "push_images: the fake Admin API runs this work tree's services" in result.stdout
    summary = project.summary(2, env="staging")
    assert summary["totals"]["failed"] == 0 and not summary["flaky"], summary["flaky"]
    assert all(d["promoted"] and d["tag"] == "loop-it2" for d in second.values()), second
    assert all(d["serving"] == d["revision"] for d in second.values()), second
    assert "promoted backend: all traffic on shop-backend-loop2-" in result.stdout
    # Each revision ran as its own process, and none is left once the fake stops.
    # (the team's release, iteration 1's candidate, iteration 2's: three per service)
    logs = sorted(p.relative_to(tmp_path / "logs").parent.name
                  for p in (tmp_path / "logs").rglob("*.log"))
    assert logs == ["shop-auth"] * 3 + ["shop-backend"] * 3
    assert revision_processes(project.root) == []


def test_make_demo_jobs_runs_the_tests_as_job_tasks_and_reaches_green(tmp_path: Path) -> None:
    """What `make demo-jobs` runs: configs/jobs.toml, whose tests run as the tasks of a Cloud
    Run Jobs execution (local `python -m deployloop.task` processes of the fake), their
    results through a Cloud Storage emulator."""
    project = shop_checkout(tmp_path / "checkout", "jobs")
    result = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "cloudrun_fake.py"),
         "--images", "examples/shop/images.toml", "--logs", str(tmp_path / "logs"),
         "--storage", "deployloop-demo-loop-results",
         "--", str(Path(sys.executable).parent / "loop"), "run", "--env", "jobs"],
        cwd=project.root, env=loop_env(PROJECT_ENV), capture_output=True, text=True,
        timeout=240, stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, output(result)
    assert "job shop-e2e created in deployloop-demo/europe-west1" in result.stdout
    assert "job shop-e2e updated in deployloop-demo/europe-west1" in result.stdout
    assert project.summary(1, env="jobs")["totals"]["failed"] == 5
    assert project.summary(2, env="jobs")["totals"]["passed"] == 39
    # Two executions of four tasks, each a process of its own, none left running.
    logs = sorted((tmp_path / "logs" / "jobs").glob("*/task*-attempt0.log"))
    assert len(logs) == 8, logs
    assert not pids_where(lambda p: b"deployloop.task" in (p / "cmdline").read_bytes())


@pytest.fixture
def shop_fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeCloudRun]:
    for name, value in PROJECT_ENV.items():
        monkeypatch.setenv(name, value)
    containers = Containers(
        read_image_map(SHOP_IMAGES), tmp_path / "logs", workdir=tmp_path / "checkout"
    )
    with FakeCloudRun(containers) as fake:
        yield fake


def test_a_failing_candidate_leaves_the_teams_revisions_serving_until_one_passes(
    shop_fake: FakeCloudRun, tmp_path: Path
) -> None:
    fake = shop_fake
    project = shop_checkout(tmp_path / "checkout", "staging")
    # The team's release, as the demo starts with it: FEATURE_FLAGS is the backend's own.
    team = fake.seed_running(read_running(SHOP_IMAGES))
    env = {**PROJECT_ENV, "CLOUDRUN_EMULATOR_HOST": fake.address, "GRPC_VERBOSITY": "ERROR"}

    plan = project.run("plan", "--env", "staging", env=env)
    assert plan.returncode == 0, output(plan)
    assert "FEATURE_FLAGS" in plan.stdout and "kept as deployed" in plan.stdout, output(plan)

    first = project.run("run", "--env", "staging", "--max-iterations", "1", env=env,
                        timeout=180)
    assert first.returncode == 1, output(first)
    assert project.summary(1, env="staging")["totals"]["failed"] == 5
    # The team's revisions still serve; the failing candidates run beside them, by tag.
    assert {s: fake.serving_revision(s) for s in team} == team
    candidates = {s: fake.tagged_revision(s, "loop-it1") for s in team}
    assert set(fake.containers.running()) == {*team.values(), *candidates.values()}
    backend = fake.service("shop-backend")
    assert {e.name: e.value for e in backend.template.containers[0].env}["FEATURE_FLAGS"] == (
        "new-checkout"
    )

    # The fix step, as loop would run it between iterations (against the fake: no build).
    summary = project.iteration_dir(1, env="staging") / "summary.json"
    fix = subprocess.run(
        [sys.executable, "examples/shop/fix.py", "--push-images"], cwd=project.root,
        env={**os.environ, **env, "LOOP_SUMMARY_JSON": str(summary)},
        capture_output=True, text=True, timeout=60,
    )
    assert fix.returncode == 0, fix.stdout + fix.stderr
    assert "nothing to build" in fix.stdout

    second = project.run("run", "--env", "staging", "--max-iterations", "1", env=env,
                         timeout=180)
    assert second.returncode == 0, output(second)
    promoted = {s: fake.tagged_revision(s, "loop-it2") for s in team}
    assert {s: fake.serving_revision(s) for s in team} == promoted
    assert all(d["promoted"] for d in deployments(project, 2).values())
    # Only the promoted revisions still run: the team's and iteration 1's scaled to zero
    # (the it1 tag was dropped when it2's candidate came).
    assert set(fake.containers.running()) == set(promoted.values())
    # The service's own URL now reaches the fixed auth: tokens for the backend too.
    token = httpx.post(fake.service("shop-auth").uri + "/token", json={"user": "alice"},
                       timeout=10)
    assert token.status_code == 200 and "backend" in token.json()["audiences"], token.text


def test_a_revision_whose_container_never_listens_fails_the_deploy_with_its_log(
    tmp_path: Path,
) -> None:
    project = Project(tmp_path / "checkout")
    project.config(f"""
        [deploy]
        target = "cloudrun"
        project = "deployloop-demo"
        region = "europe-west1"

        [[deploy.services]]
        name = "api"
        image = "{IMAGES}/api:1"
        allow_unauthenticated = true
        health_path = "/health"

        [[tests.suites]]
        name = "Smoke"
        paths = ["tests/test_smoke.py"]
    """, env="staging")
    project.write("tests/test_smoke.py", "def test_nothing():\n    pass\n")
    containers = Containers(
        {"shop/api": ["{python}", "-c", "import sys; print('api: starting', flush=True);"
                      " sys.exit('ERROR api: DATABASE_URL is not set')"]},
        tmp_path / "logs", workdir=project.root,
    )
    with FakeCloudRun(containers) as fake, FakeLogging(tmp_path / "logs") as logs:
        result = project.run("run", "--env", "staging", env={
            "CLOUDRUN_EMULATOR_HOST": fake.address, "LOGGING_EMULATOR_HOST": logs.address,
            "GRPC_VERBOSITY": "ERROR",
        })
    assert result.returncode == 3, output(result)
    error = deployments(project, 1)["api"]["error"]
    assert "failed to start and listen on the port defined provided by the PORT=" in error
    # The revision's own entries, from Cloud Logging, and where to see the rest.
    assert "; its log: ERROR ERROR api: DATABASE_URL is not set (console:" in error, error
    assert error.endswith("(console: https://console.cloud.google.com/run/detail/europe-west1/"
                          "api/revisions?project=deployloop-demo)"), error
    assert project.summary(1, env="staging")["totals"]["executed"] == 0


@pytest.mark.parametrize("path", [
    "configs/local.toml", "configs/staging.toml", "configs/jobs.toml",
    "examples/cloudrun/staging.toml",
])
def test_every_config_this_repository_ships_loads(
    path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from deployloop.config.loading import load_config

    for name, value in PROJECT_ENV.items():
        monkeypatch.setenv(name, value)
    config = load_config(ROOT / Path(path).parent, Path(path).stem)
    assert config.deploy.services, path
    assert sorted(str(p) for p in ROOT.glob("configs/*.toml")) == [
        str(ROOT / "configs/jobs.toml"), str(ROOT / "configs/local.toml"),
        str(ROOT / "configs/staging.toml"),
    ]  # a new one belongs in the list above
