"""Fault-injection step plugin for the ``report.html`` browser tests (a ``call`` step
``plugins_report:faults``).

Copied next to each test's config (its folder is importable in every worker). A record
whose ``line`` contains ``CRASH`` SIGKILLs its own worker process (after ``CRASH_AFTER_S``,
so that the crashed attempt's bar is wide enough to see and hover whatever the machine's
speed), ``HANG`` sleeps for an hour (the run's task timeout ends it), ``BOOM`` raises
``ValueError``; every other record passes through unchanged. Stdlib only.
"""

from __future__ import annotations

import os
import signal
import time

HANG_S = 3600.0
CRASH_AFTER_S = 0.5  # less than the tests' task timeout (2 s)


def faults(record: dict) -> dict:
    line = record.get("line", "")
    if "CRASH" in line:
        time.sleep(CRASH_AFTER_S)
        os.kill(os.getpid(), signal.SIGKILL)
    if "HANG" in line:
        time.sleep(HANG_S)
    if "BOOM" in line:
        raise ValueError(f"BOOM in record {line!r}")
    return record
