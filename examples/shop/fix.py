"""The fix step of the shop example: loop runs it after an iteration that missed its target.

It stands in for the person or coding agent who reads the report and fixes things. loop sets:

    LOOP_ENV, LOOP_ITERATION    which run this is
    LOOP_REPORT_MD              the iteration's report, for people
    LOOP_SUMMARY_JSON           the same as data: totals{...}, clusters[{label, count, tests, ...}]

It knows one fix: when a failure cluster is about HTTP 403 / the token audience, it writes
examples/shop/fixes/auth.json so the auth service (restarted by loop before the next
iteration) issues tokens for the backend too. Anything else it reports and leaves alone.
With --push-images (the Cloud Run config, configs/staging.toml), a fix is followed by
push_images.py, so the next deploy's images hold it.
Exit 0 when it ran (fixed or not), 1 when it cannot read the summary or the push failed.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

FIX_FILE = Path(__file__).resolve().parent / "fixes" / "auth.json"
AUDIENCE_PROBLEM = re.compile(r"\b403\b|audience", re.IGNORECASE)
FIXED_AUDIENCES = ["auth", "backend"]


def read_summary() -> dict[str, Any]:
    path = os.environ.get("LOOP_SUMMARY_JSON")
    if not path:
        sys.exit(
            "fix: LOOP_SUMMARY_JSON is not set. Run me as loop's between_iterations hook, or\n"
            "     `loop summarize --format json --output summary.json` and set"
            " LOOP_SUMMARY_JSON=summary.json"
        )
    try:
        summary: dict[str, Any] = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        sys.exit(f"fix: LOOP_SUMMARY_JSON={path}: no such file")
    except (OSError, ValueError) as exc:
        sys.exit(f"fix: cannot read LOOP_SUMMARY_JSON={path}: {exc}")
    return summary


def shown(path: Path) -> str:
    """`path` relative to the working directory when it is under it."""
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


def apply_audience_fix() -> tuple[bool, str]:
    """Write the override file; whether it changed, and what."""
    before = ["auth"]  # auth_service.DEFAULT_AUDIENCES
    if FIX_FILE.is_file():
        try:
            before = json.loads(FIX_FILE.read_text(encoding="utf-8"))["audiences"]
        except (ValueError, KeyError, TypeError):
            pass  # unreadable: overwrite it
    if set(FIXED_AUDIENCES) <= set(before):
        return False, (
            f"{shown(FIX_FILE)} already issues tokens for {before}; the cause is elsewhere"
        )
    FIX_FILE.parent.mkdir(parents=True, exist_ok=True)
    FIX_FILE.write_text(json.dumps({"audiences": FIXED_AUDIENCES}, indent=2) + "\n")
    return True, (
        f"wrote {shown(FIX_FILE)}: token audiences {before} -> {FIXED_AUDIENCES}"
        " (the backend's event stream only accepts tokens for 'backend');"
        " auth picks it up when loop deploys it again"
    )


def main(argv: list[str]) -> int:
    push = "--push-images" in argv
    if set(argv) - {"--push-images"}:
        sys.exit("usage: fix.py [--push-images]")
    summary = read_summary()
    env = os.environ.get("LOOP_ENV", summary.get("env", "?"))
    iteration = os.environ.get("LOOP_ITERATION", summary.get("iteration", "?"))
    totals = summary.get("totals", {})
    print(
        f"fix: {env} iteration {iteration}: {totals.get('failed', '?')} failed,"
        f" {totals.get('errors', 0)} errors of {totals.get('executed', '?')} executed"
    )
    clusters: list[dict[str, Any]] = summary.get("clusters") or []
    if not clusters:
        print("fix: no failure clusters in the summary; nothing to fix")
        return 0
    fixed = False
    for cluster in clusters:
        label = str(cluster.get("label", ""))
        print(f"fix: cluster ({cluster.get('count', '?')} tests): {label}")
        known = cluster.get("known_issue")
        if known:
            print(f"fix:   known issue: {known.get('id') if isinstance(known, dict) else known}")
        if AUDIENCE_PROBLEM.search(label):
            changed, said = apply_audience_fix()
            fixed = fixed or changed
            print(f"fix:   {said}")
        else:
            print("fix:   no fix known for this one; leaving it for a person")
    if push and fixed:
        import push_images  # beside this file

        return 1 if push_images.main() != 0 else 0
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
