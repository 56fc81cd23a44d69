"""Which service log lines go beside a cluster: the analysis alone, on lines as the local
target writes them (see test_main_example for a real run)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from deployloop.analysis.service_logs import MAX_LINES, cluster_service_logs
from deployloop.log_lines import LogLine, read_log, stamp
from deployloop.models import Outcome, ServiceLog, TestRow

T0 = datetime(2026, 12, 2, 9, 0, 0, tzinfo=UTC)


def failed(name: str, at_s: float, duration_s: float, message: str) -> TestRow:
    started = (T0 + timedelta(seconds=at_s)).isoformat(timespec="milliseconds")
    return TestRow(f"tests/test_api.py::{name}", "API", "tests/test_api.py", Outcome.FAILED,
                   duration_s, message, None, started)


def line(service: str, at_s: float, text: str) -> LogLine:
    return LogLine(service, (T0 + timedelta(seconds=at_s)).timestamp(), text)


def test_only_the_lines_that_name_what_the_failure_names_are_kept() -> None:
    failure = failed("test_checkout", 10.0, 0.5, "assert 500 == 201: POST /orders failed")
    lines = [
        line("api", 1.0, "ERROR /orders: long before the test"),  # outside its window
        line("api", 10.1, "WARNING GET /cart refused (401): missing token"),  # another test's
        line("api", 10.2, "ERROR POST /orders: KeyError: 'sku-42'"),
        line("auth", 10.3, "INFO token issued"),
        line("api", 30.0, "ERROR POST /orders: long after"),
    ]
    assert cluster_service_logs([failure], lines) == (
        ServiceLog("api", ("09:00:10.200 ERROR POST /orders: KeyError: 'sku-42'",)),
    )


def test_without_a_named_line_the_errors_come_then_anything() -> None:
    failure = failed("test_slow", 5.0, 1.0, "TimeoutError: timed out")
    errors = [line("db", 5.5, "WARNING pool exhausted"), line("api", 5.6, "INFO request")]
    assert cluster_service_logs([failure], errors) == (
        ServiceLog("db", ("09:00:05.500 WARNING pool exhausted",)),
    )
    quiet = [line("api", 5.6, "INFO request")]
    assert cluster_service_logs([failure], quiet) == (
        ServiceLog("api", ("09:00:05.600 INFO request",)),
    )
    assert cluster_service_logs([failure], []) == ()


def test_a_repeated_line_is_shown_once_and_the_excerpt_is_capped() -> None:
    failure = failed("test_many", 0.0, 60.0, "HTTP 503")
    same = [line("api", 1.0 + i, "ERROR upstream answered 503") for i in range(5)]
    (log,) = cluster_service_logs([failure], same)
    assert log.lines == ("09:00:01.000 ERROR upstream answered 503  (5 times, until 09:00:05.000)",)
    varied = [line("api", 1.0 + i * 0.1, f"ERROR 503 for request {i}") for i in range(50)]
    (log,) = cluster_service_logs([failure], varied)
    assert len(log.lines) == MAX_LINES


def test_a_stamped_log_reads_back_with_its_times(tmp_path: Path) -> None:
    path = tmp_path / "api.log"
    at = (T0 + timedelta(seconds=3.25)).timestamp()
    path.write_text(f"{stamp(at)}ERROR first\n  continued without a stamp\n\n")
    assert read_log(path, "api") == [
        LogLine("api", at, "ERROR first"), LogLine("api", at, "  continued without a stamp"),
    ]


def test_a_quoted_word_is_not_what_a_failure_names() -> None:
    """'backend' in a message must not pull in every line the backend logs with its name."""
    failure = failed("test_stream", 10.0, 0.5,
                     "HTTP 403 {\"error\": \"token audience ['auth'] does not include 'backend'\"}")
    lines = [
        line("backend", 9.0, "backend: listening on http://127.0.0.1:8000"),
        line("backend", 10.2, "backend: WARNING GET /events refused (403): token audience"
             " ['auth'] does not include 'backend'"),
    ]
    (log,) = cluster_service_logs([failure], lines)
    assert len(log.lines) == 1 and "refused (403)" in log.lines[0], log


def test_names_match_as_tokens_and_quoted_values_pair_up() -> None:
    """Found by a review: 500 is not in "1500us", and 'a' not in 'b' quotes two values."""
    failure = failed("test_x", 10.0, 0.5, "assert 500 == 201")
    lines = [line("api", 10.1, "INFO GET /health 200 OK in 1500us"),
             line("api", 10.2, "ERROR POST /orders 500: KeyError: 'price'")]
    (log,) = cluster_service_logs([failure], lines)
    assert log.lines == ("09:00:10.200 ERROR POST /orders 500: KeyError: 'price'",)
    quoted = failed("test_y", 10.0, 0.5, "assert 'error' not in 'error: db down'")
    noise = [line("api", 10.1, "INFO cache key not in store"),
             line("api", 10.2, "ERROR error: db down")]
    (log,) = cluster_service_logs([quoted], noise)
    assert log.lines == ("09:00:10.200 ERROR error: db down",)

