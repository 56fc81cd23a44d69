"""Text from tests, services and the environment, made safe to store and to show.

A failure message, a service log line or a file name may hold anything: terminal escape
sequences (which can move the cursor, retitle the window or hide text), NUL, a carriage
return that overwrites the line, bidi overrides that reorder what a reader sees, and lone
surrogates (bytes of a file name that are not UTF-8) that cannot even be encoded for output.
Before such text reaches the store, a terminal, markdown, HTML or JSON, each of those
characters becomes a visible escape (`\\x1b`, `\\x00`, `\\u202e`); colour codes (SGR
sequences, which pytest writes with `--color=yes`) are dropped first, as they carry no content.
The raw text stays in the raw files loop keeps (pytest's log, the reportlog).
"""

from __future__ import annotations

import re

# C0 controls but tab and newline, DEL, C1 controls, bidi embeddings/overrides/isolates,
# and lone surrogates.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_UNSAFE_ONE_LINE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)
_COLOUR = re.compile("\x1b\\[[0-9;]*m")


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape): show the byte
        return f"\\x{code - 0xDC00:02x}"
    if char == "\n":
        return "\\n"
    if char == "\t":
        return "\\t"
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}"


def printable(text: str) -> str:
    """`text` with colour codes removed and every other unsafe character escaped; newlines
    and tabs stay. Idempotent: an escape is plain ASCII."""
    if text.isascii() and text.isprintable():
        return text  # the common case, without a regex pass
    return _UNSAFE.sub(_escape, _COLOUR.sub("", text))


def one_line(text: str) -> str:
    """As printable(), with newlines and tabs escaped too: for a table cell or a log line."""
    if text.isascii() and text.isprintable():
        return text
    return _UNSAFE_ONE_LINE.sub(_escape, _COLOUR.sub("", text))


def has_unsafe(text: str) -> bool:
    """Whether printable() would change anything but colour codes."""
    return _UNSAFE.search(text) is not None


def shown_text(text: str | None) -> str:
    """Text for a rich markup string: one line, escaped, and with `[` escaped so a message
    like "[/red]" is shown as written, never read as markup (or raising MarkupError)."""
    from rich.markup import escape  # only where rich prints anyway

    return escape(one_line(text or ""))
