"""What no type can say (NUL, huge integers), and pydantic's errors in plain words."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import (
    BaseModel,
    ValidationError,
)
from pydantic_core import ErrorDetails

from deployloop.config.keys import DOCUMENT_DEPTH, INT64, Loc, Problem, dotted
from deployloop.config.models import PATTERN_WORDS, Config, control_char
from deployloop.config.toml_text import key_lines, line_of
from deployloop.safetext import one_line


def _problem_line(source: str, line: int | None, key: Loc, message: str) -> str:
    """`path:line: key: message`, as compilers write it, so that editors and CI can jump to
    the line. A key that is not in the file (a missing table) gets `path: key: message`."""
    where = source if line is None else f"{source}:{line}"
    return f"{where}: {dotted(key)}: {one_line(message)}"


def report(source: str, text: str, problems: list[Problem]) -> str:
    lines = key_lines(text)
    placed = [(line_of(lines, p.key if p.about is None else p.about), p) for p in problems]
    # Stable: problems on one line keep the order of the checks. Those without a line
    # are about the whole file: first.
    placed.sort(key=lambda item: item[0] or 0)
    return "\n".join(_problem_line(source, line, p.key, p.message) for line, p in placed)


def unshadowed(problems: list[Problem], document: list[Problem]) -> list[Problem]:
    """`problems` less those about a value or key the document checks named already:
    pydantic would add "contains a control character" to "contains a NUL character"."""
    if not document:
        return problems
    values = {p.key for p in document if p.about is None}
    names = {p.about for p in document if p.about is not None}
    # The validator of a table checks its keys: it names the same key, at the table.
    tables = {p.key for p in document if p.about is not None}

    def shadowed(problem: Problem) -> bool:
        if problem.key in tables:
            return True
        prefixes = (problem.key[:n] for n in range(1, len(problem.key) + 1))
        return any(prefix in values or prefix in names for prefix in prefixes)

    return [p for p in problems if not shadowed(p)]


# --- the document: what no type can say ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Key:
    """A key path, linked to its parent: a document nested a thousand deep by dotted keys
    costs no more than a flat one."""

    parent: _Key | None
    part: str | int
    depth: int

    def loc(self) -> Loc:
        parts: list[str | int] = []
        node: _Key | None = self
        while node is not None:
            parts.append(node.part)
            node = node.parent
        return tuple(reversed(parts))


def check_document(raw: dict[str, Any]) -> list[Problem]:
    """Every value or key that no config may hold.

    Iterative, not recursive: nesting by dotted keys is not limited by too_deep. Values
    deeper than DOCUMENT_DEPTH are left to pydantic, which refuses them at a shallower key
    (no config key is that deep), in a message that stays short.
    """
    problems: list[Problem] = []
    stack: list[tuple[_Key | None, object]] = [(None, raw)]
    while stack:
        key, value = stack.pop()
        for name, message in _value_problems(value):
            loc = key.loc() if key else ()
            about = None if name is None else (*loc, name)
            problems.append(Problem(loc, message, about=about))
        depth = key.depth + 1 if key else 1
        if depth > DOCUMENT_DEPTH:
            continue
        if isinstance(value, dict):
            stack.extend((_Key(key, k, depth), v) for k, v in reversed(value.items()))
        elif isinstance(value, list):
            stack.extend((_Key(key, i, depth), v) for i, v in reversed(list(enumerate(value))))
    return problems


def _value_problems(value: object) -> list[tuple[str | None, str]]:
    """What is wrong with `value` (name None) or with the names of its keys."""
    if isinstance(value, str):
        if "\x00" in value:
            return [(None, "contains a NUL character")]
        if _has_surrogate(value):
            return [(None, "contains a lone surrogate (not Unicode text)")]
    elif isinstance(value, int) and not isinstance(value, bool):
        if value not in INT64:
            return [(None, "integer out of range (TOML integers are 64-bit)")]
    elif isinstance(value, dict):
        problems: list[tuple[str | None, str]] = []
        for name in value:
            bad = "\x00" if "\x00" in name else control_char(name)
            if bad == "\x00":
                problems.append((name, f"key {name!r} contains a NUL character"))
            elif bad is not None:
                problems.append((name, f"key {name!r} contains a control character {bad!r}"))
        return problems
    return []


def _has_surrogate(text: str) -> bool:
    # Only text handed to parse_config can hold one: load_config decodes strictly.
    return not text.isascii() and re.search("[\ud800-\udfff]", text) is not None


# --- pydantic's errors, in plain words ----------------------------------------------------------

_EXPECTED = {
    "int_type": "an integer",
    "float_type": "a number",
    "string_type": "a string",
    "bool_type": "true or false",
    "list_type": "an array",
    "dict_type": "a table",
    "model_type": "a table",
    "model_attributes_type": "a table",
    "date_type": "a date such as 2026-12-31",
}
_BOUNDS = {
    "greater_than": ("gt", "greater than"),
    "greater_than_equal": ("ge", "at least"),
    "less_than": ("lt", "less than"),
    "less_than_equal": ("le", "at most"),
}


def pydantic_problems(exc: ValidationError) -> list[Problem]:
    problems = []
    for error in exc.errors():
        key: Loc = tuple(error["loc"])
        if error["type"] == "extra_forbidden":
            meant = _closest(key[-1], _known_keys(key[:-1]))
            message = "unknown key" if meant is None else f"unknown key (did you mean {meant!r}?)"
            problems.append(
                Problem(key, message, meant=None if meant is None else (*key[:-1], meant))
            )
        elif error["type"] == "missing":
            problems.append(Problem(key, "required key is missing", missing=True))
        else:
            problems.append(Problem(key, _plain(error, key)))
    return problems


def _plain(error: ErrorDetails, key: Loc) -> str:
    kind = error["type"]
    ctx = error.get("ctx", {})
    value = error["input"]
    got = _shown(value)
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {got}"
    if kind in _BOUNDS:
        bound, words = _BOUNDS[kind]
        return f"must be {words} {ctx[bound]}, got {got}"
    if kind == "literal_error":
        choices = [c for c in get_args(_type_at(key)) if isinstance(c, str)]
        hint = _closest(value, choices)
        return f"expected {ctx['expected']}, got {got}" + (
            f" (did you mean {hint!r}?)" if hint else ""
        )
    if kind == "finite_number":
        return f"must be a finite number, got {got}"
    if kind in ("too_short", "string_too_short"):
        if ctx.get("min_length") == 1:
            return "must not be empty"
    if kind == "string_pattern_mismatch":
        pattern = ctx["pattern"]
        return f"must be {PATTERN_WORDS.get(pattern, f'like {pattern}')}, got {got}"
    if kind == "string_unicode":
        return "not Unicode text"
    return str(error["msg"]).removeprefix("Value error, ")


def _shown(value: object) -> str:
    """A value as a message shows it: short, and saying its TOML type where that matters."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        text = repr(value)
        return text if len(text) <= 30 else text[:30] + "..."
    if isinstance(value, str):
        return "the string " + (repr(value) if len(value) <= 40 else repr(value[:40]) + "...")
    if isinstance(value, datetime):
        return f"the date-time {value.isoformat()}"
    if isinstance(value, date):
        return f"the date {value.isoformat()}"
    if isinstance(value, time):
        return f"the time {value.isoformat()}"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__


def _closest(word: str | int, choices: list[str]) -> str | None:
    if not isinstance(word, str):
        return None
    import difflib  # ~15 ms to import; every `loop` command loads a config, few have typos

    found = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return found[0] if found else None


def _known_keys(table: Loc) -> list[str]:
    """The keys the model at `table` knows, or none when no model is there."""
    model = _type_at(table)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return []


def _type_at(key: Loc) -> Any:
    """The type a config gives `key`, without `| None` and Annotated; None if unknown."""
    kind: Any = Config
    for part in key:
        kind = _bare(kind)
        if isinstance(part, int) and get_origin(kind) is list:
            kind = get_args(kind)[0]
        elif isinstance(kind, type) and issubclass(kind, BaseModel) and part in kind.model_fields:
            kind = kind.model_fields[str(part)].annotation
        else:
            return None
    return _bare(kind)


def _bare(kind: Any) -> Any:
    while True:
        if get_origin(kind) is Annotated:
            kind = get_args(kind)[0]
        elif get_origin(kind) in (Union, UnionType):
            others = [arg for arg in get_args(kind) if arg is not type(None)]
            if len(others) != 1:
                return kind
            kind = others[0]
        else:
            return kind
