"""Config errors name the file and the key, so a user knows what to fix."""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
from conftest import Project, output

from deployloop.config import (
    ConfigError,
    check_markers,
    deploy_waves,
    key_lines,
    load_config,
    parse_config,
    url_env_var,
)
from deployloop.config import line_of as line_of_key

BASE = """
[deploy]
target = "local"

[[deploy.services]]
name = "auth"
command = ["{python}", "auth.py", "--port", "{port}"]

[[deploy.services]]
name = "backend"
command = ["{python}", "backend.py", "--port", "{port}"]
depends_on = ["auth"]

[tests]
[[tests.suites]]
name = "P1"
paths = ["tests/test_p1.py"]
"""


def full_error_of(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="configs/staging.toml")
    return str(info.value)


_LOCATION = re.compile(r"configs/staging\.toml:\d+: (?=[^\s:]+: )")


def error_of(text: str) -> str:
    """The error as `path: key: message` lines: without the `path:line: ` in front of a key,
    which the tests of where each key is check."""
    return _LOCATION.sub("configs/staging.toml: ", full_error_of(text))


def test_valid_config_has_the_documented_defaults() -> None:
    config = parse_config(BASE, source="x.toml")
    assert config.loop.target_pass_rate == 100.0
    assert config.loop.max_iterations == 5
    assert config.loop.stall_iterations == 3
    assert config.tests.workers == 4
    assert config.tests.suite_timeout_s == 900
    assert config.deploy.services[0].health_path == "/health"
    assert [[s.name for s in wave] for wave in deploy_waves(config.deploy.services)] == [
        ["auth"],
        ["backend"],
    ]


def test_unknown_dependency_names_file_key_and_value() -> None:
    text = BASE.replace('depends_on = ["auth"]', 'depends_on = ["auht"]')
    assert error_of(text) == (
        "configs/staging.toml: deploy.services[1].depends_on: unknown service 'auht'"
    )


def test_unknown_key_is_an_error_not_ignored() -> None:
    text = BASE.replace('name = "P1"', 'name = "P1"\nprioity = 2')
    assert error_of(text) == (
        "configs/staging.toml: tests.suites[0].prioity: unknown key (did you mean 'priority'?)"
    )


def test_wrong_type_names_the_key() -> None:
    text = BASE.replace("[tests]", "[tests]\nworkers = \"four\"")
    message = error_of(text)
    assert message.startswith("configs/staging.toml: tests.workers: ")
    assert message.endswith("expected an integer, got the string 'four'")


def test_cycle_is_reported_with_its_path() -> None:
    text = BASE.replace(
        'name = "auth"\n', 'name = "auth"\ndepends_on = ["backend"]\n', 1
    )
    message = error_of(text)
    assert "dependency cycle" in message
    assert "auth -> backend -> auth" in message or "backend -> auth -> backend" in message


def test_duplicate_names_and_target_requirements() -> None:
    assert "duplicate service name 'auth'" in error_of(BASE.replace('"backend"', '"auth"', 1))
    none_target = BASE.replace('target = "local"', 'target = "none"')
    assert error_of(none_target) == (
        "configs/staging.toml: deploy.services[0].url: required when deploy.target = 'none'\n"
        "configs/staging.toml: deploy.services[1].url: required when deploy.target = 'none'"
    )
    assert "deploy.command: required" in error_of(
        BASE.replace('target = "local"', 'target = "command"')
    )


def test_bad_regex_and_bad_toml() -> None:
    text = BASE + '\n[[known_issues]]\nid = "x"\nmatch = "("\n'
    assert "known_issues[0].match: not a valid regular expression" in error_of(text)
    assert "not valid TOML" in error_of("[tests\n")


def test_missing_env_lists_the_configs_there(tmp_path: Path) -> None:
    (tmp_path / "local.toml").write_text(BASE)
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path, "staging")
    assert "no config for env 'staging'" in str(info.value)
    assert "(found: local)" in str(info.value)


def test_url_env_var_names() -> None:
    assert url_env_var("auth") == "LOOP_AUTH_URL"
    assert url_env_var("api-gateway.v2") == "LOOP_API_GATEWAY_V2_URL"


# --- values that used to pass and crash a run later, naming no key --------------------------


def _in_tests(line: str) -> str:
    return BASE.replace("[tests]\n", f"[tests]\n{line}\n")


def _in_auth(line: str) -> str:
    return BASE.replace('name = "auth"\n', f'name = "auth"\n{line}\n')


def _in_suite(line: str) -> str:
    return BASE.replace('name = "P1"\n', f'name = "P1"\n{line}\n')


# With `none`, services are checked at their url.
NONE_TARGET = """
[deploy]
target = "none"

[[deploy.services]]
name = "auth"
url = "http://127.0.0.1:8001"

[tests]
[[tests.suites]]
name = "P1"
paths = ["tests/test_p1.py"]
"""


