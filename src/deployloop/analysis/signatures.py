"""What makes two failures "the same": exception type, normalized message and, where the message
alone says nothing, the place in the test's file where the test failed.

A message that names a cause ("events stream rejected: HTTP 403", "[Errno 111] Connection
refused") is the same cause wherever it surfaces, so those failures cluster across tests and
suites. A message that names none ("assert <n> == <n>", "KeyError: <str>", a bare
"AssertionError") would glue unrelated failures together, so for those the test's own failing
frame (file::function, never the line number) is part of the signature.

Two signatures that differ only a little (an extra word) are the same cause when their token
sets are at least 90 % alike — but never when their exception types, HTTP status codes or other
kept numbers (errno), or frames differ.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from deployloop.analysis.normalize import (
    failure_message,
    is_loop_error,
    meaningful_line,
    normalize,
    own_text_end,
)
from deployloop.models import TestRow

SIMILARITY = 0.9  # token-set (Jaccard) similarity from which two messages are one cause
MAX_LABEL = 160
NO_MESSAGE = "(no failure message)"

# What pytest and the runner put before the exception on a failure's first line.
_PREFIXES = ("error in setup: ", "error in teardown: ", "collection error: ")
_NAME = re.compile(r"((?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*)(?::\s|:$|$)", re.ASCII)
_EXCEPTION_SUFFIX = re.compile(
    r"[A-Z]\w*(?:Error|Exception|Warning|Exit|Interrupt|Failure|Timeout)|Failed", re.ASCII
)
_DIGITS = re.compile(r"\d+", re.ASCII)
_PLACEHOLDER = re.compile(r"<(?:n|id|uuid|hex|ip|ts|dur|str|query)>")
_WORD = re.compile(r"[A-Za-z]{3,}", re.ASCII)
# Words that say nothing about a cause on their own.
_EMPTY_WORDS = frozenset(
    {"assert", "where", "and", "not", "none", "true", "false", "the", "error", "exception",
     "failed", "failure", "self"}
)  # fmt: skip
# A placeholder right inside a container or after a separator: `{<str>: <str>}`, `[<n>, <n>]`.
_SOUP = re.compile(r"[\[{(,:]\s*<(?:n|id|uuid|hex|ip|ts|dur|str|query)>")

# Traceback locations: pytest's "path.py:42: AssertionError" / "path.py:42: in helper" lines,
# and `--tb=native`'s 'File "path.py", line 42, in helper'.
_LOCATION = re.compile(r"^(?P<path>\S[^\n]*?\.py):\d+:(?: (?P<message>.*))?$")
_NATIVE = re.compile(r'^\s*File "(?P<path>[^"]+\.py)", line \d+, in (?P<function>\S+)')
_DEF = re.compile(r"^[>\s]*(?:async\s+)?def\s+(?P<function>\w+)\s*\(")
_SECTION = re.compile(r"^--- Captured .* ---$")  # captured output follows: no traceback there
# A traceback is read from its first and last this many characters: where pytest puts the
# frames and the exception's location. What lies between (a huge assertion diff, captured
# output) costs nothing, whatever its size.
TRACEBACK_SCOPE = 20_000


@dataclass(frozen=True)
class MessageKey:
    """What a failure message alone says: enough to compare with history, which has no traceback."""

    text: str  # the normalized message
    exception: str  # the exception named at the start of the message; "" if none
    numbers: tuple[str, ...]  # numbers normalize kept (status codes, errno), sorted
    tokens: frozenset[str]
    specific: bool  # names a cause on its own (words or status codes beyond "assert ...")


def message_key(message: str) -> MessageKey:
    text = normalize(message)
    # loop's own errors name no exception, whatever words their reason starts with.
    exception = "" if is_loop_error(message) else exception_name(meaningful_line(message))
    numbers = tuple(sorted(_DIGITS.findall(text)))
    return MessageKey(
        text=text,
        exception=exception,
        numbers=numbers,
        tokens=frozenset(text.split()),
        specific=_is_specific(text, exception, numbers),
    )


def exception_name(line: str, traceback_name: str = "") -> str:
    """The exception a failure's first line starts with ("httpx.ConnectError"), else the name
    pytest gave in the traceback, else ""."""
    for prefix in _PREFIXES:
        line = line.removeprefix(prefix)
    match = _NAME.match(line)
    if match:
        name = match.group(1)
        last = name.rsplit(".", 1)[-1]
        if _EXCEPTION_SUFFIX.fullmatch(last) or (traceback_name and last == traceback_name):
            return name
    return traceback_name


def _is_specific(text: str, exception: str, numbers: tuple[str, ...]) -> bool:
    if numbers:
        return True
    for prefix in _PREFIXES:
        text = text.removeprefix(prefix)
    if exception:
        text = text.removeprefix(exception)
    words = _WORD.findall(_PLACEHOLDER.sub(" ", text))
    return any(word.lower() not in _EMPTY_WORDS for word in words)


def similar_messages(a: MessageKey, b: MessageKey) -> bool:
    """One cause: same exception, same kept numbers, token sets at least 90 % alike."""
    if a.exception != b.exception or a.numbers != b.numbers:
        return False
    if a.tokens == b.tokens:
        return True
    union = len(a.tokens | b.tokens)
    return len(a.tokens & b.tokens) / union >= SIMILARITY


@dataclass(frozen=True)
class Failure:
    """One failing test as clustering sees it."""

    row: TestRow
    key: MessageKey
    exception: str  # from the message, else from the traceback's last line
    frame: str | None  # "file::function" in the test's file; only when the message is unspecific
    line: str  # the message's first meaningful line, as written

    @property
    def signature(self) -> str:
        text = with_exception(self.key.text, self.exception)
        return f"{text} @ {self.frame}" if self.frame else text


def failure_of(row: TestRow) -> Failure:
    message = failure_message(row)
    key = message_key(message)
    line = meaningful_line(message)
    if is_loop_error(row.message):
        # loop recorded it for a test pytest never reported: its "traceback" is pytest's last
        # output lines, whose exceptions and frames are not this test's. The message says it all.
        return Failure(row=row, key=key, exception="", frame=None, line=line)
    locations = traceback_locations(row.longrepr or "")
    traceback_name = ""
    if locations and locations[-1][1] and not locations[-1][1].startswith("in "):
        traceback_name = locations[-1][1].split()[0]
    return Failure(
        row=row,
        key=key,
        exception=key.exception or exception_name(line, traceback_name),
        frame=None if key.specific else failing_frame(row.nodeid, locations),
        line=line,
    )


def same_cause(a: Failure, b: Failure) -> bool:
    return a.exception == b.exception and a.frame == b.frame and similar_messages(a.key, b.key)


def traceback_locations(longrepr: str) -> list[tuple[str, str, str | None]]:
    """(path, message, function) of each traceback entry, oldest first.

    pytest's long entries show the function's source before the location line, so its `def`
    names the function; short entries say "in function" themselves.
    """
    found: list[tuple[str, str, str | None]] = []
    for part in traceback_parts(longrepr):
        function: str | None = None  # a `def` before a gap names nothing after it
        for text in part.splitlines():
            if _SECTION.match(text):
                return found
            native = _NATIVE.match(text)
            if native:
                found.append((native.group("path"), "", native.group("function")))
                continue
            location = _LOCATION.match(text)
            if location:
                message = location.group("message") or ""
                name = message[3:].strip() if message.startswith("in ") else function
                found.append((location.group("path"), message, name or None))
                function = None
                continue
            definition = _DEF.match(text)
            if definition:
                function = definition.group("function")
    return found


def traceback_parts(longrepr: str) -> list[str]:
    """The failure's own text (without output the runner appended), whole when short, else its
    first and last TRACEBACK_SCOPE characters in whole lines."""
    end = own_text_end(longrepr)
    if end <= 2 * TRACEBACK_SCOPE:
        return [longrepr[:end]]
    first = longrepr[:TRACEBACK_SCOPE]
    last = longrepr[end - TRACEBACK_SCOPE : end]
    # Drop the lines cut in two: half a location line would name a wrong file.
    newline = last.find("\n")
    return [first[: first.rfind("\n") + 1], last[newline + 1 :] if newline >= 0 else ""]


def failing_frame(nodeid: str, locations: Sequence[tuple[str, str, str | None]]) -> str | None:
    """The last traceback entry inside the test's own file, as "file::function" (or "file")."""
    file = nodeid.split("::", 1)[0]
    for path, _, function in reversed(locations):
        if _same_file(path, file):
            return f"{file}::{function}" if function else file
    return None


