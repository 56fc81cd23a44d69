"""Load and validate `configs/<env>.toml`.

pydantic checks keys and types; the checks that span keys (names, `depends_on`, cycles,
what each deploy target needs) run after it, so every error can name the file and the key.
"""

from __future__ import annotations

import re
import tomllib
from datetime import date
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class ConfigError(Exception):
    """A config that cannot be used; the message names the file and the key."""


def _regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"not a valid regular expression: {exc}") from None
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Argv = list[str]


class LoopSection(_Strict):
    target_pass_rate: float = Field(100.0, ge=0, le=100)
    max_iterations: int = Field(5, ge=1)
    stall_iterations: int = Field(3, ge=0)
    between_iterations: Argv | None = Field(None, min_length=1)


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
    min_instances: int | None = Field(None, ge=0)
    max_instances: int | None = Field(None, ge=1)
    concurrency: int | None = Field(None, ge=1, le=1000)
    timeout_s: int | None = Field(None, ge=1, le=3600)
    ingress: Literal["all", "internal", "internal-and-cloud-load-balancing"] | None = None
    allow_unauthenticated: bool = False
    labels: dict[str, str] = Field(default_factory=dict)

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
        return value

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
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
    name: str = Field(min_length=1)
    paths: list[str] = Field(min_length=1)
    priority: int = Field(1, ge=0)
    markers: str | None = None


class TestsSection(_Strict):
    python: str | None = None
    workers: int = Field(4, ge=1, le=64)
    suite_timeout_s: float = Field(900.0, gt=0)
    # Run each failing test again up to N times in a fresh process, to tell flaky from broken.
    # The first failure still counts: a rerun that passes never hides it.
    reruns: int = Field(0, ge=0, le=5)
    pytest_args: Argv = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    suites: list[SuiteConfig] = Field(min_length=1)


class KnownIssue(_Strict):
    id: str = Field(min_length=1)
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


class Config(_Strict):
    loop: LoopSection = Field(default_factory=LoopSection)
    deploy: DeploySection = Field(default_factory=DeploySection)
    tests: TestsSection
    known_issues: list[KnownIssue] = Field(default_factory=list)
    categories: list[CategoryRule] = Field(default_factory=list)
    analysis: AnalysisSection = Field(default_factory=AnalysisSection)


def config_path(config_dir: Path, env: str) -> Path:
    return config_dir / f"{env}.toml"


def load_config(config_dir: Path, env: str) -> Config:
    """Read and validate the config of `env`; raise ConfigError with a one-line reason."""
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", env):
        raise ConfigError(f"--env {env!r}: use letters, digits, '.', '_' and '-' only")
    path = config_path(config_dir, env)
    if not path.is_file():
        known = sorted(p.stem for p in config_dir.glob("*.toml")) if config_dir.is_dir() else []
        hint = f" (found: {', '.join(known)})" if known else f" (no configs in {config_dir}/)"
        raise ConfigError(f"{path}: no config for env {env!r}{hint}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    return parse_config(text, source=str(path))


def parse_config(text: str, source: str) -> Config:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(source, exc)) from None
    problem = _cross_check(config)
    if problem is not None:
        key, message = problem
        raise ConfigError(f"{source}: {key}: {message}")
    return config


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
        lines.append(f"{source}: {key}: {message}")
    return "\n".join(lines)


def _dotted(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out or "(top level)"


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
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in graph.get(node, []):
            if state.get(dep) == 1:
                return path[path.index(dep) :] + [dep]
            if dep not in state:
                found = visit(dep)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in graph:
        if node not in state:
            found = visit(node)
            if found:
                return found
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
