"""Config fuzzing: whatever the text, `parse_config` returns a Config or raises ConfigError.

Valid configs of each deploy target are mutated (keys deleted, added, renamed; values of
other types; NUL, control characters, '=' and other unicode in strings and keys; nesting
hundreds deep; numbers beyond 64 bits, infinite, negative; duplicate names; unknown
`depends_on`), written as TOML and parsed. Any other exception is a bug: `loop` would show
a traceback, or (worse) accept the config and fail in the middle of a run. Every line of a
ConfigError must name the file and a key path or a line, and be safe to print. A config that
is accepted must hold nothing that crashes a run later (NUL in an argv or environment,
an environment variable name execve refuses, a health path that breaks the request line).

LOOP_FUZZ_EXAMPLES=5000 runs longer.
"""

from __future__ import annotations

import copy
import math
import os
import re
import tomllib
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from deployloop.config import (
    Config,
    ConfigError,
    check_markers,
    deploy_waves,
    key_lines,
    parse_config,
    too_deep,
    url_env_var,
)
from deployloop.safetext import has_unsafe

SOURCE = "configs/fuzz.toml"
EXAMPLES = int(os.environ.get("LOOP_FUZZ_EXAMPLES", "300"))

# What config.py writes for a key path: bare keys or JSON-quoted ones, [i] for list items.
_PART = r'(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*")'
_PATH = rf"(?:\(top level\)|{_PART}(?:\[\d+\])*(?:\.{_PART}(?:\[\d+\])*)*)"
# `path:line: key: message`, `path: key: message` (a key not in the file) or
# `path:line: message` (text that is not TOML).
_S = re.escape(SOURCE)
_ERROR_LINE = re.compile(
    rf"(?:{_S}:(?P<line>\d+)|{_S}): {_PATH}: \S.*|{_S}:(?P<toml_line>\d+): \S.*"
)


# --- valid configs, one per deploy target ----------------------------------------------------

LOCAL: dict[str, Any] = {
    "loop": {
        "target_pass_rate": 100.0,
        "max_iterations": 3,
        "stall_iterations": 2,
        "between_iterations": ["{python}", "examples/shop/fix.py"],
    },
    "deploy": {
        "target": "local",
        "services": [
            {
                "name": "auth",
                "command": ["{python}", "examples/shop/auth_service.py", "--port", "{port}"],
                "health_path": "/health",
                "ready_timeout_s": 10,
                "env": {"SHOP_FEATURE": "on"},
            },
            {
                "name": "backend",
                "command": ["{python}", "examples/shop/backend_service.py", "--port", "{port}"],
                "depends_on": ["auth"],
                "health_path": "/health",
                "ready_timeout_s": 10,
            },
        ],
    },
    "tests": {
        "workers": 2,
        "suite_timeout_s": 60,
        "reruns": 1,
        "pytest_args": ["-q"],
        "env": {"E2E_ENV": "local", "API_TOKEN": "t0ken"},
        "suites": [
            {"name": "Priority 1 Critical", "paths": ["tests/test_p1.py"], "priority": 1},
            {
                "name": "Orders",
                "paths": ["tests/test_orders.py", "tests/test_more.py::test_one"],
                "priority": 3,
                "markers": "critical and not slow",
            },
        ],
    },
    "known_issues": [
        {
            "id": "events-403",
            "match": "events stream rejected: HTTP 403",
            "reason": "TICKET-12",
            "expires": date(2026, 12, 31),
        }
    ],
    "categories": [{"name": "environment", "message": "ConnectError|503"}],
    "analysis": {"broken_after": 3, "min_test_duration_s": 0.005},
    "redaction": {"names": ["*TOKEN*", "*_CREDS"]},
}

COMMAND: dict[str, Any] = {
    "deploy": {
        "target": "command",
        "command": ["./scripts/deploy.sh", "--env", "staging"],
        "services": [
            {"name": "api", "url": "https://api.staging.example.com", "health_path": "/healthz"},
            {"name": "web", "url": "http://127.0.0.1:8080", "depends_on": ["api"]},
        ],
    },
    "tests": {"suites": [{"name": "Smoke", "paths": ["tests/smoke"]}]},
}

NONE: dict[str, Any] = {
    "loop": {"max_iterations": 1},
    "deploy": {
        "target": "none",
        "services": [{"name": "site", "url": "https://www.example.com"}],
    },
    "tests": {
        "python": ".venv/bin/python",
        "suites": [
            {"name": "A", "paths": ["tests/a.py"]},
            {"name": "B", "paths": ["tests/b.py"], "priority": 2},
        ],
    },
}

