"""Env vars of two services that look like one value read from two places.

The hand-written report this tool replaces called 7 WebSocket 403s "expected security
behaviour"; the cause was auth signing tokens with JWT_SIGNING_KEY from one secret while the
backend checked them with JWT_SECRET_KEY from another. Without a `[[deploy.same_secret]]`
declaration loop cannot know two values must match, but it can point at names that look
alike: same first and last word (JWT_SIGNING_KEY, JWT_SECRET_KEY), or one name inside the
other at its start or end (JWT_KEY, AUTH_JWT_KEY), in two services, read from different
secrets (cloudrun) or holding different values (other targets). A warning, never an error;
values are never shown.
"""

from __future__ import annotations

from itertools import combinations

from deployloop.config import Config

# Words that make a variable a key or a secret: only those are compared.
_SECRET_WORDS = frozenset({"KEY", "SECRET", "TOKEN", "PASSWORD", "PASS", "PWD", "SALT"})


def lookalike_warnings(config: Config) -> list[str]:
    declared = {
        frozenset(pair)
        for same in config.deploy.same_secret
        for pair in combinations(same.refs, 2)
    }
    sources: list[tuple[str, str, str, str]] = []  # (service, var, kind, what)
    for service in config.deploy.services:
        for var, ref in service.secrets.items():
            sources.append((service.name, var, "secret", ref.split(":", 1)[0]))
        for var, value in service.env.items():
            if var not in service.secrets:
                sources.append((service.name, var, "value", value))
    warnings = []
    for (s1, v1, k1, w1), (s2, v2, k2, w2) in combinations(sources, 2):
        if s1 == s2 or (k1, w1) == (k2, w2) or not _alike(v1, v2):
            continue
        a, b = f"{s1}.{v1}", f"{s2}.{v2}"
        if frozenset((a, b)) in declared:
            continue  # declared the same: the config check said whether they are
        if k1 == k2 == "secret":
            how = f"read from two secrets, {w1!r} and {w2!r}"
        elif k1 == k2 == "value":
            how = "with different values (not shown)"
        else:
            secret = w1 if k1 == "secret" else w2
            how = f"one from secret {secret!r}, the other a plain value"
        warnings.append(
            f"{a} and {b} look like one value {how}; if they must match, declare"
            f' [[deploy.same_secret]] refs = ["{a}", "{b}"]'
        )
    return warnings


def _alike(one: str, other: str) -> bool:
    a, b = one.upper().split("_"), other.upper().split("_")
    if a == b or not (_SECRET_WORDS & set(a) and _SECRET_WORDS & set(b)):
        return False
    if len(a) >= 2 and len(b) >= 2 and a[0] == b[0] and a[-1] == b[-1]:
        return True
    short, long = sorted((a, b), key=len)
    return len(short) >= 2 and (long[: len(short)] == short or long[-len(short):] == short)
