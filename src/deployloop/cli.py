"""The `loop` command line. Modules beyond typer load inside each command, so that
`loop --help` and `loop status` start fast."""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from deployloop.config import Config
    from deployloop.models import IterationRecord, Summary
    from deployloop.store import Store

EXIT_USAGE = 2
EXIT_DEPLOY = 3
EXIT_INTERNAL = 4

app = typer.Typer(
    name="loop",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"loop (deployloop) {version('deployloop')}")
        raise typer.Exit(0)


@app.callback()
def _main(
    version: Annotated[
        bool | None,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Show loop's version and exit."
        ),
    ] = None,
) -> None:
    """Run the test-deploy loop: deploy the services, run the pytest e2e suites against
    them, summarize, run the fix step, and go again until every test passes.

    Config: configs/<env>.toml (`loop init` writes one). State: .loop/ (loop.db and
    runs/<env>/iteration-<N>/).
    """


class TableFormat(StrEnum):
    table = "table"
    json = "json"


class ReportFormat(StrEnum):
    table = "table"
    markdown = "markdown"
    json = "json"
    junit = "junit"


EnvOption = Annotated[
    str,
    typer.Option("--env", "-e", metavar="ENV", help="Environment: reads configs/<ENV>.toml."),
]
ConfigDirOption = Annotated[
    Path,
    typer.Option("--config-dir", metavar="DIR", help="Folder of the <env>.toml configs."),
]
StateDirOption = Annotated[
    Path,
    typer.Option(
        "--state-dir",
        envvar="LOOP_STATE_DIR",
        metavar="DIR",
        help="Folder of loop.db and the iteration runs.",
    ),
]


def main() -> None:
    _children_get_sigint()
    app()


def _children_get_sigint() -> None:
    """loop stops pytest with SIGINT (fixture teardown runs). A shell starting loop in the
    background sets SIGINT to 'ignore', which every child would inherit across exec; a
    handler of loop's own is reset to the default in a child instead, and keeps loop as deaf
    to Ctrl-C as the shell meant."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, _ignore)


def _ignore(signum: int, frame: object) -> None:
    return None


def _fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    # One "error:" per line: a config with three mistakes gives three lines alike.
    for line in message.splitlines() or [message]:
        typer.echo(f"error: {line}", err=True)
    raise typer.Exit(code)


def _console() -> Console:
    """Styles and a width on a terminal. Piped or redirected, nothing is wrapped or cut
    (ids, paths and dates stay whole for grep and logs) and there are no styles; NO_COLOR
    turns off every style, bold included, not only colour."""
    from rich.console import Console

    console = Console(highlight=False)
    plain = bool(os.environ.get("NO_COLOR"))
    if console.is_terminal and not plain:
        return console
    if console.is_terminal:
        return Console(highlight=False, color_system=None)
    return Console(highlight=False, color_system=None, width=_UNWRAPPED, soft_wrap=True)


# Wide enough that no table column of a report is ever cut or folded.
_UNWRAPPED = 10_000


def _load_config(config_dir: Path, env: str) -> Config:
    from deployloop.config import ConfigError, config_path, load_config

    try:
        return load_config(config_dir, env)
    except ConfigError as exc:
        if not config_path(config_dir, env).exists():
            _fail(f"{exc}; `loop init --env {env}` writes one from the tests found here")
        _fail(str(exc))


def _open_store(
    state_dir: Path,
    *,
    create: bool,
    verify: bool = False,
    redact: Callable[[str], str] | None = None,
) -> Store:
    from deployloop.layout import StateLayout
    from deployloop.store import Store, StoreError

    def warn(message: str) -> None:
        typer.echo(f"warning: {message}", err=True)

    try:
        return Store.open(
            StateLayout(state_dir).db, create=create, verify=verify, redact=redact, warn=warn
        )
    except StoreError as exc:
        _fail(str(exc))


@contextmanager
def _reading(state_dir: Path) -> Iterator[None]:
    """A read command on a damaged database: one line naming the file and what to do."""
    import sqlite3

    try:
        yield
    except sqlite3.DatabaseError as exc:
        from deployloop.layout import StateLayout
        from deployloop.store import restore_hint

        db = StateLayout(state_dir).db
        _fail(f"{db}: the state database is damaged ({exc}); {restore_hint(db)}")


def _settle(store: Store, state_dir: Path, env: str, *, own_run: bool = False) -> None:
    """Say what recovery.settle did: what a killed `loop run` left is stopped and marked."""
    from deployloop.recovery import settle

    settled = settle(store, state_dir, env, own_run=own_run)
    if settled.live_run is not None and own_run:
        _fail(
            f"another `loop run` (pid {settled.live_run}) is running env {env!r}; wait for it,"
            " or stop it (Ctrl-C) and use --resume"
        )
    if settled.reaped:
        typer.echo(
            f"note: stopped {len(settled.reaped)} processes a killed `loop run` left running: "
            + ", ".join(settled.reaped[:5])
            + (", ..." if len(settled.reaped) > 5 else ""),
            err=True,
        )
    if settled.not_marked is not None:
        typer.echo(
            f"warning: no `loop run` holds env {env!r}, but its running iteration could not"
            f" be marked 'crashed': {settled.not_marked}",
            err=True,
        )
    for number in settled.marked:
        typer.echo(
            f"note: iteration {number} of env {env!r} was left running by a `loop run` that was"
            f" killed; it is marked 'crashed' with its results (`loop run --env {env} --resume`"
            " finishes it)",
            err=True,
        )


def _optional_config(config_dir: Path, env: str) -> Config | None:
    """env's config if it loads (known issues, categories): reports work without one too."""
    from deployloop.config import ConfigError, load_config

    try:
        return load_config(config_dir, env)
    except ConfigError as exc:
        if config_dir.joinpath(f"{env}.toml").exists():
            # Known issues and categories would vanish from the report without a word.
            typer.echo(f"warning: reporting without the config: {exc}", err=True)
        return None