CLOUDRUN: dict[str, Any] = {
    "deploy": {
        "target": "cloudrun",
        "project": "acme-staging",
        "region": "europe-west1",
        "rollback_on_failure": True,
        "services": [
            {
                "name": "auth",
                "image": "europe-docker.pkg.dev/acme-staging/shop/auth:{git_sha}",
                "service_account": "auth@acme-staging.iam.gserviceaccount.com",
                "secrets": {"JWT_SIGNING_KEY": "jwt-signing-key:latest"},
                "cpu": "1",
                "memory": "512Mi",
                "min_instances": 1,
                "max_instances": 5,
                "health_path": "/health",
                "ready_timeout_s": 300,
            },
            {
                "name": "backend",
                "image": "europe-docker.pkg.dev/acme-staging/shop/backend:{git_sha}",
                "depends_on": ["auth"],
                "env": {"LOG_LEVEL": "info"},
                "secrets": {"DATABASE_URL": "backend-database-url:3"},
                "concurrency": 80,
                "timeout_s": 300,
                "ingress": "all",
                "labels": {"team": "shop"},
                "allow_unauthenticated": True,
            },
        ],
    },
    "tests": {
        "workers": 4,
        "env": {"E2E_ENV": "staging"},
        "suites": [{"name": "Smoke", "paths": ["examples/cloudrun/tests/test_smoke.py"]}],
    },
}

BASES = {"local": LOCAL, "command": COMMAND, "none": NONE, "cloudrun": CLOUDRUN}


# --- a tiny TOML writer ------------------------------------------------------------------------


@dataclass(frozen=True)
class Deep:
    """A value nested `depth` arrays or inline tables deep: written without recursion."""

    opener: str
    depth: int


@dataclass(frozen=True)
class Raw:
    """TOML text written as is: a number too long for Python's int() to print."""

    text: str


_BARE = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def toml_string(text: str) -> str:
    out = []
    for char in text:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif char.isprintable():
            out.append(char)
        elif ord(char) <= 0xFFFF:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(f"\\U{ord(char):08x}")
    return '"' + "".join(out) + '"'


def toml_key(key: str) -> str:
    return key if _BARE.fullmatch(key) else toml_string(key)


def toml_value(value: object) -> str:
    if isinstance(value, Deep):
        if value.opener == "[":
            return "[" * value.depth + "]" * value.depth
        return "{ a = " * value.depth + "1" + " }" * value.depth
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, date | datetime | time):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {value!r}")


def _is_table_array(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def to_toml(doc: dict[str, Any], *, headers: bool) -> str:
    """`doc` as TOML: with `headers`, tables as [a.b] and arrays of tables as [[a.b]];
    otherwise everything inline, in key = value lines."""
    lines: list[str] = []

    def table(path: list[str], body: dict[str, Any]) -> None:
        nested = []
        for key, value in body.items():
            if headers and (isinstance(value, dict) or _is_table_array(value)):
                nested.append((key, value))
            else:
                lines.append(f"{toml_key(key)} = {toml_value(value)}")
        for key, value in nested:
            name = ".".join(toml_key(k) for k in [*path, key])
            if isinstance(value, dict):
                lines.append(f"[{name}]")
                table([*path, key], value)
            else:
                for item in value:
                    lines.append(f"[[{name}]]")
                    table([*path, key], item)

    table([], doc)
    return "\n".join(lines) + "\n"


# --- mutations ---------------------------------------------------------------------------------

SPECIAL = [
    "\x00", "\n", "\r", "\t", "\x1b", "\x07", "\x7f", "\x85", "\u202e", "\u2066", "\u2028",
    "\ufeff", "\xa0", "=", " ", "é", "名", "😀", '"', "'", "\\", "{port}", "{git_sha}", "{x}",
    "[", "]", "{", "}", "#", ".", "(", "/", "*",
]
special_text = st.lists(
    st.one_of(st.sampled_from(SPECIAL), st.characters()), min_size=1, max_size=4
).map("".join)
any_text = st.one_of(st.text(max_size=12), special_text)
# Letters, digits, punctuation, symbols and spaces: what a config may well hold.
printable_text = st.text(
    st.characters(categories=["L", "N", "P", "S", "Zs"]), min_size=1, max_size=8
)
numbers = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 1, 65, 1000, 2**31, 2**63 - 1, 2**63, -(2**63) - 1, 10**40]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([Raw("9" * 5000), Raw("-" + "1" * 4301), Raw("1_000"), Raw("0x7fffffff")]),
)
scalars = st.one_of(
    st.booleans(),
    numbers,
    any_text,
    st.dates(),
    st.datetimes(),
    st.times(),
)
any_value = st.one_of(
    scalars,
    st.lists(scalars, max_size=3),
    st.dictionaries(any_text, scalars, max_size=3),
    # Copied: later mutations change what they were given, and hypothesis must see the
    # same strategy each time.
    st.sampled_from(["", [], {}, [""], [[]], {"": ""}]).map(copy.deepcopy),
)
env_names = st.one_of(
    st.sampled_from(["", "A=B", "=", "A B", "A\tB", "A\nB", "A\x00B", "É", "A\u202eB", "PATH"]),
    any_text,
)


