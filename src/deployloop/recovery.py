"""After a `loop run` that was killed: stop what it left running, mark its iteration crashed.

A run is live while it holds its env's lock or while its own record names a `loop` process
that still runs (a shell with another TMPDIR looks for the lock elsewhere). Anything else
`running` in the store, or named in a record, was left by a loop that is gone.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from deployloop.layout import StateLayout
from deployloop.store import Store

CRASHED_REASON = "killed mid-iteration: kill -9, out of memory, a closed terminal or a reboot"


@dataclass
class Settled:
    live_run: int | None = None  # the pid of another `loop run` of this env that still runs
    reaped: list[str] = field(default_factory=list)  # processes stopped, "program (pid N)"
    marked: list[int] = field(default_factory=list)  # iterations marked crashed
    not_marked: str | None = None  # why a running iteration could not be marked


def settle(store: Store, state_dir: Path, env: str, *, own_run: bool = False) -> Settled:
    """Reap and mark for `env`, unless a run is live. `own_run`: called by a `loop run` that
    holds the lock itself (it then only checks records for a run with another lock)."""
    if own_run:
        return _settle(store, state_dir, env, own_run=True)
    if not store.has_running(env) and not _has_records(StateLayout(state_dir).procs_dir(env)):
        return Settled()  # the usual case, for every read command: nothing was left
    # Imported here: `loop status` need not pay for process control it does not use.
    from deployloop.lock import unless_running

    with unless_running(state_dir, env) as free:
        return _settle(store, state_dir, env, own_run=False) if free else Settled()


def _has_records(procs: Path) -> bool:
    try:
        return any(name.endswith(".json") for name in os.listdir(procs))
    except FileNotFoundError:
        return False
    except OSError:
        return True  # cannot tell: look closer


def _settle(store: Store, state_dir: Path, env: str, *, own_run: bool) -> Settled:
    from deployloop.children import live_runs, reap_orphans

    procs = StateLayout(state_dir).procs_dir(env)
    live = [pid for pid in live_runs(procs) if pid != os.getpid()]
    if live:
        return Settled(live_run=live[0])
    settled = Settled(reaped=reap_orphans(procs, os.getpid() if own_run else None))
    try:
        settled.marked = store.mark_crashed(env, CRASHED_REASON)
    except sqlite3.Error as exc:  # a full disk, a read-only store
        settled.not_marked = str(exc)
    return settled
