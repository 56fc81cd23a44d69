"""Load and validate `configs/<env>.toml`.

pydantic checks keys and types; the checks that span keys (names, `depends_on`, cycles,
what each deploy target needs) run beside it, on the parsed document, so that a user sees
every mistake at once, each naming the file, its line and the key.
Before pydantic, the text is checked for nesting that would exhaust the recursion of the
TOML parser, and the parsed document for what no type can express (NUL in any string or
key, integers beyond 64 bits): those values would otherwise pass and crash a run later, in
an argv, an environment or the store, with an error that names no key.
"""

from __future__ import annotations

from deployloop.config.loading import check_markers, config_path, load_config, parse_config
from deployloop.config.models import (
    DEFAULT_REDACTED_NAMES,
    AnalysisSection,
    CategoryRule,
    Config,
    ConfigError,
    DeploySection,
    KnownIssue,
    LoopSection,
    RedactionSection,
    ServiceConfig,
    StateSection,
    SuiteConfig,
    TestsSection,
    deploy_waves,
    url_env_var,
)
from deployloop.config.toml_text import key_lines, line_of, too_deep

__all__ = [
    "DEFAULT_REDACTED_NAMES",
    "AnalysisSection",
    "CategoryRule",
    "Config",
    "ConfigError",
    "DeploySection",
    "KnownIssue",
    "LoopSection",
    "RedactionSection",
    "StateSection",
    "ServiceConfig",
    "SuiteConfig",
    "TestsSection",
    "check_markers",
    "config_path",
    "deploy_waves",
    "key_lines",
    "line_of",
    "load_config",
    "parse_config",
    "too_deep",
    "url_env_var",
]
