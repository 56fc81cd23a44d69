"""Load and validate `configs/<env>.toml`.

pydantic checks keys and types; the checks that span keys (names, `depends_on`, cycles,
what each deploy target needs) run beside it, on the parsed document, so that a user sees
every mistake at once, each naming the file, its line and the key.
Before pydantic, the text is checked for nesting that would exhaust the recursion of the
TOML parser, and the parsed document for what no type can express (NUL in any string or
key, integers beyond 64 bits): those values would otherwise pass and crash a run later, in
an argv, an environment or the store, with an error that names no key.
"""

from __future__ import annotations

import bisect
import fnmatch
import json
import re
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)
from pydantic_core import ErrorDetails

from deployloop.safetext import has_unsafe, one_line


class ConfigError(Exception):
    """A config that cannot be used; the message names the file and the key."""


def _regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"not a valid regular expression: {exc}") from None
    except OverflowError as exc:  # a{99999999999}
        raise ValueError(f"not a valid regular expression: {exc}") from None
    except RecursionError:  # thousands of nested groups
        raise ValueError("not a valid regular expression: nested too deeply") from None
    return value


def _control_char(value: str) -> str | None:
    """The first character of `value` that has no place in a name or a path: what
    safetext would escape, and tab and newline too."""
    if value.isascii() and value.isprintable():
        return None
    return next((c for c in value if c in "\t\n" or has_unsafe(c)), None)


def _no_control(value: str) -> str:
    bad = _control_char(value)
    if bad is not None:
        raise ValueError(f"contains a control character {bad!r}")
    return value


def _env_names(value: dict[str, str]) -> dict[str, str]:
    # os.environ and execve take any of these and then fail, or silently set another
    # variable ("A=B" sets A), in the middle of a run.
    for name in value:
        if not name:
            why = "empty"
        elif "=" in name:
            why = "contains '='"
        elif any(c.isspace() for c in name):
            why = "contains whitespace"
        elif _control_char(name) is not None:
            why = "contains a control character"
        else:
            continue
        raise ValueError(f"{name!r} is not a valid environment variable name ({why})")
    return value


def _no_space_or_control(value: str) -> str:
    bad = next((c for c in value if c.isspace() or _control_char(c) is not None), None)
    if bad is not None:
        raise ValueError(f"must not contain whitespace or control characters (found {bad!r})")
    return value


class _Strict(BaseModel):
    # Strict: lax mode turns "20" into 20, "yes" into True and 1.0 into 1, so a quoted
    # number or a misplaced value would pass unnoticed. TOML gives typed values: the only
    # conversion strict mode keeps, an integer where a float belongs, is the one TOML needs.
    # inf and nan pass every range check a timeout or a rate could have.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, strict=True)


Argv = list[str]
# Shown in terminals and reports, where a control character could rewrite what is shown.
DisplayName = Annotated[str, Field(min_length=1), AfterValidator(_no_control)]
# A path with a newline in it is a mistake, not a file; an empty one would make pytest
# collect everything under the rootdir.
PathText = Annotated[str, Field(min_length=1), AfterValidator(_no_control)]


class LoopSection(_Strict):
    target_pass_rate: float = Field(100.0, ge=0, le=100)
    max_iterations: int = Field(5, ge=1)
    stall_iterations: int = Field(3, ge=0)
    between_iterations: Argv | None = Field(None, min_length=1)


_INT32_MAX = 2**31 - 1  # the Cloud Run API's instance counts are int32
# About 31 years. A longer wait makes threading's waits raise OverflowError (their limit is
# threading.TIMEOUT_MAX, ~9.2e9 s here), and an integer near 2**63 becomes a float beyond
# the 64 bits the store keeps.
_MAX_SECONDS = 10**9


_SERVICE_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
_CLOUD_RUN_NAME = r"^[a-z]([-a-z0-9]{0,47}[a-z0-9])?$"
# What a pattern asks for, in words: the pattern itself is no help to a reader.
_PATTERN_WORDS = {
    _SERVICE_NAME: "letters, digits, '_', '.' and '-' only, starting with a letter or digit",
    _CLOUD_RUN_NAME: "a Cloud Run service name: lower-case letters, digits and '-',"
    " starting with a letter, at most 49 characters",
}