@pytest.mark.parametrize(
    ("text", "key"),
    [
        pytest.param(_in_tests(r'env = { API_KEY = "abc\u0000def" }'), "tests.env.API_KEY",
                     id="tests.env"),
        pytest.param(_in_tests(r'pytest_args = ["-x", "-k\u0000"]'), "tests.pytest_args[1]",
                     id="pytest_args"),
        pytest.param(
            BASE.replace('paths = ["tests/test_p1.py"]', r'paths = ["a.py", "b\u0000.py"]'),
            "tests.suites[0].paths[1]",
            id="suite-paths",
        ),
        pytest.param(_in_suite(r'markers = "slow\u0000"'), "tests.suites[0].markers",
                     id="markers"),
        pytest.param(_in_auth(r'env = { LOG_LEVEL = "\u0000" }'),
                     "deploy.services[0].env.LOG_LEVEL", id="service-env"),
        pytest.param(BASE.replace('"backend.py"', r'"back\u0000end.py"'),
                     "deploy.services[1].command[1]", id="service-command"),
        pytest.param('[loop]\nbetween_iterations = ["fix", "--\\u0000"]\n' + BASE,
                     "loop.between_iterations[1]", id="between_iterations"),
        pytest.param(
            BASE.replace('target = "local"', 'target = "command"\ncommand = ["./d\\u0000.sh"]')
            .replace('name = "auth"\n', 'name = "auth"\nurl = "http://a"\n')
            .replace('name = "backend"\n', 'name = "backend"\nurl = "http://b"\n'),
            "deploy.command[0]",
            id="deploy-command",
        ),
    ],
)
def test_nul_in_any_string_is_refused_naming_the_key(text: str, key: str) -> None:
    assert error_of(text) == f"configs/staging.toml: {key}: contains a NUL character"


def test_nul_in_a_table_key_names_the_table() -> None:
    assert error_of(_in_tests(r'env = { "API\u0000KEY" = "x" }')) == (
        r"configs/staging.toml: tests.env: key 'API\x00KEY' contains a NUL character"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(_in_tests('env = { "A=B" = "1" }'),
                     "tests.env: 'A=B' is not a valid environment variable name (contains '=')",
                     id="equals"),
        pytest.param(_in_tests('env = { "" = "1" }'),
                     "tests.env: '' is not a valid environment variable name (empty)",
                     id="empty"),
        pytest.param(_in_auth('env = { "MY VAR" = "1" }'),
                     "deploy.services[0].env: 'MY VAR' is not a valid environment variable name"
                     " (contains whitespace)",
                     id="space"),
        pytest.param(_in_auth(r'env = { "MY\u00a0VAR" = "1" }'),
                     "deploy.services[0].env: 'MY\\xa0VAR' is not a valid environment variable"
                     " name (contains whitespace)",
                     id="no-break-space"),
        pytest.param(_in_auth('secrets = { "DB=URL" = "db-url:1" }'),
                     "deploy.services[0].secrets: 'DB=URL' is not a valid environment variable"
                     " name (contains '=')",
                     id="secrets"),
        pytest.param(_in_tests(r'env = { "A\tB" = "1" }'),
                     r"tests.env: key 'A\tB' contains a control character '\t'",
                     id="tab"),
    ],
)
def test_bad_environment_variable_names_are_refused(text: str, expected: str) -> None:
    assert error_of(text) == f"configs/staging.toml: {expected}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            _in_auth(r'health_path = "/health\r\nX-Injected: 1"'),
            r"deploy.services[0].health_path: must not contain whitespace or control characters"
            r" (found '\r')",
            id="crlf",
        ),
        pytest.param(
            _in_auth('health_path = "/health check"'),
            "deploy.services[0].health_path: must not contain whitespace or control characters"
            " (found ' ')",
            id="space",
        ),
        pytest.param(
            _in_auth('health_path = "health"'),
            "deploy.services[0].health_path: must start with '/'",
            id="relative",
        ),
        pytest.param(
            NONE_TARGET.replace(":8001", r":8001/\u001b[31m"),
            r"deploy.services[0].url: must not contain whitespace or control characters"
            r" (found '\x1b')",
            id="url-escape",
        ),
        pytest.param(
            NONE_TARGET.replace(":8001", ":8001/a b"),
            "deploy.services[0].url: must not contain whitespace or control characters"
            " (found ' ')",
            id="url-space",
        ),
    ],
)
def test_health_path_and_url_go_into_requests_unchanged(text: str, expected: str) -> None:
    assert error_of(text) == f"configs/staging.toml: {expected}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(BASE.replace('name = "P1"', r'name = "P1\u001b[2J"'),
                     r"tests.suites[0].name: contains a control character '\x1b'", id="escape"),
        pytest.param(BASE.replace('name = "P1"', r'name = "P\t1"'),
                     r"tests.suites[0].name: contains a control character '\t'", id="tab"),
        pytest.param(BASE.replace('name = "P1"', r'name = "P1\u202e"'),
                     r"tests.suites[0].name: contains a control character '\u202e'", id="bidi"),
        pytest.param(BASE + '[[known_issues]]\nid = "ws\\n403"\nmatch = "403"\n',
                     r"known_issues[0].id: contains a control character '\n'", id="issue-id"),
        pytest.param(BASE + '[[known_issues]]\nid = "ws\\u0085"\nmatch = "403"\n',
                     r"known_issues[0].id: contains a control character '\x85'", id="c1"),
        pytest.param(_in_auth(r'labels = { team = "shop\u0007" }'),
                     r"deploy.services[0].labels.team: contains a control character '\x07'",
                     id="label-value"),
        pytest.param(_in_auth(r'labels = { "te\u007fam" = "shop" }'),
                     r"deploy.services[0].labels: key 'te\x7fam' contains a control character"
                     r" '\x7f'",
                     id="label-key"),
        pytest.param(BASE.replace('"tests/test_p1.py"', r'"tests/test_p1.py\n"'),
                     r"tests.suites[0].paths[0]: contains a control character '\n'", id="path"),
        pytest.param(_in_tests(r'python = ".venv/bin/python\r"'),
                     r"tests.python: contains a control character '\r'", id="python"),
    ],
)
def test_names_and_paths_refuse_control_characters(text: str, expected: str) -> None:
    assert error_of(text) == f"configs/staging.toml: {expected}"


