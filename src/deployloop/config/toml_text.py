"""The TOML text itself: nesting the parser could not take, its errors, where each key is
written (tomllib gives no positions)."""

from __future__ import annotations

import bisect
import re
import sys
import tomllib
from collections.abc import Callable

from deployloop.config.keys import BARE_KEY, DOCUMENT_DEPTH, Loc, at_line

# Far beyond what any config needs (it needs 3), and far below what exhausts the recursion
# of tomllib (~400 levels with the default limit, fewer deeper in a call stack).
MAX_NESTING = 64
_OPENER = re.compile(r'"""|\'\'\'|["\'#\[\]{}]')
_BASIC_END = re.compile(r'\\[\s\S]|"|\n')
_MULTILINE_BASIC_END = re.compile(r'\\[\s\S]|"""')


def too_deep(text: str, limit: int) -> int | None:
    """The line at which arrays and inline tables first nest deeper than `limit`, or None.

    Counts brackets outside strings and comments; table headers count too, harmlessly (they
    nest two deep at most). Text that is not TOML is left for tomllib to explain.
    """
    depth = 0
    pos = 0
    while (match := _OPENER.search(text, pos)) is not None:
        token = match.group()
        pos = match.end()
        if token in "[{":
            depth += 1
            if depth > limit:
                return text.count("\n", 0, match.start()) + 1
        elif token in "]}":
            depth = max(depth - 1, 0)
        elif token == "#":
            pos = _find_or_end(text, "\n", pos)
        elif token == "'":
            pos = min(_find_or_end(text, "'", pos) + 1, _find_or_end(text, "\n", pos))
        elif token == "'''":
            pos = _closing_quotes(text, _find_or_end(text, "'''", pos), "'")
        else:
            ends = _BASIC_END if token == '"' else _MULTILINE_BASIC_END
            while (end := ends.search(text, pos)) is not None and end.group()[0] == "\\":
                pos = end.end()
            if end is None:
                pos = len(text)
            elif end.group() == "\n":  # an unterminated string: tomllib will say so
                pos = end.start()
            elif end.group() == '"':
                pos = end.end()
            else:
                pos = _closing_quotes(text, end.start(), '"')
    return None


def _find_or_end(text: str, what: str, start: int) -> int:
    found = text.find(what, start)
    return len(text) if found < 0 else found


def _closing_quotes(text: str, start: int, quote: str) -> int:
    """Where a multi-line string that ends at `start` ends: its last one or two characters
    may be quotes too ('''''x''''' is "''x''")."""
    end = start + 3
    for _ in range(2):
        if text.startswith(quote, end):
            end += 1
    return end


_TOML_WHERE = re.compile(r" \(at line (\d+), column (\d+)\)$")


def toml_error(source: str, text: str, exc: tomllib.TOMLDecodeError) -> str:
    message = str(exc)
    where = _TOML_WHERE.search(message)
    if where is not None:
        line = where.group(1)
        message = f"{message[: where.start()]} (column {where.group(2)})"
    else:  # "(at end of document)"
        line = str(text.count("\n") + 1)
    return at_line(source, int(line), f"not valid TOML: {message}")


def long_number_line(text: str) -> int:
    limit = sys.get_int_max_str_digits()
    for match in re.finditer(r"[0-9][0-9_]*", text):
        if len(match.group().replace("_", "")) > limit:
            return text.count("\n", 0, match.start()) + 1
    return 1


# --- where each key is: tomllib gives no positions ---------------------------------------------

_BLANK = re.compile(r"(?:[ \t\r\n]|#[^\n]*)*")
_SPACES = re.compile(r"[ \t]*")
_BASIC_STRING = re.compile(r'"(?:[^"\\\n]|\\.)*"')
_LITERAL_STRING = re.compile(r"'[^'\n]*'")
# A number, a boolean, a date or time (which may hold a space): up to what ends a value.
_SCALAR = re.compile(r"[^,\]}#\r\n]+")


class _Unexpected(Exception):
    """The scanner met what it does not know: the keys after it get no line of their own."""


def key_lines(text: str) -> dict[Loc, int]:
    """The line on which each key (and array item) of `text` is first written, for the
    keys at most DOCUMENT_DEPTH deep.

    Reads tables ([a.b]), arrays of tables ([[a.b]], counting their items), dotted keys,
    inline tables and arrays, and skips strings and comments. `text` is TOML that tomllib
    read, so what is not understood here is a gap in the scanner, not in the text.
    """
    lines: dict[Loc, int] = {}
    try:
        _KeyScanner(text, lines).document()
    except (_Unexpected, RecursionError, tomllib.TOMLDecodeError):
        pass  # keys found so far keep their lines; the others get their table's
    return lines


