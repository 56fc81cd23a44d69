"""Config errors name the file and the key, so a user knows what to fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from deployloop.config import ConfigError, deploy_waves, load_config, parse_config, url_env_var

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