def test_argv_items_may_hold_a_newline() -> None:
    """An argument such as `python -c "...\\n..."` is legitimate; only NUL cannot be passed."""
    config = parse_config(_in_tests(r'pytest_args = ["-o", "a=1\nb=2"]'), source="x.toml")
    assert config.tests.pytest_args == ["-o", "a=1\nb=2"]


# --- nesting and other input that used to escape as another exception ---------------------


def _line_of(text: str, fragment: str) -> int:
    return text[: text.index(fragment)].count("\n") + 1


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("[" * 500 + "]" * 500, id="arrays"),
        pytest.param("[" + "{ a = " * 500 + "1" + " }" * 500 + "]", id="inline-tables"),
        pytest.param("[" * 100_000, id="unclosed"),
    ],
)
def test_deep_nesting_is_a_config_error_naming_the_line(value: str) -> None:
    text = _in_tests(f"pytest_args = {value}")
    line = _line_of(text, "pytest_args")
    assert error_of(text) == (
        f"configs/staging.toml:{line}: arrays or tables nested too deeply (more than 64 levels)"
    )


def test_brackets_in_strings_and_comments_do_not_count_as_nesting() -> None:
    brackets = "[{" * 100
    text = _in_tests(
        f'pytest_args = ["{brackets}", \'{brackets}\']  # {brackets}\n'
        f'env = {{ A = """\n{brackets} \\""" "" """, B = \'\'\'{brackets}\'\'\'\'\' }}'
    )
    config = parse_config(text, source="x.toml")
    assert config.tests.pytest_args == [brackets, brackets]
    assert config.tests.env == {"A": f'{brackets} """ "" ', "B": f"{brackets}''"}


def test_nesting_below_the_limit_is_a_type_error_at_its_key() -> None:
    text = _in_tests("pytest_args = " + "[" * 60 + "]" * 60)
    assert error_of(text) == (
        "configs/staging.toml: tests.pytest_args[0]: expected a string, got an array"
    )


def test_deep_dotted_keys_are_an_unknown_key() -> None:
    assert error_of(_in_tests("a" + ".a" * 5000 + ' = "\\u0000"')) == (
        "configs/staging.toml: tests.a: unknown key"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "[loop]\nmax_iterations = " + "9" * 5000 + "\n" + BASE,
            ":2: not valid TOML: integer too long",
            id="int-too-long-for-int()",
        ),
        pytest.param(
            _in_suite("priority = 9223372036854775808"),
            ": tests.suites[0].priority: integer out of range (TOML integers are 64-bit)",
            id="int-beyond-64-bit",
        ),
        pytest.param(
            _in_tests("suite_timeout_s = inf"),
            ": tests.suite_timeout_s: must be a finite number, got inf",
            id="inf",
        ),
        pytest.param(
            BASE + '[[known_issues]]\nid = "x"\nmatch = "a{99999999999}"\n',
            ": known_issues[0].match: not a valid regular expression:"
            " the repetition number is too large",
            id="regex-overflow",
        ),
        pytest.param(
            BASE + f'[[known_issues]]\nid = "x"\nmatch = "{"(" * 5000}{")" * 5000}"\n',
            ": known_issues[0].match: not a valid regular expression: nested too deeply",
            id="regex-recursion",
        ),
        pytest.param(
            _in_auth("max_instances = 3000000000"),
            ": deploy.services[0].max_instances: must be at most 2147483647, got 3000000000",
            id="int32-instances",
        ),
    ],
)
def test_input_that_raised_other_exceptions_is_a_config_error(text: str, expected: str) -> None:
    assert error_of(text) == f"configs/staging.toml{expected}"


def test_bad_toml_names_the_line() -> None:
    assert error_of("[tests\n") == (
        "configs/staging.toml:1: not valid TOML:"
        " Expected ']' at the end of a table declaration (column 7)"
    )


def _chain(count: int, *, cycle: bool) -> str:
    """`count` services, each depending on the one before; the first on the last if `cycle`."""
    services = []
    for i in range(count):
        before = f"s{i - 1}" if i else f"s{count - 1}" if cycle else None
        depends = f'depends_on = ["{before}"]\n' if before else ""
        services.append(f'[[deploy.services]]\nname = "s{i}"\ncommand = ["run"]\n{depends}')
    return "".join(services) + '[tests]\n[[tests.suites]]\nname = "P1"\npaths = ["t"]\n'


def test_a_long_dependency_chain_does_not_exhaust_recursion() -> None:
    config = parse_config(_chain(3000, cycle=False), source="x.toml")
    assert config.deploy.services[-1].depends_on == ["s2998"]
    assert "dependency cycle: s0 -> s2999 -> s2998" in error_of(_chain(3000, cycle=True))


def test_unreadable_config_path_is_a_config_error(tmp_path: Path) -> None:
    # A valid --env can still make a name the filesystem refuses.
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path, "a" * 300)
    assert str(info.value).endswith(".toml: cannot read: File name too long")


# --- -m expressions --------------------------------------------------------------------------


def test_check_markers_refuses_what_pytest_would() -> None:
    text = _in_suite('markers = "critical and not slow"') + (
        '[[tests.suites]]\nname = "P2"\npaths = ["t"]\nmarkers = "("\n'
    )
    config = parse_config(text, source="configs/staging.toml")
    with pytest.raises(ConfigError) as info:
        check_markers(config, "configs/staging.toml")
    assert str(info.value).startswith(
        "configs/staging.toml: tests.suites[1].markers: not a valid -m expression: at column 2: "
    )
    assert "\n" not in str(info.value)
    check_markers(parse_config(BASE, source="x.toml"), "x.toml")  # no markers at all


