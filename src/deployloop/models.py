"""Records that flow through an iteration: plan -> deploy -> test -> analyze -> report -> decide.

Every stage takes the records of the stages before it and returns its own; the store persists
them as they are made. Nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

# How the runner words the errors it records itself, for tests pytest never reported; the
# analysis tells them from the tests' own failures by these (and leaves out the pytest output
# the runner appends, which names whatever pytest was doing when it stopped).
NOT_RUN = "not run: "
WHILE_RUNNING = " while this test was running"
PYTEST_OUTPUT = "\n\nlast lines of pytest output:\n"


class Outcome(StrEnum):
    """One test's result, merged over its setup, call and teardown phases."""

    PASSED = "passed"
    FAILED = "failed"
    ERROR = "error"
    SKIPPED = "skipped"
    XFAILED = "xfailed"
    XPASSED = "xpassed"


class IterationStatus(StrEnum):
    RUNNING = "running"
    PASSED = "passed"  # pass rate reached the target
    FAILED = "failed"  # finished below the target
    DEPLOY_FAILED = "deploy_failed"
    # pytest never ran a test: a usage error, a missing plugin or module, every collection
    # failed. Not a result: loop stops (exit 2) and the iteration counts in no figure after.
    SETUP_FAILED = "setup_failed"
    INTERRUPTED = "interrupted"
    ERROR = "error"  # the loop itself could not go on (a bug, a broken hook)
    # `loop` was killed (kill -9, out of memory) mid-iteration: the next loop command found it
    # still `running` with no loop holding its env, and kept what it had recorded.
    CRASHED = "crashed"


class SuiteStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    PASSED = "passed"
    FAILED = "failed"
    TIMEOUT = "timeout"
    CRASHED = "crashed"
    INTERRUPTED = "interrupted"
    NOT_RUN = "not_run"  # not selected this iteration (--suite) or never reached


class DeployStatus(StrEnum):
    PENDING = "pending"
    READY = "ready"
    FAILED = "failed"
    SKIPPED = "skipped"  # a dependency failed, so it was never started
    # It was ready, then its process exited while the tests ran (local target): failures after
    # that moment are the crash's, not the tests'.
    CRASHED = "crashed"


@dataclass(frozen=True)
class InventoryItem:
    """A test known before anything runs: collected by `pytest --collect-only`."""

    suite: str
    nodeid: str
    file: str  # path relative to the working directory
    # Set when collecting this item failed: it is recorded as an error, never dropped.
    collect_error: str | None = None  # one line
    collect_detail: str | None = None  # pytest's full text


@dataclass(frozen=True)
class TestResult:
    __test__ = False  # not a pytest test class, whatever its name says

    nodeid: str
    suite: str
    outcome: Outcome
    duration_s: float
    message: str | None = None  # one line: what a person reads first
    longrepr: str | None = None  # the full failure text
    finished_at: str | None = None


@dataclass
class Deployment:
    service: str
    status: DeployStatus
    url: str | None = None
    revision: str | None = None
    started_at: str | None = None
    ready_at: str | None = None
    error: str | None = None
    image: str | None = None
    # Set when traffic was sent back to an earlier revision after this iteration.
    rolled_back_to: str | None = None
    # Candidate revisions (cloudrun, traffic = "candidate"): the revision tag its URL is
    # reached by, and whether the traffic moved to it once the iteration reached its target.
    tag: str | None = None
    promoted: bool = False
    # The image's digest when the deploy resolved its tag (the revision runs image@digest).
    digest: str | None = None
    # What served the service's traffic once this iteration was done with it (cloudrun):
    # a revision, or "rev-a 90%, rev-b 10%". A candidate that was not promoted is not it.
    serving: str | None = None
    # Ready, with something the team should know (public access an organization policy
    # refused, ...): shown with the deployment, never a failure.
    warning: str | None = None


@dataclass(frozen=True)
class IterationRecord:
    id: int
    env: str
    number: int
    status: IterationStatus
    git_sha: str | None
    started_at: str
    finished_at: str | None
    target_pass_rate: float
    workers: int
    error: str | None = None
    code_key: str | None = None  # identity of the code tested: git state and revisions
    partial: bool = False  # --failed-only: the tests that passed before were not run
    # Why this iteration is no result for the ones after it (a setup failure, an outage):
    # its outcomes count in no flaky, broken, fixed, diff or trend figure. None: it counts.
    left_out: str | None = None


