"""Failure signatures: a failure message with what varies between runs taken out.

Two failures with the same cause must get the same signature even when their messages differ
in ids, ports, timestamps or durations; two failures with different causes must not. So what
varies becomes a placeholder (<n>, <id>, <uuid>, <hex>, <ip>, <ts>, <dur>, <str>, <query>);
quoted names without digits (a module, a fixture, an attribute) stay
and what explains stays: HTTP status codes in an HTTP context, exception names, errno numbers
and names. The rules lean towards keeping: keeping too much splits one cause into two clusters,
which a reader notices; replacing a status code would merge a 403 with a 500 and hide one
failure behind another.
"""

from __future__ import annotations

import re
from http import HTTPStatus

from deployloop.models import NOT_RUN, PYTEST_OUTPUT, WHILE_RUNNING, Outcome, TestRow

# A token starts and ends at a word boundary; a number does not continue a dotted version.
_PRE = r"(?<!\w)(?<!\w\.)"
_POST = r"(?!\w|\.\d)"
_STATUS_CODE = r"[1-5]\d\d"

# Words after which a 3-digit number is an HTTP status: "HTTP 403", "HTTP/1.1 500",
# "status_code == 404", "<Response [403]>", "expected 200, got 403".
_STATUS_CONTEXT = (
    r"(?i:http(?:/\d(?:\.\d)?)?|status(?:[ _-]?code)?|code|response"
    r"|got|returned|received|expected)"
)
_PHRASES = "|".join(
    re.escape(phrase) for phrase in sorted({s.phrase for s in HTTPStatus}, key=len, reverse=True)
)

# Kept verbatim (they explain the failure).
_KEEP = [
    r"<(?:n|id|uuid|hex|ip|ts|dur|str|query)>",  # already normalized: idempotence
    rf"{_PRE}{_STATUS_CONTEXT}\s*(?:[:=\[]|==|!=)?\s*{_STATUS_CODE}{_POST}",
    rf"{_PRE}{_STATUS_CODE}\s*[!=]=\s*{_STATUS_CODE}{_POST}",  # assert 403 == 200
    rf"{_PRE}{_STATUS_CODE} (?:{_PHRASES}){_POST}",  # 403 Forbidden
    rf"{_PRE}HTTP/\d(?:\.\d)?{_POST}",
    rf"\[?{_PRE}Errno\s*\d+\]?",  # [Errno 111]: the number names the error
]

# (pattern, placeholder), tried in this order at each position.
_REPLACE = [
    (r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}", "<uuid>"),
    (
        r"\d{4}-\d\d-\d\d(?:[T ]\d\d:\d\d(?::\d\d(?:[.,]\d+)?)?(?:Z|[+-]\d\d:?\d\d)?)?"
        r"|\d\d:\d\d:\d\d(?:[.,]\d+)?",
        "<ts>",
    ),
    (r"\d{1,3}(?:\.\d{1,3}){3}(?::\d{1,5})?", "<ip>"),
    (r"\d+(?:\.\d+)? ?(?:ns|us|µs|ms|s|sec|secs|seconds?|min|mins|minutes?|h|hours?)", "<dur>"),
    (r"0x[0-9a-fA-F]+|(?=[0-9a-fA-F]*\d)(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{7,}", "<hex>"),
    # Identifiers with digits joined by - or _ (u-8f3a, req_1234) or led by a digit (8f3a).
    (
        r"[A-Za-z0-9]*\d[A-Za-z0-9]*(?:[-_][A-Za-z0-9]+)+|[A-Za-z]\w*[-_]\w*\d\w*|\d+[A-Za-z]\w*",
        "<id>",
    ),
    (r"\d+(?:\.\d+)*", "<n>"),
]

_QUOTED = r"""(?<!\w)(?:'[^'\n]*'|"[^"\n]*")(?!\w)"""
_URL = r"(?<!\w)[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]*"

_TOKEN = re.compile(
    "|".join(
        [f"(?P<keep>{'|'.join(_KEEP)})", f"(?P<quoted>{_QUOTED})", f"(?P<url>{_URL})"]
        + [f"(?P<r{i}>{_PRE}(?:{pattern}){_POST})" for i, (pattern, _) in enumerate(_REPLACE)]
    ),
    re.ASCII,
)
_STATUS_IN_TEXT = re.compile("|".join(_KEEP[1:4]), re.ASCII)
_URL_ONLY = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S*", re.ASCII)  # placeholders allowed
_NAME = re.compile(r"[A-Za-z_][A-Za-z_.:-]{0,59}", re.ASCII)  # no digits: ids are not names
_DATA = re.compile(r"[{\[]|[!=]=")  # literals compared: quoted words there are data
_BARE_NAME = re.compile(r"[\w.]+:?", re.ASCII)  # "AssertionError" alone on its line
_PYTEST_E_PREFIX = re.compile(r"^E {2,}")  # "E   assert ..." lines of a longrepr


# Only the beginning of a failure message says what failed; the rest (a dumped response body,
# a diff of two payloads, captured output) may run to megabytes. A signature is made from at
# most this many characters of a message, so it costs the same whatever the message's size.
SIGNATURE_SCOPE = 2_000
# User regexes (known issues, category rules) search at most this many characters of a
# message: all a person reads of one, and a bound on what a pattern like `a.*403` can cost.
MATCH_SCOPE = 10_000
_NON_BLANK = re.compile(r"\S")

