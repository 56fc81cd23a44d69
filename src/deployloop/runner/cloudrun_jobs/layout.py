"""Where a run's objects live in the results bucket; the task and loop both read this.

    <prefix>/<env>/iteration-<N>/<run>/shares/task-0003.json    what task 3 runs (loop writes)
    .../results/task-0003/attempt-00/chunk-000001.json          what it reported (the task)
    .../results/task-0003/attempt-00/end.json                   how its pytest ended

A chunk holds the reportlog and events bytes written since the one before; objects are
never rewritten (Cloud Storage allows about one write a second per object name), and the
numbers say the order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

RESULTS_ENV = "LOOP_RESULTS"  # gs://bucket/<run folder>, given to every task
PROJECT_ENV = "LOOP_GCP_PROJECT"  # the project the task's Cloud Storage client bills
SHARE_VERSION = 1

_RESULT = re.compile(r"results/task-(\d+)/attempt-(\d+)/(?:chunk-(\d+)\.json|(end)\.json)$")


def run_folder(prefix: str, env: str, iteration: int, run: str) -> str:
    return "/".join(p for p in (prefix, env, f"iteration-{iteration}", run) if p)


def share_name(folder: str, task: int) -> str:
    return f"{folder}/shares/task-{task:04d}.json"


def attempt_folder(folder: str, task: int, attempt: int) -> str:
    return f"{folder}/results/task-{task:04d}/attempt-{attempt:02d}"


def chunk_name(folder: str, task: int, attempt: int, number: int) -> str:
    return f"{attempt_folder(folder, task, attempt)}/chunk-{number:06d}.json"


def end_name(folder: str, task: int, attempt: int) -> str:
    return f"{attempt_folder(folder, task, attempt)}/end.json"


@dataclass(frozen=True)
class ResultObject:
    task: int
    attempt: int
    chunk: int | None  # None: the attempt's end.json

    @property
    def order(self) -> tuple[int, int, int]:
        return (self.task, self.attempt, self.chunk if self.chunk is not None else 1 << 62)


def parse_result(name: str) -> ResultObject | None:
    """The object a task wrote, from its name; None for anything else."""
    found = _RESULT.search(name)
    if found is None:
        return None
    task, attempt, chunk, _end = found.groups()
    return ResultObject(int(task), int(attempt), int(chunk) if chunk is not None else None)


def split_url(url: str) -> tuple[str, str]:
    """("bucket", "folder") of gs://bucket/folder."""
    bucket, _, folder = url.removeprefix("gs://").partition("/")
    return bucket, folder.strip("/")
