"""Checks that span keys: names, `depends_on`, cycles, what each deploy target needs."""

from __future__ import annotations

import re
from typing import Any

from deployloop.config.keys import Loc, Problem
from deployloop.config.models import CLOUD_RUN_NAME, DeploySection, url_env_var

# --- checks that span keys ---------------------------------------------------------------------


def cross_check(raw: dict[str, Any]) -> list[Problem]:
    """The problems that span keys.

    They read the document, not the model, so that they run when pydantic refuses it too.
    An absent key is read as the model's default; a value of a type the model refuses, or
    that pydantic refused (masked), is skipped, so that no line here is a consequence of
    a mistake pydantic names.
    """
    problems: list[Problem] = []
    deploy = raw.get("deploy", {})
    if isinstance(deploy, dict):
        problems += _service_checks(deploy)
    tests = raw.get("tests")
    if isinstance(tests, dict):
        problems += _duplicates(
            tests.get("suites"), ("tests", "suites"), "name", "duplicate suite name"
        )
        problems += _jobs_checks(tests, deploy if isinstance(deploy, dict) else {})
    problems += _duplicates(
        raw.get("known_issues"), ("known_issues",), "id", "duplicate known issue id"
    )
    return problems


class _Refused:
    """Stands for a value pydantic refused: of no type a check looks for, and not None."""


def masked(raw: dict[str, Any], keys: list[Loc]) -> dict[str, Any]:
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


def _duplicates(array: object, key: Loc, name: str, what: str) -> list[Problem]:
    problems = []
    seen: set[str] = set()
    for i, item in _tables(array):
        value = item.get(name)
        if isinstance(value, str):
            if value in seen:
                problems.append(Problem((*key, i, name), f"{what} {value!r}"))
            seen.add(value)
    return problems


def _service_checks(deploy: dict[str, Any]) -> list[Problem]:
    array = deploy.get("services", [])
    services = _tables(array)
    names = {i: s["name"] for i, s in services if isinstance(s.get("name"), str)}
    problems = _duplicates(array, ("deploy", "services"), "name", "duplicate service name")

    def problem(i: int, key: str, message: str) -> None:
        problems.append(Problem(("deploy", "services", i, key), message))

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
    return problems + _target_checks(deploy, services, names) + _same_secret_checks(
        deploy, services, names
    )


def _same_secret_checks(
    deploy: dict[str, Any], services: list[tuple[int, dict[str, Any]]], names: dict[int, str]
) -> list[Problem]:
    """Each [[deploy.same_secret]]: its refs name a service's env var or secret, and all of
    them read the same secret (or, without Secret Manager, hold the same value)."""
    problems: list[Problem] = []
    by_name = {names[i]: service for i, service in services if i in names}
    for i, table in _tables(deploy.get("same_secret")):
        refs = table.get("refs")
        if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
            continue
        key: Loc = ("deploy", "same_secret", i, "refs")
        sources: list[tuple[str, str, str]] = []  # (ref, kind, what)
        for ref in refs:
            name, _, var = ref.rpartition(".")
            service = by_name.get(name)
            if service is None:
                problems.append(Problem(key, f"{ref}: no service named {name!r}"))
                continue
            secrets = _table(service.get("secrets"))
            env = _table(service.get("env"))
            if isinstance(secrets.get(var), str):
                sources.append((ref, "secret", secrets[var].split(":", 1)[0]))
            elif isinstance(env.get(var), str):
                sources.append((ref, "value", env[var]))
            else:
                problems.append(Problem(key, f"{ref}: service {name!r} sets no {var}"))
        problems += [Problem(key, m) for m in _different_sources(sources)]
    return problems


