"""The config's shape: pydantic models with strict types, each field's limits and defaults."""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from deployloop.runner.plugin.deployloop_redact import DEFAULT_PATTERNS, secret_name
from deployloop.safetext import has_unsafe


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


def control_char(value: str) -> str | None:
    """The first character of `value` that has no place in a name or a path: what
    safetext would escape, and tab and newline too."""
    if value.isascii() and value.isprintable():
        return None
    return next((c for c in value if c in "\t\n" or has_unsafe(c)), None)


def _no_control(value: str) -> str:
    bad = control_char(value)
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
        elif control_char(name) is not None:
            why = "contains a control character"
        else:
            continue
        raise ValueError(f"{name!r} is not a valid environment variable name ({why})")
    return value


def _no_space_or_control(value: str) -> str:
    bad = next((c for c in value if c.isspace() or control_char(c) is not None), None)
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
CLOUD_RUN_NAME = r"^[a-z]([-a-z0-9]{0,47}[a-z0-9])?$"
# Google's rules for labels: keys start with a lower-case letter; keys and values hold
# lower-case letters, digits, '_' and '-', at most 63 characters.
LABEL_KEY = r"^[a-z][a-z0-9_-]{0,62}$"
LABEL_VALUE = r"^[a-z0-9_-]{0,63}$"
_CLOUD_SQL = r"^[a-z][a-z0-9-]*(:[a-z0-9.-]+)?:[a-z][a-z0-9-]*:[a-z0-9][a-z0-9-]*$"
_SECRET_NAME = r"^[A-Za-z0-9_-]{1,255}$"
_SERVICE_ACCOUNT = r"^[a-z][a-z0-9-]{4,28}[a-z0-9]@[a-z0-9.-]+\.iam\.gserviceaccount\.com$"


# What a pattern asks for, in words: the pattern itself is no help to a reader.
PATTERN_WORDS = {
    _SERVICE_NAME: "letters, digits, '_', '.' and '-' only, starting with a letter or digit",
    CLOUD_RUN_NAME: "a Cloud Run service name: lower-case letters, digits and '-',"
    " starting with a letter, at most 49 characters",
    _CLOUD_SQL: "a Cloud SQL instance connection name, project:region:instance",
    _SECRET_NAME: "a Secret Manager secret name: letters, digits, '_' and '-'",
    _SERVICE_ACCOUNT: "a service account's email, NAME@PROJECT.iam.gserviceaccount.com",
    r"^([0-9]+|latest)$": "a version number or 'latest'",
    r"^[A-Za-z0-9_.-]+$": "a file name: letters, digits, '_', '.' and '-'",
}


def _absolute_path(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError("must start with '/'")
    return _no_space_or_control(value)


class ProbeConfig(_Strict):
    """An HTTP probe of the service's container (startup or liveness)."""

    path: Annotated[str, AfterValidator(_absolute_path)]
    period_s: int = Field(10, ge=1, le=240)
    failure_threshold: int = Field(3, ge=1, le=1000)
    initial_delay_s: int = Field(0, ge=0, le=240)
    timeout_s: int = Field(1, ge=1, le=240)


class VpcConfig(_Strict):
    """Egress into a VPC: through a Serverless VPC Access connector, or Direct VPC egress
    (network and/or subnetwork)."""

    connector: str | None = Field(None, min_length=1)
    network: str | None = Field(None, min_length=1)
    subnetwork: str | None = Field(None, min_length=1)
    egress: Literal["all-traffic", "private-ranges-only"] = "private-ranges-only"

    @model_validator(mode="after")
    def _one_way(self) -> VpcConfig:
        direct = self.network is not None or self.subnetwork is not None
        if self.connector is not None and direct:
            raise ValueError(
                "give a connector, or network/subnetwork (Direct VPC egress), not both"
            )
        if self.connector is None and not direct:
            raise ValueError("give a connector, or network and/or subnetwork")
        return self


class SecretVolume(_Strict):
    """A Secret Manager secret mounted as a file."""

    secret: str = Field(pattern=_SECRET_NAME)
    mount_path: Annotated[str, AfterValidator(_absolute_path)]
    version: str = Field("latest", pattern=r"^([0-9]+|latest)$")
    file: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]+$")  # default: the secret's name


