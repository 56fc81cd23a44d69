"""The analyze stage: pure functions from recorded rows to figures, clusters and a summary.

No I/O and no SQL here: the store loads the records and passes them in.
"""

from deployloop.analysis.summary import build_summary

__all__ = ["build_summary"]