@app.command()
def run(
    env: EnvOption = "local",
    max_iterations: Annotated[
        int | None,
        typer.Option(
            "--max-iterations",
            min=1,
            metavar="N",
            help="Stop after N iterations (default: loop.max_iterations).",
        ),
    ] = None,
    target: Annotated[
        float | None,
        typer.Option(
            "--target",
            min=0,
            max=100,
            metavar="PCT",
            help="Pass rate to reach, percent of executed tests (default: loop.target_pass_rate).",
        ),
    ] = None,
    suite: Annotated[
        list[str] | None,
        typer.Option(
            "--suite",
            "-s",
            metavar="GLOB",
            help="Run only suites whose name matches this glob (repeatable); the others"
            " still count in the inventory and show as remaining.",
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            "-w",
            min=1,
            metavar="N",
            help="pytest workers running the tests (default: tests.workers).",
        ),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Finish the last interrupted iteration first.")
    ] = False,
    failed_only: Annotated[
        bool,
        typer.Option(
            "--failed-only",
            help="First iteration: run only the tests that failed or errored last time, and"
            " those never run (a partial iteration: the others count as not run).",
        ),
    ] = False,
    config_dir: ConfigDirOption = Path("configs"),
    state_dir: StateDirOption = Path(".loop"),
) -> None:
    """Deploy, test, summarize and fix, iteration after iteration.

    Exit codes:
    0 target reached;
    1 ended below target;
    2 usage or config error;
    3 deploy failed, or could not start (credentials, a missing image), or a service
    never became ready;
    4 loop itself failed (state database, disk);
    130 interrupted (`--resume` goes on).
    """
    from dataclasses import replace

    from deployloop.children import Children
    from deployloop.config import ConfigError, check_markers, config_path
    from deployloop.deploy import DeployError, preflight
    from deployloop.lock import EnvLock, EnvLocked
    from deployloop.loop import RunOptions, run_loop, settings_for
    from deployloop.stages.plan import select_suites
    from deployloop.stages.pytest_setup import check_interpreter, redaction_for, resolve_python
    from deployloop.stages.settings import UsageError

    if resume and suite:
        _fail("--suite cannot be used with --resume: the interrupted iteration keeps its suites")
    if resume and failed_only:
        _fail("--failed-only cannot be used with --resume: the interrupted iteration keeps"
              " its tests")
    config = _load_config(config_dir, env)
    try:
        check_markers(config, str(config_path(config_dir, env)))
    except ConfigError as exc:
        _fail(str(exc))
    settings = settings_for(
        env, config, Path.cwd(), state_dir, tuple(suite or ()), workers, target, failed_only
    )
    try:
        select_suites(config, settings.suite_globs)
        python = resolve_python(config, Path.cwd())
        if python != sys.executable:  # loop's own has pytest; another may not
            check_interpreter(python, {**os.environ, **config.tests.env}, Path.cwd())
    except UsageError as exc:
        _fail(str(exc))
    _check_sources(config)
    try:
        preflight(config)  # no iteration for a deploy that cannot start (credentials)
    except DeployError as exc:
        _fail(str(exc), EXIT_DEPLOY)
    redaction = redaction_for(config, os.environ)
    # Everything loop writes is the user's alone (0600 files, 0700 folders); the tests and
    # services get the umask the user set.
    user_umask = os.umask(0o077)
    store = _open_store(state_dir, create=True, verify=True, redact=redaction.redactor.redact)
    try:
        with EnvLock(state_dir, env):
            _settle(store, state_dir, env, own_run=True)
            record = settings.layout.procs_record(env, os.getpid())
            with Children(record, redaction.redactor, umask=user_umask) as children:
                settings = replace(
                    settings,
                    children=children,
                    redaction=redaction,
                    config_bytes=_config_bytes(config_path(config_dir, env)),
                )
                try:
                    code = _run_guarded(
                        lambda: run_loop(
                            settings,
                            RunOptions(max_iterations or config.loop.max_iterations, resume),
                            store,
                            _console,
                        )
                    )
                except KeyboardInterrupt:
                    code = _interrupted_late(store, env)
    except EnvLocked as exc:
        _fail(str(exc))
    finally:
        store.close()
    raise typer.Exit(code)


