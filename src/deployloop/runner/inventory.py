"""Collect every suite's tests before any runs, so the total is known from the start.

Suites that share a `-m` expression are collected by one `pytest --collect-only` (a pytest
start costs ~0.35 s); items map back to suites by path. A group whose collection fails as a
whole is collected again suite by suite, so one broken suite does not hide the others'
tests. Whatever cannot be collected becomes an error item with pytest's message.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from deployloop.config import SuiteConfig
from deployloop.models import InventoryItem
from deployloop.runner.process import PytestProcess, PytestSetup, error_line
from deployloop.runner.reportlog import COLLECTION_ERROR, crash_line
from deployloop.runner.suite_paths import SuitePaths, file_of, tests_root

_EXIT_NO_TESTS = 5
# The plugin's INVENTORY_END: its last line once the inventory is whole.
INVENTORY_END = '{"inventory": "complete"}'


@dataclass(frozen=True)
class _Collected:
    items: list[dict[str, str]]
    returncode: int
    output: str
    timed_out_after: float | None = None  # seconds, when collection was stopped


class SharedCollection(Protocol):
    """A collection another pytest process is making of the same paths (a fork server of
    the worker pool): the plan reads its inventory rather than collecting again."""

    def wait(self, timeout_s: float) -> tuple[Path, str] | None:
        """Its inventory file once collected, and the tail of its output; None if it
        could not collect (the plan then collects on its own)."""
        ...


def collect_inventory(
    suites: Sequence[SuiteConfig],
    setup: PytestSetup,
    out_dir: Path,
    timeout_s: float,
    name: str = "collect",
    shared: Callable[[str | None, tuple[str, ...]], SharedCollection | None] | None = None,
    ending: Callable[[PytestProcess], None] | None = None,
) -> list[InventoryItem]:
    """The tests of `suites`, in suite order, each item in exactly one suite. `shared`
    offers collections already under way, by `-m` expression and paths. `ending` takes a
    pytest that has listed its whole inventory and is still ending (after 10,000 tests that
    is another second): its caller waits for it once done with the items. Without `ending`,
    each is waited for here."""
    groups: dict[str | None, list[SuiteConfig]] = {}
    for suite in suites:
        groups.setdefault(suite.markers, []).append(suite)
    by_suite: dict[str, list[InventoryItem]] = {s.name: [] for s in suites}
    jobs = [(f"{name}-{i + 1}", members) for i, members in enumerate(groups.values())]
    for (job, members), collected in zip(
        jobs, _run_all(jobs, setup, out_dir, timeout_s, shared, ending), strict=True
    ):
        if _failed_as_a_whole(collected) and len(members) > 1:
            singles = [(f"{job}-{j + 1}", [s]) for j, s in enumerate(members)]
            for (_, (suite,)), single in zip(
                singles, _run_all(singles, setup, out_dir, timeout_s), strict=True
            ):
                by_suite[suite.name] += _assign([suite], single, setup.workdir)[suite.name]
        else:
            for suite_name, items in _assign(members, collected, setup.workdir).items():
                by_suite[suite_name] += items
    return _one_suite_each(suites, by_suite, setup.workdir)


def _one_suite_each(
    suites: Sequence[SuiteConfig], by_suite: dict[str, list[InventoryItem]], workdir: Path
) -> list[InventoryItem]:
    """A test that suites of two `-m` groups both collected belongs to the more specific one
    (a node id over a file over a folder; a `-m` expression over none), so it runs and counts
    once."""
    homes: dict[str, list[SuiteConfig]] = {}
    for suite in suites:
        for item in by_suite[suite.name]:
            homes.setdefault(item.nodeid, []).append(suite)
    if len(homes) == sum(len(items) for items in by_suite.values()):
        return [item for suite in suites for item in by_suite[suite.name]]  # none twice
    paths = SuitePaths(suites, workdir, tests_root(suites, workdir))
    out = []
    for suite in suites:
        for item in by_suite[suite.name]:
            candidates = homes[item.nodeid]
            if len(candidates) > 1:
                scores = paths.scores(item.nodeid, item.file)
                best = max(candidates, key=lambda s: (scores.get(s.name, -1), bool(s.markers)))
                if best is not suite:
                    continue
            out.append(item)
    return out


def suites_covering_others(
    suites: Sequence[SuiteConfig], owners: dict[str, str], workdir: Path, rootdir: Path
) -> set[str]:
    """Suites whose paths also hold tests that belong to another suite: running them by
    their paths would run those tests twice, so they must run by node id."""
    paths = SuitePaths(suites, workdir, rootdir)
    out: set[str] = set()
    for nodeid, owner in owners.items():
        out.update(name for name in paths.scores(nodeid) if name != owner)
    return out


def _run_all(
    jobs: list[tuple[str, list[SuiteConfig]]],
    setup: PytestSetup,
    out_dir: Path,
    timeout_s: float,
    shared: Callable[[str | None, tuple[str, ...]], SharedCollection | None] | None = None,
    ending: Callable[[PytestProcess], None] | None = None,
) -> list[_Collected]:
    """Collect every job at once: collection is mostly waiting on imports."""
    procs: list[tuple[PytestProcess | SharedCollection, Path]] = []
    handed: list[PytestProcess] = []
    try:
        for name, members in jobs:
            inventory = out_dir / f"{name}.jsonl"
            args = [p for s in members for p in s.paths]
            other = shared(members[0].markers, tuple(args)) if shared is not None else None
            if other is not None:
                procs.append((other, inventory))
                continue
            argv = setup.argv(
                args,
                members[0].markers,
                # -qq: the inventory comes from the plugin; pytest printing every node id
                # costs a tenth of the collection.
                ["-p", "deployloop_plugin", "--collect-only", "-qq",
                 f"--loop-inventory={inventory}"],
            )
            proc = setup.start(argv, setup.process_env(with_plugin=True), out_dir / f"{name}.log")
            procs.append((proc, inventory))
        results = []
        for i, (source, inventory) in enumerate(procs):
            if isinstance(source, PytestProcess):
                code = _wait_for_inventory(source, inventory, timeout_s, early=ending is not None)
                items = _read_inventory(inventory)
                if code is None and not items:  # its exit code says why there are none
                    code = source.wait(timeout_s)
                if code is None:
                    assert ending is not None
                    handed.append(source)
                    ending(source)
                    code = 0  # it listed every test: what it does while ending changes none
                results.append(
                    _Collected(
                        items, code, source.tail(30),
                        timeout_s if source.was_interrupted else None,
                    )
                )
                continue
            found = source.wait(timeout_s)
            if found is None:  # it could not: collect on our own, as usual
                results += _run_all([jobs[i]], setup, out_dir, timeout_s)
                continue
            items = _read_inventory(found[0])
            results.append(_Collected(items, 0 if items else _EXIT_NO_TESTS, found[1]))
        return results
    finally:
        for source, _ in procs:
            if (
                isinstance(source, PytestProcess)
                and source not in handed
                and source.poll() is None
            ):
                source.stop()


def _wait_for_inventory(
    proc: PytestProcess, inventory: Path, timeout_s: float, *, early: bool
) -> int | None:
    """pytest's exit code; None when `early` and its inventory is whole while it still runs.
    Stopped after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while (code := proc.poll()) is None:
        if early and _is_whole(inventory):
            return None
        if time.monotonic() > deadline:
            return proc.stop()
        time.sleep(0.02)
    return code