def _locations(doc: dict[str, Any]) -> list[tuple[Any, Any]]:
    """Every (container, key or index) in doc."""
    found: list[tuple[Any, Any]] = []
    todo: list[Any] = [doc]
    while todo:
        container = todo.pop()
        items = container.items() if isinstance(container, dict) else enumerate(container)
        for key, value in items:
            found.append((container, key))
            if isinstance(value, dict | list):
                todo.append(value)
    return found


def _containers(doc: dict[str, Any], kind: type) -> list[Any]:
    inner = [c[k] for c, k in _locations(doc) if isinstance(c[k], kind)]
    return [doc, *inner] if kind is dict else inner


def _rename(table: dict[str, Any], old: str, new: str) -> None:
    items = [(new if k == old else k, v) for k, v in table.items()]
    table.clear()
    table.update(items)


def _services(doc: dict[str, Any]) -> list[dict[str, Any]]:
    deploy = doc.get("deploy")
    services = deploy.get("services") if isinstance(deploy, dict) else None
    return [s for s in services if isinstance(s, dict)] if isinstance(services, list) else []


def mutate(doc: dict[str, Any], data: st.DataObject) -> None:
    kind = data.draw(
        st.sampled_from(
            [
                # Listed thrice: the mutation most likely to leave a config valid, and so
                # to test what an accepted config holds.
                "printable", "printable", "printable",
                "delete", "add", "retype", "string", "key", "deep", "number", "empty",
                "duplicate", "depends_on", "env_name",
            ]
        ),
        label="mutation",
    )
    locations = _locations(doc)
    if kind in ("delete", "retype", "deep", "number", "empty") and locations:
        container, key = data.draw(st.sampled_from(locations))
        if kind == "delete":
            del container[key]
        elif kind == "retype":
            container[key] = data.draw(any_value)
        elif kind == "deep":
            depth = data.draw(st.sampled_from([2, 16, 17, 63, 64, 65, 100, 300, 600, 2000]))
            container[key] = Deep(data.draw(st.sampled_from("[{")), depth)
        elif kind == "number":
            container[key] = data.draw(numbers)
        else:
            container[key] = data.draw(st.sampled_from(["", [], {}]).map(copy.deepcopy))
    elif kind == "add":
        table = data.draw(st.sampled_from(_containers(doc, dict)))
        table[data.draw(any_text)] = data.draw(any_value)
    elif kind in ("string", "printable"):
        strings = [(c, k) for c, k in locations if isinstance(c[k], str)]
        if strings:
            container, key = data.draw(st.sampled_from(strings))
            text = container[key]
            at = data.draw(st.integers(0, len(text)))
            added = data.draw(special_text if kind == "string" else printable_text)
            container[key] = text[:at] + added + text[at:]
    elif kind == "key":
        tables = [t for t in _containers(doc, dict) if t]
        if tables:
            table = data.draw(st.sampled_from(tables))
            old = data.draw(st.sampled_from(list(table)))
            at = data.draw(st.integers(0, len(old)))
            _rename(table, old, old[:at] + data.draw(special_text) + old[at:])
    elif kind == "duplicate":
        arrays = [v for v in _containers(doc, list) if v and isinstance(v[0], dict)]
        if arrays:
            array = data.draw(st.sampled_from(arrays))
            array.append(copy.deepcopy(data.draw(st.sampled_from(array))))
    elif kind == "depends_on":
        services = _services(doc)
        if services:
            service = data.draw(st.sampled_from(services))
            names = [s.get("name") for s in services if isinstance(s.get("name"), str)]
            dep = data.draw(st.one_of(st.sampled_from(names or ["x"]), any_text))
            deps = service.get("depends_on")
            service["depends_on"] = [*deps, dep] if isinstance(deps, list) else [dep]
    else:  # env_name
        env_tables: list[dict[str, Any]] = []
        tests = doc.get("tests")
        if isinstance(tests, dict) and isinstance(tests.get("env"), dict):
            env_tables.append(tests["env"])
        for service in _services(doc):
            env_tables += [
                service[k] for k in ("env", "secrets", "labels") if isinstance(service.get(k), dict)
            ]
        if env_tables:
            table = data.draw(st.sampled_from(env_tables))
            table[data.draw(env_names)] = data.draw(st.sampled_from(["v", "db:1", "\x00"]))


