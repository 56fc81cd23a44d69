"""Config errors name the file and the key, so a user knows what to fix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Project, output

from deployloop.config import (
    ConfigError,
    check_markers,
    deploy_waves,
    load_config,
    parse_config,
    url_env_var,
)

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


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="configs/staging.toml")
    return str(info.value)


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
    assert error_of(text) == "configs/staging.toml: tests.suites[0].prioity: unknown key"


def test_wrong_type_names_the_key() -> None:
    text = BASE.replace("[tests]", "[tests]\nworkers = \"four\"")
    message = error_of(text)
    assert message.startswith("configs/staging.toml: tests.workers: ")
    assert "integer" in message


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
        "configs/staging.toml: deploy.services[0].url: required when deploy.target = 'none'"
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
            BASE.replace('target = "local"', 'target = "command"\ncommand = ["./d\\u0000.sh"]'),
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
        f"configs/staging.toml: line {line}: arrays or tables nested too deeply"
        " (more than 64 levels)"
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
        "configs/staging.toml: tests.pytest_args[0]: Input should be a valid string"
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
            "line 2: not valid TOML: integer too long",
            id="int-too-long-for-int()",
        ),
        pytest.param(
            _in_suite("priority = 9223372036854775808"),
            "tests.suites[0].priority: integer out of range (TOML integers are 64-bit)",
            id="int-beyond-64-bit",
        ),
        pytest.param(
            _in_tests("suite_timeout_s = inf"),
            "tests.suite_timeout_s: Input should be a finite number",
            id="inf",
        ),
        pytest.param(
            BASE + '[[known_issues]]\nid = "x"\nmatch = "a{99999999999}"\n',
            "known_issues[0].match: not a valid regular expression:"
            " the repetition number is too large",
            id="regex-overflow",
        ),
        pytest.param(
            BASE + f'[[known_issues]]\nid = "x"\nmatch = "{"(" * 5000}{")" * 5000}"\n',
            "known_issues[0].match: not a valid regular expression: nested too deeply",
            id="regex-recursion",
        ),
        pytest.param(
            _in_auth("max_instances = 3000000000"),
            "deploy.services[0].max_instances: Input should be less than or equal to 2147483647",
            id="int32-instances",
        ),
    ],
)
def test_input_that_raised_other_exceptions_is_a_config_error(text: str, expected: str) -> None:
    assert error_of(text) == f"configs/staging.toml: {expected}"


def test_bad_toml_names_the_line() -> None:
    assert error_of("[tests\n") == (
        "configs/staging.toml: line 1: not valid TOML:"
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
        pytest.param('names = ["*TOKEN*", ""]', "redaction.names[1]: String should have at least"
                     " 1 character", id="empty"),
        pytest.param(r'names = ["*\u001b*"]',
                     r"redaction.names[0]: contains a control character '\x1b'", id="control"),
        pytest.param('names = "*TOKEN*"', "redaction.names: Input should be a valid list",
                     id="not-a-list"),
        pytest.param('nmes = ["*TOKEN*"]', "redaction.nmes: unknown key", id="unknown-key"),
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
            "configs/local.toml: tests.env.API_KEY: contains a NUL character",
            id="nul",
        ),
        pytest.param(
            _PLAN_SUITE.replace("[tests]\n", "[tests]\npytest_args = " + "[" * 600 + "]" * 600
                                + "\n"),
            "configs/local.toml: line 2: arrays or tables nested too deeply",
            id="nesting",
        ),
        pytest.param(
            _PLAN_SUITE.replace("[tests]\n", '[tests]\nenv = { "A=B" = "1" }\n'),
            "configs/local.toml: tests.env: 'A=B' is not a valid environment variable name",
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