def test_check_markers_names_each_bad_suite_and_escapes_pytest_text() -> None:
    text = BASE.replace('name = "P1"', 'name = "P1"\nmarkers = "a b"') + (
        '[[tests.suites]]\nname = "P2"\npaths = ["t"]\nmarkers = "a\\u001bb"\n'
        '[[tests.suites]]\nname = "P3"\npaths = ["t"]\nmarkers = "' + "(" * 3000 + '"\n'
    )
    with pytest.raises(ConfigError) as info:
        check_markers(parse_config(text, source="c.toml"), "c.toml")
    lines = str(info.value).splitlines()
    assert [line.split(": not a valid -m expression: ")[0] for line in lines] == [
        f"c.toml: tests.suites[{i}].markers" for i in range(3)
    ]
    assert "\x1b" not in str(info.value)
    assert lines[2].endswith("nested too deeply")


def test_load_config_does_not_import_pytests_parser(tmp_path: Path) -> None:
    (tmp_path / "local.toml").write_text(_in_suite('markers = "slow"'))
    code = (
        "import sys; from pathlib import Path; from deployloop.config import load_config;"
        f"load_config(Path({str(tmp_path)!r}), 'local');"
        "print(sorted(m for m in sys.modules if m.startswith('_pytest')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


# --- [redaction] -----------------------------------------------------------------------------


def test_redaction_defaults_match_secret_looking_names_case_insensitively() -> None:
    redaction = parse_config(BASE, source="x.toml").redaction
    assert redaction.names == ["*TOKEN*", "*SECRET*", "*PASSWORD*", "*KEY*"]
    assert redaction.matches("GITHUB_TOKEN")
    assert redaction.matches("db_password")
    assert redaction.matches("ApiKey")
    assert not redaction.matches("E2E_ENV")


def test_redaction_names_replace_the_default() -> None:
    config = parse_config('[redaction]\nnames = ["*_creds", "SESSION"]\n' + BASE, "x.toml")
    assert config.redaction.matches("AWS_CREDS")
    assert config.redaction.matches("session")
    assert not config.redaction.matches("API_TOKEN")
    nothing = parse_config("[redaction]\nnames = []\n" + BASE, "x.toml").redaction
    assert not nothing.matches("API_TOKEN")


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        pytest.param('names = ["*TOKEN*", ""]', "redaction.names[1]: must not be empty",
                     id="empty"),
        pytest.param(r'names = ["*\u001b*"]',
                     r"redaction.names[0]: contains a control character '\x1b'", id="control"),
        pytest.param('names = "*TOKEN*"',
                     "redaction.names: expected an array, got the string '*TOKEN*'",
                     id="not-a-list"),
        pytest.param('nmes = ["*TOKEN*"]',
                     "redaction.nmes: unknown key (did you mean 'names'?)", id="unknown-key"),
    ],
)
def test_bad_redaction_names_are_refused(section: str, expected: str) -> None:
    assert error_of(f"[redaction]\n{section}\n" + BASE) == f"configs/staging.toml: {expected}"


def test_default_lists_are_not_shared_between_configs() -> None:
    first = parse_config(BASE, source="x.toml")
    second = parse_config(BASE, source="x.toml")
    first.redaction.names.append("*CREDS*")
    first.tests.env["A"] = "1"
    first.deploy.services[0].depends_on.append("backend")
    assert second.redaction.names == ["*TOKEN*", "*SECRET*", "*PASSWORD*", "*KEY*"]
    assert second.tests.env == {}
    assert second.deploy.services[0].depends_on == []
    assert parse_config(BASE, source="x.toml").redaction.names == second.redaction.names


# --- `loop plan` on bad configs: exit 2, one line, no traceback ---------------------------


_PLAN_SUITE = '[tests]\n[[tests.suites]]\nname = "Main"\npaths = ["tests"]\n'


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        pytest.param(
            _PLAN_SUITE.replace("[tests]\n", '[tests]\nenv = { API_KEY = "a\\u0000b" }\n'),
            "configs/local.toml:2: tests.env.API_KEY: contains a NUL character",
            id="nul",
        ),
        pytest.param(
            _PLAN_SUITE.replace("[tests]\n", "[tests]\npytest_args = " + "[" * 600 + "]" * 600
                                + "\n"),
            "configs/local.toml:2: arrays or tables nested too deeply",
            id="nesting",
        ),
        pytest.param(
            _PLAN_SUITE.replace("[tests]\n", '[tests]\nenv = { "A=B" = "1" }\n'),
            "configs/local.toml:2: tests.env: 'A=B' is not a valid environment variable name",
            id="env-name",
        ),
        pytest.param(
            _PLAN_SUITE + 'markers = "("\n',
            "configs/local.toml: tests.suites[0].markers: not a valid -m expression: ",
            id="markers",
        ),
    ],
)
def test_loop_plan_refuses_bad_config_in_one_line(
    project: Project, toml: str, expected: str
) -> None:
    project.config(toml)
    result = project.run("plan")
    assert result.returncode == 2, output(result)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, output(result)
    assert expected in lines[0]
    assert "Traceback" not in result.stdout + result.stderr
    assert not project.state.exists()


# --- first contact: every mistake at once, each at its line ----------------------------------


def _at(text: str, fragment: str, key_and_message: str) -> str:
    """The error line for the key written at `fragment`: `path:line: key: message`."""
    return f"configs/staging.toml:{_line_of(text, fragment)}: " + key_and_message


