"""Step plugin for the signal / kill -9 fault tests: makes runs slow enough to interrupt.

Copied next to each test's config (the config's folder is importable in every worker,
whatever the start method), used as ``steps: [..., {call: plugins_signals:slow}, ...]``.
Stdlib only: spawn/forkserver workers import it fresh.

Behaviour comes from the environment (inherited by every worker under every start method),
so one config — hence one result key — serves slow interrupted runs and fast resumes:

- ``SIGTEST_BASE_S``: seconds to sleep per record (default 0).
- ``SIGTEST_SLOW_FILES``: comma-separated line prefixes (``F0010,F0011``) whose records sleep
  ``SIGTEST_SLOW_S`` seconds instead (default: none) — makes a few tasks very long.
- ``SIGTEST_MARK_DIR``: when set, each worker creates ``slow-<pid>`` there on its first slow
  record and ``busy-<pid>`` on its first record: the tests learn black-box that workers are
  inside (slow) tasks.

The record passes through unchanged, so results do not depend on any of these settings.
"""

from __future__ import annotations

import os
import time

_BASE_S = float(os.environ.get("SIGTEST_BASE_S") or 0)
_SLOW_S = float(os.environ.get("SIGTEST_SLOW_S") or 0)
_SLOW_FILES = frozenset(p for p in (os.environ.get("SIGTEST_SLOW_FILES") or "").split(",") if p)
_MARK_DIR = os.environ.get("SIGTEST_MARK_DIR") or ""
_marked: set[str] = set()


def _mark(kind: str) -> None:
    if not _MARK_DIR or kind in _marked:
        return
    _marked.add(kind)
    path = os.path.join(_MARK_DIR, f"{kind}-{os.getpid()}")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    os.close(fd)


def slow(record: dict) -> dict:
    """Sleep a little (or a lot, for the slow files) per record; return it unchanged."""
    _mark("busy")
    line = record.get("line", "")
    if _SLOW_FILES and line[:5] in _SLOW_FILES:
        _mark("slow")
        time.sleep(_SLOW_S)
    elif _BASE_S:
        time.sleep(_BASE_S)
    return record