class ServiceConfig(_Strict):
    name: str = Field(pattern=_SERVICE_NAME)
    command: Argv | None = Field(None, min_length=1)  # local target
    url: str | None = None  # command and none targets
    env: dict[str, str] = Field(default_factory=dict)
    depends_on: list[str] = Field(default_factory=list)
    health_path: str = "/health"
    ready_timeout_s: float = Field(30.0, gt=0, le=_MAX_SECONDS)
    # cloudrun target
    image: str | None = None  # may hold {git_sha} and {iteration}
    service_name: str | None = Field(None, pattern=_CLOUD_RUN_NAME)
    secrets: dict[str, str] = Field(default_factory=dict)  # ENV_VAR -> "secret:version"
    service_account: str | None = None
    cpu: str | None = None  # "1", "2", "1000m"
    memory: str | None = None  # "512Mi", "1Gi"
    min_instances: int | None = Field(None, ge=0, le=_INT32_MAX)
    max_instances: int | None = Field(None, ge=1, le=_INT32_MAX)
    concurrency: int | None = Field(None, ge=1, le=1000)
    timeout_s: int | None = Field(None, ge=1, le=3600)
    ingress: Literal["all", "internal", "internal-and-cloud-load-balancing"] | None = None
    allow_unauthenticated: bool = False
    labels: dict[str, Annotated[str, AfterValidator(_no_control)]] = Field(default_factory=dict)

    @field_validator("env", "secrets")
    @classmethod
    def _valid_env_names(cls, value: dict[str, str]) -> dict[str, str]:
        return _env_names(value)

    @field_validator("labels")
    @classmethod
    def _label_keys(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            bad = _control_char(key)
            if bad is not None:
                raise ValueError(f"key {key!r} contains a control character {bad!r}")
        return value

    @field_validator("secrets")
    @classmethod
    def _secret_refs(cls, value: dict[str, str]) -> dict[str, str]:
        for var, ref in value.items():
            if not re.match(r"^[A-Za-z0-9_-]+:([0-9]+|latest)$", ref):
                raise ValueError(
                    f"{var}: {ref!r} is not a Secret Manager reference 'name:version'"
                    " (version a number or 'latest')"
                )
        return value

    @property
    def cloud_run_name(self) -> str:
        return self.service_name or self.name

    @field_validator("health_path")
    @classmethod
    def _absolute_path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must start with '/'")
        # It goes into an HTTP request line: CR or LF would end it early.
        return _no_space_or_control(value)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None:
            _no_space_or_control(value)
        if value is not None and not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/") if value else value


class DeploySection(_Strict):
    target: Literal["local", "command", "cloudrun", "none"] = "local"
    command: Argv | None = Field(None, min_length=1)
    project: str | None = None
    region: str | None = None
    rollback_on_failure: bool = False
    services: list[ServiceConfig] = Field(default_factory=list)


class SuiteConfig(_Strict):
    name: DisplayName
    paths: list[PathText] = Field(min_length=1)
    priority: int = Field(1, ge=0)
    markers: str | None = None
    # Its tests run in one pytest process with nothing else running: for fixtures that
    # bind a fixed port, or share a database, which two processes at once would fight over.
    serial: bool = False


class TestsSection(_Strict):
    python: PathText | None = None
    workers: int = Field(4, ge=1, le=64)
    suite_timeout_s: float = Field(900.0, gt=0, le=_MAX_SECONDS)
    # A test running longer is stopped (its process with it); the tests after it run on in
    # a new process. None: only suite_timeout_s applies.
    test_timeout_s: float | None = Field(None, gt=0, le=_MAX_SECONDS)
    # Run each failing test again up to N times in a fresh process, to tell flaky from broken.
    # The first failure still counts: a rerun that passes never hides it.
    reruns: int = Field(0, ge=0, le=5)
    pytest_args: Argv = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    suites: list[SuiteConfig] = Field(min_length=1)

    @field_validator("env")
    @classmethod
    def _valid_env_names(cls, value: dict[str, str]) -> dict[str, str]:
        return _env_names(value)


class KnownIssue(_Strict):
    id: DisplayName
    match: str = Field(min_length=1)
    reason: str = ""
    expires: date | None = None

    @field_validator("match")
    @classmethod
    def _valid_regex(cls, value: str) -> str:
        return _regex(value)


class CategoryRule(_Strict):
    """Failures whose message (and traceback) match get this category; first match wins."""

    name: Literal["product", "test", "environment", "unknown"]
    message: str = Field(min_length=1)
    traceback: str | None = None

    @field_validator("message", "traceback")
    @classmethod
    def _valid_regex(cls, value: str | None) -> str | None:
        return None if value is None else _regex(value)


class AnalysisSection(_Strict):
    broken_after: int = Field(3, ge=2)  # failed in each of its last N runs: broken, not flaky
    # An e2e test that finishes faster than this did not talk to anything: a false green.
    # Off (0) by default: against services on this machine a real request can take well under
    # a millisecond; against a remote environment 0.005 is a sound floor.
    min_test_duration_s: float = Field(0.0, ge=0, le=_MAX_SECONDS)
    skipped_jump_pct: float = Field(20.0, gt=0, le=100)  # skipped share up by this many points
    outage_share: float = Field(0.5, gt=0, le=1)  # this share of executed tests failing one way


DEFAULT_REDACTED_NAMES = ("*TOKEN*", "*SECRET*", "*PASSWORD*", "*KEY*")


class RedactionSection(_Strict):
    """Environment variables whose values loop hides from everything it writes, by name."""

    # fnmatch globs, case-insensitive; a list in the config replaces the default.
    names: list[Annotated[str, Field(min_length=1), AfterValidator(_no_control)]] = Field(
        default_factory=lambda: list(DEFAULT_REDACTED_NAMES)
    )

    def matches(self, env_name: str) -> bool:
        # Upper-casing both sides, as the pytest plugin's redaction does, so loop and the
        # plugin agree on what is secret.
        upper = env_name.upper()
        return any(fnmatch.fnmatchcase(upper, pattern.upper()) for pattern in self.names)


class Config(_Strict):
    loop: LoopSection = Field(default_factory=LoopSection)
    deploy: DeploySection = Field(default_factory=DeploySection)
    tests: TestsSection
    known_issues: list[KnownIssue] = Field(default_factory=list)
    categories: list[CategoryRule] = Field(default_factory=list)
    analysis: AnalysisSection = Field(default_factory=AnalysisSection)
    redaction: RedactionSection = Field(default_factory=RedactionSection)


def config_path(config_dir: Path, env: str) -> Path:
    return config_dir / f"{env}.toml"


def load_config(config_dir: Path, env: str) -> Config:
    """Read and validate the config of `env`; raise ConfigError with a one-line reason."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", env):
        raise ConfigError(f"--env {env!r}: use letters, digits, '.', '_' and '-' only")
    path = config_path(config_dir, env)
    try:
        # is_file() and glob() raise, rather than answer False, on a folder loop may not enter.
        if not path.is_file():
            known = sorted(p.stem for p in config_dir.glob("*.toml")) if config_dir.is_dir() else []
            hint = f" (found: {', '.join(known)})" if known else f" (no configs in {config_dir}/)"
            raise ConfigError(f"{path}: no config for env {env!r}{hint}")
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return parse_config(text, source=str(path))


def parse_config(text: str, source: str) -> Config:
    """Validate a config's text; raise ConfigError, one line per problem, each naming
    `source`, the line and the key (see _problem_line), in the order of the file.

    Text that is not TOML stops at its first error. Otherwise every check runs and reports
    all it finds: the document checks, pydantic, and the checks that span keys. These read
    the document, not the model, so that they run when pydantic refuses it too.
    """
    # Editors on Windows start UTF-8 files with a byte order mark; TOML has no place for it.
    text = text.removeprefix("\ufeff")
    line = _too_deep(text, _MAX_NESTING)
    if line is not None:
        raise ConfigError(
            _at_line(
                source,
                line,
                f"arrays or tables nested too deeply (more than {_MAX_NESTING} levels)",
            )
        )
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(_toml_error(source, text, exc)) from None
    except ValueError:
        # tomllib hands a decimal to int(), which refuses more than
        # sys.get_int_max_str_digits() digits with a plain ValueError.
        raise ConfigError(
            _at_line(source, _long_number_line(text), "not valid TOML: integer too long")
        ) from None
    except RecursionError:  # _too_deep missed a way to nest; cannot name the line
        raise ConfigError(_at_line(source, 1, "arrays or tables nested too deeply")) from None
    document = _check_document(raw)
    config: Config | None = None
    refused: list[_Problem] = []
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        refused = _pydantic_problems(exc)
    # A value pydantic refused is left out of the checks that span keys: `name = "a b"`
    # would make every `depends_on = ["a"]` an unknown service too.
    spanning = _cross_check(_masked(raw, [p.key for p in refused]))
    problems = document + _unshadowed(refused + spanning, document)
    # `comand = [...]` makes `command` missing too: the typo is the one thing to fix.
    meant = {p.meant for p in problems if p.meant is not None}
    problems = [p for p in problems if not (p.missing and p.key in meant)]
    if config is not None and not problems:
        return config
    raise ConfigError(_report(source, text, problems) or f"{source}: not a valid config")


def check_markers(config: Config, source: str) -> None:
    """Raise ConfigError for each suite whose `markers` pytest's -m would refuse.

    Not part of load_config: pytest's parser costs ~0.18 s to import, and `loop status`
    loads configs and must start fast. `loop run` and `loop plan` call it.
    """
    from _pytest.mark.expression import Expression

    lines = []
    for i, suite in enumerate(config.tests.suites):
        if suite.markers is None:
            continue
        try:
            Expression.compile(suite.markers)
        except RecursionError:
            reason = "nested too deeply"
        except SyntaxError as exc:  # pytest >= 8.4
            reason = f"at column {exc.offset}: {exc.msg}"
        except Exception as exc:  # pytest < 8.4: ParseError, whose text has the column
            reason = str(exc)
        else:
            continue
        lines.append(
            f"{source}: tests.suites[{i}].markers: not a valid -m expression: {one_line(reason)}"
        )
    if lines:
        raise ConfigError("\n".join(lines))


# Far beyond what any config needs (it needs 3), and far below what exhausts the recursion
# of tomllib (~400 levels with the default limit, fewer deeper in a call stack).
_MAX_NESTING = 64
_OPENER = re.compile(r'"""|\'\'\'|["\'#\[\]{}]')
_BASIC_END = re.compile(r'\\[\s\S]|"|\n')
_MULTILINE_BASIC_END = re.compile(r'\\[\s\S]|"""')