def test_problems_of_every_check_are_all_reported_in_file_order() -> None:
    text = (
        BASE.replace('depends_on = ["auth"]', 'depends_on = ["auht"]')
        .replace('name = "auth"\n', 'name = "auth"\nenv = { LEVEL = "a\\u0000" }\n')
        .replace("[tests]\n", '[tests]\nworker = 2\nsuite_timeout_s = "900"\n')
    )
    assert full_error_of(text).splitlines() == [
        _at(text, "env = {", "deploy.services[0].env.LEVEL: contains a NUL character"),
        _at(text, 'depends_on = ["auht"]',
            "deploy.services[1].depends_on: unknown service 'auht'"),
        _at(text, "worker = 2", "tests.worker: unknown key (did you mean 'workers'?)"),
        _at(text, "suite_timeout_s", "tests.suite_timeout_s: expected a number, got the string"
            " '900'"),
    ]


def _service(name: str, *depends_on: str, command: bool = True) -> str:
    text = f'[[deploy.services]]\nname = "{name}"\n'
    if command:
        text += 'command = ["run"]\n'
    if depends_on:
        text += f"depends_on = {list(depends_on)!r}\n".replace("'", '"')
    return text


_ONE_SUITE = '[tests]\n[[tests.suites]]\nname = "P1"\npaths = ["t"]\n'


def test_every_problem_that_spans_keys_is_reported() -> None:
    text = (
        _service("a")
        + _service("b", "a", "x", "b", "y")
        + _service("c", "d")
        + _service("d", "c")
        + _service("a")
        + _service("e", command=False)
        + _ONE_SUITE
        + '[[tests.suites]]\nname = "P1"\npaths = ["t"]\n'
        + '[[known_issues]]\nid = "k"\nmatch = "a"\n[[known_issues]]\nid = "k"\nmatch = "b"\n'
    )
    assert error_of(text).splitlines() == [
        "configs/staging.toml: deploy.services[1].depends_on: unknown service 'x'",
        "configs/staging.toml: deploy.services[1].depends_on: a service cannot depend on itself",
        "configs/staging.toml: deploy.services[1].depends_on: unknown service 'y'",
        "configs/staging.toml: deploy.services[2].depends_on: dependency cycle: c -> d -> c",
        "configs/staging.toml: deploy.services[4].name: duplicate service name 'a'",
        "configs/staging.toml: deploy.services[5].command: required when deploy.target = 'local'",
        "configs/staging.toml: tests.suites[1].name: duplicate suite name 'P1'",
        "configs/staging.toml: known_issues[1].id: duplicate known issue id 'k'",
    ]


def test_each_dependency_cycle_is_reported_once() -> None:
    text = (
        _service("a", "b")
        + _service("b", "a")
        + _service("c", "d")
        + _service("d", "c")
        + _service("e", "e")
        + _ONE_SUITE
    )
    assert error_of(text).splitlines() == [
        "configs/staging.toml: deploy.services[0].depends_on: dependency cycle: a -> b -> a",
        "configs/staging.toml: deploy.services[2].depends_on: dependency cycle: c -> d -> c",
        "configs/staging.toml: deploy.services[4].depends_on: a service cannot depend on itself",
    ]


def test_checks_that_span_keys_run_when_a_type_is_wrong() -> None:
    text = BASE.replace("[tests]\n", '[tests]\nworkers = "4"\n') + (
        '[[tests.suites]]\nname = "P1"\npaths = ["t"]\n'
    )
    assert error_of(text).splitlines() == [
        "configs/staging.toml: tests.workers: expected an integer, got the string '4'",
        "configs/staging.toml: tests.suites[1].name: duplicate suite name 'P1'",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            BASE.replace('name = "auth"\n', ""),
            ["deploy.services[0].name: required key is missing"],
            id="a-nameless-service-may-be-the-one-depends_on-means",
        ),
        pytest.param(
            BASE.replace('depends_on = ["auth"]', 'depends_on = "auth"'),
            ["deploy.services[1].depends_on: expected an array, got the string 'auth'"],
            id="depends_on-not-an-array",
        ),
        pytest.param(
            BASE.replace('command = ["{python}", "auth.py", "--port", "{port}"]',
                         'command = "auth.py"'),
            ["deploy.services[0].command: expected an array, got the string 'auth.py'"],
            id="command-of-the-wrong-type-is-not-missing",
        ),
        pytest.param(
            BASE.replace('target = "local"', 'target = "nowhere"'),
            ["deploy.target: expected 'local', 'command', 'cloudrun' or 'none',"
             " got the string 'nowhere'"],
            id="no-target-checks-for-an-unknown-target",
        ),
        pytest.param(
            BASE.replace('name = "backend"', "name = 7"),
            ["deploy.services[1].name: expected a string, got 7"],
            id="name-of-the-wrong-type",
        ),
    ],
)
def test_checks_that_span_keys_skip_what_pydantic_names(text: str, expected: list[str]) -> None:
    assert error_of(text).splitlines() == [f"configs/staging.toml: {e}" for e in expected]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            BASE.replace('command = ["{python}", "auth.py"', 'comand = ["{python}", "auth.py"'),
            "deploy.services[0].comand: unknown key (did you mean 'command'?)",
            id="required-by-the-target",
        ),
        pytest.param(
            BASE.replace('paths = ["tests/test_p1.py"]', 'path = ["tests/test_p1.py"]'),
            "tests.suites[0].path: unknown key (did you mean 'paths'?)",
            id="required-key",
        ),
        pytest.param(
            BASE.replace("[tests]\n[[tests.suites]]", "[test]\n[[test.suites]]"),
            "test: unknown key (did you mean 'tests'?)",
            id="required-table",
        ),
    ],
)
def test_a_misspelt_required_key_is_one_problem(text: str, expected: str) -> None:
    assert error_of(text) == f"configs/staging.toml: {expected}"