class ServiceConfig(_Strict):
    name: str = Field(pattern=_SERVICE_NAME)
    command: Argv | None = Field(None, min_length=1)  # local target
    url: str | None = None  # command and none targets
    env: dict[str, str] = Field(default_factory=dict)
    depends_on: list[str] = Field(default_factory=list)
    # Folders of the service's code outside this work tree (its own repository): part of
    # the code an iteration tests, so a fix made there is a change of code, not flakiness.
    source: list[PathText] = Field(default_factory=list)
    health_path: str = "/health"
    ready_timeout_s: float = Field(30.0, gt=0, le=_MAX_SECONDS)
    # cloudrun target
    image: str | None = None  # may hold {git_sha} and {iteration}
    service_name: str | None = Field(None, pattern=CLOUD_RUN_NAME)
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
    # cloudrun: public without an IAM binding (the v2 field): Cloud Run skips the invoker
    # check, for organizations whose policy forbids allUsers bindings.
    invoker_iam_disabled: bool | None = None
    labels: dict[str, Annotated[str, AfterValidator(_no_control)]] = Field(default_factory=dict)
    # cloudrun target: the revision's settings. Each one left out is kept as deployed.
    args: Argv | None = None  # `command` is the container's entrypoint with this target
    port: int | None = Field(None, ge=1, le=65535)
    vpc: VpcConfig | None = None
    cloudsql_instances: list[Annotated[str, Field(pattern=_CLOUD_SQL)]] | None = None
    startup_probe: ProbeConfig | None = None
    liveness_probe: ProbeConfig | None = None
    execution_environment: Literal["gen1", "gen2"] | None = None
    cpu_boost: bool | None = None
    cpu_throttling: bool | None = None
    volumes: list[SecretVolume] | None = None

    @property
    def public(self) -> bool:
        """Callable by anyone: the tests and health checks send no ID token."""
        return self.allow_unauthenticated or bool(self.invoker_iam_disabled)

    @field_validator("env", "secrets")
    @classmethod
    def _valid_env_names(cls, value: dict[str, str]) -> dict[str, str]:
        return _env_names(value)

    @field_validator("labels")
    @classmethod
    def _label_keys(cls, value: dict[str, str]) -> dict[str, str]:
        for key, label in value.items():
            bad = control_char(key)
            if bad is not None:
                raise ValueError(f"key {key!r} contains a control character {bad!r}")
            if not re.match(LABEL_KEY, key):
                raise ValueError(
                    f"key {key!r} is not a Google label key (a lower-case letter first, then"
                    " lower-case letters, digits, '_' and '-', at most 63 characters)"
                )
            if not re.match(LABEL_VALUE, label):
                raise ValueError(
                    f"{key}: {label!r} is not a Google label value (lower-case letters,"
                    " digits, '_' and '-', at most 63 characters)"
                )
        return value

    @field_validator("cloudsql_instances")
    @classmethod
    def _no_twice(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError("an instance is named twice")
        return value

    @field_validator("volumes")
    @classmethod
    def _one_mount_each(cls, value: list[SecretVolume] | None) -> list[SecretVolume] | None:
        paths = [v.mount_path for v in value or ()]
        if len(set(paths)) != len(paths):
            raise ValueError("two volumes mount at the same path")
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


class SameSecret(_Strict):
    """Values that must come from one secret: `refs = ["auth.JWT_SIGNING_KEY",
    "backend.JWT_SECRET_KEY"]` (service name, dot, env var). Checked when the config loads:
    the same Secret Manager secret (cloudrun), or the same value (other targets; never
    shown)."""

    refs: list[Annotated[str, Field(pattern=r"^[^.\s]+\.[A-Za-z_][A-Za-z0-9_]*$")]] = Field(
        min_length=2
    )


class DeploySection(_Strict):
    target: Literal["local", "command", "cloudrun", "none"] = "local"
    command: Argv | None = Field(None, min_length=1)
    project: str | None = None
    region: str | None = None
    rollback_on_failure: bool = False
    # cloudrun: "direct" sends all traffic to each new revision; "candidate" deploys it with
    # none, under a revision tag the tests use, and `promote` moves the traffic to the tested
    # revisions once an iteration reaches its target.
    traffic: Literal["direct", "candidate"] = "direct"
    promote: bool = False
    # cloudrun: ID tokens (tests, health checks) minted by impersonating this service account,
    # from whatever credentials run loop (user, service account, workload identity).
    invoker_service_account: str | None = Field(None, pattern=_SERVICE_ACCOUNT)
    services: list[ServiceConfig] = Field(default_factory=list)
    same_secret: list[SameSecret] = Field(default_factory=list)


class SuiteConfig(_Strict):
    name: DisplayName
    paths: list[PathText] = Field(min_length=1)
    priority: int = Field(1, ge=0)
    markers: str | None = None
    # Its tests run in one pytest process with nothing else running: for fixtures that
    # bind a fixed port, or share a database, which two processes at once would fight over.
    serial: bool = False
    # How its tests may spread over the workers: "auto" by test, but a module whose tests
    # share a module- or class-scoped fixture stays in one worker (set up once); "modules"
    # keeps every module whole; "tests" spreads every test (the fixture is set up in each
    # worker that runs one of its tests).
    split: Literal["auto", "modules", "tests"] = "auto"


def _bucket_url(value: str) -> str:
    bucket, _, prefix = value.removeprefix("gs://").partition("/")
    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]", bucket):
        raise ValueError(
            f"{value!r} is not gs://BUCKET or gs://BUCKET/PREFIX (a bucket name is 3-222"
            " lower-case letters, digits, '-', '_' or '.')"
        )
    _no_space_or_control(prefix)
    return value