def _too_deep(text: str, limit: int) -> int | None:
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


def _toml_error(source: str, text: str, exc: tomllib.TOMLDecodeError) -> str:
    message = str(exc)
    where = _TOML_WHERE.search(message)
    if where is not None:
        line = where.group(1)
        message = f"{message[: where.start()]} (column {where.group(2)})"
    else:  # "(at end of document)"
        line = str(text.count("\n") + 1)
    return _at_line(source, int(line), f"not valid TOML: {message}")


def _long_number_line(text: str) -> int:
    limit = sys.get_int_max_str_digits()
    for match in re.finditer(r"[0-9][0-9_]*", text):
        if len(match.group().replace("_", "")) > limit:
            return text.count("\n", 0, match.start()) + 1
    return 1


_INT64 = range(-(2**63), 2**63)  # TOML integers are 64-bit; SQLite refuses larger ones
_DOCUMENT_DEPTH = 16

_Loc = tuple[str | int, ...]  # a key path, as pydantic's `loc`: ("tests", "suites", 0, "name")


@dataclass(frozen=True, slots=True)
class _Problem:
    key: _Loc  # the key the line names
    message: str
    # A key whose name is wrong is named by its table; this is the key itself.
    about: _Loc | None = None
    missing: bool = False  # about a key that is not there
    meant: _Loc | None = None  # for an unknown key, the known key it is likely a typo of