def mutate_text(text: str, data: st.DataObject) -> str:
    at = data.draw(st.integers(0, len(text)), label="at")
    if data.draw(st.booleans(), label="insert"):
        return text[:at] + data.draw(special_text) + text[at:]
    return text[:at] + text[at + data.draw(st.integers(1, 20)) :]


# --- the property --------------------------------------------------------------------------


def assert_well_formed(error: ConfigError, text: str | None = None) -> None:
    lines = str(error).split("\n")
    for line in lines:
        match = _ERROR_LINE.fullmatch(line)
        assert match, f"badly formed error line: {line!r}"
        assert not has_unsafe(line), f"error line is unsafe to print: {line!r}"
        number = match.group("line") or match.group("toml_line")
        if text is not None and number is not None:
            assert 1 <= int(number) <= text.count("\n") + 1, line


def _strings_and_keys(value: object) -> list[str]:
    out: list[str] = []
    todo = [value]
    while todo:
        item = todo.pop()
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, dict):
            out.extend(str(k) for k in item)
            todo.extend(item.values())
        elif isinstance(item, list | tuple):
            todo.extend(item)
    return out


def _unprintable(text: str) -> bool:
    return has_unsafe(text) or "\t" in text or "\n" in text


def assert_safe_to_run(config: Config) -> None:
    """What each part of a run assumes of the config it was given."""
    dumped = config.model_dump()
    for text in _strings_and_keys(dumped):
        assert "\x00" not in text
        assert not re.search("[\ud800-\udfff]", text)
    for number in _numbers(dumped):
        assert math.isfinite(number)
        assert -(2**63) <= number < 2**63
    services = config.deploy.services
    env_tables = [config.tests.env] + [s.env for s in services] + [s.secrets for s in services]
    for table in env_tables:
        for name in table:
            assert name and "=" not in name
            assert not any(c.isspace() for c in name) and not _unprintable(name)
    for service in services:
        assert service.health_path.startswith("/")
        assert not any(c.isspace() or _unprintable(c) for c in service.health_path)
        if service.url is not None:
            assert not any(c.isspace() or _unprintable(c) for c in service.url)
        for key, value in service.labels.items():
            assert not _unprintable(key) and not _unprintable(value)
    names = (
        [s.name for s in services]
        + [s.name for s in config.tests.suites]
        + [i.id for i in config.known_issues]
    )
    assert all(name and not _unprintable(name) for name in names)
    for suite in config.tests.suites:
        assert suite.paths and not any(_unprintable(p) for p in suite.paths)
    assert sorted(s.name for wave in deploy_waves(services) for s in wave) == sorted(
        s.name for s in services
    )
    assert len({url_env_var(s.name) for s in services}) == len(services)
    for name in ("API_TOKEN", "E2E_ENV", ""):
        config.redaction.matches(name)
    try:
        check_markers(config, SOURCE)
    except ConfigError as exc:
        assert_well_formed(exc)


def _numbers(value: object) -> list[float]:
    return [
        v for v in _leaves(value) if isinstance(v, int | float) and not isinstance(v, bool)
    ]


def _leaves(value: object) -> list[object]:
    out: list[object] = []
    todo = [value]
    while todo:
        item = todo.pop()
        if isinstance(item, dict):
            todo.extend(item.values())
        elif isinstance(item, list | tuple):
            todo.extend(item)
        else:
            out.append(item)
    return out


def check(text: str) -> Config | ConfigError:
    """The property: a Config that is safe to run, or a well-formed ConfigError."""
    try:
        config = parse_config(text, SOURCE)
    except ConfigError as exc:
        assert_well_formed(exc, text)
        return exc
    assert_safe_to_run(config)
    return config


