"""Redaction of secret values: shared by loop and by its pytest plugin.

Standard library only: the plugin imports it by this name from the folder loop puts on the
test interpreter's PYTHONPATH, and loop imports the same file as
`deployloop.runner.plugin.deployloop_redact`.

A value is replaced by `[redacted:NAME]` wherever it appears, and so is its URL-encoded form.
Values that are *secret by name* (a name matching the redaction patterns, such as `*TOKEN*`)
are replaced wherever they occur, even inside a longer word. Other values loop is told to
hide (`[tests] env`, a service's `env`) may be ordinary words ("local", "info"), so they are
replaced only where they stand alone (not inside a longer word), or every "localhost" would
become "[redacted:E2E_ENV]host". Values shorter than MIN_LENGTH are never replaced: "1" or
"on" would blank out half of every message.
"""

from __future__ import annotations

import fnmatch
import json
import re
import threading
from collections.abc import Iterable, Mapping
from urllib.parse import quote

MIN_LENGTH = 4
DEFAULT_PATTERNS = ("*TOKEN*", "*SECRET*", "*PASSWORD*", "*KEY*")
# The variable through which loop tells its plugin what to redact: {"names": [...],
# "values": {name: value}}. Names are looked up in the test process's environment; values
# are those the tests' environment does not hold (a service's env).
ENV_VAR = "LOOP_REDACT"
_WORD = re.compile(r"\w", re.ASCII)
_KEEP_PER_NAME = 64  # forms: a few values of one name, each in its quoted/encoded forms


def secret_name(name: str, patterns: Iterable[str]) -> bool:
    upper = name.upper()
    return any(fnmatch.fnmatchcase(upper, p.upper()) for p in patterns)


class Redactor:
    def __init__(self) -> None:
        self._values: dict[str, tuple[str, bool]] = {}  # value -> (name, anywhere)
        self._pattern: re.Pattern[str] | None = None
        self._dirty = False
        self._by_name: dict[str, list[str]] = {}  # the forms each name added, oldest first
        # loop adds ID tokens as it mints them while its log threads redact.
        self._lock = threading.Lock()

    def add(self, name: str, value: str, *, anywhere: bool) -> None:
        """Hide `value` as `[redacted:name]`; `anywhere`: also inside longer words.

        Its URL-encoded and quoted forms (JSON, Python repr: how an assertion or a log shows a
        string) are hidden too, and, for a value of several lines (a PEM key), each line: a
        line may be printed alone. A name keeps its latest few values only (ID tokens are
        minted again for every pytest process)."""
        if len(value) < MIN_LENGTH or "\x00" in value:
            return
        forms = {value, quote(value, safe=""), json.dumps(value)[1:-1], repr(value)[1:-1]}
        forms.update(line for line in value.splitlines() if len(line.strip()) >= MIN_LENGTH)
        with self._lock:
            kept = self._by_name.setdefault(name, [])
            for form in forms:
                known = self._values.get(form)
                if known is None or (anywhere and not known[1]):
                    self._values[form] = (name, anywhere)
                    self._dirty = True
                if form in kept:
                    kept.remove(form)
                kept.append(form)
            while len(kept) > _KEEP_PER_NAME:
                old = kept.pop(0)
                if self._values.get(old, ("",))[0] == name:
                    del self._values[old]
                    self._dirty = True

    def add_env(
        self, env: Mapping[str, str], patterns: Iterable[str], always: Iterable[str] = ()
    ) -> None:
        """Hide the values of env's variables whose names look secret, and of `always`."""
        patterns = tuple(patterns)
        for name, value in env.items():
            if secret_name(name, patterns):
                self.add(name, value, anywhere=True)
        for name in always:
            if name in env:
                self.add(name, env[name], anywhere=secret_name(name, patterns))

    def __bool__(self) -> bool:
        return bool(self._values)

    def redact(self, text: str) -> str:
        if not self._values or not text:
            return text
        pattern = self._compiled()
        return pattern.sub(self._replace, text)

    def safe_cut(self, text: str, cut: int) -> int:
        """`cut`, or an earlier index, such that no value to hide straddles it: text may be
        redacted in two parts there. Values are assumed shorter than len(text) - cut."""
        if not self._values:
            return cut
        longest = max(len(v) for v in list(self._values))
        for match in self._compiled().finditer(text, max(0, cut - longest)):
            if match.start() >= cut:
                break
            if match.end() > cut:
                return match.start()
        return cut

    def _replace(self, match: re.Match[str]) -> str:
        known = self._values.get(match.group())
        return f"[redacted:{known[0] if known else '?'}]"

    def _compiled(self) -> re.Pattern[str]:
        with self._lock:
            return self._compile_locked()

    def _compile_locked(self) -> re.Pattern[str]:
        if self._pattern is None or self._dirty:
            # Longest first: a value that contains another is replaced whole.
            parts = []
            for value in sorted(self._values, key=len, reverse=True):
                body = re.escape(value)
                if not self._values[value][1]:
                    if _WORD.match(value[0]):
                        body = r"(?<!\w)" + body
                    if _WORD.match(value[-1]):
                        body = body + r"(?!\w)"
                parts.append(body)
            self._pattern = re.compile("|".join(parts))
            self._dirty = False
        return self._pattern


def from_environment(environ: Mapping[str, str], into: Redactor | None = None) -> Redactor:
    """What loop's plugin hides, as loop described it in LOOP_REDACT (added to `into`: a
    worker learns the services' tokens after it started)."""
    redactor = into if into is not None else Redactor()
    try:
        spec = json.loads(environ.get(ENV_VAR) or "{}")
    except ValueError:
        spec = {}
    patterns = spec.get("patterns") or DEFAULT_PATTERNS
    for name in spec.get("names", []):
        if name in environ:
            redactor.add(name, environ[name], anywhere=secret_name(name, patterns))
    for name, value in (spec.get("values") or {}).items():
        redactor.add(str(name), str(value), anywhere=secret_name(str(name), patterns))
    return redactor


def describe(
    env: Mapping[str, str], patterns: Iterable[str], names: Iterable[str], values: Mapping[str, str]
) -> str:
    """LOOP_REDACT for a test process whose environment is `env`."""
    patterns = list(patterns)
    chosen = sorted({n for n in env if secret_name(n, patterns)} | {n for n in names if n in env})
    extra = {n: v for n, v in values.items() if env.get(n) != v}
    return json.dumps({"patterns": patterns, "names": chosen, "values": extra})