def _same_file(path: str, file: str) -> bool:
    path = path.replace("\\", "/")
    return path == file or path.endswith("/" + file) or file.endswith("/" + path)


def with_exception(text: str, exception: str) -> str:
    """The text, led by its exception's name when it does not name it already."""
    if not exception:
        return text
    last = exception.rsplit(".", 1)[-1]
    if re.search(rf"(?<![\w.]){re.escape(last)}(?!\w)", text) or re.search(
        rf"(?<!\w){re.escape(exception)}(?!\w)", text
    ):
        return text
    return f"{exception}: {text}" if text else exception


def label(failures: Sequence[Failure]) -> str:
    """A readable name for failures of one cause.

    The message as written when all say the same; else the normalized message, whose
    placeholders show what varies — unless they make soup (`{<str>: <str>}`), then the most
    common message as written.
    """
    lines = Counter(f.line for f in failures)
    if len(lines) == 1:
        text = next(iter(lines))
    else:
        texts = Counter(f.key.text for f in failures)
        text = _most_common(texts)
        if len(_SOUP.findall(text)) >= 2:
            text = _most_common(lines)
    return trim(with_exception(text, failures[0].exception) or NO_MESSAGE)


def _most_common(counts: Counter[str]) -> str:
    return min(counts, key=lambda text: (-counts[text], text))


def trim(text: str) -> str:
    return text if len(text) <= MAX_LABEL else text[: MAX_LABEL - 1] + "…"
