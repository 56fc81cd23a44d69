"""`loop run`: iterate until the target pass rate, max iterations, or a stall."""

from __future__ import annotations

import signal
import sqlite3
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from deployloop.config import Config
from deployloop.gitinfo import code_state, folder_state, git_sha
from deployloop.models import IterationRecord, IterationStatus
from deployloop.runner.pool import WorkerPool
from deployloop.safetext import shown_text
from deployloop.stages.between import HookError, run_between_iterations
from deployloop.stages.decide import (
    EXIT_BELOW_TARGET,
    EXIT_INTERRUPTED,
    Decision,
    IterationResult,
    decide,
)
from deployloop.stages.settings import IterationSettings
from deployloop.stages.workers import start_workers
from deployloop.store import Store

if TYPE_CHECKING:
    from rich.console import Console

    from deployloop.iteration import IterationOutcome


@dataclass(frozen=True)
class RunOptions:
    max_iterations: int
    resume: bool


def run_loop(
    settings: IterationSettings,
    options: RunOptions,
    store: Store,
    make_console: Callable[[], Console],
) -> int:
    """Run iterations; return the exit code of `loop run`."""
    config = settings.config
    results: list[IterationResult] = []
    resume = options.resume
    with _sigterm_as_interrupt():
        record, note = _next_record(settings, store, resume)
        record, pool = _start_workers(settings, store, record, resume)
        # The rest of an iteration (its stages, the analysis, the display: ~0.2 s of imports)
        # loads while the first one's workers collect, on another core.
        from deployloop.iteration import run_iteration

        console = make_console()
        if note:
            console.print(note)
        while True:
            outcome = run_iteration(settings, store, console, record, pool, resume=resume)
            resume = False
            # --failed-only is for the first iteration: the next ones run every test.
            settings = replace(settings, failed_only=False)
            _backup(store, console)
            _tidy(settings, record.number, console)
            _print_outcome(settings, console, outcome)
            results.append(
                IterationResult(
                    outcome.record.number,
                    outcome.record.status,
                    outcome.summary.totals.pass_rate,
                    outcome.record.partial,
                )
            )
            decision = decide(results, config.loop, options.max_iterations)
            if decision.stop:
                _print_decision(console, decision, outcome)
                return decision.exit_code
            if outcome.record.partial and outcome.record.status == IterationStatus.PASSED:
                # nothing to fix
                console.print("\nEvery test that failed before passes: a full iteration next.")
            else:
                code = _between_iterations(settings, config, console, outcome)
                if code is not None:
                    return code
            record, _ = _next_record(settings, store, resume=False)
            record, pool = _start_workers(settings, store, record, resume=False)


def _next_record(
    settings: IterationSettings, store: Store, resume: bool
) -> tuple[IterationRecord, str | None]:
    """The iteration to run, and what to say about it."""
    note = None
    if resume:
        last = store.iteration(settings.env)
        if last is not None and last.status in (
            IterationStatus.INTERRUPTED, IterationStatus.CRASHED, IterationStatus.RUNNING
        ):
            store.reopen_iteration(last.id)
            reopened = store.iteration_by_id(last.id)
            assert reopened is not None
            return reopened, f"Resuming iteration {last.number} ({settings.env})"
        note = "Nothing to resume: the last iteration finished; starting a new one."
    record = store.start_iteration(
        settings.env,
        git_sha(settings.workdir),
        settings.target_pass_rate,
        settings.workers,
        partial=settings.failed_only,
    )
    return record, note


def _start_workers(
    settings: IterationSettings, store: Store, record: IterationRecord, resume: bool
) -> tuple[IterationRecord, WorkerPool | None]:
    """The new iteration's test workers, started before anything else of it; then the code
    it tests is keyed (hashing a large tree takes a while: the workers need not wait), and
    the record read again with its key. No workers on a resume (the test stage starts what
    its rest needs), nor when they cannot start (a process limit, a missing interpreter):
    the test stage starts its own then, and says what fails if it fails again."""
    if resume:
        return record, None
    try:
        pool = start_workers(settings, record)
    except OSError:
        pool = None
    store.set_code_key(record.id, _code_key(settings))
    keyed = store.iteration_by_id(record.id)
    assert keyed is not None
    return keyed, pool


def _backup(store: Store, console: Console) -> None:
    """The last good database, for when the store gets damaged (see `restore_hint`)."""
    from rich.text import Text

    try:
        store.backup()
    except (OSError, sqlite3.Error) as exc:
        console.print(Text(f"warning: the state database was not backed up: {exc}", "yellow"))


