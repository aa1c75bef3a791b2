"""Step plugin for the ``pipeline status`` tests: holds a run mid-way until the test lets
it go.

Copied next to each test's config (its folder is importable in every worker). A record
whose line contains ``HOLD`` makes its worker create ``waiting-<pid>`` in
``STATUS_HOLD_DIR`` and wait there until the file ``release`` appears (for at most
``HOLD_MAX_S``, so a test that failed half-way never leaves a run behind). Every other
record passes through at once, unchanged. Stdlib only.
"""

from __future__ import annotations

import os
import time

HOLD_MAX_S = 90.0
POLL_S = 0.02


def hold(record: dict) -> dict:
    folder = os.environ.get("STATUS_HOLD_DIR", "")
    if folder and "HOLD" in record.get("line", ""):
        marker = os.path.join(folder, f"waiting-{os.getpid()}")
        os.close(os.open(marker, os.O_WRONLY | os.O_CREAT, 0o644))
        release = os.path.join(folder, "release")
        deadline = time.monotonic() + HOLD_MAX_S
        while not os.path.exists(release) and time.monotonic() < deadline:
            time.sleep(POLL_S)
    return record
