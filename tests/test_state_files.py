"""Old iterations' raw pytest files are gzipped, or dropped beyond keep_raw_iterations."""

from __future__ import annotations

import gzip
import stat
from pathlib import Path

from deployloop.layout import StateLayout
from deployloop.state_files import tidy_raw_files

RAW = ("s1.reportlog.jsonl", "s1.events.jsonl", "s1.junit.xml", "s1.log")


def make_iterations(layout: StateLayout, count: int) -> None:
    for number in range(1, count + 1):
        pytest_dir = layout.pytest_dir("local", number)
        pytest_dir.mkdir(parents=True)
        for name in RAW:
            (pytest_dir / name).write_text(f"iteration {number} {name}\n" * 200)
        (pytest_dir / "notes.txt").write_text("not raw pytest output")
        layout.report_md("local", number).write_text("# report")
        layout.summary_json("local", number).write_text("{}")


def names(layout: StateLayout, number: int) -> set[str]:
    return {p.name for p in layout.pytest_dir("local", number).iterdir()}


def test_older_iterations_are_gzipped_and_the_last_two_stay_as_they_are(tmp_path: Path) -> None:
    layout = StateLayout(tmp_path / ".loop")
    make_iterations(layout, 4)
    tidied = tidy_raw_files(layout, "local", 4, None)
    assert tidied.compressed == 8 and tidied.dropped == 0 and tidied.freed_bytes > 0
    for number in (1, 2):
        assert names(layout, number) == {name + ".gz" for name in RAW} | {"notes.txt"}
        gz = layout.pytest_dir("local", number) / "s1.log.gz"
        assert gzip.decompress(gz.read_bytes()).decode().startswith(f"iteration {number} s1.log")
        assert stat.S_IMODE(gz.stat().st_mode) == 0o600
    for number in (3, 4):
        assert names(layout, number) == set(RAW) | {"notes.txt"}
    # Reports stay; running it again changes nothing.
    assert layout.report_md("local", 1).read_text() == "# report"
    assert tidy_raw_files(layout, "local", 4, None).compressed == 0


def test_keep_drops_raw_files_beyond_the_newest_n(tmp_path: Path) -> None:
    layout = StateLayout(tmp_path / ".loop")
    make_iterations(layout, 5)
    tidy_raw_files(layout, "local", 4, None)  # 1, 2 gzipped by an earlier run
    tidied = tidy_raw_files(layout, "local", 5, 2)
    assert tidied.dropped == 12  # iterations 1-3: gzipped and raw files alike
    for number in (1, 2, 3):
        assert names(layout, number) == {"notes.txt"}
        assert layout.summary_json("local", number).exists()
    assert names(layout, 4) == set(RAW) | {"notes.txt"}
    assert names(layout, 5) == set(RAW) | {"notes.txt"}


def test_no_runs_yet_and_other_envs_are_left_alone(tmp_path: Path) -> None:
    layout = StateLayout(tmp_path / ".loop")
    assert tidy_raw_files(layout, "local", 3, 1).compressed == 0
    other = layout.pytest_dir("staging", 1)
    other.mkdir(parents=True)
    (other / "s.log").write_text("x")
    make_iterations(layout, 3)
    tidy_raw_files(layout, "local", 3, 1)
    assert (other / "s.log").exists()