@dataclass(frozen=True)
class SuiteRecord:
    name: str
    priority: int
    selected: bool
    status: SuiteStatus
    started_at: str | None = None
    finished_at: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class TestRow:
    """A test as the store holds it: collected, and with a result once it has one."""

    __test__ = False

    nodeid: str
    suite: str
    file: str
    outcome: Outcome | None
    duration_s: float | None
    message: str | None
    longrepr: str | None
    started_at: str | None = None  # when pytest started it (a result or not yet)


@dataclass(frozen=True)
class RunningTest:
    """A test pytest has started and not finished: shown so a hang is seen as it happens."""

    nodeid: str
    suite: str
    running_s: float


@dataclass(frozen=True)
class Figures:
    collected: int = 0
    executed: int = 0
    passed: int = 0
    failed: int = 0
    errors: int = 0
    skipped: int = 0
    xfailed: int = 0
    xpassed: int = 0

    @property
    def pass_rate(self) -> float | None:
        """Percent of executed tests that passed; None when nothing was executed."""
        if self.executed == 0:
            return None
        return 100.0 * self.passed / self.executed

    @property
    def pending(self) -> int:
        done = self.executed + self.skipped + self.xfailed + self.xpassed
        return max(self.collected - done, 0)


@dataclass(frozen=True)
class SuiteSummary:
    name: str
    priority: int
    status: SuiteStatus
    selected: bool
    figures: Figures
    key_issue: str | None


class Category(StrEnum):
    PRODUCT = "product"
    TEST = "test"
    ENVIRONMENT = "environment"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class ServiceLog:
    """A service's log lines written while a cluster's tests ran ("HH:MM:SS.mmm text")."""

    service: str
    lines: tuple[str, ...]


@dataclass(frozen=True)
class Cluster:
    label: str
    signature: str
    tests: tuple[str, ...]
    suites: tuple[str, ...]
    known_issue: str | None = None
    category: Category = Category.UNKNOWN
    first_iteration: int | None = None  # the earliest iteration with this signature
    service_logs: tuple[ServiceLog, ...] = ()  # the evidence beside it (analysis.service_logs)

    @property
    def count(self) -> int:
        return len(self.tests)


@dataclass(frozen=True)
class RootCause:
    """Failures of several clusters with one cause (analysis.root_causes)."""

    label: str  # "POST /orders answered 500"
    evidence: tuple[str, ...]
    clusters: tuple[str, ...]  # the labels of the clusters it ties
    tests: tuple[tuple[str, str | None], ...]  # (node id, file:line of its failing assertion)


@dataclass(frozen=True)
class KnownIssueMatch:
    id: str
    reason: str
    expired: bool
    failures: tuple[str, ...]

    @property
    def matched(self) -> bool:
        return bool(self.failures)


@dataclass(frozen=True)
class HistoryRow:
    """One result of one test in one iteration (or one rerun attempt within it)."""

    __test__ = False

    iteration: int
    nodeid: str
    suite: str
    outcome: Outcome
    attempt: int  # 1 for the first run; reruns count up
    message: str | None
    duration_s: float | None
    code_key: str | None  # what was deployed and tested; equal keys = the same code
    file_hash: str | None  # the test file's content hash in that iteration


# One character per outcome in the store's per-test history (see PastResults); a space is
# an iteration in which the test has no result.
OUTCOME_CODES: dict[Outcome, str] = {
    Outcome.PASSED: "P",
    Outcome.FAILED: "F",
    Outcome.ERROR: "E",
    Outcome.SKIPPED: "s",
    Outcome.XFAILED: "x",
    Outcome.XPASSED: "X",
}
OUTCOME_OF_CODE: dict[str, Outcome] = {code: outcome for outcome, code in OUTCOME_CODES.items()}


@dataclass(frozen=True)
class KeptTest:
    """One test of one suite over an env's iterations, as the store keeps it."""

    __test__ = False

    suite: str
    nodeid: str
    file: str  # its file as the store recorded it last (test_files is keyed by it)
    # First attempts, one character per iteration (OUTCOME_CODES): the i-th is iteration i+1.
    outcomes: str