def _is_whole(inventory: Path) -> bool:
    try:
        with inventory.open("rb") as file:
            size = file.seek(0, os.SEEK_END)
            file.seek(max(0, size - len(INVENTORY_END) - 1))
            return file.read().rstrip(b"\n").endswith(INVENTORY_END.encode())
    except OSError:
        return False


def _read_inventory(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    items = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "nodeid" in record:  # not the end line
            items.append(record)
    return items


# How the error of a suite whose collection failed as a whole begins (a usage error, a
# conftest that cannot be imported): recollected once the services' URLs are known.
SUITE_NOT_COLLECTED = "pytest could not collect this suite"


def _failed_as_a_whole(collected: _Collected) -> bool:
    # Usage errors (a missing path, a bad option), internal errors, a hang: nothing listed.
    return collected.timed_out_after is not None or (
        not collected.items and collected.returncode not in (0, _EXIT_NO_TESTS)
    )


def _assign(
    suites: list[SuiteConfig], collected: _Collected, workdir: Path
) -> dict[str, list[InventoryItem]]:
    out: dict[str, list[InventoryItem]] = {s.name: [] for s in suites}
    seen: set[str] = set()
    paths = SuitePaths(suites, workdir)
    by_name = {s.name: s for s in suites}
    relative: dict[str, str] = {}
    for record in collected.items:
        nodeid = record["nodeid"]
        if nodeid in seen:
            continue
        seen.add(nodeid)
        owner = paths.owner(nodeid, record.get("path", ""))
        if owner is None:
            continue
        suite = by_name[owner]
        error = record.get("error")
        message = COLLECTION_ERROR + crash_line(error) if error else None
        file = _relative_file(record.get("path", ""), nodeid, workdir, relative)
        out[suite.name].append(InventoryItem(suite.name, nodeid, file, message, error))
    for suite in suites:
        if out[suite.name]:
            continue
        # A suite with nothing to run is a mistake worth seeing, not a silent zero.
        if collected.timed_out_after is not None:
            message = (
                f"collection timed out after {collected.timed_out_after:g} s"
                " (tests.suite_timeout_s): pytest was stopped"
            )
        elif _failed_as_a_whole(collected):
            message = f"{SUITE_NOT_COLLECTED} (exit {collected.returncode}): "
            message += error_line(collected.output)
        else:
            message = "no tests collected from " + ", ".join(suite.paths)
            if suite.markers:
                message += f" with -m {suite.markers!r}"
        detail = message + "\n\n" + collected.output
        out[suite.name].append(
            InventoryItem(suite.name, suite.paths[0], file_of(suite.paths[0]), message, detail)
        )
    return out


def _relative_file(path: str, nodeid: str, workdir: Path, known: dict[str, str]) -> str:
    """The test's file relative to the working directory (where `loop` digests it), which is
    not its node id's file when the node id is relative to a rootdir above it. Worked out
    once per file (`known`): relpath costs more than all the rest of assigning a test."""
    if path in known:
        return known[path]
    if not path or not os.path.isabs(path):
        return file_of(nodeid)
    known[path] = os.path.relpath(path, workdir)
    return known[path]
