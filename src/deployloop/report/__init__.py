"""Report stage: render a `Summary` as json, markdown or rich terminal output.

Every function here is pure: it takes records computed by the analysis stage and never touches
the store. Submodules are imported on demand (``from deployloop.report import terminal``) so that
the CLI pays for rich only when it draws a table.
"""
