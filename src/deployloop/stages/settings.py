"""What every stage of an iteration is given, and the error when the flags do not fit it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from deployloop.children import Children
from deployloop.config import Config
from deployloop.layout import StateLayout
from deployloop.runner.process import Redaction


class UsageError(Exception):
    """Flags that do not fit the config (`loop run` exits 2)."""


@dataclass(frozen=True)
class IterationSettings:
    env: str
    config: Config
    workdir: Path
    layout: StateLayout
    suite_globs: tuple[str, ...]
    workers: int
    target_pass_rate: float
    # Run only the tests that failed or errored last time, and those never run (the first
    # iteration of this run; the iteration is marked partial).
    failed_only: bool = False
    # The config file's bytes as loaded: the key of the summaries the run keeps (see
    # analysis.kept), so `loop status` reads them rather than computing them again.
    config_bytes: bytes | None = None
    # Starts every child process of the run, so none outlives loop (None: untracked).
    children: Children | None = None
    redaction: Redaction = field(default_factory=Redaction)
