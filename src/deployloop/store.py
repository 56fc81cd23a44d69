"""The SQLite store: every record of every iteration, written as it happens.

All SQL of the project lives here. WAL mode lets `loop status` read while `loop run` writes;
the schema version is `PRAGMA user_version`.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from deployloop.models import (
    OUTCOME_CODES,
    Deployment,
    DeployStatus,
    Figures,
    HistoryRow,
    InventoryItem,
    IterationRecord,
    IterationStatus,
    KeptTest,
    Outcome,
    PastResults,
    SuiteRecord,
    SuiteStatus,
    TestResult,
    TestRow,
)
from deployloop.safetext import printable

SCHEMA_VERSION = 8

_SCHEMA = """
CREATE TABLE iterations (
    id INTEGER PRIMARY KEY,
    env TEXT NOT NULL,
    number INTEGER NOT NULL,
    status TEXT NOT NULL,
    git_sha TEXT,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    target_pass_rate REAL NOT NULL,
    workers INTEGER NOT NULL,
    error TEXT,
    code_key TEXT,
    partial INTEGER NOT NULL DEFAULT 0,
    left_out TEXT,
    UNIQUE (env, number)
);
CREATE TABLE deployments (
    iteration_id INTEGER NOT NULL REFERENCES iterations(id),
    service TEXT NOT NULL,
    status TEXT NOT NULL,
    url TEXT,
    revision TEXT,
    started_at TEXT,
    ready_at TEXT,
    error TEXT,
    image TEXT,
    rolled_back_to TEXT,
    tag TEXT,
    promoted INTEGER NOT NULL DEFAULT 0,
    warning TEXT,
    digest TEXT,
    serving TEXT,
    PRIMARY KEY (iteration_id, service)
);
CREATE TABLE suites (
    iteration_id INTEGER NOT NULL REFERENCES iterations(id),
    position INTEGER NOT NULL,
    name TEXT NOT NULL,
    priority INTEGER NOT NULL,
    selected INTEGER NOT NULL,
    status TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT,
    error TEXT,
    PRIMARY KEY (iteration_id, name)
);
CREATE TABLE tests (
    iteration_id INTEGER NOT NULL REFERENCES iterations(id),
    position INTEGER NOT NULL,
    nodeid TEXT NOT NULL,
    suite TEXT NOT NULL,
    file TEXT NOT NULL,
    outcome TEXT,
    duration_s REAL,
    message TEXT,
    longrepr TEXT,
    finished_at TEXT,
    started_at TEXT,
    PRIMARY KEY (iteration_id, suite, nodeid)
);
CREATE INDEX tests_by_outcome ON tests (iteration_id, outcome);
CREATE TABLE attempts (
    iteration_id INTEGER NOT NULL REFERENCES iterations(id),
    suite TEXT NOT NULL,
    nodeid TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    duration_s REAL,
    message TEXT,
    PRIMARY KEY (iteration_id, suite, nodeid, attempt)
);
CREATE TABLE test_files (
    iteration_id INTEGER NOT NULL REFERENCES iterations(id),
    path TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    PRIMARY KEY (iteration_id, path)
);
"""

# Schema 4: what reports read of the past, kept up to date by triggers as results are written
# (whichever method writes them), so a report reads a few thousand rows, not every result of
# every iteration. outcome_counts: each suite's tests per outcome ('' = no result yet), per
# iteration. test_history: per test of an env, its first attempts' outcomes as one character
# per iteration number (see models.OUTCOME_CODES; ' ' = no result) and the sum and count of
# their durations. Reruns stay in `attempts` alone: few rows, read as they are.
_KEPT_TABLES = """
CREATE TABLE outcome_counts (
    iteration_id INTEGER NOT NULL,
    suite TEXT NOT NULL,
    outcome TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (iteration_id, suite, outcome)
) WITHOUT ROWID;
CREATE TABLE test_history (
    env TEXT NOT NULL,
    suite TEXT NOT NULL,
    nodeid TEXT NOT NULL,
    file TEXT NOT NULL,
    outcomes TEXT NOT NULL DEFAULT '',
    duration_s REAL NOT NULL DEFAULT 0,
    timed INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (env, suite, nodeid)
) WITHOUT ROWID;
"""


def _kept_triggers() -> str:
    code = (
        "CASE {row}.outcome "
        + " ".join(f"WHEN '{outcome}' THEN '{char}'" for outcome, char in OUTCOME_CODES.items())
        + " ELSE ' ' END"
    )
    number = "(SELECT number FROM iterations WHERE id = {row}.iteration_id)"
    env = "(SELECT env FROM iterations WHERE id = {row}.iteration_id)"
    # A duration counts once its test has a result (as store.history reads them).
    timed = "({row}.outcome IS NOT NULL AND {row}.duration_s IS NOT NULL)"

    # No INSERT OR IGNORE in a trigger: the statement that fires it imposes its own conflict
    # policy, so a plain INSERT INTO tests would abort on an existing counts row.
    def count(row: str, delta: str) -> str:
        key = (
            f"iteration_id = {row}.iteration_id AND suite = {row}.suite"
            f" AND outcome = COALESCE({row}.outcome, '')"
        )
        return (
            "INSERT INTO outcome_counts (iteration_id, suite, outcome, count)"
            f" SELECT {row}.iteration_id, {row}.suite, COALESCE({row}.outcome, ''), 0"
            f" WHERE NOT EXISTS (SELECT 1 FROM outcome_counts WHERE {key});"
            f" UPDATE outcome_counts SET count = count {delta} WHERE {key};"
        )

    def history(row: str, char: str, seconds: str, timed_delta: str) -> str:
        n = number.format(row=row)
        e = env.format(row=row)
        key = f"env = {e} AND suite = {row}.suite AND nodeid = {row}.nodeid"
        return (
            "INSERT INTO test_history (env, suite, nodeid, file)"
            f" SELECT {e}, {row}.suite, {row}.nodeid, {row}.file"
            f" WHERE NOT EXISTS (SELECT 1 FROM test_history WHERE {key});"
            " UPDATE test_history SET"
            f" outcomes = substr(outcomes || printf('%*s', {n}, ''), 1, {n} - 1) || {char}"
            f" || substr(outcomes, {n} + 1),"
            f" duration_s = duration_s + {seconds}, timed = timed + {timed_delta}"
            f" WHERE {key};"
        )

    new_s = f"CASE WHEN {timed.format(row='NEW')} THEN NEW.duration_s ELSE 0 END"
    old_s = f"CASE WHEN {timed.format(row='OLD')} THEN OLD.duration_s ELSE 0 END"
    return f"""
