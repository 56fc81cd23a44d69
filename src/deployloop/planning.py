"""`loop plan`: what an iteration would deploy and run, changing nothing."""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.table import Table

from deployloop.config import Config, deploy_waves
from deployloop.iteration import resolve_python
from deployloop.runner.inventory import collect_inventory
from deployloop.runner.process import PytestSetup


def show_plan(env: str, config: Config, workdir: Path, console: Console) -> None:
    console.print(f"[bold]Plan for env {env!r}[/]: config is valid")
    deploy = config.deploy
    console.print(f"\nDeploy target: {deploy.target}")
    if deploy.command:
        console.print(f"  command: {' '.join(deploy.command)}")
    services = Table("wave", "service", "depends on", "runs / checks", "health")
    for number, wave in enumerate(deploy_waves(deploy.services), start=1):
        for service in wave:
            what = " ".join(service.command) if service.command else (service.url or "")
            services.add_row(
                str(number), service.name, ", ".join(service.depends_on) or "-", what,
                service.health_path,
            )
    console.print(services)

    # Collection output goes to a throwaway folder: plan leaves no trace in the state dir.
    with tempfile.TemporaryDirectory(prefix="loop-plan-") as tmp:
        setup = PytestSetup(
            python=resolve_python(config, workdir),
            workdir=workdir,
            pytest_args=tuple(config.tests.pytest_args),
            env={**os.environ, **config.tests.env, "LOOP_ENV": env},
        )
        inventory = collect_inventory(
            config.tests.suites, setup, Path(tmp), config.tests.suite_timeout_s
        )
    counts = Counter(item.suite for item in inventory if not item.collect_error)
    errors = Counter(item.suite for item in inventory if item.collect_error)
    suites = Table("priority", "suite", "tests", "collection errors", "paths")
    for suite in sorted(config.tests.suites, key=lambda s: s.priority):
        suites.add_row(
            str(suite.priority), suite.name, str(counts[suite.name]),
            f"[red]{errors[suite.name]}[/]" if errors[suite.name] else "0",
            " ".join(suite.paths) + (f"  -m {suite.markers!r}" if suite.markers else ""),
        )
    console.print(suites)
    console.print(
        f"{sum(counts.values())} tests in {len(config.tests.suites)} suites;"
        f" {config.tests.workers} pytest processes at once;"
        f" target pass rate {config.loop.target_pass_rate:g}%,"
        f" at most {config.loop.max_iterations} iterations."
    )
    for item in inventory:
        if item.collect_error:
            console.print(f"[red]cannot collect[/] {item.nodeid}: {item.collect_error}")
