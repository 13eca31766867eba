"""Run one command and record its wall time, CPU time and peak RSS (stdlib only).

    python -I -S bench/launch.py RESULT.json -- COMMAND [ARGS...]

Why a launcher: Linux's ``ru_maxrss`` for a child counts the memory image the
child had *before* exec, which is the parent's (fork and vfork both start from
it). Measured straight from the bench process, which imports LiteLLM through
the emulator's modules, every syncd run would read as ~220 MB. This launcher is
a bare interpreter of a few MB, so the figure is syncd's own peak.
"""

import json
import os
import sys
import time


def main() -> int:
    result, separator, *command = sys.argv[1:]
    if separator != "--" or not command:
        raise SystemExit("usage: launch.py RESULT.json -- COMMAND [ARGS...]")
    started = time.perf_counter()
    pid = os.posix_spawn(command[0], command, os.environ)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    with open(result, "w") as handle:
        json.dump(
            {
                "exit_code": code,
                "wall_seconds": wall,
                "cpu_seconds": usage.ru_utime + usage.ru_stime,
                "peak_rss_kib": usage.ru_maxrss,
            },
            handle,
        )
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main())
