"""`loop plan`: what an iteration would deploy and run, changing nothing.

Names, commands, what a deploy target reports and pytest's collection errors are shown through
`Text` (never console markup) with anything unsafe to show escaped.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from deployloop.children import Children
from deployloop.config import Config
from deployloop.runner.inventory import collect_inventory
from deployloop.runner.process import PytestProcess, PytestSetup
from deployloop.runner.suite_paths import tests_root
from deployloop.safetext import one_line
from deployloop.stages.plan import configured_urls
from deployloop.stages.pytest_setup import redaction_for, resolve_python, test_environment

if TYPE_CHECKING:
    from rich.console import Console

    from deployloop.models import InventoryItem


def show_plan(
    env: str,
    config: Config,
    workdir: Path,
    make_console: Callable[[], Console],
    next_iteration: int,
    checks: Callable[[], None] = lambda: None,
    durations: Mapping[str, float] | None = None,
) -> None:
    """Print the plan. The tests are collected from the start, beside `checks` (what must
    hold before a plan means anything; they raise to stop it) and the deploy target's plan:
    collection is most of a plan's time, and the rest need not wait for it. What only shows
    the plan (rich, the deploy targets) is imported once the collection runs."""
    # Collection output goes to a throwaway folder: plan leaves no trace in the state dir.
    # Its pytest processes die with it (a watchdog, but no record: plan writes no state).
    # Children closes first on the way out, so a collection still running when a check fails
    # (or on Ctrl-C) is stopped before its thread is waited for.
    redaction = redaction_for(config, os.environ)
    with (
        tempfile.TemporaryDirectory(prefix="loop-plan-") as tmp,
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="loop-plan-collect") as pool,
        Children(redactor=redaction.redactor) as children,
    ):
        setup = PytestSetup(
            python=resolve_python(config, workdir),
            workdir=workdir,
            pytest_args=tuple(config.tests.pytest_args),
            env=test_environment(config, env, next_iteration, configured_urls(config)),
            rootdir=tests_root(config.tests.suites, workdir),
            children=children,
            redaction=redaction,
        )
        # A pytest that has listed every test takes a while longer to end: the plan is
        # shown meanwhile, and it is waited for before loop ends.
        ending: list[PytestProcess] = []
        collecting = pool.submit(
            collect_inventory, config.tests.suites, setup, Path(tmp),
            config.tests.suite_timeout_s, ending=ending.append,
        )
        checks()
        console = make_console()
        _show_deploy(env, config, workdir, console, next_iteration)
        inventory = collecting.result()
        _show_suites(config, inventory, console)
        if config.tests.executor == "cloudrun-jobs":
            _show_jobs(config, inventory, console, durations or {}, workdir, next_iteration)
        for process in ending:
            process.wait(config.tests.suite_timeout_s)


def _show_suites(config: Config, inventory: Sequence[InventoryItem], console: Console) -> None:
    from rich.table import Table
    from rich.text import Text

    from deployloop.report._format import plural

    counts = Counter(item.suite for item in inventory if not item.collect_error)
    errors = Counter(item.suite for item in inventory if item.collect_error)
    suites = Table("priority", "suite", "tests", "collection errors", "paths")
    for suite in sorted(config.tests.suites, key=lambda s: s.priority):
        markers = f"  -m '{suite.markers}'" if suite.markers else ""
        suites.add_row(
            Text(str(suite.priority)), Text(one_line(suite.name)), Text(str(counts[suite.name])),
            Text(str(errors[suite.name]), style="red" if errors[suite.name] else ""),
            Text(one_line(" ".join(suite.paths) + markers)),
        )
    console.print(suites)
    where = (
        "on Cloud Run Jobs" if config.tests.executor == "cloudrun-jobs"
        else f"{plural(config.tests.workers, 'pytest process', 'pytest processes')} at once"
    )
    console.print(
        Text(
            f"{plural(sum(counts.values()), 'test')} in"
            f" {plural(len(config.tests.suites), 'suite')}; {where};"
            f" target pass rate {config.loop.target_pass_rate:g}%,"
            f" at most {plural(config.loop.max_iterations, 'iteration')}."
        )
    )
    for item in inventory:
        if item.collect_error:
            console.print(
                Text.assemble(
                    ("cannot collect", "red"),
                    f" {one_line(item.nodeid)}: {one_line(item.collect_error)}",
                )
            )


def _show_jobs(
    config: Config,
    inventory: Sequence[InventoryItem],
    console: Console,
    durations: Mapping[str, float],
    workdir: Path,
    next_iteration: int,
) -> None:
    """The job, its tasks and each task's share, as an iteration would run them now."""
    from rich.text import Text

    from deployloop.gitinfo import git_sha
    from deployloop.report._format import plural
    from deployloop.runner.cloudrun_jobs.job import job_location
    from deployloop.runner.schedule import PendingTest, expected_durations
    from deployloop.stages.jobs import SUITE_TIMEOUT_NOTE, job_image, shares_for

    jobs = config.tests.cloudrun_jobs
    assert jobs is not None
    project, region = job_location(config)
    priority = {s.name: s.priority for s in config.tests.suites}
    items = [(i.suite, i.nodeid) for i in inventory if not i.collect_error]
    expected = expected_durations(items, durations)
    tests = [
        PendingTest(suite, n, priority[suite], True, expected[n], n in durations)
        for suite, n in items
    ]
    executions = shares_for(config, tests)
    console.print(Text(
        f"\nTests run on Cloud Run Jobs: job {jobs.job} in {project}/{region},"
        f" image {job_image(config, git_sha(workdir), next_iteration)}"
    ))
    account = jobs.service_account or "the project's default compute service account"
    console.print(Text(
        f"  {plural(jobs.tasks, 'task')} at most, timeout {jobs.task_timeout_s} s each,"
        f" {plural(jobs.max_retries, 'retry', 'retries')}; runs as {account};"
        f" results in gs://{jobs.bucket}/{jobs.prefix}"
    ))
    timed = sum(1 for t in tests if t.timed)
    for label, shares in executions:
        if label:
            console.print(Text(f"  then an execution of {label}:"))
        for share in shares:
            console.print(Text(
                f"  task {share.task}: {plural(len(share.tests), 'test')},"
                f" ~{share.expected_s:.1f} s"
            ))
    if "suite_timeout_s" in config.tests.model_fields_set:
        console.print(Text(f"  {SUITE_TIMEOUT_NOTE}", style="yellow"))
    if tests and timed < len(tests):
        console.print(Text(
            f"  ({len(tests) - timed} of {len(tests)} tests never timed here: their share is"
            " a guess until an iteration has run them)"
        ))