def test_document_checks_report_every_value() -> None:
    text = _in_tests(
        'env = { "A\\u0000" = "1", B = "\\u0000" }\npytest_args = ["\\u0000", "x", "\\u0000"]'
    ) + '[[tests.suites]]\nname = "P2"\npaths = ["t"]\npriority = 9223372036854775808\n'
    assert error_of(text).splitlines() == [
        r"configs/staging.toml: tests.env: key 'A\x00' contains a NUL character",
        "configs/staging.toml: tests.env.B: contains a NUL character",
        "configs/staging.toml: tests.pytest_args[0]: contains a NUL character",
        "configs/staging.toml: tests.pytest_args[2]: contains a NUL character",
        "configs/staging.toml: tests.suites[1].priority: integer out of range"
        " (TOML integers are 64-bit)",
    ]


# --- the line of each key ------------------------------------------------------------------


def test_each_problem_names_the_line_of_its_key() -> None:
    text = (
        BASE.replace('name = "auth"\n', 'name = "auth"\nenv = { "A=B" = "1" }\n')
        .replace('paths = ["tests/test_p1.py"]\n', 'paths = ["tests/test_p1.py"]\n'
                 '[[tests.suites]]\nname = "P2"\n'
                 '[[tests.suites]]\nname = "P3"\npaths = ["t"]\nmarkers = 3\n')
    )
    p2 = _line_of(text, '[[tests.suites]]\nname = "P2"')
    assert full_error_of(text).splitlines() == [
        _at(text, 'env = { "A=B"', "deploy.services[0].env: 'A=B' is not a valid environment"
            " variable name (contains '=')"),
        f"configs/staging.toml:{p2}: tests.suites[1].paths:"
        " required key is missing",
        _at(text, "markers = 3", "tests.suites[2].markers: expected a string, got 3"),
    ]


def test_a_missing_table_has_no_line() -> None:
    assert full_error_of('[loop]\nmax_iterations = "5"\n') == (
        "configs/staging.toml: tests: required key is missing\n"
        "configs/staging.toml:2: loop.max_iterations: expected an"
        " integer, got the string '5'"
    )


SCANNED = """\
# [tests] in a comment
[loop]
max_iterations = 3   # [tests]
between_iterations = [
  "fix.py",   # a comment, then a string of many lines
  '''
[tests]
workers = 1
''',
  "\\"quoted\\" [x] = 1",
]

[[deploy.services]]
name = "a"
env.LOG = "x"
labels = { team = "t", "odd key" = { inner = 1 }, "A\\u0041" = "" }

[[deploy.services]]
"name" = 'b'
when = 1979-05-27 07:32:00Z

[deploy.services.env]
X = "1"

[ deploy . "target" ]

[[tests.suites]]
name = "s"
paths = [
  "a", { p = 1 },
]
"""


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_the_key_scanner_finds_each_key_on_its_line(newline: str) -> None:
    lines = key_lines(SCANNED.replace("\n", newline))
    assert lines[("loop",)] == 2
    assert lines[("loop", "max_iterations")] == 3
    assert lines[("loop", "between_iterations")] == 4
    assert lines[("loop", "between_iterations", 1)] == 6
    assert lines[("loop", "between_iterations", 2)] == 10
    assert ("tests", "workers") not in lines and ("x",) not in lines
    assert lines[("deploy", "services")] == 13
    assert lines[("deploy", "services", 0)] == 13
    assert lines[("deploy", "services", 0, "env", "LOG")] == 15
    assert lines[("deploy", "services", 0, "labels", "odd key", "inner")] == 16
    assert lines[("deploy", "services", 0, "labels", "AA")] == 16
    assert lines[("deploy", "services", 1)] == 18
    assert lines[("deploy", "services", 1, "name")] == 19
    assert lines[("deploy", "services", 1, "when")] == 20
    assert lines[("deploy", "services", 1, "env", "X")] == 23
    assert lines[("deploy", "target")] == 25
    assert lines[("tests", "suites", 0, "paths", 1, "p")] == 30
    assert line_of_key(lines, ("deploy", "services", 1, "command")) == 18
    assert line_of_key(lines, ("deploy", "services", 1, "env", "Y")) == 22
    assert line_of_key(lines, ("redaction", "names")) is None


def test_the_key_scanner_gives_up_quietly_on_what_it_does_not_know() -> None:
    assert key_lines("a = 1\n= 2\nc = 3\n") == {("a",): 1}


# --- did you mean --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(_in_tests("worker = 2"),
                     "tests.worker: unknown key (did you mean 'workers'?)", id="tests.worker"),
        pytest.param(BASE.replace("[[deploy.services]]", "[[deploy.servics]]"),
                     "deploy.servics: unknown key (did you mean 'services'?)",
                     id="deploy.servics"),
        pytest.param(_in_auth("helth_path = '/h'"),
                     "deploy.services[0].helth_path: unknown key (did you mean 'health_path'?)",
                     id="in-an-array-of-tables"),
        pytest.param(BASE.replace('target = "local"', 'target = "lokal"'),
                     "deploy.target: expected 'local', 'command', 'cloudrun' or 'none',"
                     " got the string 'lokal' (did you mean 'local'?)", id="a-choice"),
        pytest.param(_in_tests("colour = 2"), "tests.colour: unknown key", id="nothing-close"),
        pytest.param(_in_tests("env = { A = { B = 1 } }"),
                     "tests.env.A: expected a string, got a table", id="not-a-model"),
    ],
)
def test_an_unknown_key_names_the_closest_known_one(text: str, expected: str) -> None:
    assert error_of(text) == f"configs/staging.toml: {expected}"


