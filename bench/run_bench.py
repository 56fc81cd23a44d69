"""Benchmark `loop`: start-up time, test-phase overhead against plain pytest, peak memory.

Run from the project root:  .venv/bin/python bench/run_bench.py [--quick] [--reps N] [--keep]
(or `make bench`). It prints figures, with each target next to its figure and "ok" or "over";
it never fails on a figure (exit 0 unless the benchmark itself could not run).

Machines are shared and noisy, so every figure is the median of several runs, and the ratios
compare runs made in the same repetition (baseline and loop interleaved), not separate medians.

What runs:
- `loop --help` and `loop status` in a tiny project that has a `.loop` state from one quick run.
- A generated project of 12 suites / 420 tests; each test makes two HTTP requests to a stdlib
  ThreadingHTTPServer in this process (about 5 ms of "service" latency each, like a staging
  e2e test), through an httpx client fixture as real suites do. A few tests fail, one skips.
  - baseline: plain pytest, one suite after another, as a person does by hand;
  - for information: one pytest process over every file with the options loop adds
    (reportlog, junit, ...): what `loop run --workers 1` runs, without loop around it;
  - `loop run --max-iterations 1 --workers N` (deploy target "none", one service whose url is
    the server), N = 1, 2, 4, each with a fresh state dir. The test phase comes from the store:
    max(suites.finished_at) - min(suites.started_at).
- I/O-bound: 466 sleeping tests in 24 suites, `workers = 8`: the whole second `loop run`
  against `pytest -n 8 --dist worksteal` and against max(longest, sum / 8).
- failed first: 10,000 fast tests, 2 failing in iteration 1; in iteration 2, when they are
  done as a share of the test phase (w = 1 and 4).
- history: `loop status`, `summarize`, `history` over 20 iterations x 10,000 tests written by
  bench/history_fixture.py.
- plan: `loop plan` against `pytest --collect-only` over 10,000 tests in 200 suites.
`--only SECTION` runs some of these alone (core = start-up, test phase, memory, faults).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from hashlib import sha256
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

PYTHON = sys.executable
LOOP = str(Path(sys.executable).with_name("loop"))
PLUGIN_DIR = Path(__file__).resolve().parents[1] / "src" / "deployloop" / "runner" / "plugin"
ROOT = Path(__file__).resolve().parents[1]

STARTUP_TARGET_S = 0.30
TEST_PHASE_TARGET_RATIO = 1.20
SERVICE_DELAY_S = 0.005  # per request; each generated test makes two

# (suite name, priority, tests): 420 tests over 12 files.
SUITES: list[tuple[str, int, int]] = [
    ("Priority 1 Critical", 1, 24),
    ("Auth", 1, 30),
    ("Catalog", 2, 36),
    ("Cart", 2, 40),
    ("Checkout", 2, 28),
    ("Orders", 2, 44),
    ("Payments", 3, 32),
    ("Inventory", 3, 38),
    ("Search", 3, 26),
    ("Notifications", 3, 42),
    ("Admin", 3, 34),
    ("Reports", 3, 46),
]
QUICK_SUITES: list[tuple[str, int, int]] = [
    ("Priority 1 Critical", 1, 8),
    ("Cart", 2, 10),
    ("Reports", 3, 12),
]


# --- the service the tests call ---------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as httpx clients use it
    # Headers and body are two writes: with Nagle on, the body waits for the client's
    # delayed ACK (40 ms a response), which would swamp every other figure.
    disable_nagle_algorithm = True

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        parts = self.path.strip("/").split("/")
        if parts == ["health"]:
            self._send(200, {"status": "ok"})
            return
        if len(parts) < 2 or not parts[1].isdigit():
            self._send(404, {"error": f"no route {self.path}"})
            return
        time.sleep(SERVICE_DELAY_S)  # the latency of a real service
        resource, ident = parts[0], int(parts[1])
        digest = f"{resource}:{ident}".encode()
        for _ in range(50):  # and a little real work
            digest = sha256(digest).digest()
        if parts[2:] == ["checksum"]:
            self._send(200, {"id": ident, "digest": digest.hex()})
            return
        price = (ident * 37) % 1000 + 100
        self._send(200, {
            "id": ident, "resource": resource, "digest": digest.hex(), "price_cents": price,
            "tags": [f"tag-{(ident + k) % 7}" for k in range(5)],
        })

    def _send(self, status: int, body: dict[str, object]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@contextmanager
def serve() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="bench-http", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# --- generated projects -----------------------------------------------------------------------

CONFTEST = '''\
from __future__ import annotations

import os
from collections.abc import Iterator

import httpx
import pytest


@pytest.fixture(scope="module")
def api() -> Iterator[httpx.Client]:
    with httpx.Client(base_url=os.environ["BENCH_API_URL"], timeout=10) as client:
        yield client
'''

SUITE_FILE = '''\
"""{name}: generated e2e suite ({count} tests)."""

from __future__ import annotations

import httpx
import pytest

RESOURCE = "{slug}"


@pytest.mark.parametrize("ident", range({params}))
def test_get(api: httpx.Client, ident: int) -> None:
    response = api.get(f"/{{RESOURCE}}/{{ident}}")
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == ident
    assert body["resource"] == RESOURCE
    assert 100 <= body["price_cents"] < 1100
    assert sorted(body["tags"]) == sorted(set(body["tags"]))
    check = api.get(f"/{{RESOURCE}}/{{ident}}/checksum").json()
    assert check["digest"] == body["digest"]


def test_health(api: httpx.Client) -> None:
    assert api.get("/health").json() == {{"status": "ok"}}


def test_unknown_route(api: httpx.Client) -> None:
    assert api.get("/{slug}/not-a-number").status_code == 404
{extra}'''

FAILING_TEST = '''

def test_discount_applied(api: httpx.Client) -> None:
    body = api.get(f"/{RESOURCE}/3").json()
    assert body["price_cents"] == 99, "discount not applied"
'''

SKIPPED_TEST = '''

@pytest.mark.skip(reason="feature flag off in this environment")
def test_behind_flag(api: httpx.Client) -> None:
    api.get("/health")
'''


def _slug(name: str) -> str:
    return "-".join("".join(c.lower() if c.isalnum() else " " for c in name).split())


def make_project(root: Path, suites: Sequence[tuple[str, int, int]], url: str) -> list[Path]:
    """Write a project loop can run: configs/local.toml, tests/e2e/*.py. Returns the files."""
    tests = root / "tests" / "e2e"
    tests.mkdir(parents=True)
    (root / "configs").mkdir()
    (root / "pytest.ini").write_text("[pytest]\n")
    (tests / "conftest.py").write_text(CONFTEST)
    files: list[Path] = []
    suite_tables = []
    for i, (name, priority, count) in enumerate(suites):
        slug = _slug(name)
        extra = ""
        fixed = 2  # test_health, test_unknown_route
        if i % 5 == 1:  # a few real failures, as an iteration usually has
            extra += FAILING_TEST
            fixed += 1
        if i % 7 == 3:
            extra += SKIPPED_TEST
            fixed += 1
        path = tests / f"test_{slug.replace('-', '_')}.py"
        path.write_text(SUITE_FILE.format(
            name=name, count=count, slug=slug, params=count - fixed, extra=extra))
        files.append(path)
        suite_tables.append(
            f'[[tests.suites]]\nname = "{name}"\n'
            f'paths = ["{path.relative_to(root).as_posix()}"]\npriority = {priority}\n'
        )
    (root / "configs" / "local.toml").write_text(
        "[loop]\ntarget_pass_rate = 100\nmax_iterations = 1\nstall_iterations = 0\n\n"
        '[deploy]\ntarget = "none"\n\n'
        f'[[deploy.services]]\nname = "api"\nurl = "{url}"\nhealth_path = "/health"\n'
        "ready_timeout_s = 10\n\n"
        "[tests]\nworkers = 1\nsuite_timeout_s = 300\npytest_args = []\n"
        f'env = {{ BENCH_API_URL = "{url}" }}\n\n' + "\n".join(suite_tables)
    )
    return files


PLAN_FILE = '''\
"""Generated: {count} trivial tests, in the shapes node ids take (class, parametrize)."""

import pytest


class TestShape:
{methods}

{functions}

@pytest.mark.parametrize("case", range({params}))
def test_param(case):
    assert case >= 0
'''


def make_plan_project(root: Path, files: int, per_file: int = 50) -> list[Path]:
    """`files` files of `per_file` trivial tests in folders of 20, one suite per file, except
    that the last two folders each have one file left to a folder suite (as real configs do:
    a catch-all folder next to the files with suites of their own). Returns the files."""
    tests = root / "tests"
    (root / "configs").mkdir(parents=True)
    (root / "pytest.ini").write_text("[pytest]\n")
    methods, functions = per_file // 5, per_file // 5 * 2
    params = per_file - methods - functions
    source = PLAN_FILE.format(
        count=per_file,
        methods="\n".join(f"    def test_m{i}(self):\n        pass\n" for i in range(methods)),
        functions="\n".join(f"def test_f{i}():\n    pass\n" for i in range(functions)),
        params=params,
    )
    paths: list[Path] = []
    tables = []
    folders = sorted({f // 20 for f in range(files)})
    catch_all = set(folders[-2:]) if len(folders) > 2 else set()
    for f in range(files):
        folder = tests / f"area_{f // 20:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"test_file_{f:03d}.py"
        path.write_text(source)
        paths.append(path)
        if f // 20 in catch_all and f % 20 == 0:
            continue  # left to the folder's suite
        tables.append(f'[[tests.suites]]\nname = "File {f:03d}"\n'
                      f'paths = ["{path.relative_to(root).as_posix()}"]\n')
    for folder_no in sorted(catch_all):
        tables.append(f'[[tests.suites]]\nname = "Area {folder_no:02d}"\n'
                      f'paths = ["tests/area_{folder_no:02d}"]\n')
    (root / "configs" / "local.toml").write_text(
        '[loop]\nmax_iterations = 1\n\n[deploy]\ntarget = "none"\n\n'
        "[tests]\nworkers = 2\n\n" + "\n".join(tables)
    )
    return paths


# --- running things ---------------------------------------------------------------------------


@dataclass
class Ran:
    wall_s: float
    code: int
    output: str
    loop_peak_kb: int | None = None  # VmHWM of the process itself
    tree_peak_kb: int | None = None  # largest peak of it and its children (wait4 rusage)
    own_cpu_s: float | None = None  # CPU of the process itself (last /proc sample)
    tree_cpu_s: float = 0.0  # CPU of it and every child it waited for


def run(argv: Sequence[str], cwd: Path, env: dict[str, str] | None = None,
        watch_memory: bool = False) -> Ran:
    """Run argv to completion; wall time measured around a blocking wait."""
    with tempfile.TemporaryFile() as out:
        start = time.perf_counter()
        proc = subprocess.Popen(list(argv), cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT)
        peak: list[int] = []
        cpu: list[float] = []
        stop = threading.Event()
        watcher = None
        if watch_memory:
            watcher = threading.Thread(target=_watch, args=(proc.pid, peak, cpu, stop),
                                       daemon=True)
            watcher.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        stop.set()
        if watcher is not None:
            watcher.join()
        out.seek(0)
        text = out.read().decode(errors="replace")
    return Ran(wall, proc.returncode, text, max(peak) if peak else None,
               usage.ru_maxrss if watch_memory else None, cpu[-1] if cpu else None,
               usage.ru_utime + usage.ru_stime)


def _watch(pid: int, peak: list[int], cpu: list[float], stop: threading.Event) -> None:
    """Sample the peak RSS and CPU time of `pid` itself (not its children) until it ends."""
    status, stat = Path(f"/proc/{pid}/status"), Path(f"/proc/{pid}/stat")
    ticks = os.sysconf("SC_CLK_TCK")
    while not stop.is_set():
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak.append(int(line.split()[1]))
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cpu.append((int(fields[11]) + int(fields[12])) / ticks)  # utime, stime
        except (OSError, IndexError, ValueError):
            return
        stop.wait(0.05)


class BenchError(Exception):
    """A command the benchmark needs did not work."""


def check(ran: Ran, what: str, ok_codes: Sequence[int] = (0,)) -> Ran:
    if ran.code not in ok_codes:
        raise BenchError(f"{what} exited {ran.code}:\n{ran.output[-3000:]}")
    return ran


def last_line(error: BenchError) -> str:
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    return f"{lines[0].split(' exited ')[-1].rstrip(':')}: {lines[-1]}" if lines else "failed"


def median_wall(argv: Sequence[str], cwd: Path, reps: int, ok_codes: Sequence[int] = (0,),
                warm_up: bool = True) -> tuple[float, list[float], float]:
    """Median wall time, every wall time, and the median CPU time (user + sys: less
    sensitive than wall time to other work on a shared machine)."""
    what = " ".join(argv)
    if warm_up:
        check(run(argv, cwd), what, ok_codes)  # page cache, .pyc files
    runs = [check(run(argv, cwd), what, ok_codes) for _ in range(reps)]
    times = [r.wall_s for r in runs]
    return statistics.median(times), times, statistics.median(r.tree_cpu_s for r in runs)


_COUNT = re.compile(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed|deselected)")


def pytest_counts(output: str) -> dict[str, int]:
    lines = [ln for ln in output.strip().splitlines() if ln.strip()]
    counts: dict[str, int] = {}
    for number, word in _COUNT.findall(lines[-1] if lines else ""):
        word = "error" if word.startswith("error") else word
        counts[word] = counts.get(word, 0) + int(number)
    return counts


def add_counts(total: dict[str, int], more: dict[str, int]) -> None:
    for key, value in more.items():
        total[key] = total.get(key, 0) + value


def fmt_counts(counts: dict[str, int]) -> str:
    order = ["passed", "failed", "error", "skipped", "xfailed", "xpassed", "pending"]
    parts = [f"{counts[k]} {k}" for k in order if counts.get(k)]
    return f"{sum(counts.values())} tests ({', '.join(parts)})"


# --- what the store says about a loop run -----------------------------------------------------


@dataclass
class LoopRun:
    wall_s: float
    iteration_s: float  # iterations.finished_at - started_at
    before_tests_s: float  # iteration start -> first suite started: plan, collect, deploy
    test_phase_s: float  # first suite started -> last suite finished
    after_tests_s: float  # last suite finished -> iteration finished: analyze, report
    counts: dict[str, int]
    loop_peak_kb: int | None
    tree_peak_kb: int | None
    own_cpu_s: float | None
    tree_cpu_s: float


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


def read_store(db: Path, ran: Ran) -> LoopRun:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        iteration = conn.execute(
            "SELECT id, started_at, finished_at FROM iterations ORDER BY id DESC LIMIT 1"
        ).fetchone()
        first, last = conn.execute(
            "SELECT MIN(started_at), MAX(finished_at) FROM suites"
            " WHERE iteration_id = ? AND started_at IS NOT NULL", (iteration[0],)
        ).fetchone()
        counts = {
            str(outcome): int(n) for outcome, n in conn.execute(
                "SELECT COALESCE(outcome, 'pending'), COUNT(*) FROM tests"
                " WHERE iteration_id = ? GROUP BY 1", (iteration[0],))
        }
    finally:
        conn.close()
    if not (first and last and iteration[2]):
        raise BenchError(f"{db}: the iteration has no suite timings:\n{ran.output[-3000:]}")
    it_start, it_end = _ts(iteration[1]), _ts(iteration[2])
    t_first, t_last = _ts(first), _ts(last)
    return LoopRun(
        wall_s=ran.wall_s,
        iteration_s=(it_end - it_start).total_seconds(),
        before_tests_s=(t_first - it_start).total_seconds(),
        test_phase_s=(t_last - t_first).total_seconds(),
        after_tests_s=(it_end - t_last).total_seconds(),
        counts=counts,
        loop_peak_kb=ran.loop_peak_kb,
        tree_peak_kb=ran.tree_peak_kb,
        own_cpu_s=ran.own_cpu_s,
        tree_cpu_s=ran.tree_cpu_s,
    )


def loop_run(project: Path, state: Path, workers: int) -> LoopRun:
    argv = [LOOP, "run", "--max-iterations", "1", "--workers", str(workers),
            "--state-dir", str(state)]
    # 0: target reached, 1: below target (the generated project has real failures).
    ran = check(run(argv, project, watch_memory=True), " ".join(argv), ok_codes=(0, 1))
    return read_store(state / "loop.db", ran)


# --- import time ------------------------------------------------------------------------------


def import_offenders(
    args: Sequence[str], cwd: Path, top: int
) -> tuple[float, float, list[tuple[str, float]]]:
    """What `python -X importtime ARGS` imports (ms): in all, in deployloop's own modules (self
    time), and the biggest outside packages imported by deployloop or at top level."""
    ran = run([PYTHON, "-X", "importtime", *args], cwd)
    entries: list[tuple[int, str, float, float]] = []  # level, name, self ms, cumulative ms
    for line in ran.output.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, cum_us, name = line.removeprefix("import time:").split("|", 2)
        name = name[1:]  # the separator's space; then two spaces a nesting level
        level = (len(name) - len(name.lstrip(" "))) // 2
        entries.append((level, name.strip(), float(self_us) / 1000, float(cum_us) / 1000))
    total = sum(cum for level, _, _, cum in entries if level == 0)
    own = sum(self_ms for _, name, self_ms, _ in entries if name.split(".")[0] == "deployloop")
    # -X importtime prints children before their parent: read it backwards to see parents first.
    direct: list[tuple[str, float]] = []
    stack: list[str] = []
    for level, name, _, cum in reversed(entries):
        del stack[level:]
        if name.split(".")[0] != "deployloop" and all(
            a.split(".")[0] == "deployloop" for a in stack
        ):  # imported by deployloop, or at top level (by the script, or late, by typer)
            direct.append((name, cum))
        stack.append(name)
    direct.sort(key=lambda r: r[1], reverse=True)
    return total, own, direct[:top]


# --- the benchmark ----------------------------------------------------------------------------


@dataclass
class Table:
    rows: list[str] = field(default_factory=list)

    def add(self, label: str, value: str, note: str = "") -> None:
        self.rows.append(f"  {label:<28}{value:>9}   {note}".rstrip())


def say(text: str) -> None:
    print(text, flush=True)


def verdict(ok: bool) -> str:
    return "ok" if ok else "over"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true",
                        help="fewer repetitions and a small project: a smoke run for CI")
    parser.add_argument("--reps", type=int, default=None,
                        help="repetitions of each test-phase run (default 3; --quick 1)")
    parser.add_argument("--startup-reps", type=int, default=None,
                        help="runs of each start-up command (default 10; --quick 3)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir, print its path")
    parser.add_argument("--pytest-addopts", default=None, metavar="OPTS",
                        help="PYTEST_ADDOPTS for every pytest run, plain and under loop alike,"
                        " e.g. '-p no:hypothesispytest'")
    parser.add_argument("--only", action="append", choices=SECTIONS, metavar="SECTION",
                        help="run only this section (repeatable): " + ", ".join(SECTIONS)
                        + "; core is start-up, test phase, memory and faults")
    args = parser.parse_args(argv)
    if args.pytest_addopts is not None:
        os.environ["PYTEST_ADDOPTS"] = args.pytest_addopts  # inherited by every child
    reps = args.reps or (1 if args.quick else 3)
    startup_reps = args.startup_reps or (3 if args.quick else 10)
    suites = QUICK_SUITES if args.quick else SUITES
    workers_list = (1,) if args.quick else (1, 2, 4)
    if not Path(LOOP).exists():
        sys.exit(f"bench: {LOOP} not found: run with the venv's python (.venv/bin/python)")

    tmp = Path(tempfile.mkdtemp(prefix="loop-bench-"))
    print(f"loop bench: python {sys.version.split()[0]}, {os.cpu_count()} cpus"
          f"{', quick' if args.quick else ''}; {reps} rep(s), start-up x{startup_reps}"
          + (f"; PYTEST_ADDOPTS={os.environ['PYTEST_ADDOPTS']!r}"
             if os.environ.get("PYTEST_ADDOPTS") else ""))
    try:
        with serve() as url:
            return _bench(tmp, url, suites, reps, startup_reps, workers_list, args.quick,
                          args.only or SECTIONS)
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


SECTIONS = ("core", "io", "failed-first", "history", "plan", "jobs")


def _bench(tmp: Path, url: str, suites: Sequence[tuple[str, int, int]], reps: int,
           startup_reps: int, workers_list: Sequence[int], quick: bool,
           sections: Sequence[str]) -> int:
    table = Table()
    if "core" in sections:
        _core(table, tmp, url, suites, reps, startup_reps, workers_list, quick)
    # The newer sections each stand alone: one that cannot measure says so in the summary
    # and the others still run (the exit code still says something could not be measured).
    failed = False
    more: list[tuple[str, Callable[[], None]]] = [
        ("io", lambda: _io_bound(tmp, table, quick, reps)),
        ("failed-first", lambda: _failed_first(tmp, table, quick)),
        ("history", lambda: _history(tmp, table, quick, startup_reps)),
        ("plan", lambda: _plan(tmp, table, quick, reps)),
        ("jobs", lambda: _jobs(tmp, table, quick, reps)),
    ]
    for name, section in more:
        if name not in sections:
            continue
        try:
            section()
        except BenchError as exc:
            failed = True
            say(f"  FAILED: {exc}")
            table.add(name, "failed", last_line(exc))

    print("\n[summary]")
    for row in table.rows:
        print(row)
    return 1 if failed else 0


def _core(table: Table, tmp: Path, url: str, suites: Sequence[tuple[str, int, int]], reps: int,
          startup_reps: int, workers_list: Sequence[int], quick: bool) -> None:
    # 1. start-up ------------------------------------------------------------------------------
    tiny = tmp / "tiny"
    make_project(tiny, [("Smoke", 1, 5)], url)
    check(run([LOOP, "run", "--max-iterations", "1"], tiny), "loop run (tiny)", ok_codes=(0, 1))
    say("\n[start-up]")
    for label, cmd in (("loop --help", ["--help"]), ("loop status", ["status"])):
        try:
            med, times, cpu = median_wall([LOOP, *cmd], tiny, startup_reps)
        except BenchError as exc:  # reported, and the rest still measured
            say(f"  {label:<14} FAILED: {exc}")
            table.add(label, "failed", last_line(exc))
            continue
        say(f"  {label:<14} median {med:.3f} s  (min {min(times):.3f}, max {max(times):.3f};"
            f" cpu {cpu:.3f} s)")
        table.add(label, f"{med:.2f} s",
                  f"target < {STARTUP_TARGET_S:.2f} s   {verdict(med < STARTUP_TARGET_S)}"
                  f"   (cpu {cpu:.2f} s)")
    med, _, _ = median_wall([PYTHON, "-c", "pass"], tiny, startup_reps)
    say(f"  {'python -c pass':<14} median {med:.3f} s  (interpreter alone, for scale)")
    (tmp / "empty").mkdir()
    med, _, _ = median_wall([PYTHON, "-m", "pytest", "-q", "-p", "no:cacheprovider", "empty"],
                            tmp, 1 if quick else startup_reps, ok_codes=(5,), warm_up=not quick)
    say(f"  {'pytest, no tests':<14} median {med:.3f} s  (what each pytest process costs here,"
        " plugins included)")
    if not quick and importlib.util.find_spec("hypothesis") is not None:
        med, _, _ = median_wall([PYTHON, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                 "-p", "no:hypothesispytest", "empty"], tmp, startup_reps,
                                ok_codes=(5,))
        say(f"  {'  without the hypothesis plugin':<14} median {med:.3f} s  (hypothesis is"
            " installed here; a test venv without it starts this fast)")
    for label, import_args in (("import deployloop.cli", ["-c", "import deployloop.cli"]),
                               ("loop status", [LOOP, "status"])):
        total_ms, own_ms, offenders = import_offenders(import_args, tiny, 6)
        say(f"  -X importtime, {label}: {total_ms:.0f} ms of imports ({own_ms:.0f} ms in"
            " deployloop's own modules); biggest other packages:")
        say("    " + ", ".join(f"{name} {cum_ms:.0f} ms" for name, cum_ms in offenders))

    # 2. test phase ----------------------------------------------------------------------------
    project = tmp / "project"
    files = make_project(project, suites, url)
    rel = [str(f.relative_to(project)) for f in files]
    env = dict(os.environ, BENCH_API_URL=url, PYTHONPATH=str(PLUGIN_DIR))
    plain = [PYTHON, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    # What loop runs with one worker: one process over every suite, with loop's own options.
    as_loop = [PYTHON, "-m", "pytest", *rel, "-p", "deployloop_plugin",
               f"--loop-reportlog={tmp / 'reportlog.jsonl'}",
               f"--junitxml={tmp / 'junit.xml'}", "--maxfail=0",
               "--continue-on-collection-errors", "--rootdir", str(project)]
    n_tests = sum(n for _, _, n in suites)
    say(f"\n[test phase] {len(suites)} suites, {n_tests} tests, "
        f"{SERVICE_DELAY_S * 1000:.0f} ms service latency x2 per test")
    check(run([*plain, *rel], project, env), "pytest warm-up", ok_codes=(0, 1))

    seq: list[float] = []
    one: list[Ran] = []
    loops: dict[int, list[LoopRun]] = {w: [] for w in workers_list}
    seq_counts: dict[str, int] = {}
    for rep in range(reps):
        # Interleaved, so a noisy moment hurts one repetition of each, not one side.
        counts: dict[str, int] = {}
        start = time.perf_counter()
        for path in rel:
            ran = check(run([*plain, path], project, env), f"pytest {path}", ok_codes=(0, 1))
            add_counts(counts, pytest_counts(ran.output))
        seq.append(time.perf_counter() - start)
        seq_counts = counts
        one.append(check(run(as_loop, project, env), "pytest (one process)", ok_codes=(0, 1)))
        for workers in workers_list:
            loops[workers].append(loop_run(project, tmp / f"state-w{workers}-{rep}", workers))
        say(f"  rep {rep + 1}: pytest seq {seq[-1]:.2f} s, one process {one[-1].wall_s:.2f} s; "
            + ", ".join(f"loop w={w} test {loops[w][-1].test_phase_s:.2f} s "
                        f"/ wall {loops[w][-1].wall_s:.2f} s" for w in workers_list))
    w1_runs = loops[workers_list[0]]
    say(f"  pytest counted {fmt_counts(seq_counts)}; "
        f"loop recorded {fmt_counts(w1_runs[-1].counts)}")

    base = statistics.median(seq)
    table.add("plain pytest (seq)", f"{base:.2f} s", f"{len(files)} processes, one per suite")
    floor = statistics.median(r.wall_s for r in one)
    floor_ratio = statistics.median(r.wall_s / s for r, s in zip(one, seq, strict=True))
    table.add("pytest 1 process, loop opts", f"{floor:.2f} s",
              f"ratio {floor_ratio:.2f}  (what w=1 runs, minus loop; info)")
    for workers in workers_list:
        runs = loops[workers]
        test_s = statistics.median(r.test_phase_s for r in runs)
        ratio = statistics.median(r.test_phase_s / s for r, s in zip(runs, seq, strict=True))
        note = f"ratio {ratio:.2f}"
        if workers == 1:
            note += (f"  target <= {TEST_PHASE_TARGET_RATIO:.2f}  "
                     f"{verdict(ratio <= TEST_PHASE_TARGET_RATIO)}")
        table.add(f"loop test phase w={workers}", f"{test_s:.2f} s", note)
    for workers in workers_list:
        runs = loops[workers]
        wall = statistics.median(r.wall_s for r in runs)
        wall_ratio = statistics.median(r.wall_s / s for r, s in zip(runs, seq, strict=True))
        table.add(f"loop run wall w={workers}", f"{wall:.2f} s",
                  f"ratio {wall_ratio:.2f}  (whole command; info)")

    say(f"\n[where a loop run's time goes, w={workers_list[0]}, medians]")
    phases: list[tuple[str, Callable[[LoopRun], float]]] = [
        ("process start-up + exit", lambda r: r.wall_s - r.iteration_s),
        ("plan + collect + deploy", lambda r: r.before_tests_s),
        ("test phase", lambda r: r.test_phase_s),
        ("analyze + report", lambda r: r.after_tests_s),
        ("whole command", lambda r: r.wall_s),
    ]
    for label, pick in phases:
        say(f"  {label:<34}{statistics.median(pick(r) for r in w1_runs):6.2f} s")
    extra = statistics.median(
        r.test_phase_s - o.wall_s for r, o in zip(w1_runs, one, strict=True))
    say(f"  {'test phase - pytest 1 process':<34}{extra:6.2f} s  (loop's own cost while "
        "tests run, same rep)")
    own = [r.own_cpu_s for r in w1_runs if r.own_cpu_s is not None]
    if own:
        say(f"  {'CPU: loop process itself':<34}{statistics.median(own):6.2f} s")
    say(f"  {'CPU: loop + its pytest processes':<34}"
        f"{statistics.median(r.tree_cpu_s for r in w1_runs):6.2f} s")
    say(f"  {'CPU: pytest 1 process, loop opts':<34}"
        f"{statistics.median(r.tree_cpu_s for r in one):6.2f} s")

    # 3. memory --------------------------------------------------------------------------------
    peaks = [r.loop_peak_kb for r in w1_runs if r.loop_peak_kb]
    trees = [r.tree_peak_kb for r in w1_runs if r.tree_peak_kb]
    if peaks:
        table.add("loop peak RSS (w=1)", f"{max(peaks) / 1024:.0f} MB",
                  f"loop process itself; largest child or loop {max(trees) / 1024:.0f} MB"
                  if trees else "loop process itself")

    # status on the big state, for information (in --quick the state is no bigger than tiny's)
    if not quick:
        state = tmp / f"state-w{workers_list[0]}-{reps - 1}"
        status_argv = [LOOP, "status", "--state-dir", str(state)]
        try:
            med, _, _ = median_wall(status_argv, project, max(3, startup_reps // 2))
            table.add(f"loop status ({n_tests} tests)", f"{med:.2f} s", "info")
        except BenchError as exc:
            table.add(f"loop status ({n_tests} tests)", "failed", last_line(exc))

    _faults(tmp, table, quick)


FAULT_TESTS = {
    "quiet": 'def test_it():\n    print("x")\n    assert False, "short"\n',
    "noisy": 'def test_it():\n    print("x" * {size})\n    assert False, "short"\n',
    "long message": 'def test_it():\n    raise AssertionError("y" * {size})\n',
}


def _faults(tmp: Path, table: Table, quick: bool) -> None:
    """What a test that prints a lot, or fails with a huge message, costs loop: its own peak
    memory, and `loop status` afterwards (the message goes through the analysis)."""
    printed = (20 if quick else 200) * 1024 * 1024
    message = 10 * 1024 * 1024
    say(f"\n[faults] one failing test: quiet; printing {printed >> 20} MB;"
        f" failing with a {message >> 20} MB message")
    peak: dict[str, float] = {}
    status: dict[str, float] = {}
    for name, source in FAULT_TESTS.items():
        root = tmp / f"fault-{_slug(name)}"
        (root / "configs").mkdir(parents=True)
        (root / "tests").mkdir()
        size = printed if name == "noisy" else message
        (root / "tests" / "test_fault.py").write_text(source.format(size=size))
        (root / "configs" / "local.toml").write_text(
            '[loop]\nmax_iterations = 1\n\n[deploy]\ntarget = "none"\n\n'
            '[tests]\nworkers = 1\n\n[[tests.suites]]\nname = "Fault"\npaths = ["tests"]\n'
        )
        ran = check(run([LOOP, "run"], root, watch_memory=True), f"loop run ({name})", (1,))
        peak[name] = (ran.loop_peak_kb or 0) / 1024
        status[name], _, _ = median_wall([LOOP, "status"], root, 3)
        say(f"  {name:<13} loop run {ran.wall_s:.2f} s, loop's peak RSS {peak[name]:.0f} MB;"
            f" loop status {status[name]:.2f} s")
    table.add(f"loop peak RSS, {printed >> 20} MB printed", f"{peak['noisy']:.0f} MB",
              f"quiet test {peak['quiet']:.0f} MB; ratio {peak['noisy'] / peak['quiet']:.2f}")
    table.add(f"loop status, {message >> 20} MB message", f"{status['long message']:.2f} s",
              f"short message {status['quiet']:.2f} s;"
              f" ratio {status['long message'] / status['quiet']:.2f}")


# --- an I/O-bound project ---------------------------------------------------------------------

IO_TESTS, IO_SUITES, IO_WORKERS = 466, 24, 8
IO_SUM_S = 67.0
IO_LONG_S = (2.5, 2.2, 1.9)  # the few long tests a real e2e suite has; the first is the longest
IO_BOUND_TARGET, IO_BOUND_AIM, IO_XDIST_TARGET = 1.25, 1.10, 1.00

IO_FILE = '''\
"""{name}: generated I/O-bound suite; each test sleeps as if waiting on the network."""

import time

import pytest

WAITS = {waits!r}


@pytest.mark.parametrize("case", range(len(WAITS)))
def test_call(case):
    time.sleep(WAITS[case])
'''


def io_durations(count: int, total_s: float, long_s: Sequence[float], seed: int = 466
                 ) -> list[float]:
    """`count` lognormal durations (seeded) summing to about `total_s`: the `long_s` ones,
    and the rest scaled to fill the sum, none longer than 80 % of the shortest long one."""
    rng = random.Random(seed)
    rest = [rng.lognormvariate(0.0, 1.0) for _ in range(count - len(long_s))]
    cap = min(long_s) * 0.8
    for _ in range(5):  # scale, clip the tail, scale again: settles in a few rounds
        scale = (total_s - sum(long_s)) / sum(rest)
        rest = [min(cap, d * scale) for d in rest]
    durations = [round(d, 3) for d in [*long_s, *rest]]
    rng.shuffle(durations)
    return durations


def make_io_project(root: Path, durations: Sequence[float], suites: int) -> list[Path]:
    """Suites of uneven sizes (as real ones are), the waits dealt to them in order."""
    tests = root / "tests"
    tests.mkdir(parents=True)
    (root / "configs").mkdir()
    (root / "pytest.ini").write_text("[pytest]\n")
    rng = random.Random(suites)
    weights = [rng.uniform(0.4, 1.6) for _ in range(suites)]
    sizes = [max(1, round(len(durations) * w / sum(weights))) for w in weights]
    sizes[-1] = len(durations) - sum(sizes[:-1])
    files: list[Path] = []
    tables = []
    start = 0
    for i, size in enumerate(sizes):
        path = tests / f"test_io_{i:02d}.py"
        waits = list(durations[start:start + size])
        path.write_text(IO_FILE.format(name=f"IO {i:02d}", waits=waits))
        start += size
        files.append(path)
        tables.append(f'[[tests.suites]]\nname = "IO {i:02d}"\n'
                      f'paths = ["{path.relative_to(root).as_posix()}"]\n'
                      f"priority = {1 + i % 3}\n")
    (root / "configs" / "local.toml").write_text(
        '[loop]\nmax_iterations = 1\nstall_iterations = 0\n\n[deploy]\ntarget = "none"\n\n'
        f"[tests]\nworkers = {IO_WORKERS}\nsuite_timeout_s = 600\n\n" + "\n".join(tables)
    )
    return files


def _io_bound(tmp: Path, table: Table, quick: bool, reps: int) -> None:
    """The whole second `loop run` (the first records durations) against pytest-xdist over the
    same files and against the lower bound no scheduler can beat: max(longest, sum / workers)."""
    # --quick: a quarter of the tests and suites, each waiting a quarter as long (a smoke
    # run: start-up costs swamp its ratios).
    scale = 0.25 if quick else 1.0
    n_tests, n_suites = round(IO_TESTS * scale), round(IO_SUITES * scale)
    durations = io_durations(n_tests, IO_SUM_S * scale * scale, [d * scale for d in IO_LONG_S])
    bound = max(max(durations), sum(durations) / IO_WORKERS)
    project = tmp / "io"
    files = make_io_project(project, durations, n_suites)
    rel = [str(f.relative_to(project)) for f in files]
    reps = max(1, reps // 2)  # each repetition is two long runs: 1 by default
    say(f"\n[I/O-bound] {n_tests} sleeping tests in {n_suites} suites, workers = {IO_WORKERS}:"
        f" serial sum {sum(durations):.1f} s, longest {max(durations):.2f} s;"
        f" lower bound max(longest, sum/{IO_WORKERS}) = {bound:.2f} s")
    state = tmp / "state-io"
    argv = [LOOP, "run", "--max-iterations", "1", "--state-dir", str(state)]
    first = check(run(argv, project), "loop run (I/O, first)", ok_codes=(0, 1))
    say(f"  first loop run (records durations, not measured): {first.wall_s:.2f} s")
    # Not in --quick: 8 pytest processes starting at once are most of a smoke run's time.
    has_xdist = not quick and importlib.util.find_spec("xdist") is not None
    xdist_argv = [PYTHON, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                  "-n", str(IO_WORKERS), "--dist", "worksteal", *rel]
    loops: list[LoopRun] = []
    xdist: list[Ran] = []
    for rep in range(reps):
        ran = check(run(argv, project), "loop run (I/O)", ok_codes=(0, 1))
        loops.append(read_store(state / "loop.db", ran))
        got = loops[-1]
        line = (f"  rep {rep + 1}: loop run {got.wall_s:.2f} s (start-up + exit"
                f" {got.wall_s - got.iteration_s:.2f}, plan + collect {got.before_tests_s:.2f},"
                f" test phase {got.test_phase_s:.2f}, report {got.after_tests_s:.2f})")
        if has_xdist:
            xdist.append(check(run(xdist_argv, project), "pytest -n (I/O)", ok_codes=(0, 1)))
            line += f", pytest -n {IO_WORKERS} --dist worksteal {xdist[-1].wall_s:.2f} s"
        say(line)
    say(f"  loop recorded {fmt_counts(loops[-1].counts)}"
        + (f"; xdist counted {fmt_counts(pytest_counts(xdist[-1].output))}" if xdist else ""))
    wall = statistics.median(r.wall_s for r in loops)
    phase = statistics.median(r.test_phase_s for r in loops)
    to_bound = wall / bound
    table.add("I/O: lower bound", f"{bound:.2f} s",
              f"max(longest {max(durations):.2f} s, sum {sum(durations):.1f} s / {IO_WORKERS})")
    table.add("I/O: loop run wall (2nd run)", f"{wall:.2f} s",
              f"loop/bound {to_bound:.2f}  target <= {IO_BOUND_TARGET:.2f}"
              f" (aim {IO_BOUND_AIM:.2f})  {verdict(to_bound <= IO_BOUND_TARGET)}")
    table.add("I/O: loop test phase", f"{phase:.2f} s",
              f"phase/bound {phase / bound:.2f}  (info)")
    if xdist:
        to_xdist = statistics.median(
            r.wall_s / x.wall_s for r, x in zip(loops, xdist, strict=True))
        table.add(f"I/O: pytest -n {IO_WORKERS} worksteal",
                  f"{statistics.median(x.wall_s for x in xdist):.2f} s",
                  f"loop/xdist {to_xdist:.2f}  target < {IO_XDIST_TARGET:.2f}"
                  f"  {verdict(to_xdist < IO_XDIST_TARGET)}")
    else:
        why = "not in --quick" if quick else "pytest-xdist missing (pip install -e '.[dev]')"
        say(f"  skipped pytest -n: {why}")
        table.add(f"I/O: pytest -n {IO_WORKERS} worksteal", "skipped", why)


# --- failed first -----------------------------------------------------------------------------

FAILED_FIRST_TARGET = 0.20
FAIL_FLAG = "fail-flag"  # while this file exists in the project, the chosen tests fail

FF_FILE = '''\
"""Generated: {count} fast tests; {failing} fail while the project's {flag} file exists."""

from pathlib import Path

import pytest

FAILING = {failing!r}
FLAG = Path(__file__).resolve().parents[2] / "{flag}"


@pytest.mark.parametrize("case", range({count}))
def test_fast(case):
    assert not (case in FAILING and FLAG.exists()), "broken until the flag file goes"
'''


def make_failed_first_project(root: Path, suites: int, files_per_suite: int, per_file: int
                              ) -> None:
    """Folder suites, priorities 1..3 in order; the two failing tests sit where a run in
    config order reaches them last: deep in the last suite of the lowest priority."""
    (root / "configs").mkdir(parents=True)
    (root / "pytest.ini").write_text("[pytest]\n")
    tables = []
    for s in range(suites):
        folder = root / "tests" / f"suite_{s:02d}"
        folder.mkdir(parents=True)
        for f in range(files_per_suite):
            failing: list[int] = []
            if s == suites - 1 and f == files_per_suite - 1:
                failing = [per_file // 2, per_file - 1]
            # Names unique across folders: the tests folders have no __init__.py.
            (folder / f"test_ff_{s:02d}_{f:02d}.py").write_text(
                FF_FILE.format(count=per_file, failing=failing, flag=FAIL_FLAG))
        tables.append(f'[[tests.suites]]\nname = "Suite {s:02d}"\n'
                      f'paths = ["tests/suite_{s:02d}"]\npriority = {1 + s * 3 // suites}\n')
    (root / "configs" / "local.toml").write_text(
        '[loop]\nmax_iterations = 1\nstall_iterations = 0\n\n[deploy]\ntarget = "none"\n\n'
        "[tests]\nworkers = 1\nsuite_timeout_s = 600\n\n" + "\n".join(tables)
    )


@dataclass
class FailedFirst:
    share: float  # when the last of them was done, as a share of the test phase
    test_phase_s: float
    done_after: int  # tests of the iteration finished before the last of them
    total: int


def failed_first_share(db: Path) -> FailedFirst:
    """In the latest iteration, when the tests that failed in the one before were done:
    their last finished_at, from the first suite's start, over the test phase (first suite
    started to last suite finished)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        before, latest = sorted(row[0] for row in conn.execute(
            "SELECT id FROM iterations ORDER BY id DESC LIMIT 2"))
        failed = [row[0] for row in conn.execute(
            "SELECT nodeid FROM tests WHERE iteration_id = ? AND outcome IN ('failed', 'error')",
            (before,))]
        first, last = conn.execute(
            "SELECT MIN(started_at), MAX(finished_at) FROM suites"
            " WHERE iteration_id = ? AND started_at IS NOT NULL", (latest,)).fetchone()
        finished = conn.execute(
            "SELECT nodeid, finished_at FROM tests WHERE iteration_id = ?"
            " AND finished_at IS NOT NULL ORDER BY finished_at", (latest,)).fetchall()
    finally:
        conn.close()
    done = {nodeid: (i, at) for i, (nodeid, at) in enumerate(finished)}
    if not failed or not (first and last) or any(nodeid not in done for nodeid in failed):
        raise BenchError(f"{db}: no failures in iteration id {before}, or they did not run again")
    rank, at = max(done[nodeid] for nodeid in failed)
    phase = (_ts(last) - _ts(first)).total_seconds()
    return FailedFirst((_ts(at) - _ts(first)).total_seconds() / phase, phase, rank,
                       len(finished))


def _failed_first(tmp: Path, table: Table, quick: bool) -> None:
    """Iteration 1 has 2 failures; the fix lands (the flag file goes); iteration 2 should
    tell at once whether it worked: the tests that failed should be among the first done."""
    suites, files_per_suite, per_file = (6, 2, 50) if quick else (20, 5, 100)
    total = suites * files_per_suite * per_file
    say(f"\n[failed first] {total:,} fast tests in {suites} suites; 2 fail in iteration 1,"
        " deep in the last suite; when are they done in iteration 2?")
    # Iteration 1 runs once; its state is copied, so that each worker count's iteration 2
    # starts from the same history (a 10,000-test run costs half a minute here).
    project = tmp / "failed-first"
    make_failed_first_project(project, suites, files_per_suite, per_file)
    first_state = tmp / "state-ff"
    (project / FAIL_FLAG).touch()
    first = check(run([LOOP, "run", "--max-iterations", "1", "--workers", "1",
                       "--state-dir", str(first_state)], project),
                  "loop run (failed first, iteration 1)", ok_codes=(1,))
    (project / FAIL_FLAG).unlink()  # the fix
    say(f"  iteration 1 (w=1, not measured): {first.wall_s:.2f} s")
    for workers in (1, 4):
        state = tmp / f"state-ff-w{workers}"
        shutil.copytree(first_state, state)
        second = check(run([LOOP, "run", "--max-iterations", "1", "--workers", str(workers),
                            "--state-dir", str(state)], project),
                       f"loop run (failed first w={workers}, iteration 2)", ok_codes=(0, 1))
        got = failed_first_share(state / "loop.db")
        say(f"  w={workers}: done at {got.share:.0%} of a {got.test_phase_s:.2f} s test phase"
            f" (after {got.done_after:,} of {got.total:,} tests); run {second.wall_s:.2f} s")
        table.add(f"failed first w={workers}", f"{got.share:.0%}",
                  f"of the test phase  target <= {FAILED_FIRST_TARGET:.0%}"
                  f"  {verdict(got.share <= FAILED_FIRST_TARGET)}")


# --- reading a long history -------------------------------------------------------------------

HISTORY_FIXTURE = Path(__file__).resolve().with_name("history_fixture.py")
HISTORY_TARGETS: dict[str, float | None] = {"status": 0.30, "summarize": 0.50, "history": None}


def _history(tmp: Path, table: Table, quick: bool, startup_reps: int) -> None:
    """`loop status`, `summarize`, `history` over a long history written by
    bench/history_fixture.py (a real 20 x 10,000 run would take hours)."""
    iterations, tests = (3, 1_000) if quick else (20, 10_000)
    say(f"\n[history] {iterations} iterations x {tests:,} tests (bench/history_fixture.py)")
    if not HISTORY_FIXTURE.exists():
        say("  skipped: bench/history_fixture.py missing")
        table.add("history", "skipped", "bench/history_fixture.py missing")
        return
    root = tmp / "history"
    root.mkdir()
    made = check(run([PYTHON, str(HISTORY_FIXTURE), str(root / ".loop"), "--iterations",
                      str(iterations), "--tests", str(tests), "--env", "local"], root),
                 "history_fixture.py")
    say(f"  fixture written in {made.wall_s:.1f} s")
    # What any `loop` read command pays before it reads anything: Python, typer, rich and
    # loop's records imported. Measured beside each command, as it moves with the machine's
    # load as much as they do; "own" is what a command adds to it.
    floor_argv = [PYTHON, "-c", FLOOR_IMPORTS]
    for command, target in HISTORY_TARGETS.items():
        check(run([LOOP, command], root), f"loop {command}")  # warm-up: page cache, .pyc
        walls, floors = [], []
        for _ in range(startup_reps):
            walls.append(check(run([LOOP, command], root), f"loop {command}").wall_s)
            floors.append(check(run(floor_argv, root), "imports floor").wall_s)
        med = statistics.median(walls)
        own = statistics.median(w - f for w, f in zip(walls, floors, strict=True))
        say(f"  loop {command:<10} median {med:.3f} s  (min {min(walls):.3f},"
            f" max {max(walls):.3f}); imports floor {statistics.median(floors):.3f} s,"
            f" loop's own {own:.3f} s")
        note = (f"target < {target:.2f} s   {verdict(med < target)}" if target is not None
                else "info")
        note += f"  (floor {statistics.median(floors):.2f} s + own {own:.2f} s)"
        table.add(f"loop {command} ({iterations}x{tests // 1000}k)", f"{med:.2f} s", note)


FLOOR_IMPORTS = "import typer, rich.console, rich.table, sqlite3, deployloop.models"


# --- plan -------------------------------------------------------------------------------------

PLAN_TARGET_RATIO = 1.10


def _plan(tmp: Path, table: Table, quick: bool, reps: int) -> None:
    """`loop plan` against `pytest --collect-only` over the same tests: plan is a collection
    plus loop's start-up and the matching of tests to suites."""
    files = 20 if quick else 200
    project = tmp / "plan"
    make_plan_project(project, files)
    n_suites = (project / "configs" / "local.toml").read_text().count("[[tests.suites]]")
    say(f"\n[plan] {files * 50:,} tests in {files} files, {n_suites} suites")
    collect = [PYTHON, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "tests"]
    plan = [LOOP, "plan", "--env", "local"]
    check(run(collect, project), "pytest --collect-only (warm-up)")
    plans: list[Ran] = []
    collects: list[Ran] = []
    reps = max(1, reps - 1)  # each repetition collects 10,000 tests twice
    for rep in range(reps):
        collects.append(check(run(collect, project), "pytest --collect-only"))
        plans.append(check(run(plan, project), "loop plan"))
        say(f"  rep {rep + 1}: pytest --collect-only {collects[-1].wall_s:.2f} s"
            f" (cpu {collects[-1].tree_cpu_s:.2f} s), loop plan {plans[-1].wall_s:.2f} s"
            f" (cpu {plans[-1].tree_cpu_s:.2f} s)")
    ratio = statistics.median(p.wall_s / c.wall_s for p, c in zip(plans, collects, strict=True))
    cpu_ratio = statistics.median(
        p.tree_cpu_s / c.tree_cpu_s for p, c in zip(plans, collects, strict=True))
    table.add(f"loop plan ({files * 50 // 1000}k tests)",
              f"{statistics.median(p.wall_s for p in plans):.2f} s",
              f"collect-only {statistics.median(c.wall_s for c in collects):.2f} s;"
              f" ratio {ratio:.2f}  target <= {PLAN_TARGET_RATIO:.2f}"
              f"  {verdict(ratio <= PLAN_TARGET_RATIO)}  (cpu ratio {cpu_ratio:.2f})")



# --- Cloud Run Jobs, emulated --------------------------------------------------------------------

JOBS_TASKS = 4
JOBS_CONFIG = """
[loop]
max_iterations = 1

[deploy]
target = "none"
project = "bench"
region = "europe-west1"

[tests]
executor = "{executor}"
workers = {tasks}

[tests.cloudrun_jobs]
image = "europe-west1-docker.pkg.dev/bench/e2e/tests:latest"
tasks = {tasks}
results_bucket = "gs://bench-results"

[[tests.suites]]
name = "first"
paths = ["tests/test_a.py", "tests/test_b.py"]

[[tests.suites]]
name = "second"
paths = ["tests/test_c.py", "tests/test_d.py"]
priority = 2
"""
JOBS_TESTS = """
import time
import pytest

@pytest.mark.parametrize("i", range({count}))
def test_case(i):
    time.sleep({sleep})
    assert i % 19 != 7, "fails on purpose"
    if i % 23 == 5:
        pytest.skip("not here")
"""


def _jobs_figures(project: Path, state: Path) -> dict[str, object]:
    ran = check(run([LOOP, "summarize", "--format", "json", "--state-dir", str(state)], project),
                "loop summarize")
    summary = json.loads(ran.output)
    keep = ("collected", "executed", "passed", "failed", "errors", "skipped", "pass_rate")
    return {
        "totals": {k: summary["totals"][k] for k in keep},
        "suites": [{k: s[k] for k in ("name", "status", *keep)} for s in summary["suites"]],
    }


def _jobs(tmp: Path, table: Table, quick: bool, reps: int) -> None:
    """The same project on the local executor (`workers = 4`) and as a Cloud Run Jobs
    execution of 4 tasks, emulated here: the fake Admin API runs each task as a local
    `python -m deployloop.task`, results go through a real Cloud Storage emulator. Same
    figures expected; the time ratio is what the bucket round trips cost (a 2 s upload
    cadence) against pytest workers forked from one collection."""
    sys.path.insert(0, str(ROOT / "tests"))
    from cloudrun_fake import FakeCloudRun  # the tests' fakes: bench runs from a checkout
    from fake_containers import Containers
    from storage_emulator import StorageEmulator

    per_file = 25 if quick else 50
    sleep = 0.02 if quick else 0.05
    projects = {}
    for executor in ("local", "cloudrun-jobs"):
        root = tmp / f"jobs-{executor}"
        (root / "configs").mkdir(parents=True)
        (root / "configs" / "local.toml").write_text(
            JOBS_CONFIG.format(executor=executor, tasks=JOBS_TASKS))
        for name in "abcd":
            (root / "tests").mkdir(exist_ok=True)
            (root / "tests" / f"test_{name}.py").write_text(
                JOBS_TESTS.format(count=per_file, sleep=sleep))
        projects[executor] = root
    total = 4 * per_file
    say(f"\n[Cloud Run Jobs, emulated] {total} tests sleeping {sleep} s each"
        f" (serial sum {total * sleep:.0f} s): local executor, workers = {JOBS_TASKS},"
        f" against {JOBS_TASKS} tasks")
    walls: dict[str, list[float]] = {"local": [], "cloudrun-jobs": []}
    figures: dict[str, dict[str, object]] = {}
    containers = Containers({"e2e/tests": ["{python}", "-m", "deployloop.task"]},
                            tmp / "jobs-fake-logs", workdir=projects["cloudrun-jobs"])
    with StorageEmulator(tmp / "jobs-storage.log", buckets=("bench-results",)) as storage, \
            FakeCloudRun(containers) as fake:
        task_env = {"STORAGE_EMULATOR_HOST": storage.host, "NO_GCE_CHECK": "true"}
        if os.environ.get("PYTEST_ADDOPTS"):
            task_env["PYTEST_ADDOPTS"] = os.environ["PYTEST_ADDOPTS"]
        fake.jobs.task_env.update(task_env)
        env = {**os.environ, "CLOUDRUN_EMULATOR_HOST": fake.address,
               "STORAGE_EMULATOR_HOST": storage.host, "GRPC_VERBOSITY": "ERROR",
               "NO_GCE_CHECK": "true"}
        for rep in range(reps):
            line = f"  rep {rep + 1}:"
            for executor, root in projects.items():
                state = tmp / f"state-jobs-{executor}-{rep}"
                argv = [LOOP, "run", "--state-dir", str(state)]
                ran = check(run(argv, root, env=env), f"loop run ({executor})", ok_codes=(1,))
                walls[executor].append(ran.wall_s)
                figures[executor] = _jobs_figures(root, state)
                line += f" {executor} {ran.wall_s:.2f} s;"
            say(line.rstrip(";"))
    same = figures["local"] == figures["cloudrun-jobs"]
    say(f"  figures: {'the same' if same else 'DIFFERENT'}: {figures['cloudrun-jobs']['totals']}")
    if not same:
        say(f"  local: {figures['local']}")
    local = statistics.median(walls["local"])
    jobs = statistics.median(walls["cloudrun-jobs"])
    table.add("jobs: local executor w=4", f"{local:.2f} s", "whole loop run")
    table.add(f"jobs: {JOBS_TASKS} tasks, emulated", f"{jobs:.2f} s",
              f"jobs/local {jobs / local:.2f}; figures {'same' if same else 'DIFFERENT'}")
    if not same:
        raise BenchError("the jobs executor's figures differ from the local executor's")


if __name__ == "__main__":
    raise SystemExit(main())
