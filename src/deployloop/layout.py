"""Where state lives: `.loop/loop.db` and `.loop/runs/<env>/iteration-<N>/`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class StateLayout:
    root: Path

    @property
    def db(self) -> Path:
        return self.root / "loop.db"

    def iteration_dir(self, env: str, number: int) -> Path:
        return self.root / "runs" / env / f"iteration-{number}"

    def services_dir(self, env: str, number: int) -> Path:
        return self.iteration_dir(env, number) / "services"

    def pytest_dir(self, env: str, number: int) -> Path:
        return self.iteration_dir(env, number) / "pytest"

    def report_md(self, env: str, number: int) -> Path:
        return self.iteration_dir(env, number) / "report.md"

    def summary_json(self, env: str, number: int) -> Path:
        return self.iteration_dir(env, number) / "summary.json"