def _check_sources(config: Config) -> None:
    """A service's `source` folder must be there: it is part of the code an iteration tests."""
    missing = [
        f"deploy.services: {s.name}: source {p!r} is not a folder"
        for s in config.deploy.services for p in s.source if not Path(p).is_dir()
    ]
    if missing:
        _fail("\n".join(missing))


def _interrupted_late(store: Store, env: str) -> int:
    """Ctrl-C where the loop could not catch it (a second one while services stop, or while
    the reports are written): the iteration is `interrupted`, never left `running`."""
    import sqlite3

    from deployloop.models import IterationStatus
    from deployloop.stages.decide import EXIT_INTERRUPTED

    try:
        store.mark_crashed(env, "interrupted while stopping", IterationStatus.INTERRUPTED)
    except sqlite3.Error:
        pass  # the next command marks it crashed
    typer.echo(
        f"interrupted: results so far are kept; `loop run --env {env} --resume` goes on",
        err=True,
    )
    return EXIT_INTERRUPTED


def _run_guarded(run: Callable[[], int]) -> int:
    """The loop's exit code; a failure of loop itself (the state database, the disk, a bug)
    is one line and exit 4, with the traceback when LOOP_DEBUG is set."""
    try:
        return run()
    except Exception as exc:
        if os.environ.get("LOOP_DEBUG"):
            raise
        # Imported only now: the iteration's modules load while its workers start.
        from deployloop.iteration import IterationError
        from deployloop.safetext import one_line

        if isinstance(exc, IterationError):
            state = (
                "the iteration is marked 'error'"
                if exc.marked
                else "the iteration could not be marked 'error' either; the next loop command"
                " marks it 'crashed'"
            )
            cause = str(exc)
        else:
            state = "results so far are kept"
            cause = f"{type(exc).__name__}: {exc}"
        typer.echo(
            f"error: loop could not go on: {one_line(cause)} ({state};"
            " LOOP_DEBUG=1 shows the traceback)",
            err=True,
        )
        return EXIT_INTERNAL


@app.command()
def status(
    env: EnvOption = "local",
    format: Annotated[
        TableFormat, typer.Option("--format", "-f", help="table (for people) or json.")
    ] = TableFormat.table,
    config_dir: ConfigDirOption = Path("configs"),
    state_dir: StateDirOption = Path(".loop"),
) -> None:
    """The latest iteration: its progress while it runs, its verdict once done."""
    with _reading(state_dir):
        from deployloop.layout import StateLayout

        if not StateLayout(state_dir).db.exists():
            _no_iterations(env, format, config_dir)
        store = _open_store(state_dir, create=False)
        _settle(store, state_dir, env)
        record = store.iteration(env)
        if record is None:
            _no_iterations(env, format, config_dir)
        summary = _summary(store, record, config_dir, state_dir)
        if format == TableFormat.json:
            from deployloop.report.json_report import summary_to_dict

            typer.echo(json.dumps(summary_to_dict(summary), indent=2))
            return
        from deployloop.report.terminal import render_status

        render_status(summary, _console())