def _tidy(settings: IterationSettings, number: int, console: Console) -> None:
    """Older iterations' raw pytest files: gzipped, or dropped ([state] keep_raw_iterations)."""
    from rich.text import Text

    from deployloop.state_files import tidy_raw_files

    try:
        tidy_raw_files(
            settings.layout, settings.env, number, settings.config.state.keep_raw_iterations
        )
    except OSError as exc:
        console.print(Text(f"warning: old raw pytest files were not tidied: {exc}", "yellow"))


def _code_key(settings: IterationSettings) -> str | None:
    """What code an iteration tests, for telling flaky tests from fixed ones: the work tree,
    and each service's `source` folders elsewhere. None when it cannot be known: services
    of the command and none targets are built outside this tree, unless each names its
    source."""
    services = settings.config.deploy.services
    if (
        services
        and settings.config.deploy.target in ("command", "none")
        and not all(s.source for s in services)
    ):
        return None
    key = code_state(settings.workdir, ignore=(settings.layout.root,))
    folders = [settings.workdir / p for s in services for p in s.source]
    if not folders:
        return key
    return f"{key}|" + ",".join(folder_state(folder) for folder in folders)


def _between_iterations(
    settings: IterationSettings, config: Config, console: Console, outcome: IterationOutcome
) -> int | None:
    argv = config.loop.between_iterations
    if not argv:
        return None
    number = outcome.record.number
    shown = " ".join(part.replace("{python}", sys.executable) for part in argv)
    console.print(f"\n[bold]Between iterations[/]: {shown_text(shown)}", highlight=False)
    try:
        run_between_iterations(
            argv,
            env_name=settings.env,
            iteration=number,
            report_md=settings.layout.report_md(settings.env, number),
            summary_json=settings.layout.summary_json(settings.env, number),
            workdir=settings.workdir,
            children=settings.children,
        )
    except HookError as exc:
        console.print(f"[red]error:[/] {shown_text(str(exc))}; stopping the loop")
        return EXIT_BELOW_TARGET
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/] during the between-iterations hook")
        return EXIT_INTERRUPTED
    return None


def _print_outcome(
    settings: IterationSettings, console: Console, outcome: IterationOutcome
) -> None:
    from deployloop.report import github
    from deployloop.report.terminal import render_summary

    console.print()
    actions = github.in_actions()
    if actions:  # the long tables fold away in the job's log
        console.file.write(github.group(f"iteration {outcome.record.number} report") + "\n")
    render_summary(outcome.summary, console)
    if actions:
        console.file.write(github.END_GROUP + "\n")
        for line in outcome.annotations:
            console.file.write(line + "\n")
        console.file.flush()
    record = outcome.record
    if outcome.deploy_error:
        console.print(
            f"[red]deploy failed:[/] {shown_text(outcome.deploy_error)}", highlight=False
        )
    console.print(
        f"  report: {settings.layout.report_md(settings.env, record.number)}", highlight=False
    )


def _print_decision(console: Console, decision: Decision, outcome: IterationOutcome) -> None:
    record = outcome.record
    if decision.exit_code == EXIT_INTERRUPTED:
        figures = outcome.summary.totals
        done = figures.collected - figures.pending
        console.print(
            f"[yellow]Interrupted:[/] iteration {record.number} kept {done} of"
            f" {figures.collected} results; `loop run --env {record.env} --resume` runs the rest."
        )
        return
    style = "green" if decision.exit_code == 0 else "red"
    console.print(
        f"[{style}]Stopped:[/] {shown_text(decision.reason)} (exit {decision.exit_code})"
    )


class _sigterm_as_interrupt:  # noqa: N801 (used as a context manager)
    """SIGTERM (a CI job cancelled, `kill`) stops as gracefully as Ctrl-C does. SIGHUP (the
    terminal closed) is left to end loop: every later write to that terminal would fail;
    the watchdog stops the children and the next command marks the iteration crashed."""

    def __enter__(self) -> None:
        self._old = signal.signal(signal.SIGTERM, self._raise)

    def __exit__(self, *exc: object) -> None:
        signal.signal(signal.SIGTERM, self._old)

    @staticmethod
    def _raise(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt()


def settings_for(
    env: str,
    config: Config,
    workdir: Path,
    state_dir: Path,
    suite_globs: tuple[str, ...],
    workers: int | None,
    target: float | None,
    failed_only: bool = False,
) -> IterationSettings:
    from deployloop.layout import StateLayout

    return IterationSettings(
        env=env,
        config=config,
        workdir=workdir,
        layout=StateLayout(state_dir),
        suite_globs=suite_globs,
        workers=workers or config.tests.workers,
        target_pass_rate=config.loop.target_pass_rate if target is None else target,
        failed_only=failed_only,
    )