def _table(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _different_sources(sources: list[tuple[str, str, str]]) -> list[str]:
    """Why these refs do not read one secret: each one that differs from the first."""
    if not sources:
        return []
    first_ref, first_kind, first_what = sources[0]
    out = []
    for ref, kind, what in sources[1:]:
        if (kind, what) == (first_kind, first_what):
            continue
        if kind == first_kind == "secret":
            out.append(
                f"{first_ref} reads secret {first_what!r} and {ref} reads secret {what!r}:"
                " they must come from the same secret"
            )
        elif kind == first_kind == "value":
            out.append(f"{first_ref} and {ref} hold different values (not shown): they must"
                       " be the same")
        else:
            secret = first_what if first_kind == "secret" else what
            plain = ref if kind == "value" else first_ref
            out.append(f"{plain} is a plain value, not the secret {secret!r} the others read")
    return out


def _target_checks(
    deploy: dict[str, Any], services: list[tuple[int, dict[str, Any]]], names: dict[int, str]
) -> list[Problem]:
    """What the deploy target needs of the deploy table and of each service."""
    target = deploy.get("target", DeploySection.model_fields["target"].default)
    problems: list[Problem] = []

    def required(key: Loc) -> None:
        problems.append(Problem(key, f"required when deploy.target = {target!r}", missing=True))

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
                    problems.append(Problem(("deploy", "services", i, "service_name"), message))
                cloud_run_names.add(cloud_run_name)
            if service.get("image") in (None, ""):
                required(("deploy", "services", i, "image"))
    if target == "command" and deploy.get("command") is None:
        required(("deploy", "command"))
    if deploy.get("invoker_service_account") is not None and target != "cloudrun":
        problems.append(Problem(
            ("deploy", "invoker_service_account"),
            f"only used by deploy.target = 'cloudrun' (this config deploys with {target!r})",
        ))
    if deploy.get("traffic") == "candidate" and target != "cloudrun":
        problems.append(Problem(
            ("deploy", "traffic"),
            f"candidate revisions are the cloudrun target's (this config deploys with"
            f" {target!r})",
        ))
    if deploy.get("promote") is True and deploy.get("traffic") != "candidate":
        problems.append(Problem(
            ("deploy", "promote"),
            "needs traffic = 'candidate' (with 'direct' every new revision gets the traffic"
            " at once: there is nothing to promote)",
        ))
    for i, service in services:
        if target != "cloudrun":
            for key in CLOUD_RUN_ONLY:
                if service.get(key) is not None:
                    problems.append(Problem(
                        ("deploy", "services", i, key),
                        f"only used by deploy.target = 'cloudrun' (this config deploys with"
                        f" {target!r}); remove it",
                    ))
        if target == "local" and service.get("command") is None:
            required(("deploy", "services", i, "command"))
        if target == "local" and service.get("url") is not None:
            # The local target starts the service on a free port of its own: a url here
            # (https above all) would be quietly replaced by http://127.0.0.1:<port>.
            problems.append(
                Problem(
                    ("deploy", "services", i, "url"),
                    "not used by the local target, which serves each service on"
                    " http://127.0.0.1:<port> (no https); remove it, or use the command or"
                    " none target for a service that runs elsewhere",
                )
            )
        if target in ("command", "none") and service.get("url") is None:
            required(("deploy", "services", i, "url"))
    return problems


def _jobs_checks(tests: dict[str, Any], deploy: dict[str, Any]) -> list[Problem]:
    """`[tests.cloudrun_jobs]`: where the job lives, its image's placeholders. The table may
    stay while `executor = "local"`: switching back and forth is one line."""
    jobs = tests.get("cloudrun_jobs")
    if not isinstance(jobs, dict):
        return []
    problems: list[Problem] = []
    key: Loc = ("tests", "cloudrun_jobs")
    for name in ("project", "region"):
        if jobs.get(name) in (None, "") and deploy.get(name) in (None, ""):
            problems.append(Problem(
                (*key, name), f"required (or set [deploy] {name}, which it defaults to)",
                missing=True,
            ))
    problems += _image_placeholders((*key, "image"), jobs.get("image"))
    return problems


def _image_placeholders(key: Loc, image: object) -> list[Problem]:
    """An image may hold {git_sha} and {iteration}, nothing else."""
    placeholders = re.findall(r"\{([^}]*)\}", image) if isinstance(image, str) else []
    unknown = [p for p in placeholders if p not in ("git_sha", "iteration")]
    if not unknown:
        return []
    message = f"unknown placeholder {{{unknown[0]}}} (use {{git_sha}} or {{iteration}})"
    return [Problem(key, message)]


# Revision settings of the cloudrun target; with another target they would do nothing.
CLOUD_RUN_ONLY = (
    "args", "port", "vpc", "cloudsql_instances", "startup_probe", "liveness_probe",
    "execution_environment", "cpu_boost", "cpu_throttling", "volumes", "invoker_iam_disabled",
)


def _cloud_run_checks(key: Loc, service: dict[str, Any], name: str | None) -> list[Problem]:
    problems = []
    for argv_key in ("command", "args"):
        argv = service.get(argv_key)
        if isinstance(argv, list) and any(
            isinstance(a, str) and ("{python}" in a or "{port}" in a) for a in argv
        ):
            message = (
                "{python} and {port} are the local target's; with cloudrun this is the"
                " container's own " + ("entrypoint" if argv_key == "command" else "arguments")
            )
            problems.append(Problem((*key, argv_key), message))
    problems += _image_placeholders((*key, "image"), service.get("image"))
    if (
        service.get("service_name") is None
        and name is not None
        and not re.match(CLOUD_RUN_NAME, name)
    ):
        message = (
            f"{name!r} is not a valid Cloud Run service name"
            " (lower-case letters, digits, '-'); set service_name"
        )
        problems.append(Problem((*key, "name"), message))
    env = service.get("env", {})
    secrets = service.get("secrets", {})
    env_names = set(env) if isinstance(env, dict) else set()
    secret_names = set(secrets) if isinstance(secrets, dict) else set()
    both = sorted(env_names & secret_names)
    if both:
        message = f"{both[0]} is set in env too: give it in one place"
        problems.append(Problem((*key, "secrets"), message))
    reserved = sorted((env_names | secret_names) & _CLOUD_RUN_RESERVED)
    if reserved:
        message = f"{reserved[0]} is set by Cloud Run itself and cannot be overridden"
        problems.append(Problem((*key, "env"), message))
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