def _no_iterations(env: str, format: TableFormat, config_dir: Path | None = None) -> NoReturn:
    if format == TableFormat.json:
        typer.echo(json.dumps({"env": env, "iteration": None, "status": None}))
    elif config_dir is not None and not config_dir.joinpath(f"{env}.toml").exists():
        typer.echo(
            f"No iterations yet for env {env!r}, and no {config_dir / (env + '.toml')}:"
            f" `loop init --env {env}` writes one from the tests found here."
        )
    else:
        typer.echo(f"No iterations yet for env {env!r}: start one with `loop run --env {env}`.")
    raise typer.Exit(0)


def _summary(
    store: Store,
    record: IterationRecord,
    config_dir: Path,
    state_dir: Path,
    compare: int | None = None,
) -> Summary:
    """The iteration's summary: kept in the store once a finished iteration's is computed
    (analysis.kept says when it still holds), computed from its records otherwise."""
    from datetime import date

    from deployloop.analysis.kept import keep_summary, kept_summary

    today = date.today()
    config_file = config_dir.joinpath(f"{record.env}.toml")
    # --compare M diffs against another iteration than the kept summary's: computed.
    keeps = compare is None
    before: bytes | None = None
    if keeps:
        try:
            before = _config_bytes(config_file)
        except OSError:  # a folder, no permission: load_config says what, nothing is kept
            keeps = False
    if keeps:
        summary = kept_summary(store, record, before, today)
        if summary is not None:
            return summary

    from deployloop.layout import StateLayout
    from deployloop.stages.analyze import load_summary

    config = _optional_config(config_dir, record.env)
    summary = load_summary(
        store, record, config, today, compare_to=compare,
        services_dir=StateLayout(state_dir).services_dir(record.env, record.number),
    )
    # Kept only for the config it was computed with: one that loaded (a config refused now
    # must warn every time), or none at all; and a file edited meanwhile is not that config.
    if keeps and (config is not None or before is None) and _same_bytes(config_file, before):
        keep_summary(store, summary, before, config.known_issues if config else (), today)
    return summary


def _config_bytes(path: Path) -> bytes | None:
    """The config file's bytes, with the values of the environment variables it refers to
    (`{env:NAME}`); None when there is none (reports go on without a config)."""
    from deployloop.env_refs import fingerprint

    try:
        return fingerprint(path.read_bytes(), os.environ)
    except FileNotFoundError:
        return None


def _same_bytes(path: Path, before: bytes | None) -> bool:
    try:
        return _config_bytes(path) == before
    except OSError:
        return False


@app.command()
def summarize(
    env: EnvOption = "local",
    iteration: Annotated[
        int | None,
        typer.Option(
            "--iteration", "-i", metavar="N", help="Iteration number (default: the latest)."
        ),
    ] = None,
    compare: Annotated[
        int | None,
        typer.Option(
            "--compare",
            "-c",
            metavar="M",
            help="Diff against iteration M (default: the one before).",
        ),
    ] = None,
    format: Annotated[
        ReportFormat,
        typer.Option(
            "--format", "-f",
            help="table, markdown (for a ticket), json, or junit (JUnit XML for CI).",
        ),
    ] = ReportFormat.table,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", metavar="FILE", help="Write to FILE instead of stdout."),
    ] = None,
    config_dir: ConfigDirOption = Path("configs"),
    state_dir: StateDirOption = Path(".loop"),
) -> None:
    """One iteration's figures, failure patterns, progress and deployments."""
    with _reading(state_dir):
        store = _open_store(state_dir, create=False)
        _settle(store, state_dir, env)
        record = store.iteration(env, iteration)
        if record is None:
            if iteration is None:
                _fail(f"no iteration is recorded for env {env!r} in {state_dir}/")
            _fail(f"iteration {iteration} is not recorded for env {env!r} in {state_dir}/")
        if compare is not None and store.iteration(env, compare) is None:
            _fail(f"--compare {compare}: no iteration {compare} recorded for env {env!r}")
        summary = _summary(store, record, config_dir, state_dir, compare)
        if format == ReportFormat.table and output is None:
            from deployloop.report.terminal import render_summary

            render_summary(summary, _console())
            return
        if format == ReportFormat.json:
            from deployloop.report.json_report import summary_to_json

            text = summary_to_json(summary)
        elif format == ReportFormat.markdown:
            from deployloop.report.markdown import summary_to_markdown

            text = summary_to_markdown(summary, short=True)  # report.md's; report-full.md beside it
        elif format == ReportFormat.junit:
            from deployloop.report.junit import summary_to_junit

            text = summary_to_junit(summary, store.tests(record.id), store.reruns(record.id))
        else:
            import io

            from rich.console import Console

            from deployloop.report.terminal import render_summary

            console = Console(record=True, width=160, file=io.StringIO())
            render_summary(summary, console)
            text = console.export_text()
        if output is None:
            sys.stdout.write(text)
        else:
            try:
                output.write_text(text, encoding="utf-8")
            except OSError as exc:
                _fail(f"--output {output}: cannot write: {exc.strerror}")
            typer.echo(f"wrote {output}", err=True)