# The runner appends pytest's last 20 lines: the marker is searched for this near the end.
_APPENDIX_SCOPE = 64_000


def head(text: str, limit: int = SIGNATURE_SCOPE) -> str:
    """At most `limit` characters of `text`, from its first non-blank one."""
    start = _NON_BLANK.search(text, 0, limit)
    if start is None:
        return ""
    return text[start.start() : start.start() + limit]


def is_loop_error(message: str | None) -> bool:
    """Whether a failure is loop's own ("not run: pytest was killed ...", "suite timed out ...
    while this test was running"), not one pytest reported for the test."""
    if not message:
        return False
    return message.startswith(NOT_RUN) or message.endswith(WHILE_RUNNING)


def own_text_end(longrepr: str) -> int:
    """Where a failure's own text ends: before the pytest output the runner appended to a test
    pytest did not report, which names whatever pytest was doing when it stopped
    (KeyboardInterrupt, a plugin's error), not what the test did."""
    at = longrepr.find(PYTEST_OUTPUT, max(0, len(longrepr) - _APPENDIX_SCOPE))
    return len(longrepr) if at < 0 else at


def normalize(message: str) -> str:
    """The signature text of a failure message: deterministic and idempotent."""
    text = meaningful_line(message)
    # In a comparison of literals (assert {...} == {...}) quoted words are data; elsewhere
    # (No module named 'grpc', fixture 'db' not found) a quoted name is the cause.
    rewrite = _rewrite if _DATA.search(text) else _rewrite_keeping_names
    # Rewrite to a fixpoint: a replacement can change a neighbour's boundary (a quoted value
    # next to a number), so one pass is not always stable; a second or third pass is.
    for _ in range(8):
        rewritten = _TOKEN.sub(rewrite, text)
        if rewritten == text:
            break
        text = rewritten
    # Placeholders can make a text longer than the line it came from: cut again, or the
    # signature of a signature would not be the signature.
    return _cut(text)


def meaningful_line(message: str) -> str:
    """The first non-blank line, with the next one when the first is a bare exception name;
    from the message's first SIGNATURE_SCOPE characters."""
    # One character more than is kept: a line cut there ends in a partial word, dropped below.
    text = head(message, SIGNATURE_SCOPE + 1)
    lines = [_PYTEST_E_PREFIX.sub("", line).strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        return ""
    first = lines[0]
    if len(lines) > 1 and _BARE_NAME.fullmatch(first):
        first = f"{first.rstrip(':')}: {lines[1]}"
    # Later lines (pytest's "+  where ..." explanations) repeat the first with more noise.
    return _cut(" ".join(first.split()))


def _cut(text: str, limit: int = SIGNATURE_SCOPE) -> str:
    """`text` up to `limit` characters, cut at a space so that no word is split."""
    if len(text) <= limit:
        return text
    cut = text[:limit]
    space = cut.rfind(" ")
    return cut[:space] if space > 0 else cut


def _rewrite(match: re.Match[str]) -> str:
    kind = match.lastgroup
    text = match.group()
    if kind == "keep":
        return text
    if kind == "quoted":
        quote, inner = text[0], text[1:-1]
        if _URL_ONLY.fullmatch(inner) or _STATUS_IN_TEXT.search(inner):
            return quote + _TOKEN.sub(_rewrite, inner) + quote
        return "<str>"
    if kind == "url":
        return _rewrite_url(text)
    assert kind is not None and kind.startswith("r")
    return _REPLACE[int(kind[1:])][1]


def _rewrite_keeping_names(match: re.Match[str]) -> str:
    # A name (a module, a fixture, an attribute, a constraint) says what is wrong: "No module
    # named 'grpc'" and "... 'yaml'" are two causes, not one.
    if match.lastgroup == "quoted" and _NAME.fullmatch(match.group()[1:-1]):
        return match.group()
    return _rewrite(match)


def _rewrite_url(url: str) -> str:
    """Keep scheme and path (they say what was called); drop the query; normalize the rest."""
    scheme, _, rest = url.partition("://")
    rest, question, query = rest.partition("?")
    # An empty query stays "?": replacing it would grow "?<query>" on every pass.
    return f"{scheme}://{_TOKEN.sub(_rewrite, rest)}{question}" + ("<query>" if query else "")


def status_codes(text: str) -> tuple[str, ...]:
    """The HTTP status codes a (normalized) text names in an HTTP context, in order."""
    return tuple(
        code
        for match in _STATUS_IN_TEXT.finditer(text)
        for code in re.findall(r"(?<!\d)[1-5]\d\d(?!\d)", match.group(), re.ASCII)
    )


FAILURE_OUTCOMES = frozenset({Outcome.FAILED, Outcome.ERROR})


def is_failure(row: TestRow) -> bool:
    return row.outcome in FAILURE_OUTCOMES


def failure_message(row: TestRow) -> str:
    """The text a failure is judged by: its message, else its full report, else nothing."""
    return row.message or row.longrepr or ""


def match_text(row: TestRow) -> str:
    """What a user's regex over the failure message searches: its first MATCH_SCOPE
    characters."""
    return failure_message(row)[:MATCH_SCOPE]