@dataclass(frozen=True)
class PastResults:
    """An env's results of iterations 1..N in the compact form the store keeps as it records
    them: what flaky/broken, trend, projection, estimates and cluster ages read, without a
    row object per result of every iteration. `analysis.past.past_of` builds one from
    HistoryRows too (the same results, row by row)."""

    tests: tuple[KeptTest, ...]
    reruns: tuple[HistoryRow, ...]  # every attempt after the first, as store.history has them
    failures: tuple[HistoryRow, ...]  # first attempts that failed or errored, with messages
    code_keys: dict[int, str | None]  # iteration number -> its code_key
    file_hashes: dict[tuple[int, str], str]  # (iteration number, file) -> sha256
    durations: dict[str, tuple[float, int]]  # node id -> (sum, count) over every attempt
    # Iteration number -> (passed, executed) of first attempts, for each with any result.
    counts: dict[int, tuple[int, int]]


@dataclass(frozen=True)
class HistoryPoint:
    iteration: int
    outcome: Outcome
    attempt: int = 1


@dataclass(frozen=True)
class TestHistory:
    """A flaky or broken test with the results that make it so, oldest first."""

    __test__ = False

    test: str
    history: tuple[HistoryPoint, ...]
    reason: str


@dataclass(frozen=True)
class IntegrityFlag:
    test: str  # a node id, or a suite name for a drop in a suite's test count
    file: str | None
    reason: str


@dataclass(frozen=True)
class FalseGreen:
    subject: str  # a suite name, a node id, or "iteration"
    kind: str  # "suite", "test" or "iteration"
    reason: str


@dataclass(frozen=True)
class Projection:
    """Clearly a projection: where the pass rate would land if the remaining tests ran."""

    final_pass_rate: float
    low: float
    high: float
    remaining_tests: int
    basis: str  # how it was computed, in words


@dataclass(frozen=True)
class SignatureChange:
    test: str
    before: str
    after: str


@dataclass(frozen=True)
class IterationDiff:
    compared_to: int
    fixed: tuple[str, ...]
    new_failures: tuple[str, ...]
    still_failing: tuple[str, ...]
    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed_signatures: tuple[SignatureChange, ...]


@dataclass(frozen=True)
class Trend:
    """Pass rate per iteration so far, and how many more iterations to green at that pace."""

    pass_rates: tuple[tuple[int, float | None], ...]
    iterations_to_green: float | None  # None: not rising, or not enough history
    # "rising", "falling" (a drop at the end counts, whatever came before), "flat", or
    # "unknown" (fewer than two rates)
    pace: str = "unknown"


@dataclass(frozen=True)
class Insights:
    """What the analysis finds beyond one iteration's figures (history, integrity, ...)."""

    flaky: tuple[TestHistory, ...] = ()
    broken: tuple[TestHistory, ...] = ()
    integrity: tuple[IntegrityFlag, ...] = ()
    false_greens: tuple[FalseGreen, ...] = ()
    outage: str | None = None  # set when most tests failed the same way: the reason
    failures_with_known_issue: int = 0
    failures_without_known_issue: int = 0
    projection: Projection | None = None
    trend: Trend | None = None
    diff: IterationDiff | None = None
    remaining_suite_tests: tuple[tuple[str, int], ...] = ()  # (suite, tests) not run yet


@dataclass(frozen=True)
class Summary:
    """Everything a report shows about one iteration, computed from the store alone."""

    iteration: IterationRecord
    totals: Figures
    suites: tuple[SuiteSummary, ...]
    clusters: tuple[Cluster, ...]
    known_issues: tuple[KnownIssueMatch, ...]
    deployments: tuple[Deployment, ...]
    remaining_suites: tuple[str, ...]
    elapsed_s: float
    estimated_remaining_s: float | None
    failures: tuple[TestRow, ...] = field(default=())
    insights: Insights = field(default_factory=Insights)
    # While the iteration runs: its tests started and not finished, longest first.
    running: tuple[RunningTest, ...] = field(default=())
    # Only some tests ran: the iteration ran only the failed ones (--failed-only), or not
    # every suite was selected (--suite). Its pass rate is not the whole inventory's.
    partial: bool = False
    root_causes: tuple[RootCause, ...] = ()  # causes that tie several clusters