def _at_line(source: str, line: int, message: str) -> str:
    return f"{source}:{line}: {one_line(message)}"


def _problem_line(source: str, line: int | None, key: _Loc, message: str) -> str:
    """`path:line: key: message`, as compilers write it, so that editors and CI can jump to
    the line. A key that is not in the file (a missing table) gets `path: key: message`."""
    where = source if line is None else f"{source}:{line}"
    return f"{where}: {_dotted(key)}: {one_line(message)}"


def _report(source: str, text: str, problems: list[_Problem]) -> str:
    lines = _key_lines(text)
    placed = [(_line_of(lines, p.key if p.about is None else p.about), p) for p in problems]
    # Stable: problems on one line keep the order of the checks. Those without a line
    # are about the whole file: first.
    placed.sort(key=lambda item: item[0] or 0)
    return "\n".join(_problem_line(source, line, p.key, p.message) for line, p in placed)


def _unshadowed(problems: list[_Problem], document: list[_Problem]) -> list[_Problem]:
    """`problems` less those about a value or key the document checks named already:
    pydantic would add "contains a control character" to "contains a NUL character"."""
    if not document:
        return problems
    values = {p.key for p in document if p.about is None}
    names = {p.about for p in document if p.about is not None}
    # The validator of a table checks its keys: it names the same key, at the table.
    tables = {p.key for p in document if p.about is not None}

    def shadowed(problem: _Problem) -> bool:
        if problem.key in tables:
            return True
        prefixes = (problem.key[:n] for n in range(1, len(problem.key) + 1))
        return any(prefix in values or prefix in names for prefix in prefixes)

    return [p for p in problems if not shadowed(p)]


