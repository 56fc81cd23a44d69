"""pytest plugin of deployloop: the test inventory of a `--collect-only` run, and the events
of a test run, as JSON lines.

It is loaded by name (`-p deployloop_plugin`) from a folder put on PYTHONPATH, so it works
in any interpreter that has pytest, with or without deployloop installed: it imports nothing
but the standard library and pytest.

Each line is {"nodeid", "path"} for a collected item (after `-m` deselection, which
pytest-reportlog's collect reports do not reflect), or {"nodeid", "path", "error"} for a
collector that failed.
"""

from __future__ import annotations

import json
from typing import IO

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--loop-inventory", default=None, help="deployloop: write the inventory here")
    parser.addoption("--loop-events", default=None, help="deployloop: write run events here")


def pytest_configure(config: pytest.Config) -> None:
    path = config.getoption("--loop-inventory")
    if path:
        config.pluginmanager.register(_InventoryWriter(open(path, "w", encoding="utf-8")))
    events = config.getoption("--loop-events")
    if events:
        config.pluginmanager.register(_EventWriter(open(events, "w", encoding="utf-8")))


class _EventWriter:
    """When collection ended and which test started: reportlog only says when one finished,
    so without this a suite's timeout would count pytest's start-up, and a hang could not be
    pinned on the test that hung."""

    def __init__(self, out: IO[str]) -> None:
        self._out = out

    def _write(self, record: dict[str, str]) -> None:
        self._out.write(json.dumps(record) + "\n")
        self._out.flush()

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self._write({"event": "collected"})

    def pytest_runtest_logstart(self, nodeid: str) -> None:
        self._write({"event": "start", "nodeid": nodeid})

    def pytest_unconfigure(self) -> None:
        self._out.close()


class _InventoryWriter:
    def __init__(self, out: IO[str]) -> None:
        self._out = out

    def _write(self, record: dict[str, str]) -> None:
        self._out.write(json.dumps(record) + "\n")
        self._out.flush()

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            path = str(getattr(report, "fspath", "") or report.nodeid.split("::")[0])
            self._write({"nodeid": report.nodeid, "path": path, "error": str(report.longrepr)})

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        for item in session.items:
            self._write({"nodeid": item.nodeid, "path": str(item.path)})

    def pytest_unconfigure(self) -> None:
        self._out.close()
