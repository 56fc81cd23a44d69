"""loop's watchdog: a tiny process that outlives `loop` only to stop what `loop` started.

`loop run` starts services and pytest in sessions of their own (so Ctrl-C reaches loop alone,
and a timeout can kill a test's children too). Nothing then ends them when loop itself is
killed (`kill -9`, the out-of-memory killer). This process reads, from a pipe only loop
holds, the process groups loop starts and ends. When the pipe closes without a final `done`,
loop is gone: each group gets its stop signal (SIGINT lets pytest run fixture teardown),
then SIGKILL after a grace period, and the record file loop kept for them is removed.

It runs as `python -I -S watchdog.py RECORD GRACE_S` (RECORD `-` for none) and imports only
the standard library, so it starts in milliseconds. It ignores SIGINT, SIGTERM and SIGHUP:
it ends when loop does.
"""

from __future__ import annotations

import os
import signal
import sys
import time


def main(argv: list[str]) -> int:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    record, grace_s = argv[1], float(argv[2])
    groups: dict[int, int] = {}  # target (see stop()) -> its stop signal
    for line in sys.stdin:
        parts = line.split()
        if parts == ["done"]:
            return 0
        if len(parts) == 3 and parts[0] == "add":
            groups[int(parts[1])] = int(parts[2])
        elif len(parts) == 2 and parts[0] == "del":
            groups.pop(int(parts[1]), None)
    # End of input without "done": loop died.
    stop(groups, grace_s)
    if record != "-":
        try:
            os.unlink(record)
        except OSError:
            pass
    return 0


def stop(targets: dict[int, int], grace_s: float) -> None:
    """Send each target its stop signal, wait up to grace_s for all to end, then SIGKILL.

    A target is a process group id, or -pid for a single process (the fix step, which shares
    loop's group so it can use the terminal). The SIGKILL goes to every group, even one whose
    leader has exited: its children would otherwise live on.
    """
    for target, sig in targets.items():
        signal_target(target, sig)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(exists(t) for t in targets):
        time.sleep(0.05)
    for target in targets:
        signal_target(target, signal.SIGKILL)


def signal_target(target: int, sig: int) -> None:
    try:
        if target > 0:
            os.killpg(target, sig)
        else:
            os.kill(-target, sig)
    except OSError:
        pass  # gone already


def exists(target: int) -> bool:
    try:
        if target > 0:
            os.killpg(target, 0)
        else:
            os.kill(-target, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


if __name__ == "__main__":
    sys.exit(main(sys.argv))