# --- where each key is: tomllib gives no positions ---------------------------------------------

_BLANK = re.compile(r"(?:[ \t\r\n]|#[^\n]*)*")
_SPACES = re.compile(r"[ \t]*")
_BASIC_STRING = re.compile(r'"(?:[^"\\\n]|\\.)*"')
_LITERAL_STRING = re.compile(r"'[^'\n]*'")
# A number, a boolean, a date or time (which may hold a space): up to what ends a value.
_SCALAR = re.compile(r"[^,\]}#\r\n]+")


class _Unexpected(Exception):
    """The scanner met what it does not know: the keys after it get no line of their own."""


def _key_lines(text: str) -> dict[_Loc, int]:
    """The line on which each key (and array item) of `text` is first written, for the
    keys at most _DOCUMENT_DEPTH deep.

    Reads tables ([a.b]), arrays of tables ([[a.b]], counting their items), dotted keys,
    inline tables and arrays, and skips strings and comments. `text` is TOML that tomllib
    read, so what is not understood here is a gap in the scanner, not in the text.
    """
    lines: dict[_Loc, int] = {}
    try:
        _KeyScanner(text, lines).document()
    except (_Unexpected, RecursionError, tomllib.TOMLDecodeError):
        pass  # keys found so far keep their lines; the others get their table's
    return lines


def _line_of(lines: dict[_Loc, int], key: _Loc) -> int | None:
    """The line of `key`, else of the nearest table around it that is written in the file."""
    for end in range(min(len(key), _DOCUMENT_DEPTH), 0, -1):
        line = lines.get(key[:end])
        if line is not None:
            return line
    return None


