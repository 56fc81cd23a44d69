"""Key paths of a config, and the problems found about them."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from deployloop.safetext import one_line

INT64 = range(-(2**63), 2**63)  # TOML integers are 64-bit; SQLite refuses larger ones


DOCUMENT_DEPTH = 16


Loc = tuple[str | int, ...]  # a key path, as pydantic's `loc`: ("tests", "suites", 0, "name")


@dataclass(frozen=True, slots=True)
class Problem:
    key: Loc  # the key the line names
    message: str
    # A key whose name is wrong is named by its table; this is the key itself.
    about: Loc | None = None
    missing: bool = False  # about a key that is not there
    meant: Loc | None = None  # for an unknown key, the known key it is likely a typo of


def at_line(source: str, line: int, message: str) -> str:
    return f"{source}:{line}: {one_line(message)}"


BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def dotted(loc: Loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{_key_text(part)}" if out else _key_text(part)
    return out or "(top level)"


def _key_text(part: str) -> str:
    """A key as TOML would write it: bare if it can be, else quoted (and escaped)."""
    if BARE_KEY.fullmatch(part):
        return part
    return json.dumps(part, ensure_ascii=not part.isprintable())
