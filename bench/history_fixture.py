"""Fill a state dir with a long history, straight through the Store, for timing the read side.

    .venv/bin/python bench/history_fixture.py STATE_DIR --iterations 20 --tests 10000 --env local

`loop status`, `loop summarize` and `loop history` cost what the history they read costs; a
real `loop run` of 20 iterations x 10,000 tests would take hours, so this writes what such a
run records, through the same public Store methods the run uses (start_iteration, record_plan,
record_test_files, record_results in small batches as they stream, record_attempt for reruns,
set_suite_status, finish_iteration). The mix is a real one's: most tests pass, about 1 % fail
(some broken for good, some now and then), a few are flaky (pass on rerun, or pass and fail
on the same code), a few error with long tracebacks, ~1 % skip, and some tests come and go
between iterations. It is seeded: the same arguments give the same history.

It also writes `STATE_DIR/../configs/<env>.toml` (a config with the same suites, so the report
commands find known issues and categories as they would) unless --no-config, and raw pytest
files per iteration (reportlog/events JSON lines, JUnit XML, a log: about the size a real run
writes) unless --no-raw. Run the commands from STATE_DIR's parent, or pass --state-dir and
--config-dir.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path

from deployloop.layout import StateLayout
from deployloop.models import (
    InventoryItem,
    IterationStatus,
    Outcome,
    SuiteRecord,
    SuiteStatus,
    TestResult,
)
from deployloop.store import Store

SUITES = 12  # suites per env; priorities 1..3
TESTS_PER_FILE = 50
BATCH = 100  # results per record_results call, about what the runner's stream gives at once
BROKEN_SHARE = 0.005  # fail in every iteration until "fixed"
RANDOM_FAIL_SHARE = 0.005  # fail once, now and then
FLAKY_SHARE = 0.003  # fail, then pass on rerun
ERROR_SHARE = 0.001  # error with a long traceback
SKIP_SHARE = 0.01
CHURN_SHARE = 0.002  # tests added and removed per iteration

_MESSAGES = (
    "AssertionError: expected 200, got 500",
    "AssertionError: assert 403 == 200",
    "httpx.ReadTimeout: timed out after 30.0 s",
    "KeyError: 'order_id'",
    "AssertionError: expected status 'paid', got 'pending' for order {n}",
)


@dataclass
class Test:
    nodeid: str
    suite: str
    file: str
    duration: float
    broken_until: int = 0  # fails in every iteration before this one
    flaky: bool = False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("state_dir", type=Path)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--tests", type=int, default=10_000)
    parser.add_argument("--env", default="local")
    parser.add_argument("--seed", type=int, default=9)
    parser.add_argument("--config-dir", type=Path, help="default: STATE_DIR/../configs")
    parser.add_argument("--no-config", action="store_true", help="write no <env>.toml")
    parser.add_argument("--no-raw", action="store_true", help="write no raw pytest files")
    args = parser.parse_args(argv)
    started = time.monotonic()
    layout = StateLayout(args.state_dir)
    rng = random.Random(args.seed)
    tests = _inventory(args.tests, rng)
    store = Store.open(layout.db)
    try:
        for number in range(1, args.iterations + 1):
            if number > 1:
                tests = _churn(tests, rng, number)
            _iteration(store, layout, args.env, number, tests, rng, raw=not args.no_raw)
    finally:
        store.close()
    if not args.no_config:
        config_dir = args.config_dir or args.state_dir.resolve().parent / "configs"
        _write_config(config_dir, args.env)
    print(
        f"{args.state_dir}: {args.iterations} iterations x ~{args.tests} tests of env"
        f" {args.env!r} in {time.monotonic() - started:.1f} s",
        file=sys.stderr,
    )
    return 0


def _suite_name(index: int) -> str:
    return f"Suite {index:02d}"


def _inventory(count: int, rng: random.Random) -> list[Test]:
    tests = []
    for i in range(count):
        file_index = i // TESTS_PER_FILE
        suite = _suite_name(file_index % SUITES)
        file = f"tests/e2e/test_area{file_index:03d}.py"
        tests.append(_new_test(f"{file}::test_case_{i:05d}", suite, file, rng))
    return tests


def _new_test(nodeid: str, suite: str, file: str, rng: random.Random) -> Test:
    test = Test(nodeid, suite, file, duration=rng.lognormvariate(-1.5, 1.0))
    draw = rng.random()
    if draw < BROKEN_SHARE:
        test.broken_until = rng.randint(2, 40)  # some stay broken past the last iteration
    elif draw < BROKEN_SHARE + FLAKY_SHARE:
        test.flaky = True
    return test


def _churn(tests: list[Test], rng: random.Random, number: int) -> list[Test]:
    """A few tests removed, a few added (in existing files, as a real suite grows)."""
    changes = max(1, int(len(tests) * CHURN_SHARE))
    kept = list(tests)
    for _ in range(changes):
        kept.pop(rng.randrange(len(kept)))
    for i in range(changes):
        model = rng.choice(kept)
        nodeid = f"{model.file}::test_added_{number:03d}_{i:03d}"
        kept.append(_new_test(nodeid, model.suite, model.file, rng))
    return kept


def _outcome(test: Test, number: int, rng: random.Random) -> tuple[Outcome, str | None, str | None]:
    """(outcome, message, longrepr) of a first attempt."""
    if number < test.broken_until:
        message = _MESSAGES[len(test.nodeid) % 2]
        return Outcome.FAILED, message, _traceback(test, message, lines=20)
    draw = rng.random()
    if test.flaky and draw < 0.4:
        message = _MESSAGES[2]
        return Outcome.FAILED, message, _traceback(test, message, lines=20)
    if draw < RANDOM_FAIL_SHARE:
        message = _MESSAGES[3 + rng.randrange(2)].format(n=rng.randrange(10_000))
        return Outcome.FAILED, message, _traceback(test, message, lines=20)
    if draw < RANDOM_FAIL_SHARE + ERROR_SHARE:
        message = "RuntimeError: fixture 'order' failed: " + "x" * 300
        return Outcome.ERROR, message, _traceback(test, message, lines=400)
    if draw < RANDOM_FAIL_SHARE + ERROR_SHARE + SKIP_SHARE:
        return Outcome.SKIPPED, "Skipped: needs the payments sandbox", None
    return Outcome.PASSED, None, None


def _traceback(test: Test, message: str, lines: int) -> str:
    frames = [
        f'  File "{test.file}", line {10 + i}, in helper_{i}\n    value = call_{i}(payload)'
        for i in range(lines)
    ]
    return "Traceback (most recent call last):\n" + "\n".join(frames) + f"\n{message}"


def _iteration(
    store: Store,
    layout: StateLayout,
    env: str,
    number: int,
    tests: list[Test],
    rng: random.Random,
    *,
    raw: bool,
) -> None:
    # Every fifth iteration runs the code of the one before again (the fix step changed
    # nothing): what flaky detection compares across iterations.
    code = f"{number - 1 if number % 5 == 0 else number:040x}"
    record = store.start_iteration(env, code, 100.0, 4, code_key=f"{code}|rev")
    suites = sorted({t.suite for t in tests})
    priority = {name: 1 + i % 3 for i, name in enumerate(suites)}
    store.record_plan(
        record.id,
        [SuiteRecord(name, priority[name], True, SuiteStatus.PENDING) for name in suites],
        [InventoryItem(t.suite, t.nodeid, t.file) for t in tests],
    )
    files = sorted({t.file for t in tests})
    # A test file edited now and then: file hashes change between some iterations.
    store.record_test_files(
        record.id,
        {f: sha256(f"{f}:{number // 3 if i % 7 == 0 else 0}".encode()).hexdigest()
         for i, f in enumerate(files)},
    )
    results: dict[str, list[TestResult]] = {name: [] for name in suites}
    reruns: list[TestResult] = []
    for test in tests:
        outcome, message, longrepr = _outcome(test, number, rng)
        duration = test.duration * rng.uniform(0.8, 1.25)
        result = TestResult(test.nodeid, test.suite, outcome, duration, message, longrepr)
        results[test.suite].append(result)
        if outcome in (Outcome.FAILED, Outcome.ERROR):
            # The runner reruns failures once: a flaky test passes, a broken one fails again.
            again = Outcome.PASSED if test.flaky else outcome
            reruns.append(TestResult(test.nodeid, test.suite, again, duration, message))
    for name in suites:
        store.set_suite_status(record.id, name, SuiteStatus.RUNNING, started=True)
        for batch in _batches(results[name]):
            store.record_results(record.id, batch)
        failed = any(r.outcome in (Outcome.FAILED, Outcome.ERROR) for r in results[name])
        store.set_suite_status(
            record.id, name, SuiteStatus.FAILED if failed else SuiteStatus.PASSED, finished=True
        )
        if raw:
            _write_raw(layout, env, number, name, results[name])
    for rerun in reruns:
        store.record_attempt(record.id, 2, rerun)
    failing = any(r.outcome in (Outcome.FAILED, Outcome.ERROR) for s in results.values() for r in s)
    store.finish_iteration(
        record.id, IterationStatus.FAILED if failing else IterationStatus.PASSED
    )


def _batches(results: list[TestResult]) -> Iterator[list[TestResult]]:
    for start in range(0, len(results), BATCH):
        yield results[start : start + BATCH]


def _write_raw(
    layout: StateLayout, env: str, number: int, suite: str, results: list[TestResult]
) -> None:
    """What one pytest process leaves in the iteration's pytest dir, at about its size."""
    out = layout.pytest_dir(env, number)
    out.mkdir(parents=True, exist_ok=True)
    base = out / suite.replace(" ", "_").lower()
    with open(f"{base}.reportlog.jsonl", "w", encoding="utf-8") as log:
        for r in results:
            for when in ("setup", "call", "teardown"):
                failed = when == "call" and r.outcome in (Outcome.FAILED, Outcome.ERROR)
                log.write(json.dumps({
                    "nodeid": r.nodeid, "location": [r.nodeid.split("::")[0], 10, r.nodeid],
                    "keywords": {r.nodeid.split("::")[-1]: 1, "e2e": 1}, "when": when,
                    "outcome": "failed" if failed else "passed",
                    "longrepr": r.longrepr if failed else None, "duration": r.duration_s,
                    "sections": [], "$report_type": "TestReport",
                }) + "\n")
    with open(f"{base}.events.jsonl", "w", encoding="utf-8") as events:
        for r in results:
            events.write(json.dumps({"event": "start", "nodeid": r.nodeid}) + "\n")
    with open(f"{base}.junit.xml", "w", encoding="utf-8") as xml:
        xml.write('<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite>\n')
        for r in results:
            xml.write(
                f'<testcase classname="{r.nodeid.split("::")[0]}" name="{r.nodeid}"'
                f' time="{r.duration_s:.3f}" />\n'
            )
        xml.write("</testsuite></testsuites>\n")
    with open(f"{base}.log", "w", encoding="utf-8") as text:
        for r in results:
            text.write(f"{r.nodeid} {r.outcome.upper()}\n")


_CONFIG = """\
# Written by bench/history_fixture.py: the suites of the generated history, no services.
[loop]
target_pass_rate = 100
max_iterations = 20

[deploy]
target = "none"

[tests]
workers = 4
{suites}
[[known_issues]]
id = "order-500"
match = "expected 200, got 500"
reason = "the orders service returns 500 under load; TICKET-7"
"""


def _write_config(config_dir: Path, env: str) -> None:
    suites = "".join(
        f'\n[[tests.suites]]\nname = "{_suite_name(i)}"\npaths = ["tests/e2e/"]\n'
        f"priority = {1 + i % 3}\n"
        for i in range(SUITES)
    )
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / f"{env}.toml").write_text(_CONFIG.format(suites=suites), encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
