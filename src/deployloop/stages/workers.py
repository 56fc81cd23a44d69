"""The test workers of an iteration, started before anything else of it: they collect while
the rest of loop starts, plans and deploys. Imports little, so that they start early."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from deployloop.config import SuiteConfig
from deployloop.models import IterationRecord
from deployloop.runner.pool import WorkerGroup, WorkerPool
from deployloop.stages.plan import configured_urls, select_suites
from deployloop.stages.pytest_setup import pytest_setup
from deployloop.stages.settings import IterationSettings


def start_workers(settings: IterationSettings, record: IterationRecord) -> WorkerPool | None:
    """The test workers of a new iteration, started now so that they collect while the
    services deploy; None when no suite runs on them."""
    suites = [s for s in select_suites(settings.config, settings.suite_globs) if not s.serial]
    if not suites or settings.config.tests.executor != "local":
        return None
    setup = pytest_setup(settings, record, configured_urls(settings.config))
    pool = WorkerPool(
        setup,
        settings.layout.pytest_dir(settings.env, record.number),
        worker_groups(suites, settings.workdir),
        settings.workers,
        prefix="",
        suite_timeout_s=settings.config.tests.suite_timeout_s,
        test_timeout_s=settings.config.tests.test_timeout_s,
        fork=settings.config.tests.fork_workers,
    )
    pool.start()
    return pool


def worker_groups(suites: Sequence[SuiteConfig], workdir: Path) -> list[WorkerGroup]:
    """One group per `-m` expression: its workers collect the files and folders of those
    suites. Whole files, not node ids, and only paths that exist: pytest stops at once on
    a path or node id it cannot find (the inventory names those), and loop sends the node
    ids to run anyway."""
    paths: dict[str | None, dict[str, None]] = {}
    counts: dict[str | None, int] = {}
    for suite in suites:
        found = [p.split("::")[0] for p in suite.paths if (workdir / p.split("::")[0]).exists()]
        paths.setdefault(suite.markers, {}).update(dict.fromkeys(found))
        counts[suite.markers] = counts.get(suite.markers, 0) + 1
    return [WorkerGroup(markers, tuple(p), counts[markers]) for markers, p in paths.items()]