# --- strict types --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(_in_auth('ready_timeout_s = "20"'),
                     "deploy.services[0].ready_timeout_s: expected a number,"
                     " got the string '20'", id="number-as-string"),
        pytest.param(_in_tests('workers = "4"'),
                     "tests.workers: expected an integer, got the string '4'",
                     id="integer-as-string"),
        pytest.param(_in_auth('allow_unauthenticated = "yes"'),
                     "deploy.services[0].allow_unauthenticated: expected true or false,"
                     " got the string 'yes'", id="bool-as-string"),
        pytest.param(_in_suite("priority = 1.0"),
                     "tests.suites[0].priority: expected an integer, got 1.0",
                     id="float-for-integer"),
        pytest.param("[loop]\nmax_iterations = true\n" + BASE,
                     "loop.max_iterations: expected an integer, got true", id="bool-for-integer"),
        pytest.param("[loop]\ntarget_pass_rate = false\n" + BASE,
                     "loop.target_pass_rate: expected a number, got false", id="bool-for-float"),
        pytest.param(BASE + '[[known_issues]]\nid = "k"\nmatch = "a"\nexpires = "2026-12-31"\n',
                     "known_issues[0].expires: expected a date such as 2026-12-31,"
                     " got the string '2026-12-31'", id="date-as-string"),
        pytest.param(_in_tests('pytest_args = ["-x", 2]'),
                     "tests.pytest_args[1]: expected a string, got 2", id="number-in-argv"),
        pytest.param(_in_tests("workers = 0"),
                     "tests.workers: must be at least 1, got 0", id="bound"),
        pytest.param(BASE.replace('name = "auth"', 'name = "auth service"'),
                     "deploy.services[0].name: must be letters, digits, '_', '.' and '-' only,"
                     " starting with a letter or digit, got the string 'auth service'",
                     id="pattern"),
    ],
)
def test_values_of_the_wrong_type_are_refused_in_plain_words(text: str, expected: str) -> None:
    assert error_of(text) == f"configs/staging.toml: {expected}"


def test_what_toml_gives_is_accepted() -> None:
    text = "[loop]\ntarget_pass_rate = 90\n" + _in_auth("ready_timeout_s = 20") + (
        '[[known_issues]]\nid = "k"\nmatch = "a"\nexpires = 2026-12-31\n'
    )
    config = parse_config(text, source="x.toml")
    assert config.loop.target_pass_rate == 90.0
    assert isinstance(config.loop.target_pass_rate, float)
    assert config.deploy.services[0].ready_timeout_s == 20.0
    assert config.known_issues[0].expires == date(2026, 12, 31)


# --- a byte order mark ---------------------------------------------------------------------


def test_a_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    (tmp_path / "local.toml").write_text(BASE, encoding="utf-8-sig")
    assert load_config(tmp_path, "local").tests.suites[0].name == "P1"
    text = _in_tests("worker = 2")
    assert full_error_of("\ufeff" + text) == full_error_of(text)


# --- `loop plan` on a config with several mistakes -----------------------------------------


def test_loop_plan_reports_every_mistake_with_its_file_line_and_key(project: Project) -> None:
    project.config("""
        [deploy]
        target = "local"

        [[deploy.services]]
        name = "api"
        command = ["{python}", "svc.py", "--port", "{port}"]
        depends_on = ["auht"]

        [tests]
        worker = 2
        suite_timeout_s = "900"

        [[tests.suites]]
        name = "Main"
        paths = ["tests"]
        """)
    result = project.run("plan")
    assert result.returncode == 2, output(result)
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    located = [re.match(r"error: configs/local\.toml:(\d+): (\S+): ", line)
               for line in lines]
    assert [(m.group(1), m.group(2)) for m in located if m] == [
        ("7", "deploy.services[0].depends_on"),
        ("10", "tests.worker"),
        ("11", "tests.suite_timeout_s"),
    ], output(result)
    assert lines[1].endswith("unknown key (did you mean 'workers'?)")
    assert lines[2].endswith("expected a number, got the string '900'")
    assert not project.state.exists()


# --- the cloudrun target's revision settings ---------------------------------------------------

CLOUDRUN = """
[deploy]
target = "cloudrun"
project = "demo-proj"
region = "europe-west1"

[[deploy.services]]
name = "api"
image = "europe-docker.pkg.dev/demo-proj/shop/api:{git_sha}"

[tests]
[[tests.suites]]
name = "P1"
paths = ["tests/test_p1.py"]
"""


def _in_api(line: str) -> str:
    return CLOUDRUN.replace('name = "api"\n', f'name = "api"\n{line}\n')


