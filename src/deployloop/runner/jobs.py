"""Split the tests to run into pytest processes ("jobs").

A pytest start costs ~0.35 s, so small suites that share a `-m` expression run together in
one process, and with several workers a large suite is cut into shards so no worker idles
while one runs it all. Results map back to suites by node id, whatever the job.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

from deployloop.config import SuiteConfig


@dataclass(frozen=True)
class Job:
    name: str
    markers: str | None
    args: tuple[str, ...]  # paths, or node ids when only some of a suite's tests run
    expected: tuple[tuple[str, tuple[str, ...]], ...]  # (suite, node ids), in run order
    attempt: int = 1
    serial: bool = False  # runs alone: one process, nothing else at the same time

    @property
    def suites(self) -> list[str]:
        return [suite for suite, _ in self.expected]

    @property
    def size(self) -> int:
        return sum(len(ids) for _, ids in self.expected)


@dataclass(frozen=True)
class _Unit:
    suite: SuiteConfig
    nodeids: tuple[str, ...]
    whole: bool  # every collectable test of the suite: pass its paths, not node ids


def plan_jobs(
    suites: Sequence[SuiteConfig],
    pending: dict[str, list[str]],
    collectable: dict[str, list[str]],
    workers: int,
    prefix: str = "",
    by_node_id: AbstractSet[str] = frozenset(),
    node_arg: Callable[[str], str] = str,
) -> list[Job]:
    """Jobs for the `pending` node ids of `suites` (already in run order: priority first).

    `collectable` holds each suite's node ids that collected without error; a suite whose
    pending tests are all of them runs by its paths, unless it is in `by_node_id` (its paths
    hold other suites' tests too).
    """
    units = [
        _Unit(
            s,
            tuple(pending[s.name]),
            s.name not in by_node_id and set(pending[s.name]) == set(collectable.get(s.name, [])),
        )
        for s in suites
        if pending.get(s.name)
    ]
    total = sum(len(u.nodeids) for u in units)
    if not units:
        return []
    # About one job per worker: each pytest process costs ~0.35-0.9 s of CPU to start and end,
    # which more, smaller jobs would pay again (measured by bench/run_bench.py).
    target = total if workers == 1 else max(1, math.ceil(total / workers))
    units = [piece for unit in units for piece in _shard(unit, target, workers)]
    batches: list[list[_Unit]] = []
    for unit in units:
        last = batches[-1] if batches else None
        if (
            last is not None
            and last[0].suite.markers == unit.suite.markers
            and sum(len(u.nodeids) for u in last) + len(unit.nodeids) <= target
            and unit.whole
            and all(u.whole for u in last)
            and not unit.suite.serial
            and not last[0].suite.serial
        ):
            last.append(unit)
        else:
            batches.append([unit])
    return [_job(prefix, i, batch, node_arg) for i, batch in enumerate(batches)]


def _shard(unit: _Unit, target: int, workers: int) -> list[_Unit]:
    if workers == 1 or unit.suite.serial or len(unit.nodeids) <= target * 1.5:
        return [unit]
    count = min(math.ceil(len(unit.nodeids) / target), workers)
    size = math.ceil(len(unit.nodeids) / count)
    # Contiguous slices keep a module's tests together, so module fixtures run once a shard.
    return [
        _Unit(unit.suite, unit.nodeids[i : i + size], False)
        for i in range(0, len(unit.nodeids), size)
    ]


def _job(prefix: str, index: int, batch: list[_Unit], node_arg: Callable[[str], str]) -> Job:
    args: list[str] = []
    for unit in batch:
        args += unit.suite.paths if unit.whole else [node_arg(n) for n in unit.nodeids]
    first = _slug(batch[0].suite.name)
    more = f"-and-{len(batch) - 1}-more" if len(batch) > 1 else ""
    name = f"{prefix}{index + 1:02d}-{first}{more}"
    return Job(
        name=name,
        markers=batch[0].suite.markers,
        args=tuple(args),
        expected=tuple((u.suite.name, u.nodeids) for u in batch),
        serial=batch[0].suite.serial,
    )


def retry_job(
    job: Job, leftovers: list[tuple[str, tuple[str, ...]]], node_arg: Callable[[str], str] = str
) -> Job:
    """A new job for suites a stopped process never reached, by node id."""
    return Job(
        name=f"{job.name}-retry{job.attempt}",
        markers=job.markers,
        args=tuple(node_arg(n) for _, ids in leftovers for n in ids),
        expected=tuple(leftovers),
        attempt=job.attempt + 1,
        serial=job.serial,
    )


def _slug(name: str) -> str:
    out = "".join(c.lower() if c.isalnum() else "-" for c in name)
    return "-".join(p for p in out.split("-") if p)[:40] or "suite"
