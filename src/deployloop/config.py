"""Load and validate `configs/<env>.toml`.

pydantic checks keys and types; the checks that span keys (names, `depends_on`, cycles,
what each deploy target needs) run after it, so every error can name the file and the key.
Before pydantic, the text is checked for nesting that would exhaust the recursion of the
TOML parser, and the parsed document for what no type can express (NUL in any string or
key, integers beyond 64 bits): those values would otherwise pass and crash a run later, in
an argv, an environment or the store, with an error that names no key.
"""

from __future__ import annotations

import fnmatch
import json
import re
import sys
import tomllib
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

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
    # inf and nan pass every range check a timeout or a rate could have.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


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


class ServiceConfig(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    command: Argv | None = Field(None, min_length=1)  # local target
    url: str | None = None  # command and none targets
    env: dict[str, str] = Field(default_factory=dict)
    depends_on: list[str] = Field(default_factory=list)
    health_path: str = "/health"
    ready_timeout_s: float = Field(30.0, gt=0)
    # cloudrun target
    image: str | None = None  # may hold {git_sha} and {iteration}
    service_name: str | None = Field(None, pattern=r"^[a-z]([-a-z0-9]{0,47}[a-z0-9])?$")
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


class TestsSection(_Strict):
    python: PathText | None = None
    workers: int = Field(4, ge=1, le=64)
    suite_timeout_s: float = Field(900.0, gt=0)
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
    min_test_duration_s: float = Field(0.0, ge=0)
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
            known = (
                sorted(p.stem for p in config_dir.glob("*.toml")) if config_dir.is_dir() else []
            )
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
    `source` and the key (or the line, when the text is not TOML)."""
    line = _too_deep(text, _MAX_NESTING)
    if line is not None:
        raise ConfigError(
            f"{source}: line {line}: arrays or tables nested too deeply"
            f" (more than {_MAX_NESTING} levels)"
        )
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(_toml_error(source, text, exc)) from None
    except ValueError:
        # tomllib hands a decimal to int(), which refuses more than
        # sys.get_int_max_str_digits() digits with a plain ValueError.
        raise ConfigError(
            f"{source}: line {_long_number_line(text)}: not valid TOML: integer too long"
        ) from None
    except RecursionError:  # _too_deep missed a way to nest; cannot name the line
        raise ConfigError(f"{source}: line 1: arrays or tables nested too deeply") from None
    problem = _check_document(raw)
    if problem is not None:
        key, message = problem
        raise ConfigError(f"{source}: {key}: {message}")
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(source, exc)) from None
    problem = _cross_check(config)
    if problem is not None:
        key, message = problem
        raise ConfigError(f"{source}: {key}: {message}")
    return config


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
    return f"{source}: line {line}: not valid TOML: {one_line(message)}"


def _long_number_line(text: str) -> int:
    limit = sys.get_int_max_str_digits()
    for match in re.finditer(r"[0-9][0-9_]*", text):
        if len(match.group().replace("_", "")) > limit:
            return text.count("\n", 0, match.start()) + 1
    return 1


_INT64 = range(-(2**63), 2**63)  # TOML integers are 64-bit; SQLite refuses larger ones
_DOCUMENT_DEPTH = 16


@dataclass(frozen=True, slots=True)
class _Key:
    """A key path, linked to its parent: a document nested a thousand deep by dotted keys
    costs no more than a flat one."""

    parent: _Key | None
    part: str | int
    depth: int

    def dotted(self) -> str:
        parts: list[str | int] = []
        node: _Key | None = self
        while node is not None:
            parts.append(node.part)
            node = node.parent
        return _dotted(tuple(reversed(parts)))


def _check_document(raw: dict[str, Any]) -> tuple[str, str] | None:
    """The first value or key, in document order, that no config may hold, as (key, message).

    Iterative, not recursive: nesting by dotted keys is not limited by _too_deep. Values
    deeper than _DOCUMENT_DEPTH are left to pydantic, which refuses them at a shallower key
    (no config key is that deep), in a message that stays short.
    """
    stack: list[tuple[_Key | None, object]] = [(None, raw)]
    while stack:
        key, value = stack.pop()
        problem = _value_problem(value)
        if problem is not None:
            return (key.dotted() if key else "(top level)"), problem
        depth = key.depth + 1 if key else 1
        if depth > _DOCUMENT_DEPTH:
            continue
        if isinstance(value, dict):
            stack.extend((_Key(key, k, depth), v) for k, v in reversed(value.items()))
        elif isinstance(value, list):
            stack.extend((_Key(key, i, depth), v) for i, v in reversed(list(enumerate(value))))
    return None


def _value_problem(value: object) -> str | None:
    if isinstance(value, str):
        if "\x00" in value:
            return "contains a NUL character"
        if _has_surrogate(value):
            return "contains a lone surrogate (not Unicode text)"
    elif isinstance(value, int) and not isinstance(value, bool):
        if value not in _INT64:
            return "integer out of range (TOML integers are 64-bit)"
    elif isinstance(value, dict):
        for name in value:
            if "\x00" in name:
                return f"key {name!r} contains a NUL character"
            bad = _control_char(name)
            if bad is not None:
                return f"key {name!r} contains a control character {bad!r}"
    return None


def _has_surrogate(text: str) -> bool:
    # Only text handed to parse_config can hold one: load_config decodes strictly.
    return not text.isascii() and re.search("[\ud800-\udfff]", text) is not None


def _format_validation_error(source: str, exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        key = _dotted(error["loc"])
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        elif error["type"] == "missing":
            message = "required key is missing"
        else:
            message = error["msg"].removeprefix("Value error, ")
        lines.append(f"{source}: {key}: {one_line(message)}")
    return "\n".join(lines)


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _dotted(loc: tuple[int | str, ...]) -> str:
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


def _cross_check(config: Config) -> tuple[str, str] | None:
    """The first problem that spans keys, as (key, message), or None."""
    deploy = config.deploy
    seen: dict[str, int] = {}
    for i, service in enumerate(deploy.services):
        if service.name in seen:
            return f"deploy.services[{i}].name", f"duplicate service name {service.name!r}"
        seen[service.name] = i
    for i, service in enumerate(deploy.services):
        for dep in service.depends_on:
            if dep not in seen:
                return f"deploy.services[{i}].depends_on", f"unknown service {dep!r}"
            if dep == service.name:
                return f"deploy.services[{i}].depends_on", "a service cannot depend on itself"
    cycle = _find_cycle({s.name: s.depends_on for s in deploy.services})
    if cycle:
        i = seen[cycle[0]]
        return f"deploy.services[{i}].depends_on", "dependency cycle: " + " -> ".join(cycle)
    problem = _target_check(deploy)
    if problem:
        return problem
    suite_names: set[str] = set()
    for i, suite in enumerate(config.tests.suites):
        if suite.name in suite_names:
            return f"tests.suites[{i}].name", f"duplicate suite name {suite.name!r}"
        suite_names.add(suite.name)
    ids: set[str] = set()
    for i, issue in enumerate(config.known_issues):
        if issue.id in ids:
            return f"known_issues[{i}].id", f"duplicate known issue id {issue.id!r}"
        ids.add(issue.id)
    env_names: dict[str, str] = {}
    for service in deploy.services:
        var = url_env_var(service.name)
        if var in env_names:
            return (
                "deploy.services",
                f"services {env_names[var]!r} and {service.name!r} both map to {var}",
            )
        env_names[var] = service.name
    return None


def _target_check(deploy: DeploySection) -> tuple[str, str] | None:
    if deploy.target == "cloudrun":
        for key in ("project", "region"):
            if not getattr(deploy, key):
                return f"deploy.{key}", "required when deploy.target = 'cloudrun'"
        names: dict[str, int] = {}
        for i, service in enumerate(deploy.services):
            if not service.image:
                return f"deploy.services[{i}].image", "required when deploy.target = 'cloudrun'"
            bad = re.findall(r"\{([^}]*)\}", service.image)
            unknown = [b for b in bad if b not in ("git_sha", "iteration")]
            if unknown:
                return f"deploy.services[{i}].image", (
                    f"unknown placeholder {{{unknown[0]}}} (use {{git_sha}} or {{iteration}})"
                )
            if not service.service_name and not re.match(
                r"^[a-z]([-a-z0-9]{0,47}[a-z0-9])?$", service.name
            ):
                return f"deploy.services[{i}].name", (
                    f"{service.name!r} is not a valid Cloud Run service name"
                    " (lower-case letters, digits, '-'); set service_name"
                )
            both = sorted(set(service.env) & set(service.secrets))
            if both:
                return f"deploy.services[{i}].secrets", (
                    f"{both[0]} is set in env too: give it in one place"
                )
            reserved = sorted((set(service.env) | set(service.secrets)) & _CLOUD_RUN_RESERVED)
            if reserved:
                return f"deploy.services[{i}].env", (
                    f"{reserved[0]} is set by Cloud Run itself and cannot be overridden"
                )
            if service.cloud_run_name in names:
                return f"deploy.services[{i}].service_name", (
                    f"two services deploy to Cloud Run service {service.cloud_run_name!r}"
                )
            names[service.cloud_run_name] = i
        return None
    if deploy.target == "command" and not deploy.command:
        return "deploy.command", "required when deploy.target = 'command'"
    for i, service in enumerate(deploy.services):
        if deploy.target == "local" and not service.command:
            return f"deploy.services[{i}].command", "required when deploy.target = 'local'"
        if deploy.target in ("command", "none") and not service.url:
            return f"deploy.services[{i}].url", f"required when deploy.target = {deploy.target!r}"
    return None


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
