"""Worker mode of loop's pytest plugin: collect once, then run the tests loop sends.

loop starts a few long-lived pytest processes (while the services deploy), each with
`--loop-worker=FD`: FD is the read end of a pipe from loop. The worker collects as pytest
always does, says so in the events file (with the modules whose tests must stay in one
process), then runs node ids as loop sends them, in loop's order, until loop says stop or
closes the pipe. Results go out through the reportlog as in any run.

Messages are JSON lines: {"env": {...}, "redact": "<LOOP_REDACT>"} (the services' URLs and
tokens, known once the deploy ends; sent before the first test), {"run": [node ids]},
{"stop": true}.

pytest tears a fixture down when the next test no longer needs it, so a test runs only once
the one after it is known (or known not to come): loop keeps each worker a few tests ahead.
Standard library and pytest only, like the rest of the plugin.
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from collections.abc import Callable
from typing import IO, Any

import pytest

# A module whose tests share a fixture wider than one test (module, class or package
# scope: setup_module and setup_class are such fixtures too) runs in one worker, or that
# fixture would be set up again in each.
_SHARED_SCOPES = frozenset({"module", "class", "package"})


class _TracedEnviron(type(os.environ)):  # type: ignore[misc]
    """os.environ noting which variables are read while the worker collects: a module that
    reads a service's URL at import time keeps the value it saw then."""

    reads: set[str] = set()

    def __getitem__(self, key: str) -> str:
        _TracedEnviron.reads.add(key)
        return super().__getitem__(key)  # type: ignore[no-any-return]


def stale_names(env: dict[str, str]) -> list[str]:
    """Variables a module read while it was collected whose value `env` changes."""
    return sorted(
        name for name in _TracedEnviron.reads if name in env and os.environ.get(name) != env[name]
    )


class Worker:
    """`fd`: loop's pipe; None in a fork server's process, whose workers get theirs later."""

    def __init__(self, fd: int | None, write_event: Callable[[dict[str, Any]], None],
                 on_redact: Callable[[str], None]) -> None:
        self._fd = fd
        self._event = write_event
        self._on_redact = on_redact
        self._queue: deque[str] = deque()
        self._done = False
        self._environ_class = type(os.environ)
        self._ready: dict[str, Any] = {}

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection(self) -> None:
        _TracedEnviron.reads = set()
        os.environ.__class__ = _TracedEnviron

    # Last: the inventory writer (--loop-inventory) has written every item when "ready" is
    # said, and loop reads that file on seeing it.
    @pytest.hookimpl(trylast=True)
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        os.environ.__class__ = self._environ_class
        grouped = sorted(
            {item.nodeid.split("::")[0] for item in session.items if _shares_fixtures(item)}
        )
        self._ready = {"event": "ready", "count": len(session.items), "grouped": grouped}
        self.announce()

    def announce(self) -> None:
        """Say the tests are collected (again, in a forked worker's own events file)."""
        self._event({**self._ready, "at": time.time()})

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session: pytest.Session) -> bool | None:
        if session.config.option.collectonly or self._fd is None:
            return None
        return self.run_tests(session, os.fdopen(self._fd, "rb"))

    def run_tests(self, session: pytest.Session, pipe: IO[bytes]) -> bool:
        """Run what loop sends through `pipe` until it says stop or closes the pipe."""
        self._pipe = pipe
        items: dict[str, pytest.Item] = {}
        for item in session.items:
            items.setdefault(item.nodeid, item)
        while True:
            self._fill(need=1)
            if not self._queue:
                break
            nodeid = self._queue.popleft()
            found = items.get(nodeid)
            if found is None:
                self._event({"event": "missing", "nodeid": nodeid})
                continue
            self._fill(need=1)  # the next test decides which fixtures end after this one
            nextitem = items.get(self._queue[0]) if self._queue else None
            found.config.hook.pytest_runtest_protocol(item=found, nextitem=nextitem)
            if session.shouldfail:
                raise session.Failed(session.shouldfail)
            if session.shouldstop:
                raise session.Interrupted(session.shouldstop)
        return True

    def _fill(self, need: int) -> None:
        """Read loop's messages until `need` tests wait or loop says there are no more."""
        while len(self._queue) < need and not self._done:
            line = self._pipe.readline()
            if not line:  # loop has gone: finish the session as it stands
                self._done = True
                break
            try:
                message = json.loads(line.decode("utf-8", "surrogateescape"))
            except ValueError:
                continue
            if not isinstance(message, dict):
                continue
            if "env" in message:
                self._set_env(message["env"], message.get("redact"))
            self._queue.extend(str(n) for n in message.get("run", ()))
            if message.get("stop"):
                self._done = True

    def _set_env(self, env: dict[str, str], redact: str | None) -> None:
        stale = stale_names(env)
        os.environ.update({str(k): str(v) for k, v in env.items()})
        if redact:
            self._on_redact(redact)
        # Collected with other values than the tests would now see: loop starts a fresh
        # worker, and this one ends without running a test.
        self._event({"event": "env", "stale": stale})
        if stale:
            self._done = True
            self._queue.clear()


def _shares_fixtures(item: pytest.Item) -> bool:
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return False
    for defs in info.name2fixturedefs.values():
        # The last definition is the one this test gets (the nearest override).
        if defs and str(getattr(defs[-1], "scope", "function")) in _SHARED_SCOPES:
            return True
    return False
