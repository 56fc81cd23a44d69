"""The records' field types, resolved once per process.

The records use postponed annotations (strings); resolving them costs an eval per field, and
both the kept summary's reader and the reports' text scrubbing walk the same records by type.
"""

from __future__ import annotations

import types
import typing
from dataclasses import fields, is_dataclass
from enum import Enum
from functools import cache
from typing import Any

UNIONS = (types.UnionType, typing.Union)


@cache
def field_types(kind: type) -> dict[str, Any]:
    """Each field's resolved type, by name. Raises NameError for a record whose annotations
    name a type its module does not define at run time."""
    hints = typing.get_type_hints(kind)
    return {f.name: hints[f.name] for f in fields(kind)}


@cache
def text_fields(kind: type) -> tuple[str, ...] | None:
    """The fields of record `kind` that may hold text from outside loop (a str, or a record
    or tuple holding one); None when its types cannot be resolved (then every field may)."""
    try:
        types_ = field_types(kind)
    except NameError:
        return None
    return tuple(name for name, hint in types_.items() if _may_hold_text(hint, {kind}))


def _may_hold_text(hint: object, seen: set[type]) -> bool:
    if isinstance(hint, type) and issubclass(hint, Enum):
        return False  # one of loop's own words, even a StrEnum
    if hint in (int, float, bool, type(None)):
        return False
    if hint is str:
        return True
    if isinstance(hint, type) and is_dataclass(hint):
        if hint in seen:
            return False  # its fields are being looked at already
        try:
            nested = field_types(hint)
        except NameError:
            return True
        return any(_may_hold_text(h, seen | {hint}) for h in nested.values())
    origin = typing.get_origin(hint)
    if origin in UNIONS or origin is tuple:
        return any(_may_hold_text(arg, seen) for arg in typing.get_args(hint) if arg is not ...)
    return True  # a type this does not know: it may