def _show_deploy(
    env: str, config: Config, workdir: Path, console: Console, next_iteration: int
) -> None:
    from rich.table import Table
    from rich.text import Text

    from deployloop.config import deploy_waves
    from deployloop.deploy import DeployContext, deploy_notes, make_target
    from deployloop.gitinfo import git_sha

    console.print(Text.assemble((f"Plan for env '{one_line(env)}'", "bold"), ": config is valid"))
    deploy = config.deploy
    console.print(Text(f"\nDeploy target: {deploy.target}  (next iteration: {next_iteration})"))
    if deploy.command:
        console.print(Text(f"  command: {one_line(' '.join(deploy.command))}"))
    if not deploy.services:
        # What `loop init` leaves to fill in: said, so that a suite that needs a service and
        # fails for want of one is not a mystery.
        console.print(
            Text(
                "  no services configured: the tests run against whatever they point at"
                " (add [[deploy.services]] to have loop deploy and check them)",
                style="yellow",
            )
        )
    with tempfile.TemporaryDirectory(prefix="loop-plan-") as tmp:
        ctx = DeployContext(
            env=env, iteration=next_iteration, git_sha=git_sha(workdir), log_dir=Path(tmp),
            python=sys.executable, base_env=dict(os.environ),
        )
        target = make_target(config)
        try:
            planned = {p.service: p for p in target.plan(config, ctx)}
        finally:
            target.stop()
    services = Table("wave", "service", "depends on", "deploys / runs / checks", "changes")
    for column in services.columns[3:]:
        column.overflow = "fold"  # an image reference cut short is no use
    for number, wave in enumerate(deploy_waves(deploy.services), start=1):
        for service in wave:
            what = planned.get(service.name)
            services.add_row(
                Text(str(number)), Text(one_line(service.name)),
                Text(one_line(", ".join(service.depends_on)) or "-"),
                Text(one_line(what.artifact) if what else ""),
                Text("\n".join(one_line(change) for change in what.changes) if what else ""),
            )
    console.print(services)
    for warning in deploy_notes(config):
        console.print(Text(f"  {warning}", style="yellow"))