def line_of(lines: dict[Loc, int], key: Loc) -> int | None:
    """The line of `key`, else of the nearest table around it that is written in the file."""
    for end in range(min(len(key), DOCUMENT_DEPTH), 0, -1):
        line = lines.get(key[:end])
        if line is not None:
            return line
    return None


class _KeyScanner:
    def __init__(self, text: str, lines: dict[Loc, int]) -> None:
        self.text = text
        self.pos = 0
        self.lines = lines
        self.newlines = [m.start() for m in re.finditer("\n", text)]
        self.arrays: dict[Loc, int] = {}  # array of tables -> index of its last item

    def document(self) -> None:
        table: Loc = ()
        while True:
            self.skip(_BLANK)
            if self.pos >= len(self.text):
                return
            line = self.line()
            if not self.text.startswith("[", self.pos):
                self.key_value(table)
                continue
            many = self.text.startswith("[[", self.pos)
            self.pos += 2 if many else 1
            parts = self.key()
            self.expect("]]" if many else "]")
            if many:
                array = (*self.resolve(parts[:-1]), *parts[-1:])
                self.arrays[array] = self.arrays.get(array, -1) + 1
                table = (*array, self.arrays[array])
            else:
                table = self.resolve(parts)
            self.record(table, line)

    def resolve(self, parts: Loc) -> Loc:
        """A header's key path, with the last item of each array of tables on it."""
        path: Loc = ()
        for part in parts:
            path = (*path, part)
            if path in self.arrays:
                path = (*path, self.arrays[path])
        return path

    def key_value(self, table: Loc) -> None:
        line = self.line()
        key = (*table, *self.key())
        self.expect("=")
        self.record(key, line)
        self.value(key)

    def value(self, key: Loc) -> None:
        self.skip(_SPACES)
        char = self.text[self.pos : self.pos + 1]
        if char in ("'", '"'):
            self.pos = self.string_end()
        elif char == "{":
            self.pos += 1
            self.items("}", lambda _: self.key_value(key))
        elif char == "[":
            self.pos += 1
            self.items("]", lambda index: self.item(key, index))
        else:
            self.match(_SCALAR)

    def item(self, key: Loc, index: int) -> None:
        self.record((*key, index), self.line())
        self.value((*key, index))

    def items(self, closer: str, read: Callable[[int], None]) -> None:
        index = 0
        while True:
            self.skip(_BLANK)
            if self.text.startswith(closer, self.pos):
                self.pos += 1
                return
            read(index)
            index += 1
            self.skip(_BLANK)
            if self.text.startswith(",", self.pos):
                self.pos += 1

    def key(self) -> Loc:
        """A dotted key's parts, the first DOCUMENT_DEPTH + 1 of them: deeper keys get no
        line, and a key a thousand parts long costs no more than a short one."""
        parts: list[str] = []
        while True:
            self.skip(_SPACES)
            start = self.pos
            if self.text.startswith('"', start):
                self.pos = self.string_end()
                part = tomllib.loads(f"k = {self.text[start : self.pos]}")["k"]
            elif self.text.startswith("'", start):
                self.pos = self.string_end()
                part = self.text[start + 1 : self.pos - 1]
            else:
                part = self.match(BARE_KEY).group()
            if len(parts) <= DOCUMENT_DEPTH:
                parts.append(part)
            self.skip(_SPACES)
            if not self.text.startswith(".", self.pos):
                return tuple(parts)
            self.pos += 1

    def string_end(self) -> int:
        text, pos = self.text, self.pos
        if text.startswith('"""', pos):
            end = _MULTILINE_BASIC_END.search(text, pos + 3)
            while end is not None and end.group()[0] == "\\":
                end = _MULTILINE_BASIC_END.search(text, end.end())
            if end is None:
                raise _Unexpected
            return _closing_quotes(text, end.start(), '"')
        if text.startswith("'''", pos):
            found = text.find("'''", pos + 3)
            if found < 0:
                raise _Unexpected
            return _closing_quotes(text, found, "'")
        return self.match(_BASIC_STRING if text[pos] == '"' else _LITERAL_STRING).end()

    def match(self, pattern: re.Pattern[str]) -> re.Match[str]:
        found = pattern.match(self.text, self.pos)
        if found is None:
            raise _Unexpected
        self.pos = found.end()
        return found

    def skip(self, pattern: re.Pattern[str]) -> None:
        self.match(pattern)

    def expect(self, token: str) -> None:
        self.skip(_SPACES)
        if not self.text.startswith(token, self.pos):
            raise _Unexpected
        self.pos += len(token)

    def line(self) -> int:
        return bisect.bisect_left(self.newlines, self.pos) + 1

    def record(self, key: Loc, line: int) -> None:
        """`key` and the tables it opens are written at `line`, unless written earlier."""
        for end in range(1, min(len(key), DOCUMENT_DEPTH) + 1):
            self.lines.setdefault(key[:end], line)