def test_revision_settings_load() -> None:
    config = parse_config(_in_api(
        'port = 8000\ncommand = ["gunicorn"]\nargs = ["app:app"]\n'
        'vpc = { network = "default", subnetwork = "staging", egress = "all-traffic" }\n'
        'cloudsql_instances = ["demo-proj:europe-west1:shop-db"]\n'
        'startup_probe = { path = "/ready", period_s = 5, failure_threshold = 12 }\n'
        'liveness_probe = { path = "/live" }\n'
        'execution_environment = "gen2"\ncpu_boost = true\ncpu_throttling = false\n'
        'timeout_s = 120\nlabels = { team = "shop", cost_center = "c-12" }\n'
        'volumes = [{ secret = "tls-certs", mount_path = "/certs", file = "tls.pem" }]'
    ), "x.toml")
    api = config.deploy.services[0]
    assert api.port == 8000 and api.args == ["app:app"]
    assert api.vpc is not None and api.vpc.subnetwork == "staging"
    assert api.startup_probe is not None and api.startup_probe.failure_threshold == 12
    assert api.liveness_probe is not None and api.liveness_probe.period_s == 10
    assert api.volumes is not None and api.volumes[0].version == "latest"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        pytest.param('labels = { Team = "shop" }',
                     "labels: key 'Team' is not a Google label key (a lower-case letter first,"
                     " then lower-case letters, digits, '_' and '-', at most 63 characters)",
                     id="label-key-case"),
        pytest.param('labels = { "1team" = "shop" }',
                     "labels: key '1team' is not a Google label key", id="label-key-digit"),
        pytest.param(f'labels = {{ team = "{"x" * 64}" }}',
                     "labels: team: 'xxxx", id="label-value-long"),
        pytest.param('labels = { team = "Shop Team" }',
                     "labels: team: 'Shop Team' is not a Google label value", id="label-value"),
        pytest.param("port = 70000", "port: must be at most 65535", id="port"),
        pytest.param('vpc = { connector = "c", network = "n" }',
                     "vpc: give a connector, or network/subnetwork (Direct VPC egress), not both",
                     id="vpc-both"),
        pytest.param('vpc = { egress = "all-traffic" }',
                     "vpc: give a connector, or network and/or subnetwork", id="vpc-none"),
        pytest.param('cloudsql_instances = ["shop-db"]',
                     "cloudsql_instances[0]: must be a Cloud SQL instance connection name,"
                     " project:region:instance", id="cloudsql"),
        pytest.param('startup_probe = { path = "ready" }',
                     "startup_probe.path: must start with '/'", id="probe-path"),
        pytest.param('liveness_probe = { path = "/live", period_s = 0 }',
                     "liveness_probe.period_s: must be at least 1", id="probe-period"),
        pytest.param('execution_environment = "gen3"',
                     "execution_environment: expected 'gen1' or 'gen2', got the string 'gen3'"
                     " (did you mean 'gen2'?)", id="exec-env"),
        pytest.param('volumes = [{ secret = "a", mount_path = "/s" },'
                     ' { secret = "b", mount_path = "/s" }]',
                     "volumes: two volumes mount at the same path", id="volumes-twice"),
        pytest.param('volumes = [{ secret = "a", mount_path = "/s", version = "v1" }]',
                     "volumes[0].version: must be a version number or 'latest'",
                     id="volume-version"),
        pytest.param('command = ["{python}", "-m", "api"]',
                     "command: {python} and {port} are the local target's; with cloudrun this"
                     " is the container's own entrypoint", id="local-placeholder"),
    ],
)
def test_revision_settings_are_checked_at_load(line: str, expected: str) -> None:
    assert error_of(_in_api(line)).startswith(
        f"configs/staging.toml: deploy.services[0].{expected}"
    ), error_of(_in_api(line))


def test_revision_settings_with_another_target_are_refused() -> None:
    text = _in_auth('port = 8000\nvpc = { connector = "c" }')
    assert error_of(text) == (
        "configs/staging.toml: deploy.services[0].port: only used by deploy.target ="
        " 'cloudrun' (this config deploys with 'local'); remove it\n"
        "configs/staging.toml: deploy.services[0].vpc: only used by deploy.target ="
        " 'cloudrun' (this config deploys with 'local'); remove it"
    )


def test_candidate_revisions_are_the_cloudrun_targets_and_promote_needs_them() -> None:
    local = BASE.replace('target = "local"', 'target = "local"\ntraffic = "candidate"')
    assert error_of(local) == (
        "configs/staging.toml: deploy.traffic: candidate revisions are the cloudrun target's"
        " (this config deploys with 'local')"
    )
    assert error_of(CLOUDRUN.replace('region = "europe-west1"',
                                     'region = "europe-west1"\npromote = true')) == (
        "configs/staging.toml: deploy.promote: needs traffic = 'candidate' (with 'direct' every"
        " new revision gets the traffic at once: there is nothing to promote)"
    )
    config = parse_config(CLOUDRUN.replace(
        'region = "europe-west1"', 'region = "europe-west1"\ntraffic = "candidate"\npromote = true'
    ), "x.toml")
    assert (config.deploy.traffic, config.deploy.promote) == ("candidate", True)


def test_env_placeholders_take_the_environments_values_and_name_what_is_unset() -> None:
    text = CLOUDRUN.replace('project = "demo-proj"', 'project = "{env:GCP_PROJECT}"').replace(
        'region = "europe-west1"', 'region = "{env:GCP_REGION}"'
    )
    config = parse_config(
        text, "x.toml", environ={"GCP_PROJECT": "team-staging", "GCP_REGION": "us-east1"}
    )
    assert (config.deploy.project, config.deploy.region) == ("team-staging", "us-east1")
    # Other placeholders are left for their own time.
    assert config.deploy.services[0].image.endswith(":{git_sha}")
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "configs/staging.toml", environ={"GCP_REGION": "us-east1"})
    assert str(caught.value) == (
        "configs/staging.toml:4: deploy.project: {env:GCP_PROJECT}: the environment variable"
        " GCP_PROJECT is not set (export GCP_PROJECT=..., or write the value here)"
    )


def test_a_configs_fingerprint_changes_with_the_variables_it_refers_to() -> None:
    from deployloop.env_refs import fingerprint

    data = b'project = "{env:GCP_PROJECT}"\n'
    one = fingerprint(data, {"GCP_PROJECT": "a"})
    assert one == fingerprint(data, {"GCP_PROJECT": "a", "OTHER": "x"})
    assert one != fingerprint(data, {"GCP_PROJECT": "b"}) != fingerprint(data, {})
    assert fingerprint(b'project = "p"\n', {"GCP_PROJECT": "a"}) == b'project = "p"\n'
