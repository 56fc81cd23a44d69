"""The analyze stage: pure functions from recorded rows to figures, clusters and a summary.

No I/O and no SQL here: the store loads the records and passes them in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from deployloop.analysis.summary import build_summary

__all__ = ["build_summary"]


def __getattr__(name: str) -> object:
    # Loaded on first use: a report that needs only analysis.setup_failure (`loop history`)
    # does not pay for the summary's imports (the config's pydantic models among them).
    if name == "build_summary":
        from deployloop.analysis.summary import build_summary

        return build_summary
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
