"""An env's past results in the compact form the store keeps (models.PastResults).

Reports read the past through this form so their cost grows with the number of tests, not
with tests x iterations: the store hands it over ready (store.past_results); `past_of` builds
the same thing from HistoryRows (store.history, or rows a test writes by hand), so the analysis
has one way of reading the past whatever it was given.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence

from deployloop.analysis.normalize import FAILURE_OUTCOMES
from deployloop.models import (
    OUTCOME_CODES,
    OUTCOME_OF_CODE,
    HistoryRow,
    KeptTest,
    Outcome,
    PastResults,
)

History = Sequence[HistoryRow] | PastResults

_FAILING = frozenset(OUTCOME_CODES[o] for o in FAILURE_OUTCOMES)
_EXECUTED = _FAILING | {OUTCOME_CODES[Outcome.PASSED]}


def past_of(history: History) -> PastResults:
    if isinstance(history, PastResults):
        return history
    outcomes: dict[tuple[str, str], list[str]] = {}
    code_keys: dict[int, str | None] = {}
    hashes: dict[tuple[int, str], str] = {}
    durations: dict[str, tuple[float, int]] = {}
    counts: dict[int, tuple[int, int]] = {}
    reruns: list[HistoryRow] = []
    failures: list[HistoryRow] = []
    for row in history:
        if code_keys.get(row.iteration) is None:
            code_keys[row.iteration] = row.code_key
        if row.duration_s is not None:
            total, count = durations.get(row.nodeid, (0.0, 0))
            durations[row.nodeid] = (total + row.duration_s, count + 1)
        passed, executed = counts.get(row.iteration, (0, 0))
        if row.attempt != 1:
            counts[row.iteration] = (passed, executed)
            reruns.append(row)
            continue
        chars = outcomes.setdefault((row.suite, row.nodeid), [])
        chars.extend(" " * (row.iteration - len(chars)))
        chars[row.iteration - 1] = OUTCOME_CODES[row.outcome]
        if row.file_hash is not None:
            hashes[(row.iteration, file_of(row.nodeid))] = row.file_hash
        if row.outcome in FAILURE_OUTCOMES:
            failures.append(row)
        is_run = row.outcome in FAILURE_OUTCOMES or row.outcome is Outcome.PASSED
        counts[row.iteration] = (passed + (row.outcome is Outcome.PASSED), executed + is_run)
    return PastResults(
        tests=tuple(
            KeptTest(suite, nodeid, file_of(nodeid), "".join(chars))
            for (suite, nodeid), chars in outcomes.items()
        ),
        reruns=tuple(reruns),
        failures=tuple(failures),
        code_keys=code_keys,
        file_hashes=hashes,
        durations=durations,
        counts=counts,
    )


def file_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def by_nodeid(past: PastResults, wanted: Collection[str]) -> dict[str, list[KeptTest]]:
    """The kept tests among `wanted` node ids (one per suite that has it)."""
    found: dict[str, list[KeptTest]] = {}
    for test in past.tests:
        if test.nodeid in wanted:
            found.setdefault(test.nodeid, []).append(test)
    return found


def first_attempt_runs(tests: Sequence[KeptTest]) -> tuple[int, int]:
    """(passes, runs) of these first attempts: runs are passes, failures and errors."""
    passes = sum(t.outcomes.count(OUTCOME_CODES[Outcome.PASSED]) for t in tests)
    runs = sum(t.outcomes.count(code) for t in tests for code in _EXECUTED)
    return passes, runs


class SameCode:
    """Per test file, the iterations that ran the same known code with the same file (the
    groups flaky detection compares), worked out once per file."""

    def __init__(self, past: PastResults) -> None:
        self._past = past
        self._groups: dict[str, list[list[int]]] = {}

    def key(self, number: int, file: str) -> tuple[str | None, str | None]:
        """(code_key, file hash) of a result of `file` in iteration `number`."""
        return self._past.code_keys.get(number), self._past.file_hashes.get((number, file))

    def groups(self, file: str) -> list[list[int]]:
        if file not in self._groups:
            by_key: dict[tuple[str, str | None], list[int]] = {}
            for number, code_key in self._past.code_keys.items():
                if code_key is not None:
                    key = (code_key, self._past.file_hashes.get((number, file)))
                    by_key.setdefault(key, []).append(number)
            self._groups[file] = [numbers for numbers in by_key.values() if len(numbers) > 1]
        return self._groups[file]


def may_be_flaky_or_broken(
    tests: Sequence[KeptTest], reruns: Sequence[HistoryRow], broken_after: int, same: SameCode
) -> bool:
    """False only when the test's results cannot make it flaky or broken (history.py's rules,
    read from its outcome characters): most tests, whose rows then are never built. True means
    "build the rows and look"."""
    if not any(code in t.outcomes for t in tests for code in _FAILING) and not any(
        r.outcome in FAILURE_OUTCOMES for r in reruns
    ):
        return False  # never failed
    if len(tests) != 1:
        return True  # in two suites: the rows decide
    (test,) = tests
    again: dict[int, list[str]] = {}
    for rerun in sorted(reruns, key=lambda r: (r.iteration, r.attempt)):
        if (rerun.code_key, rerun.file_hash) != same.key(rerun.iteration, test.file):
            return True  # recorded against other code than its iteration's: the rows decide
        again.setdefault(rerun.iteration, []).append(OUTCOME_CODES[rerun.outcome])
    last = max(len(test.outcomes), max(again, default=0))
    per_iteration = {
        n: [code for code in test.outcomes[n - 1 : n] if code != " "] + again.get(n, [])
        for n in range(1, last + 1)
    }
    passed = OUTCOME_CODES[Outcome.PASSED]
    if any(passed in codes and _FAILING.intersection(codes) for codes in per_iteration.values()):
        return True  # passed and failed within one iteration
    runs = [code for codes in per_iteration.values() for code in codes if code in _EXECUTED]
    if len(runs) >= broken_after and all(code in _FAILING for code in runs[-broken_after:]):
        return True
    for numbers in same.groups(test.file):
        codes = {code for n in numbers for code in per_iteration.get(n, [])}
        if passed in codes and codes & _FAILING:
            return True
    return False


def rows_of(
    past: PastResults, nodeid: str, tests: Sequence[KeptTest], reruns: Sequence[HistoryRow]
) -> list[HistoryRow]:
    """One test's results as store.history gives them (without messages or durations),
    oldest first, each iteration's first attempt before its reruns."""
    rows = [
        HistoryRow(
            number, nodeid, test.suite, outcome, 1, None, None, past.code_keys.get(number),
            past.file_hashes.get((number, test.file)),
        )
        for test in tests
        for number, outcome in results(test)
    ]
    rows.extend(reruns)
    return sorted(rows, key=lambda r: (r.iteration, r.attempt))


def results(test: KeptTest) -> Iterator[tuple[int, Outcome]]:
    """(iteration number, outcome) of each first attempt of the test."""
    for index, code in enumerate(test.outcomes):
        if code != " ":
            yield index + 1, OUTCOME_OF_CODE[code]


def has_result(test: KeptTest, number: int) -> bool:
    return 0 < number <= len(test.outcomes) and test.outcomes[number - 1] != " "


def failing_rows(past: PastResults) -> list[HistoryRow]:
    """Every failing result, any attempt, with its message."""
    return [*past.failures, *(r for r in past.reruns if r.outcome in FAILURE_OUTCOMES)]