class CloudRunJobsConfig(_Strict):
    """`[tests.cloudrun_jobs]`: where and how the tests run as one Cloud Run Jobs execution
    (`[tests] executor = "cloudrun-jobs"`)."""

    image: str = Field(min_length=1)  # the tests' image; may hold {git_sha} and {iteration}
    project: str | None = Field(None, min_length=1)  # default: [deploy] project
    region: str | None = Field(None, min_length=1)  # default: [deploy] region
    job: str = Field("loop-tests", pattern=r"^[a-z]([a-z0-9-]{0,45}[a-z0-9])?$")
    service_account: str | None = Field(None, pattern=_SERVICE_ACCOUNT)
    vpc: VpcConfig | None = None
    tasks: int = Field(4, ge=1, le=1000)  # the execution's tasks, all run at once
    task_timeout_s: int = Field(3600, ge=1, le=168 * 3600)
    max_retries: int = Field(0, ge=0, le=10)
    # gs://bucket or gs://bucket/prefix: shares and results, under <prefix>/<env>/...
    results_bucket: Annotated[str, AfterValidator(_bucket_url)]

    @property
    def bucket(self) -> str:
        return self.results_bucket.removeprefix("gs://").split("/", 1)[0]

    @property
    def prefix(self) -> str:
        parts = self.results_bucket.removeprefix("gs://").split("/", 1)
        return parts[1].strip("/") if len(parts) > 1 else ""


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
    # Workers are forks of one pytest per `-m` expression that collected once (a pytest start
    # and collection cost about a second of CPU each). false: each worker starts and collects
    # on its own, for a conftest that is not safe to fork (loop falls back by itself when
    # threads run after collection).
    fork_workers: bool = True
    pytest_args: Argv = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    suites: list[SuiteConfig] = Field(min_length=1)
    # Where the tests run: pytest processes on this machine, or the tasks of one Cloud Run
    # Jobs execution per iteration ([tests.cloudrun_jobs]).
    executor: Literal["local", "cloudrun-jobs"] = "local"
    cloudrun_jobs: CloudRunJobsConfig | None = None

    @model_validator(mode="after")
    def _executor_settings(self) -> TestsSection:
        if self.executor == "cloudrun-jobs" and self.cloudrun_jobs is None:
            raise ValueError(
                'executor = "cloudrun-jobs" needs a [tests.cloudrun_jobs] table'
                " (image, results_bucket)"
            )
        return self

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


# One list, the redaction's own: loop and its pytest plugin must agree on what is secret.
DEFAULT_REDACTED_NAMES = DEFAULT_PATTERNS


class RedactionSection(_Strict):
    """Environment variables whose values loop hides from everything it writes, by name."""

    # fnmatch globs, case-insensitive; a list in the config replaces the default.
    names: list[Annotated[str, Field(min_length=1), AfterValidator(_no_control)]] = Field(
        default_factory=lambda: list(DEFAULT_REDACTED_NAMES)
    )

    def matches(self, env_name: str) -> bool:
        return secret_name(env_name, self.names)


class StateSection(_Strict):
    # Raw pytest files (reportlog, logs, JUnit XML) of iterations before the last two are
    # gzipped; with N, those of iterations older than the newest N are deleted. The store
    # keeps every result either way. None: keep them all.
    keep_raw_iterations: int | None = Field(None, ge=1)


class Config(_Strict):
    loop: LoopSection = Field(default_factory=LoopSection)
    deploy: DeploySection = Field(default_factory=DeploySection)
    tests: TestsSection
    known_issues: list[KnownIssue] = Field(default_factory=list)
    categories: list[CategoryRule] = Field(default_factory=list)
    analysis: AnalysisSection = Field(default_factory=AnalysisSection)
    redaction: RedactionSection = Field(default_factory=RedactionSection)
    state: StateSection = Field(default_factory=StateSection)


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
        if not wave:  # unreachable after cross_check; guards against a loop forever
            raise ConfigError("dependency cycle among: " + ", ".join(s.name for s in remaining))
        waves.append(wave)
        done.update(s.name for s in wave)
        remaining = [s for s in remaining if s.name not in done]
    return waves