@app.command()
def history(
    env: EnvOption = "local",
    format: Annotated[
        TableFormat, typer.Option("--format", "-f", help="table (for people) or json.")
    ] = TableFormat.table,
    state_dir: StateDirOption = Path(".loop"),
) -> None:
    """Every iteration of an environment with its figures."""
    with _reading(state_dir):
        from deployloop.layout import StateLayout
        from deployloop.models import Figures

        if not StateLayout(state_dir).db.exists():
            _no_iterations(env, format)
        store = _open_store(state_dir, create=False)
        _settle(store, state_dir, env)
        # The figures the store keeps as results arrive: no test row is read.
        kept = store.iteration_figures(env)
        rows = [(r, kept.get(r.id, Figures())) for r in store.iterations(env)]
        if not rows:
            _no_iterations(env, format)
        if format == TableFormat.json:
            from deployloop.report.json_report import history_to_list

            typer.echo(json.dumps(history_to_list(rows), indent=2))
            return
        from deployloop.report.terminal import render_history

        render_history(rows, _console())


@app.command()
def plan(
    env: EnvOption = "local",
    config_dir: ConfigDirOption = Path("configs"),
    state_dir: StateDirOption = Path(".loop"),
) -> None:
    """Validate the config; show what would deploy and run. Changes nothing.

    Exit codes:
    0 the plan is shown;
    2 usage or config error, or the tests cannot be collected;
    3 the deploy could not start (no credentials, an image missing);
    4 loop itself failed (state database, disk).
    """
    with _reading(state_dir):
        from deployloop.config import ConfigError, check_markers, config_path
        from deployloop.deploy import DeployError, jobs_preflight
        from deployloop.layout import StateLayout
        from deployloop.planning import show_plan
        from deployloop.stages.pytest_setup import check_interpreter, resolve_python
        from deployloop.stages.settings import UsageError

        config = _load_config(config_dir, env)
        next_iteration = 1
        durations: dict[str, float] = {}
        if StateLayout(state_dir).db.exists():
            store = _open_store(state_dir, create=False)
            _settle(store, state_dir, env)
            last = store.iteration(env)
            next_iteration = last.number + 1 if last else 1
            if config.tests.executor == "cloudrun-jobs":  # each task's share is shown
                durations = store.test_durations(env, next_iteration)
            store.close()

        def checks() -> None:
            # Beside the collection, before anything is shown: nothing in the plan means much
            # with a bad -m expression or without the tests' interpreter. loop's own has
            # pytest and runs the plugin (as `loop run` assumes too).
            try:
                check_markers(config, str(config_path(config_dir, env)))
            except ConfigError as exc:
                _fail(str(exc))
            if python != sys.executable:
                check_interpreter(python, {**os.environ, **config.tests.env}, Path.cwd())
            _check_sources(config)
            if config.tests.executor == "cloudrun-jobs":
                jobs_preflight(config)

        try:
            python = resolve_python(config, Path.cwd())
            show_plan(env, config, Path.cwd(), _console, next_iteration, checks, durations)
        except UsageError as exc:
            _fail(str(exc))
        except DeployError as exc:  # the deploy could not start: as `loop run` would exit
            _fail(str(exc), EXIT_DEPLOY)


