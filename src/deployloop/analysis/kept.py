"""A finished iteration's Summary, kept in the store so that `loop status` and `loop summarize`
read it back instead of analyzing 10,000 rows (and importing the config's pydantic models)
every time.

A finished iteration's summary changes only when what it was computed from changes: the
iteration's own records and those of the iterations before it, the env's config (known issues,
categories, `[analysis]`), the analysis code, and the date (a known issue's `expires`). The
kept summary holds a key over all of these but the date, and the range of days its known-issue
flags hold for; a reader computes the key again and takes the kept summary only when both agree.

The summary is kept as JSON built from the dataclasses' own fields and type hints, so that a
field added to a record is kept too, with no list to keep in step; reading it back gives an
equal Summary (the tests check `==`).
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import typing
import zlib
from collections.abc import Callable, Sequence
from dataclasses import fields, is_dataclass
from datetime import date, timedelta
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deployloop import __version__
from deployloop.models import IterationRecord, IterationStatus, Summary
from deployloop.record_types import UNIONS, field_types

if TYPE_CHECKING:  # the config's pydantic models cost ~0.3 s to import
    from deployloop.config import KnownIssue
    from deployloop.store import Store

# Bump when the kept form changes in a way the code stamp below would not see (it sees every
# edit of the analysis' source files, so this is for a change of meaning elsewhere).
KEPT_FORMAT = 1


# --- the key ------------------------------------------------------------------------------


def summary_key(store: Store, record: IterationRecord, config_bytes: bytes | None) -> str:
    """What iteration `record`'s summary is computed from, as one digest.

    The config goes in as the file's bytes with the values of the environment variables it
    refers to (`{env:NAME}`, env_refs.fingerprint; None: no config file). Loading a config is
    a function of these alone (no includes), so equal bytes give an equal Config, and an
    invalid one fails again; that needs no pydantic to check, unlike a digest of the parsed
    sections would. The file's mtime would add nothing the bytes do not
    say, and miss nothing they do. Any edit of the file (even `workers`) computes the summary
    once more: a cost of one analysis, never a stale report.
    """
    digest = hashlib.sha256()
    digest.update(f"{KEPT_FORMAT}\0{__version__}\0{_code_stamp()}\0".encode())
    digest.update(b"no config" if config_bytes is None else b"config\0" + config_bytes)
    digest.update(b"\0" + store.summary_inputs(record.env, record.number).encode())
    return digest.hexdigest()


def _code_stamp() -> str:
    """The source files a summary is computed by, as installed (name, size, mtime): the
    analysis, the config's defaults and checks, the records and how the store reads them. An
    upgrade or an edit of any makes the kept summaries stale. A few dozen stat() calls."""
    package = Path(__file__).parent.parent  # deployloop/
    files = [package / "models.py", package / "store.py", package / "stages" / "analyze.py"]
    try:
        for folder in (package / "analysis", package / "config"):
            files += sorted(folder / name for name in os.listdir(folder) if name.endswith(".py"))
        stamps = []
        for path in files:
            info = os.stat(path)
            stamps.append(f"{path.parent.name}/{path.name}:{info.st_size}:{info.st_mtime_ns}")
    except OSError:  # not installed as files (a zip): the version alone says it
        return "?"
    return ",".join(stamps)


def valid_days(known_issues: Sequence[KnownIssue], today: date) -> tuple[date | None, date | None]:
    """The days (first, last; None: no bound) on which every known issue's `expired` flag is
    what it is `today` (an issue expires the day after its `expires` date)."""
    past = [issue.expires for issue in known_issues if issue.expires and issue.expires < today]
    ahead = [issue.expires for issue in known_issues if issue.expires and issue.expires >= today]
    return (max(past) + timedelta(days=1) if past else None, min(ahead) if ahead else None)


# --- reading and keeping ------------------------------------------------------------------


def kept_summary(
    store: Store, record: IterationRecord, config_bytes: bytes | None, today: date
) -> Summary | None:
    """The summary kept for a finished iteration, if it still holds; None: compute it."""
    if record.status is IterationStatus.RUNNING:
        return None  # its figures change with every result
    kept = store.kept_summary(record.id)
    if kept is None:
        return None
    key, first_day, last_day, data = kept
    day = today.isoformat()
    if (first_day is not None and day < first_day) or (last_day is not None and day > last_day):
        return None
    if key != summary_key(store, record, config_bytes):
        return None
    try:
        summary = summary_from_bytes(data)
    except (ValueError, TypeError, KeyError, IndexError):
        return None  # damaged or of another form: computed again, and kept anew
    # The key covers the iteration's record; a summary of another record is not this one's.
    return summary if summary.iteration == record else None


def keep_summary(
    store: Store,
    summary: Summary,
    config_bytes: bytes | None,
    known_issues: Sequence[KnownIssue],
    today: date,
) -> bool:
    """Keep a finished iteration's summary, computed with the config `config_bytes` hold (no
    config when None) on day `today`. False when it was not kept: a running iteration, or a
    store that cannot be written now (read-only, busy); the next reader computes it then."""
    record = summary.iteration
    if record.status is IterationStatus.RUNNING:
        return False
    first_day, last_day = valid_days(known_issues, today)
    return store.keep_summary(
        record.id,
        summary_key(store, record, config_bytes),
        first_day.isoformat() if first_day else None,
        last_day.isoformat() if last_day else None,
        summary_to_bytes(summary),
    )


# --- the kept form ------------------------------------------------------------------------


def summary_to_bytes(summary: Summary) -> bytes:
    """JSON, compressed: failures' tracebacks and flaky tests' histories make ~0.5 MB of
    text of a 10,000-test iteration, ~30 KB this way, for ~10 ms once and ~2 ms per read."""
    # ASCII: a node id from a file name that is not UTF-8 holds lone surrogates, which
    # \u escapes carry and UTF-8 text could not. allow_nan: a float is kept as it is.
    text = json.dumps(_encode(summary), ensure_ascii=True, separators=(",", ":"))
    return zlib.compress(text.encode("ascii"))


def summary_from_bytes(data: bytes) -> Summary:
    """Raises ValueError (zlib.error, a JSON error included), TypeError or KeyError on a kept
    form this code did not write."""
    decode = _decoder(Summary)
    assert decode is not None
    try:
        text = zlib.decompress(data)
    except zlib.error as exc:
        raise ValueError(f"not a kept summary: {exc}") from None
    # Tens of thousands of lists and records in a row, none of them in a cycle: the cyclic
    # collector would scan them over and over while they are made (a third of json.loads).
    enabled = gc.isenabled()
    gc.disable()
    try:
        value = decode(json.loads(text))
    finally:
        if enabled:
            gc.enable()
    assert isinstance(value, Summary)
    return value


def _encode(value: object) -> object:
    # A record is the list of its fields' values, in field order: a long history's flaky tests
    # hold thousands of small records, and names would double what is kept and read.
    # JSON keeps int and float apart (0 vs 0.0), so a figure reads back as the type it was.
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, tuple):
        return [_encode(item) for item in value]
    if is_dataclass(value) and not isinstance(value, type):
        return [_encode(getattr(value, f.name)) for f in fields(value)]
    raise TypeError(f"cannot keep a {type(value).__name__} in a summary")


Decoder = Callable[[Any], object]
_decoders: dict[object, Decoder | None] = {}


def _decoder(kind: object) -> Decoder | None:
    """A function turning the kept form of a value of type `kind` back into the value (None:
    it is kept as it is, a plain value), built once per type from its annotations."""
    if kind not in _decoders:
        _decoders[kind] = _make_decoder(kind)
    return _decoders[kind]


def _make_decoder(kind: object) -> Decoder | None:
    if kind in (int, float, str, bool):
        return None
    if isinstance(kind, type) and issubclass(kind, Enum):
        # A dict lookup: calling the Enum costs several times as much, per history point.
        return {member.value: member for member in kind}.__getitem__
    if isinstance(kind, type) and is_dataclass(kind):
        return _dataclass_decoder(kind)
    origin = typing.get_origin(kind)
    args = typing.get_args(kind)
    if origin in UNIONS:
        others = [arg for arg in args if arg is not type(None)]
        if len(others) != 1:
            raise TypeError(f"cannot read back a {kind}")
        inner = _decoder(others[0])
        if inner is None:
            return None
        return lambda value: None if value is None else inner(value)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            item = _decoder(args[0])
            if item is None:
                return tuple
            return lambda value: tuple(map(item, value))
        items = [_decoder(arg) for arg in args]
        return lambda value: tuple(
            v if d is None else d(v) for d, v in zip(items, value, strict=True)
        )
    raise TypeError(f"cannot read back a {kind}")


def _dataclass_decoder(kind: type) -> Decoder:
    hints = field_types(kind)
    if _shareable(kind, hints):
        return _shared_decoder(_decoder_of_fields(kind, hints))
    return _decoder_of_fields(kind, hints)


def _shareable(kind: type, hints: dict[str, Any]) -> bool:
    """Whether equal kept forms of `kind` may read back as one shared record: a frozen one
    of ints, strings and enum members only (a float or a bool would compare equal to an int
    of another type: 1.0 == 1 == True)."""
    params = getattr(kind, "__dataclass_params__", None)
    if params is None or not params.frozen:
        return False
    for f in fields(kind):
        hint = hints[f.name]
        args = typing.get_args(hint) if typing.get_origin(hint) in UNIONS else (hint,)
        for arg in args:
            if not (arg in (int, str, type(None)) or (isinstance(arg, type) and
                                                     issubclass(arg, Enum))):
                return False
    return True


def _shared_decoder(decode: Decoder) -> Decoder:
    # A long history's points repeat (20 iterations x a few outcomes): each distinct one is
    # made once and shared, which reads a 10,000-test history several times faster.
    made: dict[tuple[object, ...], object] = {}

    def shared(value: Any) -> object:
        key = tuple(value)
        record = made.get(key)
        if record is None:
            record = made[key] = decode(value)
        return record

    return shared


def _decoder_of_fields(kind: type, hints: dict[str, Any]) -> Decoder:
    width = len(fields(kind))
    # Only the fields that are not plain values are converted, in the list json.loads just
    # made: the tens of thousands of history points cost a call and one lookup each.
    converters = [
        (i, member)
        for i, f in enumerate(fields(kind))
        if (member := _decoder(hints[f.name])) is not None
    ]

    def decode(value: Any) -> object:
        if len(value) != width:  # kept by other code: not read (the key should say so first)
            raise ValueError(f"a kept {kind.__name__} has {len(value)} fields, not {width}")
        for i, member in converters:
            value[i] = member(value[i])
        return kind(*value)

    return decode
