"""`{env:NAME}` in a config string: the value of the environment variable NAME, so that one
config serves every machine (`project = "{env:GCP_PROJECT}"`).

Light on purpose: `loop status` digests a config's references without loading the config
(and pydantic with it)."""

from __future__ import annotations

import re
from collections.abc import Mapping

REFERENCE = re.compile(r"\{env:([A-Za-z_][A-Za-z0-9_]*)\}")


def references(text: str) -> list[str]:
    """The variables a config's text refers to, each once, in order."""
    return list(dict.fromkeys(REFERENCE.findall(text)))


def fingerprint(data: bytes, environ: Mapping[str, str]) -> bytes:
    """A config's bytes and the values of the variables it refers to: equal fingerprints
    load to equal configs (the bytes alone no longer say that once a config refers to the
    environment)."""
    names = references(data.decode("utf-8", errors="replace"))
    if not names:
        return data
    unset = "\0unset"  # no value a variable can hold: it has no NUL
    values = "".join(f"\0{name}={environ.get(name, unset)}" for name in names)
    return data + b"\0env" + values.encode("utf-8", errors="surrogateescape")


def substitute(value: str, environ: Mapping[str, str]) -> tuple[str, list[str]]:
    """`value` with each reference replaced; and the names that are not set."""
    missing: list[str] = []

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in environ:
            missing.append(name)
            return match.group(0)
        return environ[name]

    return REFERENCE.sub(replace, value), missing