class _KeyScanner:
    def __init__(self, text: str, lines: dict[_Loc, int]) -> None:
        self.text = text
        self.pos = 0
        self.lines = lines
        self.newlines = [m.start() for m in re.finditer("\n", text)]
        self.arrays: dict[_Loc, int] = {}  # array of tables -> index of its last item

    def document(self) -> None:
        table: _Loc = ()
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

    def resolve(self, parts: _Loc) -> _Loc:
        """A header's key path, with the last item of each array of tables on it."""
        path: _Loc = ()
        for part in parts:
            path = (*path, part)
            if path in self.arrays:
                path = (*path, self.arrays[path])
        return path

    def key_value(self, table: _Loc) -> None:
        line = self.line()
        key = (*table, *self.key())
        self.expect("=")
        self.record(key, line)
        self.value(key)

    def value(self, key: _Loc) -> None:
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

    def item(self, key: _Loc, index: int) -> None:
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

    def key(self) -> _Loc:
        """A dotted key's parts, the first _DOCUMENT_DEPTH + 1 of them: deeper keys get no
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
                part = self.match(_BARE_KEY).group()
            if len(parts) <= _DOCUMENT_DEPTH:
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

    def record(self, key: _Loc, line: int) -> None:
        """`key` and the tables it opens are written at `line`, unless written earlier."""
        for end in range(1, min(len(key), _DOCUMENT_DEPTH) + 1):
            self.lines.setdefault(key[:end], line)


# --- the document: what no type can say ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Key:
    """A key path, linked to its parent: a document nested a thousand deep by dotted keys
    costs no more than a flat one."""

    parent: _Key | None
    part: str | int
    depth: int

    def loc(self) -> _Loc:
        parts: list[str | int] = []
        node: _Key | None = self
        while node is not None:
            parts.append(node.part)
            node = node.parent
        return tuple(reversed(parts))


def _check_document(raw: dict[str, Any]) -> list[_Problem]:
    """Every value or key that no config may hold.

    Iterative, not recursive: nesting by dotted keys is not limited by _too_deep. Values
    deeper than _DOCUMENT_DEPTH are left to pydantic, which refuses them at a shallower key
    (no config key is that deep), in a message that stays short.
    """
    problems: list[_Problem] = []
    stack: list[tuple[_Key | None, object]] = [(None, raw)]
    while stack:
        key, value = stack.pop()
        for name, message in _value_problems(value):
            loc = key.loc() if key else ()
            about = None if name is None else (*loc, name)
            problems.append(_Problem(loc, message, about=about))
        depth = key.depth + 1 if key else 1
        if depth > _DOCUMENT_DEPTH:
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
        if value not in _INT64:
            return [(None, "integer out of range (TOML integers are 64-bit)")]
    elif isinstance(value, dict):
        problems: list[tuple[str | None, str]] = []
        for name in value:
            bad = "\x00" if "\x00" in name else _control_char(name)
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


def _pydantic_problems(exc: ValidationError) -> list[_Problem]:
    problems = []
    for error in exc.errors():
        key: _Loc = tuple(error["loc"])
        if error["type"] == "extra_forbidden":
            meant = _closest(key[-1], _known_keys(key[:-1]))
            message = "unknown key" if meant is None else f"unknown key (did you mean {meant!r}?)"
            problems.append(
                _Problem(key, message, meant=None if meant is None else (*key[:-1], meant))
            )
        elif error["type"] == "missing":
            problems.append(_Problem(key, "required key is missing", missing=True))
        else:
            problems.append(_Problem(key, _plain(error, key)))
    return problems


def _plain(error: ErrorDetails, key: _Loc) -> str:
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
        return f"must be {_PATTERN_WORDS.get(pattern, f'like {pattern}')}, got {got}"
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


def _known_keys(table: _Loc) -> list[str]:
    """The keys the model at `table` knows, or none when no model is there."""
    model = _type_at(table)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return []


def _type_at(key: _Loc) -> Any:
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


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _dotted(loc: _Loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{_key_text(part)}" if out else _key_text(part)
    return out or "(top level)"


def _key_text(part: str) -> str:
    """A key as TOML would write it: bare if it can be, else quoted (and escaped)."""
    if _BARE_KEY.fullmatch(part):
        return part
    return json.dumps(part, ensure_ascii=not part.isprintable())


# --- checks that span keys ---------------------------------------------------------------------


def _cross_check(raw: dict[str, Any]) -> list[_Problem]:
    """The problems that span keys.

    They read the document, not the model, so that they run when pydantic refuses it too.
    An absent key is read as the model's default; a value of a type the model refuses, or
    that pydantic refused (_masked), is skipped, so that no line here is a consequence of
    a mistake pydantic names.
    """
    problems: list[_Problem] = []
    deploy = raw.get("deploy", {})
    if isinstance(deploy, dict):
        problems += _service_checks(deploy)
    tests = raw.get("tests")
    if isinstance(tests, dict):
        problems += _duplicates(
            tests.get("suites"), ("tests", "suites"), "name", "duplicate suite name"
        )
    problems += _duplicates(
        raw.get("known_issues"), ("known_issues",), "id", "duplicate known issue id"
    )
    return problems


class _Refused:
    """Stands for a value pydantic refused: of no type a check looks for, and not None."""


def _masked(raw: dict[str, Any], keys: list[_Loc]) -> dict[str, Any]:
    """`raw` with the value at each of `keys` replaced by a _Refused, copying only the
    tables and arrays on the way to one."""
    root = dict(raw)
    copies = {id(root)}
    for key in keys:
        node: Any = root
        for depth, part in enumerate(key):
            try:
                child = node[part]
            except (KeyError, IndexError, TypeError):
                break  # a missing key: nothing to hide
            if depth == len(key) - 1:
                node[part] = _Refused()
            elif isinstance(child, dict | list):
                if id(child) not in copies:
                    child = dict(child) if isinstance(child, dict) else list(child)
                    copies.add(id(child))
                    node[part] = child
                node = child
            else:
                break
    return root


def _tables(value: object) -> list[tuple[int, dict[str, Any]]]:
    """The tables of an array of tables, with their indices."""
    if not isinstance(value, list):
        return []
    return [(i, item) for i, item in enumerate(value) if isinstance(item, dict)]


def _duplicates(array: object, key: _Loc, name: str, what: str) -> list[_Problem]:
    problems = []
    seen: set[str] = set()
    for i, item in _tables(array):
        value = item.get(name)
        if isinstance(value, str):
            if value in seen:
                problems.append(_Problem((*key, i, name), f"{what} {value!r}"))
            seen.add(value)
    return problems


def _service_checks(deploy: dict[str, Any]) -> list[_Problem]:
    array = deploy.get("services", [])
    services = _tables(array)
    names = {i: s["name"] for i, s in services if isinstance(s.get("name"), str)}
    problems = _duplicates(array, ("deploy", "services"), "name", "duplicate service name")

    def problem(i: int, key: str, message: str) -> None:
        problems.append(_Problem(("deploy", "services", i, key), message))

    # A service without a name (pydantic says so) may be the one a depends_on means.
    every_named = isinstance(array, list) and len(names) == len(array)
    known = set(names.values())
    first: dict[str, int] = {}
    graph: dict[str, list[str]] = {}
    for i, service in services:
        deps = service.get("depends_on", [])
        if not isinstance(deps, list):
            continue
        own = names.get(i)
        deps = [dep for dep in deps if isinstance(dep, str)]
        for dep in deps:
            if dep == own:
                problem(i, "depends_on", "a service cannot depend on itself")
            elif every_named and dep not in known:
                problem(i, "depends_on", f"unknown service {dep!r}")
        if own is not None:
            first.setdefault(own, i)
            graph.setdefault(own, []).extend(dep for dep in deps if dep != own)
    # Each cycle once: its services leave the graph when it is found.
    while (cycle := _find_cycle(graph)) is not None:
        problem(first[cycle[0]], "depends_on", "dependency cycle: " + " -> ".join(cycle))
        for name in cycle:
            graph.pop(name, None)
    env_vars: dict[str, str] = {}
    for i, name in names.items():
        var = url_env_var(name)
        other = env_vars.setdefault(var, name)
        if other != name:
            problem(i, "name", f"services {other!r} and {name!r} both map to {var}")
    return problems + _target_checks(deploy, services, names)


def _target_checks(
    deploy: dict[str, Any], services: list[tuple[int, dict[str, Any]]], names: dict[int, str]
) -> list[_Problem]:
    """What the deploy target needs of the deploy table and of each service."""
    target = deploy.get("target", DeploySection.model_fields["target"].default)
    problems: list[_Problem] = []

    def required(key: _Loc) -> None:
        problems.append(_Problem(key, f"required when deploy.target = {target!r}", missing=True))

    if target == "cloudrun":
        for key in ("project", "region"):
            if deploy.get(key) in (None, ""):
                required(("deploy", key))
        cloud_run_names: set[str] = set()
        for i, service in services:
            problems += _cloud_run_checks(("deploy", "services", i), service, names.get(i))
            cloud_run_name = service.get("service_name") or names.get(i)
            if isinstance(cloud_run_name, str):
                if cloud_run_name in cloud_run_names:
                    message = f"two services deploy to Cloud Run service {cloud_run_name!r}"
                    problems.append(_Problem(("deploy", "services", i, "service_name"), message))
                cloud_run_names.add(cloud_run_name)
            if service.get("image") in (None, ""):
                required(("deploy", "services", i, "image"))
    if target == "command" and deploy.get("command") is None:
        required(("deploy", "command"))
    for i, service in services:
        if target == "local" and service.get("command") is None:
            required(("deploy", "services", i, "command"))
        if target == "local" and service.get("url") is not None:
            # The local target starts the service on a free port of its own: a url here
            # (https above all) would be quietly replaced by http://127.0.0.1:<port>.
            problems.append(
                _Problem(
                    ("deploy", "services", i, "url"),
                    "not used by the local target, which serves each service on"
                    " http://127.0.0.1:<port> (no https); remove it, or use the command or"
                    " none target for a service that runs elsewhere",
                )
            )
        if target in ("command", "none") and service.get("url") is None:
            required(("deploy", "services", i, "url"))
    return problems


def _cloud_run_checks(key: _Loc, service: dict[str, Any], name: str | None) -> list[_Problem]:
    problems = []
    image = service.get("image")
    placeholders = re.findall(r"\{([^}]*)\}", image) if isinstance(image, str) else []
    unknown = [p for p in placeholders if p not in ("git_sha", "iteration")]
    if unknown:
        message = f"unknown placeholder {{{unknown[0]}}} (use {{git_sha}} or {{iteration}})"
        problems.append(_Problem((*key, "image"), message))
    if (
        service.get("service_name") is None
        and name is not None
        and not re.match(_CLOUD_RUN_NAME, name)
    ):
        message = (
            f"{name!r} is not a valid Cloud Run service name"
            " (lower-case letters, digits, '-'); set service_name"
        )
        problems.append(_Problem((*key, "name"), message))
    env = service.get("env", {})
    secrets = service.get("secrets", {})
    env_names = set(env) if isinstance(env, dict) else set()
    secret_names = set(secrets) if isinstance(secrets, dict) else set()
    both = sorted(env_names & secret_names)
    if both:
        message = f"{both[0]} is set in env too: give it in one place"
        problems.append(_Problem((*key, "secrets"), message))
    reserved = sorted((env_names | secret_names) & _CLOUD_RUN_RESERVED)
    if reserved:
        message = f"{reserved[0]} is set by Cloud Run itself and cannot be overridden"
        problems.append(_Problem((*key, "env"), message))
    return problems


_CLOUD_RUN_RESERVED = frozenset({"PORT", "K_SERVICE", "K_REVISION", "K_CONFIGURATION"})


def _find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    """A dependency cycle as a path that ends where it starts, or None.

    Depth-first without recursion: a chain of a thousand services is a valid config.
    """
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    for root in graph:
        if root in state:
            continue
        state[root] = 1
        path = [root]
        pending = [iter(graph.get(root, []))]
        while pending:
            dep = next(pending[-1], None)
            if dep is None:
                state[path.pop()] = 2
                pending.pop()
            elif state.get(dep) == 1:
                return path[path.index(dep) :] + [dep]
            elif dep not in state:
                state[dep] = 1
                path.append(dep)
                pending.append(iter(graph.get(dep, [])))
    return None


def url_env_var(service_name: str) -> str:
    """`LOOP_<NAME>_URL`: the name upper-cased, other characters as `_`."""
    return "LOOP_" + re.sub(r"[^A-Z0-9]", "_", service_name.upper()) + "_URL"


def deploy_waves(services: list[ServiceConfig]) -> list[list[ServiceConfig]]:
    """Services in dependency order: each wave depends only on earlier waves."""
    done: set[str] = set()
    remaining = list(services)
    waves: list[list[ServiceConfig]] = []
    while remaining:
        wave = [s for s in remaining if all(d in done for d in s.depends_on)]
        if not wave:  # unreachable after _cross_check; guards against a loop forever
            raise ConfigError("dependency cycle among: " + ", ".join(s.name for s in remaining))
        waves.append(wave)
        done.update(s.name for s in wave)
        remaining = [s for s in remaining if s.name not in done]
    return waves