CREATE TRIGGER tests_kept_insert AFTER INSERT ON tests BEGIN
    {count("NEW", "+ 1")}
END;
CREATE TRIGGER tests_kept_insert_result AFTER INSERT ON tests WHEN NEW.outcome IS NOT NULL BEGIN
    {history("NEW", code.format(row="NEW"), new_s, timed.format(row="NEW"))}
END;
CREATE TRIGGER tests_kept_delete AFTER DELETE ON tests BEGIN
    {count("OLD", "- 1")}
    DELETE FROM outcome_counts WHERE iteration_id = OLD.iteration_id AND count = 0;
END;
CREATE TRIGGER tests_kept_delete_result AFTER DELETE ON tests WHEN OLD.outcome IS NOT NULL BEGIN
    {history("OLD", "' '", f"- ({old_s})", f"- {timed.format(row='OLD')}")}
END;
CREATE TRIGGER tests_kept_update AFTER UPDATE OF outcome ON tests
WHEN OLD.outcome IS NOT NEW.outcome BEGIN
    {count("OLD", "- 1")}
    {count("NEW", "+ 1")}
    DELETE FROM outcome_counts WHERE iteration_id = OLD.iteration_id AND count = 0;
END;
CREATE TRIGGER tests_kept_update_result AFTER UPDATE OF outcome, duration_s ON tests
WHEN OLD.outcome IS NOT NULL OR NEW.outcome IS NOT NULL BEGIN
    {history("NEW", code.format(row="NEW"), f"({new_s}) - ({old_s})",
             f"{timed.format(row='NEW')} - {timed.format(row='OLD')}")}
END;
"""


# Schema 5: each finished iteration's Summary as analysis.kept writes it, so `loop status` and
# `loop summarize` read one row instead of analyzing the iteration again. `key` is what it was
# computed from (see analysis.kept.summary_key); first_day/last_day (ISO dates, NULL: no bound)
# the days its known-issue `expired` flags hold for. One per iteration: the last one computed.
# No foreign key: dropping an iteration drops its summary by the trigger, whatever code drops
# it (`loop forget`), and a summary never stands in the way of that. IF NOT EXISTS: a database
# made by hand as an older schema (a test's) may hold them already.
_SUMMARIES = """
CREATE TABLE IF NOT EXISTS summaries (
    iteration_id INTEGER PRIMARY KEY,
    key TEXT NOT NULL,
    first_day TEXT,
    last_day TEXT,
    summary BLOB NOT NULL
);
CREATE TRIGGER IF NOT EXISTS iterations_drop_summary BEFORE DELETE ON iterations BEGIN
    DELETE FROM summaries WHERE iteration_id = OLD.id;