# --- tests ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BASES)
@pytest.mark.parametrize("headers", [True, False], ids=["headers", "inline"])
def test_the_unmutated_configs_are_valid(name: str, headers: bool) -> None:
    config = check(to_toml(BASES[name], headers=headers))
    assert isinstance(config, Config), config
    assert config.deploy.target == name


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    base=st.sampled_from(sorted(BASES)),
    headers=st.booleans(),
    data=st.data(),
)
def test_mutated_configs_are_accepted_safely_or_refused_clearly(
    base: str, headers: bool, data: st.DataObject
) -> None:
    doc = copy.deepcopy(BASES[base])
    # Mostly one mutation: each one more makes an accepted config (whose safety is checked)
    # less likely.
    for _ in range(data.draw(st.sampled_from([1, 1, 2, 3, 4]), label="mutations")):
        mutate(doc, data)
    text = to_toml(doc, headers=headers)
    mutated_text = data.draw(st.integers(0, 7), label="text mutation") == 0
    if mutated_text:
        text = mutate_text(text, data)
    outcome = check(text)
    # --hypothesis-show-statistics tells how often each is reached.
    event("accepted" if isinstance(outcome, Config) else "refused")
    # The nesting check runs first, on the text: it must fire on deep values and only then.
    # A config nests 6 deep at most, around a Deep value.
    deepest = max((v.depth for v in _leaves(doc) if isinstance(v, Deep)), default=0)
    too_deep = isinstance(outcome, ConfigError) and "nested too deeply" in str(outcome)
    if deepest <= 64 - 6:
        assert not too_deep, outcome
    elif deepest > 64 and not mutated_text:
        assert too_deep, outcome


def _key_paths(doc: dict[str, Any], limit: int) -> list[tuple[str | int, ...]]:
    """The path of every key and array item in `doc`, down to `limit` parts."""
    found: list[tuple[str | int, ...]] = []
    todo: list[tuple[tuple[str | int, ...], object]] = [((), doc)]
    while todo:
        path, value = todo.pop()
        if path:
            found.append(path)
        if len(path) >= limit:
            continue
        if isinstance(value, dict):
            todo.extend(((*path, k), v) for k, v in value.items())
        elif isinstance(value, list):
            todo.extend(((*path, i), v) for i, v in enumerate(value))
    return found


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(base=st.sampled_from(sorted(BASES)), headers=st.booleans(), data=st.data())
def test_the_key_scanner_finds_every_key_of_valid_toml_on_its_line(
    base: str, headers: bool, data: st.DataObject
) -> None:
    doc = copy.deepcopy(BASES[base])
    for _ in range(data.draw(st.sampled_from([0, 1, 2, 3]), label="mutations")):
        mutate(doc, data)
    text = to_toml(doc, headers=headers)
    mutated_text = data.draw(st.integers(0, 3), label="text mutation") == 0
    if mutated_text:
        text = mutate_text(text, data)
    # What parse_config scans: TOML that tomllib read, not nested too deeply.
    if too_deep(text, 64) is not None:
        return
    try:
        raw = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, ValueError, RecursionError):
        return
    lines = key_lines(text)
    written = text.split("\n")
    for path in _key_paths(raw, 16):
        assert path in lines, path
        # Where the writer put it: a mutated text may write a key another way.
        if not mutated_text and isinstance(path[-1], str):
            assert toml_key(path[-1]) in written[lines[path] - 1], path


@pytest.mark.parametrize(
    "text",
    [
        "",
        "\ufeff[tests]\n",
        "\r",
        "a = 1\r\n[",
        "[" * 100_000,
        "{" * 100_000,
        "a = [" + "'[' ," * 1000 + "]",
        'a = """' + "[" * 1000,
        "a = '''" + "'" * 10,
        "a = " + "9" * 5000,
        "[tests]\nenv = { \"\ud800\" = \"x\" }\n",
        "[tests]\npytest_args = [\"\ud800\"]\n",
        "[[tests.suites]]\n" * 1000,
        "a" + ".a" * 10_000 + " = 1",
        "[" + "a." * 10_000 + "a]",
        "x = 2023-02-30",
        "x = 24:00:00",
        "x = 1979-05-27T07:32:00+25:00",
    ],
    ids=lambda text: repr(text[:20]),
)
def test_odd_texts_are_refused_clearly(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, SOURCE)
    assert_well_formed(info.value)
