"""Where state lives: `.loop/loop.db` (and its backup `loop.db.bak`),
`.loop/runs/<env>/iteration-<N>/`, and `.loop/procs/<env>/` while a run has children."""

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

    def procs_dir(self, env: str) -> Path:
        """Records of the processes each running `loop run` started (see children.py)."""
        return self.root / "procs" / env

    def procs_record(self, env: str, pid: int) -> Path:
        return self.procs_dir(env) / f"{pid}.json"

    def report_md(self, env: str, number: int) -> Path:
        return self.iteration_dir(env, number) / "report.md"

    def index_html(self, env: str) -> Path:
        """The page of the whole loop of an env (report.html)."""
        return self.root / "runs" / env / "index.html"

    def report_full_md(self, env: str, number: int) -> Path:
        """report.md with every list whole (report.md stays short enough to paste)."""
        return self.iteration_dir(env, number) / "report-full.md"

    def junit_xml(self, env: str, number: int) -> Path:
        return self.iteration_dir(env, number) / "junit.xml"

    def summary_json(self, env: str, number: int) -> Path:
        return self.iteration_dir(env, number) / "summary.json"