@app.command()
def report(
    env: EnvOption = "local",
    config_dir: ConfigDirOption = Path("configs"),
    state_dir: StateDirOption = Path(".loop"),
) -> None:
    """Write the env's HTML page and print its path.

    .loop/runs/<ENV>/index.html: the pass rate over the iterations, each one's verdict, the
    latest in full, and a diff between any two. One file, nothing fetched: it opens from
    disk. `loop run` writes it after each iteration too."""
    with _reading(state_dir):
        from deployloop.layout import StateLayout
        from deployloop.stages.report import write_index

        if not StateLayout(state_dir).db.exists():
            _fail(f"no iterations yet for env {env!r}: start one with `loop run --env {env}`")
        store = _open_store(state_dir, create=False)
        _settle(store, state_dir, env)
        record = store.iteration(env)
        if record is None:
            _fail(f"no iterations yet for env {env!r}: start one with `loop run --env {env}`")
        summary = _summary(store, record, config_dir, state_dir)
        try:
            path = write_index(StateLayout(state_dir), store, summary)
        except OSError as exc:
            _fail(f"cannot write the report: {exc}")
        store.close()
    typer.echo(str(path))


@app.command()
def forget(
    iteration: Annotated[
        int, typer.Option("--iteration", "-i", min=1, help="The iteration to drop (required).")
    ],
    env: EnvOption = "local",
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Do not ask; needed when not on a terminal.")
    ] = False,
    state_dir: StateDirOption = Path(".loop"),
) -> None:
    """Drop an iteration from history on purpose, with its files.

    Its report, summary and raw pytest output go too. Later figures (flaky, fixed, diff,
    trend) are computed as if it never ran; the numbers of the others do not change. Cannot
    be undone (`loop.db.bak` holds the last backup)."""
    with _reading(state_dir):
        import shutil

        from deployloop.layout import StateLayout
        from deployloop.lock import EnvLock, EnvLocked

        layout = StateLayout(state_dir)
        if not layout.db.exists():
            _fail(f"no state in {state_dir}: nothing to forget")
        store = _open_store(state_dir, create=False)
        try:
            with EnvLock(state_dir, env):
                _settle(store, state_dir, env)
                record = store.iteration(env, iteration)
                if record is None:
                    _fail(f"env {env!r} has no iteration {iteration} (`loop history --env"
                          f" {env}` lists them)")
                folder = layout.iteration_dir(env, iteration)
                what = (
                    f"iteration {iteration} of env {env!r} ({record.status.value}, started"
                    f" {record.started_at[:16].replace('T', ' ')})"
                )
                if not yes:
                    if not sys.stdin.isatty():
                        _fail(f"forgetting {what} cannot be undone: add --yes")
                    typer.confirm(f"Forget {what} and delete {folder}?", abort=True)
                store.forget_iteration(record.id)
                shutil.rmtree(folder, ignore_errors=True)
        except EnvLocked as exc:
            _fail(str(exc))
        finally:
            store.close()
    typer.echo(f"forgot {what}; deleted {folder}")


@app.command()
def init(
    env: EnvOption = "local",
    config_dir: ConfigDirOption = Path("configs"),
    force: Annotated[
        bool, typer.Option("--force", help="Replace the env's config if it exists.")
    ] = False,
) -> None:
    """Write a commented configs/<ENV>.toml from the tests found here.

    One suite per test file (or folder, when a folder holds many), priorities from names like
    test_priority1_*, the project's own venv if it has pytest, and no services yet: the tests
    run as they are. Changes nothing else.
    """
    from deployloop.init import InitError, init_project
    from deployloop.safetext import one_line

    try:
        result = init_project(Path.cwd(), env, config_dir, force=force)
    except InitError as exc:
        _fail(str(exc))
    shown = os.path.relpath(result.path) if result.path.is_absolute() else str(result.path)
    count = len(result.suites)
    typer.echo(f"wrote {shown}: {count} suite{'s' if count != 1 else ''}")
    for name in result.suites:
        typer.echo(f"  {one_line(name)}")
    typer.echo(f"tests run with {result.python or sys.executable}")
    for note in result.notes:
        typer.echo(f"note: {one_line(note)}")
    typer.echo(
        f"next: `loop plan --env {env}` shows what would run; `loop run --env {env}` runs it"
    )
