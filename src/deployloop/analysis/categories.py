"""What kind of failure a cluster is: product, test, environment or unknown.

The `[[categories]]` rules of the config decide first, in config order: a rule matches a
failure when its `message` regex is found in the failure message and, if it has one, its
`traceback` regex in the full failure text (both within bounds: see `normalize.MATCH_SCOPE`
and `signatures.TRACEBACK_SCOPE`). Without a matching rule, failures that say the
environment could not be reached (connection refused or reset, name resolution, timeouts,
HTTP 502/503/504) are environment; anything else stays unknown — a guess is not a category.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from deployloop.analysis.normalize import match_text, status_codes
from deployloop.analysis.signatures import Failure, traceback_parts
from deployloop.models import Category

if TYPE_CHECKING:  # pydantic costs `loop status` ~60 ms it does not need
    from deployloop.config import CategoryRule

_ENVIRONMENT = re.compile(
    "|".join(
        [
            # connection refused / reset / aborted, as words or exception names
            r"connection\s*(?:was\s+)?(?:refused|reset|aborted)",
            r"Connect(?:ion)?(?:Refused|Reset|Aborted)?Error",
            r"ECONNREFUSED|ECONNRESET",
            # name resolution
            r"name or service not known|nodename nor servname|name resolution"
            r"|getaddrinfo failed|no address associated with hostname|NXDOMAIN"
            r"|name does not resolve|\bDNS\b",
            # timeouts
            r"time[ds]?[ _-]?out",
        ]
    ),
    re.IGNORECASE,
)
_GATEWAY_CODES = frozenset({"502", "503", "504"})


def categorize(failures: Sequence[Failure], rules: Sequence[CategoryRule]) -> Category:
    """The first rule that matches any of the failures, else the built-in defaults."""
    for rule in rules:
        if any(rule_matches(rule, failure) for failure in failures):
            return Category(rule.name)
    if any(looks_like_environment(failure) for failure in failures):
        return Category.ENVIRONMENT
    return Category.UNKNOWN


def rule_matches(rule: CategoryRule, failure: Failure) -> bool:
    if not re.search(rule.message, match_text(failure.row)):
        return False
    if rule.traceback is None:
        return True
    # The same bounded parts of the traceback that frames are read from.
    parts = traceback_parts(failure.row.longrepr or "")
    return any(re.search(rule.traceback, part) for part in parts)


def looks_like_environment(failure: Failure) -> bool:
    text = failure.exception + " " + failure.line
    return bool(_ENVIRONMENT.search(text)) or bool(
        _GATEWAY_CODES.intersection(status_codes(failure.key.text))
    )