END;
"""

_TABLES = frozenset(
    {"iterations", "deployments", "suites", "tests", "attempts", "test_files", "outcome_counts",
     "test_history", "summaries"}
)

# How long a read command waits to keep a summary while `loop run` writes: keeping it is only
# a saving, and the next reader computes it again.
_KEEP_TIMEOUT_MS = 200

# What the store keeps of a failure: the one-line message and the full text, capped. A test
# may print hundreds of megabytes; the whole of it stays in the raw pytest files.
MAX_MESSAGE = 4_000
MAX_LONGREPR = 20_000

# How often a write checks that the database file is still where it was opened.
_CHECK_PATH_EVERY_S = 1.0


class StoreError(Exception):
    """The state database cannot be used (damaged, truncated, newer schema, not a database)."""


def backup_path(path: Path) -> Path:
    """Where the last good copy of the database is kept (written after each iteration)."""
    return path.with_name(path.name + ".bak")


def restore_hint(path: Path) -> str:
    """How to get going again with a database that cannot be read."""
    backup = backup_path(path)
    d = path.parent
    if backup.exists():
        return (
            f"restore the last good copy: mv {path} {path}.damaged && rm -f {path}-wal"
            f" {path}-shm && cp {backup} {path}"
        )
    return f"move {d} away to start a new history (no backup {backup} exists)"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class Store:
    def __init__(
        self,
        conn: sqlite3.Connection,
        path: Path | None = None,
        redact: Callable[[str], str] | None = None,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self._conn = conn
        self._path = path
        self._redact = redact or (lambda text: text)
        self._warn = warn or (lambda message: None)
        self._identity = _identity(path) if path is not None else None
        self._checked_at = time.monotonic()

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        create: bool = True,
        verify: bool = False,
        redact: Callable[[str], str] | None = None,
        warn: Callable[[str], None] | None = None,
    ) -> Store:
        """Open (or create) the database. `verify` runs SQLite's integrity check first: a run
        must never write into a store it cannot trust. `redact` is applied to every text the
        store keeps; `warn` hears of trouble the store works around (its file deleted)."""
        if not create and not path.exists():
            raise StoreError(f"{path}: no state yet (run `loop run` first)")
        try:
            existed = _prepare(path)
        except OSError as exc:
            raise StoreError(f"{path}: cannot open the state database: {exc}") from None
        if existed and _truncated(path):
            raise StoreError(
                f"{path}: the state database is empty (truncated?); {restore_hint(path)}"
            )
        try:
            conn = _connect(path)
        except sqlite3.DatabaseError as exc:  # "file is not a database": a damaged header
            raise StoreError(
                f"{path}: the state database is damaged ({exc}); {restore_hint(path)}"
            ) from None
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"{path}: cannot open the state database: {exc}") from None
        try:
            _migrate(conn, path)
            _check_schema(conn, path, full=verify)
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise StoreError(
                f"{path}: the state database is damaged ({exc}); {restore_hint(path)}"
            ) from None
        except StoreError:
            conn.close()
            raise
        return cls(conn, path, redact, warn)

    def close(self) -> None:
        self._check_path(force=True)  # a state dir deleted after the last write
        self._conn.close()

    def backup(self) -> Path | None:
        """Copy the database to `loop.db.bak` when it passes SQLite's quick check, so a
        damaged store can be restored to the end of the last iteration. None if not copied."""
        if self._path is None:
            return None
        (result,) = self._conn.execute("PRAGMA quick_check(1)").fetchone()
        if result != "ok":
            self._warn(f"{self._path}: not backed up, SQLite's check says: {result}")
            return None
        target = backup_path(self._path)
        tmp = target.with_name(target.name + ".tmp")
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        os.close(fd)
        dest = sqlite3.connect(tmp)
        try:
            self._conn.backup(dest)
            # A standalone file: no -wal beside it that a copy could lose.
            dest.execute("PRAGMA journal_mode=DELETE")
        finally:
            dest.close()
        tmp.replace(target)
        return target

    def _check_path(self, force: bool = False) -> None:
        """Writes go to the file loop opened; if the state dir was deleted meanwhile, they
        would vanish with it. Put the database back where it belongs, from the open one."""
        if self._path is None:
            return
        if not force and time.monotonic() - self._checked_at < _CHECK_PATH_EVERY_S:
            return
        self._checked_at = time.monotonic()
        if _identity(self._path) == self._identity:
            return
        _prepare(self._path)
        fresh = _connect(self._path)
        self._conn.backup(fresh)
        self._conn.close()
        self._conn = fresh
        self._identity = _identity(self._path)
        self._warn(
            f"{self._path} was deleted or replaced while loop ran: it is written back from"
            " the open database (nothing recorded is lost; raw files of running processes are)"
        )

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self._check_path()
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    # --- iterations -------------------------------------------------------------------------

    def start_iteration(
        self,
        env: str,
        git_sha: str | None,
        target_pass_rate: float,
        workers: int,
        code_key: str | None = None,
        partial: bool = False,
    ) -> IterationRecord:
        with self._tx() as tx:
            (last,) = tx.execute(
                "SELECT COALESCE(MAX(number), 0) FROM iterations WHERE env = ?", (env,)
            ).fetchone()
            cur = tx.execute(
                "INSERT INTO iterations (env, number, status, git_sha, started_at,"
                " target_pass_rate, workers, code_key, partial)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (env, last + 1, IterationStatus.RUNNING, git_sha, now_iso(), target_pass_rate,
                 workers, code_key, int(partial)),
            )
            iteration_id = cur.lastrowid
        assert iteration_id is not None
        record = self.iteration_by_id(iteration_id)
        assert record is not None
        return record

    def reopen_iteration(self, iteration_id: int) -> None:
        """Mark an interrupted iteration running again (`loop run --resume`)."""
        with self._tx() as tx:
            tx.execute(
                "UPDATE iterations SET status = ?, finished_at = NULL, error = NULL WHERE id = ?",
                (IterationStatus.RUNNING, iteration_id),
            )
            # Tests started by the stopped run are no longer running.
            tx.execute(
                "UPDATE tests SET started_at = NULL WHERE iteration_id = ? AND outcome IS NULL",
                (iteration_id,),
            )

    def set_code_key(self, iteration_id: int, code_key: str | None) -> None:
        self._write(
            "UPDATE iterations SET code_key = ? WHERE id = ?", (code_key, iteration_id)
        )

    def finish_iteration(
        self,
        iteration_id: int,
        status: IterationStatus,
        error: str | None = None,
        left_out: str | None = None,
    ) -> None:
        self._check_path(force=True)
        self._write(
            "UPDATE iterations SET status = ?, finished_at = ?, error = ?, left_out = ?"
            " WHERE id = ?",
            (status, now_iso(), self._keep(error, MAX_MESSAGE),
             self._keep(left_out, MAX_MESSAGE), iteration_id),
        )

    def forget_iteration(self, iteration_id: int) -> None:
        """Drop an iteration and everything recorded with it. The triggers take its results
        out of the kept counts and histories, and drop its kept summary; the summaries of
        later iterations are keyed on the iterations before them, so they are computed again."""
        with self._tx() as tx:
            for table in ("attempts", "test_files", "deployments", "suites", "tests"):
                tx.execute(f"DELETE FROM {table} WHERE iteration_id = ?", (iteration_id,))
            tx.execute("DELETE FROM outcome_counts WHERE iteration_id = ?", (iteration_id,))
            tx.execute("DELETE FROM iterations WHERE id = ?", (iteration_id,))
            tx.execute("DELETE FROM test_history WHERE trim(outcomes) = '' AND timed = 0")

    def leave_out(self, iteration_id: int, reason: str) -> None:
        """The iteration is no result for the ones after it (see IterationRecord.left_out)."""
        self._write(
            "UPDATE iterations SET left_out = ? WHERE id = ?",
            (self._keep(reason, MAX_MESSAGE), iteration_id),
        )

    def mark_crashed(
        self, env: str, reason: str, status: IterationStatus = IterationStatus.CRASHED
    ) -> list[int]:
        """Mark env's iterations still `running` as `crashed` (or `status`); call only when
        no `loop run` holds the env, or from the run that stops. What they recorded stays;
        their suites still running become interrupted. Returns the iteration numbers marked."""
        if not self.has_running(env):
            return []  # the usual case: no write, so a read-only store reads on
        with self._tx() as tx:
            rows = tx.execute(
                "SELECT id, number FROM iterations WHERE env = ? AND status = ?",
                (env, IterationStatus.RUNNING),
            ).fetchall()
            for iteration_id, _ in rows:
                (last,) = tx.execute(
                    "SELECT MAX(finished_at) FROM tests WHERE iteration_id = ?", (iteration_id,)
                ).fetchone()
                tx.execute(
                    "UPDATE iterations SET status = ?, error = ?,"
                    " finished_at = COALESCE(?, started_at) WHERE id = ?",
                    (status, reason, last, iteration_id),
                )
                tx.execute(
                    "UPDATE suites SET status = ? WHERE iteration_id = ? AND status = ?",
                    (SuiteStatus.INTERRUPTED, iteration_id, SuiteStatus.RUNNING),
                )
        return [number for _, number in rows]

    def has_running(self, env: str) -> bool:
        """Whether an iteration of env is still marked `running`."""
        return (
            self._conn.execute(
                "SELECT 1 FROM iterations WHERE env = ? AND status = ? LIMIT 1",
                (env, IterationStatus.RUNNING),
            ).fetchone()
            is not None
        )

    def iteration_by_id(self, iteration_id: int) -> IterationRecord | None:
        row = self._conn.execute(
            f"SELECT {_ITERATION_COLUMNS} FROM iterations WHERE id = ?", (iteration_id,)
        ).fetchone()
        return _iteration(row) if row else None

    def iteration(self, env: str, number: int | None = None) -> IterationRecord | None:
        """Iteration `number` of `env`, or its latest when number is None."""
        if number is None:
            row = self._conn.execute(
                f"SELECT {_ITERATION_COLUMNS} FROM iterations WHERE env = ?"
                " ORDER BY number DESC LIMIT 1",
                (env,),
            ).fetchone()
        else:
            row = self._conn.execute(
                f"SELECT {_ITERATION_COLUMNS} FROM iterations WHERE env = ? AND number = ?",
                (env, number),
            ).fetchone()
        return _iteration(row) if row else None

    def iterations(self, env: str) -> list[IterationRecord]:
        rows = self._conn.execute(
            f"SELECT {_ITERATION_COLUMNS} FROM iterations WHERE env = ? ORDER BY number",
            (env,),
        ).fetchall()
        return [_iteration(r) for r in rows]

    # --- deployments ------------------------------------------------------------------------

    def record_deployments(self, iteration_id: int, deployments: Iterable[Deployment]) -> None:
        with self._tx() as tx:
            tx.executemany(
                "INSERT OR REPLACE INTO deployments (iteration_id, service, status, url, revision,"
                " started_at, ready_at, error, image, rolled_back_to, tag, promoted, warning,"
                " digest, serving) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (iteration_id, d.service, d.status, d.url, d.revision, d.started_at,
                     d.ready_at, self._keep(d.error, MAX_MESSAGE), d.image, d.rolled_back_to,
                     d.tag, int(d.promoted), self._keep(d.warning, MAX_MESSAGE), d.digest,
                     d.serving)
                    for d in deployments
                ],
            )

    def record_crash(self, iteration_id: int, service: str, error: str) -> None:
        """A service that was ready stopped while the tests ran."""
        self._write(
            "UPDATE deployments SET status = ?, error = ? WHERE iteration_id = ? AND service = ?",
            (DeployStatus.CRASHED, self._keep(error, MAX_MESSAGE), iteration_id, service),
        )

    def record_promotion(self, iteration_id: int, services: Iterable[str]) -> None:
        """The traffic of `services` moved to this iteration's revisions."""
        with self._tx() as tx:
            tx.executemany(
                "UPDATE deployments SET promoted = 1, serving = revision"
                " WHERE iteration_id = ? AND service = ?",
                [(iteration_id, service) for service in services],
            )

    def record_rollback(self, iteration_id: int, service: str, to_revision: str) -> None:
        self._write(
            "UPDATE deployments SET rolled_back_to = ?, serving = ?"
            " WHERE iteration_id = ? AND service = ?",
            (to_revision, to_revision, iteration_id, service),
        )

    def last_good_revisions(self, env: str, before_number: int) -> dict[str, str]:
        """Per service, the revision of the latest iteration before `before_number` that
        reached its target: where a rollback sends traffic."""
        rows = self._conn.execute(
            "SELECT d.service, d.revision FROM deployments d JOIN iterations i"
            " ON i.id = d.iteration_id WHERE i.env = ? AND i.number < ? AND i.status = ?"
            " AND d.status = 'ready' AND d.revision IS NOT NULL ORDER BY i.number",
            (env, before_number, IterationStatus.PASSED),
        ).fetchall()
        return {service: revision for service, revision in rows}

    def deployments(self, iteration_id: int) -> list[Deployment]:
        rows = self._conn.execute(
            "SELECT service, status, url, revision, started_at, ready_at, error, image,"
            " rolled_back_to, tag, promoted, warning, digest, serving FROM deployments"
            " WHERE iteration_id = ?"
            " ORDER BY rowid",
            (iteration_id,),
        ).fetchall()
        return [
            Deployment(
                r[0], DeployStatus(r[1]), r[2], r[3], r[4], r[5], r[6], r[7], r[8], tag=r[9],
                promoted=bool(r[10]), warning=r[11], digest=r[12], serving=r[13],
            )
            for r in rows
        ]

    # --- suites and inventory ---------------------------------------------------------------

    def record_plan(
        self, iteration_id: int, suites: Sequence[SuiteRecord], inventory: Sequence[InventoryItem]
    ) -> None:
        """The suites of this iteration and every collected test, pending until it reports.

        Collection errors of the selected suites are stored as error results right away:
        never dropped. Those of suites not run this iteration wait with the rest of their
        suite (the message is kept), so they count only when the suite runs.
        """
        selected = {s.name for s in suites if s.selected}
        with self._tx() as tx:
            tx.execute("DELETE FROM tests WHERE iteration_id = ?", (iteration_id,))
            tx.execute("DELETE FROM suites WHERE iteration_id = ?", (iteration_id,))
            tx.executemany(
                "INSERT INTO suites (iteration_id, position, name, priority, selected, status,"
                " error) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (iteration_id, i, s.name, s.priority, int(s.selected), s.status, s.error)
                    for i, s in enumerate(suites)
                ],
            )
            self._insert_tests(tx, iteration_id, inventory, selected, first_position=0)

    def replace_inventory(
        self, iteration_id: int, suites: set[str], inventory: Sequence[InventoryItem]
    ) -> None:
        """Collect `suites` anew (e.g. once the services are up): their rows are replaced."""
        with self._tx() as tx:
            for suite in suites:
                tx.execute(
                    "DELETE FROM tests WHERE iteration_id = ? AND suite = ?", (iteration_id, suite)
                )
            (first,) = tx.execute(
                "SELECT COALESCE(MAX(position), -1) + 1 FROM tests WHERE iteration_id = ?",
                (iteration_id,),
            ).fetchone()
            self._insert_tests(tx, iteration_id, inventory, suites, first_position=first)

    def set_suite_status(
        self,
        iteration_id: int,
        suite: str,
        status: SuiteStatus,
        *,
        error: str | None = None,
        started: bool = False,
        finished: bool = False,
    ) -> None:
        sets = ["status = ?"]
        args: list[object] = [status]
        if error is not None:
            sets.append("error = ?")
            args.append(self._keep(error, MAX_MESSAGE))
        if started:
            sets.append("started_at = COALESCE(started_at, ?)")
            args.append(now_iso())
        if finished:
            sets.append("finished_at = ?")
            args.append(now_iso())
        self._write(
            f"UPDATE suites SET {', '.join(sets)} WHERE iteration_id = ? AND name = ?",
            (*args, iteration_id, suite),
        )

    def suites(self, iteration_id: int) -> list[SuiteRecord]:
        rows = self._conn.execute(
            "SELECT name, priority, selected, status, started_at, finished_at, error FROM suites"
            " WHERE iteration_id = ? ORDER BY position",
            (iteration_id,),
        ).fetchall()
        return [
            SuiteRecord(r[0], r[1], bool(r[2]), SuiteStatus(r[3]), r[4], r[5], r[6]) for r in rows
        ]

    # --- results ----------------------------------------------------------------------------

    def record_results(self, iteration_id: int, results: Iterable[TestResult]) -> None:
        """Store results; a node id that was not in the inventory is added to its suite."""
        rows = [
            (r.outcome, r.duration_s, self._keep(r.message, MAX_MESSAGE),
             self._keep(r.longrepr, MAX_LONGREPR), r.finished_at or now_iso(), iteration_id,
             r.suite, _key(r.nodeid), _key(_file_of(r.nodeid)))
            for r in results
        ]
        if not rows:
            return
        with self._tx() as tx:
            (next_pos,) = tx.execute(
                "SELECT COALESCE(MAX(position), -1) + 1 FROM tests WHERE iteration_id = ?",
                (iteration_id,),
            ).fetchone()
            for i, row in enumerate(rows):
                cur = tx.execute(
                    "UPDATE tests SET outcome = ?, duration_s = ?, message = ?, longrepr = ?,"
                    " finished_at = ? WHERE iteration_id = ? AND suite = ? AND nodeid = ?",
                    row[:-1],
                )
                if cur.rowcount == 0:
                    tx.execute(
                        "INSERT INTO tests (outcome, duration_s, message, longrepr, finished_at,"
                        " iteration_id, suite, nodeid, file, position)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (*row, next_pos + i),
                    )

    def record_started(self, iteration_id: int, started: Iterable[tuple[str, str, str]]) -> None:
        """(suite, node id, time) of tests pytest has started."""
        rows = [(at, iteration_id, suite, _key(nodeid)) for suite, nodeid, at in started]
        if not rows:
            return
        with self._tx() as tx:
            tx.executemany(
                "UPDATE tests SET started_at = ? WHERE iteration_id = ? AND suite = ?"
                " AND nodeid = ?",
                rows,
            )

    def record_attempt(self, iteration_id: int, attempt: int, result: TestResult) -> None:
        """A rerun's result: kept beside the first one, which stays the test's outcome."""
        self._write(
            "INSERT OR REPLACE INTO attempts (iteration_id, suite, nodeid, attempt, outcome,"
            " duration_s, message) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (iteration_id, result.suite, _key(result.nodeid), attempt, result.outcome,
             result.duration_s, self._keep(result.message, MAX_MESSAGE)),
        )

    def reruns(self, iteration_id: int) -> list[HistoryRow]:
        """Every attempt after the first of an iteration's tests (their first attempt is the
        test's row), in node id and attempt order."""
        return self._history_rows(
            "SELECT i.number, a.nodeid, a.suite, a.outcome, a.attempt, a.message, a.duration_s,"
            " i.code_key, NULL FROM attempts a JOIN iterations i ON i.id = a.iteration_id"
            " WHERE a.iteration_id = ? ORDER BY 2, 5",
            (iteration_id,),
        )

    def record_test_files(self, iteration_id: int, hashes: dict[str, str]) -> None:
        with self._tx() as tx:
            tx.execute("DELETE FROM test_files WHERE iteration_id = ?", (iteration_id,))
            tx.executemany(
                "INSERT INTO test_files (iteration_id, path, sha256) VALUES (?, ?, ?)",
                [(iteration_id, _key(path), digest) for path, digest in sorted(hashes.items())],
            )

    def history(self, env: str, up_to: int) -> list[HistoryRow]:
        """Every recorded result of env's iterations 1..up_to, reruns included, oldest first."""
        rows = self._conn.execute(
            "SELECT i.number, t.nodeid, t.suite, t.outcome, 1, t.message, t.duration_s,"
            " i.code_key, f.sha256 FROM tests t JOIN iterations i ON i.id = t.iteration_id"
            " LEFT JOIN test_files f ON f.iteration_id = t.iteration_id AND f.path = t.file"
            " WHERE i.env = ? AND i.number <= ? AND t.outcome IS NOT NULL AND i.left_out IS NULL"
            " UNION ALL"
            " SELECT i.number, a.nodeid, a.suite, a.outcome, a.attempt, a.message, a.duration_s,"
            " i.code_key, f.sha256 FROM attempts a JOIN iterations i ON i.id = a.iteration_id"
            " LEFT JOIN test_files f ON f.iteration_id = a.iteration_id"
            " AND f.path = substr(a.nodeid, 1, instr(a.nodeid || '::', '::') - 1)"
            " WHERE i.env = ? AND i.number <= ? AND i.left_out IS NULL"
            " ORDER BY 1, 2, 5",
            (env, up_to, env, up_to),
        ).fetchall()
        return [
            HistoryRow(r[0], _unkey(r[1]), r[2], Outcome(r[3]), r[4], r[5], r[6], r[7], r[8])
            for r in rows
        ]

    def past_results(self, env: str, up_to: int) -> PastResults:
        """env's results of iterations 1..up_to from the kept tables: what store.history holds,
        in a form whose size grows with the tests, not with tests x iterations."""
        iterations = self._conn.execute(
            "SELECT number, code_key, left_out FROM iterations WHERE env = ? AND number <= ?",
            (env, up_to),
        ).fetchall()
        # An iteration left out (a setup failure, an outage) is no result: its outcomes are
        # blanked where the kept strings hold them, and left out of every other part.
        blank = sorted(int(n) for n, _, left_out in iterations if left_out is not None)
        tests = tuple(
            KeptTest(r[0], _unkey(r[1]), _unkey(r[2]), kept)
            for r in self._conn.execute(
                "SELECT suite, nodeid, file, substr(outcomes, 1, ?) AS kept FROM test_history"
                " WHERE env = ? AND trim(kept) != ''",
                (up_to, env),
            )
            if (kept := _blanked(r[3], blank)).strip()
        )
        reruns = self._history_rows(
            "SELECT i.number, a.nodeid, a.suite, a.outcome, a.attempt, a.message, a.duration_s,"
            " i.code_key, f.sha256 FROM attempts a JOIN iterations i ON i.id = a.iteration_id"
            " LEFT JOIN test_files f ON f.iteration_id = a.iteration_id"
            " AND f.path = substr(a.nodeid, 1, instr(a.nodeid || '::', '::') - 1)"
            " WHERE i.env = ? AND i.number <= ? AND i.left_out IS NULL ORDER BY 1, 2, 5",
            (env, up_to),
        )
        failures = self._history_rows(
            "SELECT i.number, t.nodeid, t.suite, t.outcome, 1, t.message, t.duration_s,"
            " i.code_key, NULL FROM iterations i JOIN tests t ON t.iteration_id = i.id"
            " WHERE i.env = ? AND i.number <= ? AND t.outcome IN (?, ?) AND i.left_out IS NULL",
            (env, up_to, Outcome.FAILED, Outcome.ERROR),
        )
        hashes = {
            (int(r[0]), _unkey(r[1])): str(r[2])
            for r in self._conn.execute(
                "SELECT i.number, f.path, f.sha256 FROM test_files f"
                " JOIN iterations i ON i.id = f.iteration_id WHERE i.env = ? AND i.number <= ?"
                " AND i.left_out IS NULL",
                (env, up_to),
            )
        }
        counts: dict[int, tuple[int, int]] = {}
        for number, passed, executed in self._conn.execute(
            "SELECT i.number, SUM(CASE WHEN c.outcome = ? THEN c.count ELSE 0 END),"
            " SUM(CASE WHEN c.outcome IN (?, ?, ?) THEN c.count ELSE 0 END)"
            " FROM outcome_counts c JOIN iterations i ON i.id = c.iteration_id"
            " WHERE i.env = ? AND i.number <= ? AND c.outcome != '' AND c.count > 0"
            " AND i.left_out IS NULL GROUP BY i.number",
            (Outcome.PASSED, Outcome.PASSED, Outcome.FAILED, Outcome.ERROR, env, up_to),
        ):
            counts[int(number)] = (int(passed), int(executed))
        return PastResults(
            tests=tests,
            reruns=tuple(reruns),
            failures=tuple(failures),
            code_keys={int(n): k for n, k, left_out in iterations if left_out is None},
            file_hashes=hashes,
            durations=self._durations(env, up_to, reruns),
            counts=counts,
        )

    def _durations(
        self, env: str, up_to: int, reruns: Sequence[HistoryRow]
    ) -> dict[str, tuple[float, int]]:
        """Per node id, the sum and count of recorded durations, every attempt of 1..up_to."""
        (later,) = self._conn.execute(
            "SELECT COUNT(*) FROM iterations WHERE env = ? AND number > ?", (env, up_to)
        ).fetchone()
        if later:
            # An older iteration: the kept sums hold later ones too, so add up its own rows
            # (only reports of an earlier iteration with tests pending get here).
            rows = self._conn.execute(
                "SELECT t.nodeid, SUM(t.duration_s), COUNT(t.duration_s) FROM tests t"
                " JOIN iterations i ON i.id = t.iteration_id"
                " WHERE i.env = ? AND i.number <= ? AND t.outcome IS NOT NULL GROUP BY t.nodeid",
                (env, up_to),
            )
        else:
            rows = self._conn.execute(
                "SELECT nodeid, SUM(duration_s), SUM(timed) FROM test_history WHERE env = ?"
                " GROUP BY nodeid",
                (env,),
            )
        durations: dict[str, tuple[float, int]] = {
            _unkey(nodeid): (float(total or 0.0), int(count)) for nodeid, total, count in rows
        }
        for rerun in reruns:
            if rerun.duration_s is not None:
                total, count = durations.get(rerun.nodeid, (0.0, 0))
                durations[rerun.nodeid] = (total + rerun.duration_s, count + 1)
        return {nodeid: entry for nodeid, entry in durations.items() if entry[1]}

    def _history_rows(self, sql: str, args: Sequence[object]) -> list[HistoryRow]:
        return [
            HistoryRow(r[0], _unkey(r[1]), r[2], Outcome(r[3]), r[4], r[5], r[6], r[7], r[8])
            for r in self._conn.execute(sql, args)
        ]

    def figures(self, iteration_id: int) -> dict[str, Figures]:
        """Each suite's figures of an iteration, from the kept counts (no test row read)."""
        counts: dict[str, dict[str, int]] = {}
        for suite, outcome, count in self._conn.execute(
            "SELECT suite, outcome, count FROM outcome_counts WHERE iteration_id = ?",
            (iteration_id,),
        ):
            counts.setdefault(suite, {})[outcome] = int(count)
        return {suite: _figures(by_outcome) for suite, by_outcome in counts.items()}

    def iteration_figures(self, env: str) -> dict[int, Figures]:
        """Every iteration of env (by id) with its totals, from the kept counts: `loop
        history` reads these, not the test rows. An iteration with no test is left out."""
        counts: dict[int, dict[str, int]] = {}
        for iteration_id, outcome, count in self._conn.execute(
            "SELECT c.iteration_id, c.outcome, SUM(c.count) FROM outcome_counts c"
            " JOIN iterations i ON i.id = c.iteration_id WHERE i.env = ?"
            " GROUP BY c.iteration_id, c.outcome",
            (env,),
        ):
            counts.setdefault(int(iteration_id), {})[outcome] = int(count)
        return {iteration_id: _figures(by_outcome) for iteration_id, by_outcome in counts.items()}

    def test_durations(self, env: str, before_number: int, window: int = 5) -> dict[str, float]:
        """Each test's mean duration over env's last `window` iterations before
        `before_number`, from the runs that ran it (loop's own errors, which took no time,
        are left out): what the scheduler expects each test to take."""
        rows = self._conn.execute(
            "SELECT t.nodeid, AVG(t.duration_s) FROM tests t"
            " JOIN iterations i ON i.id = t.iteration_id"
            " WHERE i.env = ? AND i.number < ? AND i.number >= ?"
            " AND t.outcome IS NOT NULL AND t.duration_s > 0"
            " GROUP BY t.nodeid",
            (env, before_number, before_number - window),
        ).fetchall()
        return {_unkey(r[0]): float(r[1]) for r in rows}

    def last_outcomes(
        self, env: str, before_number: int
    ) -> tuple[int, dict[str, Outcome | None]] | None:
        """The newest earlier iteration of env whose tests ran (not a setup failure: its
        deploy did not fail and pytest executed a test), and each test's latest outcome
        (None: not run). A partial iteration (--failed-only) ran some tests only: the others'
        outcomes come from the iterations before it, back to a full one."""
        rows = self._conn.execute(
            "SELECT i.id, i.number, i.partial FROM iterations i WHERE i.env = ?"
            " AND i.number < ? AND i.status != ? AND i.left_out IS NULL"
            " AND EXISTS (SELECT 1 FROM tests t"
            " WHERE t.iteration_id = i.id AND t.outcome IN (?, ?, ?))"
            " ORDER BY i.number DESC",
            (env, before_number, IterationStatus.DEPLOY_FAILED,
             Outcome.PASSED, Outcome.FAILED, Outcome.ERROR),
        )
        newest: int | None = None
        outcomes: dict[str, Outcome | None] = {}
        for iteration_id, number, partial in rows.fetchall():
            newest = int(number) if newest is None else newest
            for nodeid, outcome in self._conn.execute(
                "SELECT nodeid, outcome FROM tests WHERE iteration_id = ?", (iteration_id,)
            ):
                key = _unkey(nodeid)
                if outcomes.get(key) is None:
                    outcomes[key] = Outcome(outcome) if outcome else None
            if not partial:
                break
        return None if newest is None else (newest, outcomes)

    # --- kept summaries ---------------------------------------------------------------------

    def summary_inputs(self, env: str, number: int) -> str:
        """What of the store iteration `number`'s summary is computed from, as text to digest:
        the records of env's iterations up to it (a resumed, crashed or forgotten one changes
        them) and their kept counts per suite and outcome (a result written or dropped)."""
        iterations = self._conn.execute(
            f"SELECT {_ITERATION_COLUMNS} FROM iterations WHERE env = ? AND number <= ?"
            " ORDER BY number",
            (env, number),
        ).fetchall()
        counts = self._conn.execute(
            "SELECT c.iteration_id, c.suite, c.outcome, c.count FROM outcome_counts c"
            " JOIN iterations i ON i.id = c.iteration_id WHERE i.env = ? AND i.number <= ?"
            " ORDER BY 1, 2, 3",
            (env, number),
        ).fetchall()
        return repr((iterations, counts))

    def kept_summary(
        self, iteration_id: int
    ) -> tuple[str, str | None, str | None, bytes] | None:
        """(key, first_day, last_day, summary) kept for an iteration, or None."""
        row = self._conn.execute(
            "SELECT key, first_day, last_day, summary FROM summaries WHERE iteration_id = ?",
            (iteration_id,),
        ).fetchone()
        return (str(row[0]), row[1], row[2], bytes(row[3])) if row else None

    def keep_summary(
        self,
        iteration_id: int,
        key: str,
        first_day: str | None,
        last_day: str | None,
        summary: bytes,
    ) -> bool:
        """Keep an iteration's summary in place of the one before; False when the store
        cannot take it now (read-only, or busy beyond a short wait): a saving, not a record."""
        (waited,) = self._conn.execute("PRAGMA busy_timeout").fetchone()
        try:
            self._conn.execute(f"PRAGMA busy_timeout = {_KEEP_TIMEOUT_MS}")
            self._conn.execute(
                "INSERT OR REPLACE INTO summaries (iteration_id, key, first_day, last_day,"
                " summary) SELECT id, ?, ?, ?, ? FROM iterations WHERE id = ?",
                (key, first_day, last_day, summary, iteration_id),
            )
        except sqlite3.OperationalError:  # "database is locked", "readonly database"
            return False
        finally:
            self._conn.execute(f"PRAGMA busy_timeout = {int(waited)}")
        return True

    def tests(self, iteration_id: int) -> list[TestRow]:
        rows = self._conn.execute(
            "SELECT nodeid, suite, file, outcome, duration_s, message, longrepr, started_at"
            " FROM tests WHERE iteration_id = ? ORDER BY position",
            (iteration_id,),
        ).fetchall()
        return [
            TestRow(
                _unkey(r[0]), r[1], _unkey(r[2]), Outcome(r[3]) if r[3] else None, r[4], r[5],
                r[6], r[7],
            )
            for r in rows
        ]


    def _write(self, sql: str, args: Sequence[object]) -> None:
        self._check_path()
        self._conn.execute(sql, args)

    def _keep(self, value: str | None, cap: int) -> str | None:
        """Text as the store keeps it: secrets redacted, unsafe characters escaped, capped."""
        if value is None:
            return None
        if len(value) > 4 * cap:
            value = value[: 4 * cap]  # bounded work below, whatever a test printed
        text = printable(self._redact(value))
        if len(text) > cap:
            text = text[:cap] + f"\n[... cut at {cap} characters]"
        return text

    def _insert_tests(
        self,
        tx: sqlite3.Connection,
        iteration_id: int,
        inventory: Sequence[InventoryItem],
        selected: set[str],
        first_position: int,
    ) -> None:
        rows = []
        for i, item in enumerate(inventory):
            counts = bool(item.collect_error) and item.suite in selected
            rows.append(
                (
                    iteration_id, first_position + i, _key(item.nodeid), item.suite,
                    _key(item.file),
                    Outcome.ERROR if counts else None,
                    0.0 if counts else None,
                    self._keep(item.collect_error, MAX_MESSAGE),
                    self._keep(item.collect_detail or item.collect_error, MAX_LONGREPR),
                    now_iso() if counts else None,
                )
            )
        tx.executemany(
            "INSERT OR IGNORE INTO tests (iteration_id, position, nodeid, suite, file,"
            " outcome, duration_s, message, longrepr, finished_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )



def _figures(counts: dict[str, int]) -> Figures:
    """Figures from counts by outcome ('' = no result yet), as analysis.figures counts rows."""
    passed = counts.get(Outcome.PASSED, 0)
    failed = counts.get(Outcome.FAILED, 0)
    errors = counts.get(Outcome.ERROR, 0)
    return Figures(
        collected=sum(counts.values()),
        executed=passed + failed + errors,
        passed=passed,
        failed=failed,
        errors=errors,
        skipped=counts.get(Outcome.SKIPPED, 0),
        xfailed=counts.get(Outcome.XFAILED, 0),
        xpassed=counts.get(Outcome.XPASSED, 0),
    )


_ITERATION_COLUMNS = (
    "id, env, number, status, git_sha, started_at, finished_at, target_pass_rate, workers, error,"
    " code_key, partial, left_out"
)


def _blanked(outcomes: str, numbers: Sequence[int]) -> str:
    """`outcomes` (one character per iteration number) with those of `numbers` blank."""
    if not numbers:
        return outcomes
    chars = list(outcomes)
    for number in numbers:
        if number <= len(chars):
            chars[number - 1] = " "
    return "".join(chars)


def _iteration(row: Sequence[object]) -> IterationRecord:
    return IterationRecord(
        id=int(row[0]),  # type: ignore[call-overload]
        env=str(row[1]),
        number=int(row[2]),  # type: ignore[call-overload]
        status=IterationStatus(str(row[3])),
        git_sha=row[4] if isinstance(row[4], str) else None,
        started_at=str(row[5]),
        finished_at=row[6] if isinstance(row[6], str) else None,
        target_pass_rate=float(row[7]),  # type: ignore[arg-type]
        workers=int(row[8]),  # type: ignore[call-overload]
        error=row[9] if isinstance(row[9], str) else None,
        code_key=row[10] if isinstance(row[10], str) else None,
        partial=bool(row[11]),
        left_out=row[12] if isinstance(row[12], str) else None,
    )


def _prepare(path: Path) -> bool:
    """Make the state dir 0700 and the database file 0600 before SQLite touches them (its
    -wal and -shm files take the database's mode). Returns whether the database existed."""
    parent = path.parent
    if not parent.exists():
        parent.mkdir(mode=0o700, parents=True)
    elif path.exists():
        _tighten(parent, 0o700)  # an existing state dir of an older loop: 0755
    existed = path.exists()
    if not existed:
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        _tighten(file, 0o600)
    return existed


# A database another loop has just created (0 bytes until its schema is written) is not a
# truncated one: an empty file is, if a backup lies beside it or it is older than this.
_CREATING_S = 10.0


def _truncated(path: Path) -> bool:
    try:
        info = path.stat()
    except OSError:
        return False
    if info.st_size != 0:
        return False
    return backup_path(path).exists() or time.time() - info.st_mtime > _CREATING_S


def _tighten(path: Path, mode: int) -> None:
    try:
        info = path.stat()
        if info.st_uid == os.getuid() and stat.S_IMODE(info.st_mode) & ~mode:
            path.chmod(mode)
    except OSError:
        pass  # not ours, or gone: nothing to tighten


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_dev, info.st_ino


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=10.0, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA foreign_keys=ON")
        # WAL with NORMAL sync survives a killed process; one fsync per result would not
        # keep up with fast suites.
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=10000")
    except BaseException:
        conn.close()
        raise
    return conn


def _check_schema(conn: sqlite3.Connection, path: Path, *, full: bool) -> None:
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    missing = sorted(_TABLES - tables)
    if missing:
        raise StoreError(
            f"{path}: the state database is damaged (table {missing[0]} is missing);"
            f" {restore_hint(path)}"
        )
    if full:
        (result,) = conn.execute("PRAGMA quick_check(1)").fetchone()
        if result != "ok":
            raise StoreError(
                f"{path}: the state database is damaged (SQLite's check: {result});"
                f" {restore_hint(path)}"
            )


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    if version == SCHEMA_VERSION:
        return
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{path}: written by a newer deployloop (schema {version}, this one reads"
            f" {SCHEMA_VERSION}); upgrade deployloop or use another --state-dir"
        )
    # Two `loop` processes may open a new database at once: only one creates the schema.
    conn.execute("BEGIN IMMEDIATE")
    try:
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        if version == 0:
            _execute_script(conn, _SCHEMA)
        if version == 1:  # when each test started, for hangs seen as they happen
            conn.execute("ALTER TABLE tests ADD COLUMN started_at TEXT")
        if 1 <= version <= 2:  # --failed-only: an iteration that ran only some tests
            conn.execute(
                "ALTER TABLE iterations ADD COLUMN partial INTEGER NOT NULL DEFAULT 0"
            )
        if version <= 3:  # figures and per-test history kept as results are written
            _execute_script(conn, _KEPT_TABLES)
            if version > 0:
                _backfill_kept(conn)
            _execute_script(conn, _kept_triggers())
        if version <= 4:  # finished iterations' summaries, kept once computed
            _execute_script(conn, _SUMMARIES)
        if 1 <= version <= 7:  # iterations that are no result for the ones after them
            have = {row[1] for row in conn.execute("PRAGMA table_info(iterations)")}
            if "left_out" not in have:
                conn.execute("ALTER TABLE iterations ADD COLUMN left_out TEXT")
        if 1 <= version <= 6:  # candidate revisions (tag, promoted, serving); warnings
            have = {row[1] for row in conn.execute("PRAGMA table_info(deployments)")}
            for column, kind in (
                ("tag", "TEXT"), ("promoted", "INTEGER NOT NULL DEFAULT 0"), ("warning", "TEXT"),
                ("digest", "TEXT"), ("serving", "TEXT"),
            ):
                if column not in have:
                    conn.execute(f"ALTER TABLE deployments ADD COLUMN {column} {kind}")
        if version < SCHEMA_VERSION:
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _execute_script(conn: sqlite3.Connection, script: str) -> None:
    """Run each statement of `script` inside the open transaction (executescript would commit
    it first); a trigger's body holds semicolons, so statements end where SQLite says."""
    statement = ""
    for line in script.splitlines(keepends=True):
        statement += line
        if sqlite3.complete_statement(statement):
            conn.execute(statement)
            statement = ""
    if statement.strip():
        raise ValueError(f"incomplete SQL statement: {statement[:80]!r}")


def _backfill_kept(conn: sqlite3.Connection) -> None:
    """Fill the kept tables of schema 4 from the rows an older loop recorded (the triggers
    keep them from then on)."""
    conn.execute(
        "INSERT INTO outcome_counts (iteration_id, suite, outcome, count)"
        " SELECT iteration_id, suite, COALESCE(outcome, ''), COUNT(*) FROM tests"
        " GROUP BY 1, 2, 3"
    )
    Key = tuple[str, str, str | bytes]
    files: dict[Key, str | bytes] = {}
    codes: dict[Key, list[str]] = {}
    seconds: dict[Key, float] = {}
    timed: dict[Key, int] = {}
    rows = conn.execute(
        "SELECT i.env, t.suite, t.nodeid, t.file, i.number, t.outcome, t.duration_s"
        " FROM tests t JOIN iterations i ON i.id = t.iteration_id"
        " WHERE t.outcome IS NOT NULL ORDER BY i.number"
    )
    for env, suite, nodeid, file, number, outcome, duration in rows:
        key = (env, suite, nodeid)
        files[key] = file
        chars = codes.setdefault(key, [])
        chars.extend(" " * (number - 1 - len(chars)))
        chars.append(OUTCOME_CODES[Outcome(outcome)])
        if duration is not None:
            seconds[key] = seconds.get(key, 0.0) + duration
            timed[key] = timed.get(key, 0) + 1
    conn.executemany(
        "INSERT INTO test_history (env, suite, nodeid, file, outcomes, duration_s, timed)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            (*key, files[key], "".join(chars), seconds.get(key, 0.0), timed.get(key, 0))
            for key, chars in codes.items()
        ],
    )


def _key(value: str) -> str | bytes:
    """A node id or path as the store keeps it. A file name that is not UTF-8 reaches loop as
    text with lone surrogates, which SQLite cannot store as text: it is kept as the original
    bytes (a BLOB), so the id still names the file when pytest is given it again."""
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogateescape")


def _unkey(value: str | bytes) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    return value


def _file_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]
