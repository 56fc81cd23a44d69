"""Plan: which suites run this iteration, and the inventory of every suite, collected before
deploy (a resume keeps the interrupted iteration's)."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from deployloop.config import Config, SuiteConfig
from deployloop.gitinfo import file_digests
from deployloop.models import (
    Deployment,
    DeployStatus,
    InventoryItem,
    IterationRecord,
    SuiteRecord,
    SuiteStatus,
)
from deployloop.report._format import plural
from deployloop.runner.inventory import SharedCollection, collect_inventory
from deployloop.stages.pytest_setup import pytest_setup
from deployloop.stages.settings import IterationSettings, UsageError
from deployloop.store import Store

if TYPE_CHECKING:  # rich is imported by whoever makes the console
    from rich.console import Console


@dataclass(frozen=True)
class Plan:
    record: IterationRecord
    suites: tuple[SuiteConfig, ...]  # the selected suites, in run order
    pytest_dir: Path  # the iteration's pytest files (layout.pytest_dir)
    services_dir: Path  # the iteration's service logs (layout.services_dir)
    # Prefix of this run's per-process files: a resume must not overwrite the files of the
    # processes it resumes.
    job_prefix: str = ""


def select_suites(config: Config, globs: Sequence[str]) -> list[SuiteConfig]:
    """Suites matching any `--suite` glob (all when none), lowest priority number first."""
    suites = config.tests.suites
    if globs:
        for glob in globs:
            if not any(fnmatch.fnmatch(s.name.lower(), glob.lower()) for s in suites):
                names = ", ".join(repr(s.name) for s in suites)
                raise UsageError(f"--suite {glob!r} matches no suite (suites: {names})")
        suites = [
            s for s in suites if any(fnmatch.fnmatch(s.name.lower(), g.lower()) for g in globs)
        ]
    order = {s.name: i for i, s in enumerate(config.tests.suites)}
    return sorted(suites, key=lambda s: (s.priority, order[s.name]))


def plan_iteration(
    settings: IterationSettings,
    store: Store,
    console: Console,
    record: IterationRecord,
    resume: bool,
    shared: Callable[[str | None, tuple[str, ...]], SharedCollection | None] | None = None,
) -> Plan:
    """`shared`: collections the test workers are making already (the plan reads those
    rather than collecting the same paths again)."""
    selected = select_suites(settings.config, settings.suite_globs)
    pytest_dir = settings.layout.pytest_dir(settings.env, record.number)
    services_dir = settings.layout.services_dir(settings.env, record.number)
    if resume and store.tests(record.id):
        # The inventory and the suite selection of an interrupted iteration stand: only its
        # pending tests run.
        chosen = {s.name for s in store.suites(record.id) if s.selected}
        kept = tuple(s for s in select_suites(settings.config, ()) if s.name in chosen)
        return Plan(record, kept, pytest_dir, services_dir, _resume_prefix(pytest_dir))
    console.print(f"[bold]Iteration {record.number}[/] ({settings.env}): collecting tests")
    setup = pytest_setup(settings, record, deployments=configured_urls(settings.config))
    inventory = collect_inventory(
        settings.config.tests.suites,
        setup,
        pytest_dir,
        settings.config.tests.suite_timeout_s,
        shared=shared,
    )
    names = {s.name for s in selected}
    suites = [
        SuiteRecord(
            name=s.name,
            priority=s.priority,
            selected=s.name in names,
            status=SuiteStatus.PENDING if s.name in names else SuiteStatus.NOT_RUN,
        )
        for s in settings.config.tests.suites
    ]
    store.record_plan(record.id, suites, inventory)
    store.record_test_files(record.id, file_digests(settings.workdir, {i.file for i in inventory}))
    _print_inventory(console, settings.config.tests.suites, inventory, names)
    return Plan(record, tuple(selected), pytest_dir, services_dir)


def configured_urls(config: Config) -> list[Deployment]:
    """Services whose URL the config gives (command and none targets): the tests see them at
    collection already."""
    if config.deploy.target not in ("command", "none"):
        return []
    return [
        Deployment(s.name, DeployStatus.PENDING, url=s.url) for s in config.deploy.services if s.url
    ]


def _resume_prefix(pytest_dir: Path) -> str:
    number = 1
    while any(pytest_dir.glob(f"resume{number}-*")):
        number += 1
    return f"resume{number}-"


def _print_inventory(
    console: Console,
    suites: Sequence[SuiteConfig],
    inventory: list[InventoryItem],
    selected: set[str],
) -> None:
    total = len(inventory)
    errors = sum(1 for i in inventory if i.collect_error)
    running = sum(1 for i in inventory if i.suite in selected)
    line = f"  {plural(total, 'test')} in {plural(len(suites), 'suite')}"
    if running != total:
        line += f"; running {running} in {plural(len(selected), 'selected suite')}"
    if errors:
        line += f"; [red]{errors} could not be collected[/]"
    console.print(line)
