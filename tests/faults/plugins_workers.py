"""Fault-injection step plugin for tests/faults/test_worker_faults.py.

Copied next to a test's config and used as ``steps: [..., {call: plugins_workers:inject}]``.
Everything is driven by environment variables, so a re-run *without* them runs the very
same config (same result key: only failed or unfinished tasks run again):

``FAULT_MODE``
    what to do on a matching record: ``kill`` (SIGKILL itself), ``exit`` (``os._exit(3)``),
    ``sysexit`` (raise ``SystemExit``), ``kbi`` (raise ``KeyboardInterrupt``), ``raise``
    (raise ``ValueError``), ``hang`` (sleep for an hour), ``kill_once`` (SIGKILL itself,
    first time only),
    ``kill_idle_siblings`` (once: wait until the other pool workers are idle, SIGKILL them),
    ``die_in_worker_init`` (every pool worker dies while the Pool initializer compiles the
    steps; nothing happens in the parent).
``FAULT_MATCH``
    comma-separated substrings; a record whose ``line`` contains one of them matches.
``FAULT_SLOW_FORK``
    seconds: every process forked from the parent (fork start method) sleeps that long
    right after ``fork()``, before it runs anything else; widens the window between a pool
    worker's birth and its initializer.
``FAULT_DIR``
    a folder for bookkeeping: ``hits`` gets one line ``<pid>`` per matching record seen
    (so a test learns attempts and worker pids black-box), ``once-*`` files make the
    ``*_once`` modes fire only once per test.

Functions are top-level (picklable by name under spawn/forkserver). ``inject`` itself is
served by the module ``__getattr__`` so that looking it up (which the Pool initializer does,
under every start method, fork included where the module is already imported) can kill the
worker in ``die_in_worker_init`` mode.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import time
from typing import Any

MODE_VAR = "FAULT_MODE"
SLOW_FORK_VAR = "FAULT_SLOW_FORK"
MATCH_VAR = "FAULT_MATCH"
DIR_VAR = "FAULT_DIR"
INIT_DEATH = "die_in_worker_init"
INIT_DEATH_STATUS = 1


def _in_worker() -> bool:
    return multiprocessing.parent_process() is not None


# Under spawn and forkserver each pool worker imports this module in its initializer:
# die right there. (The parent imports it too, to validate the config: it must survive.)
if os.environ.get(MODE_VAR) == INIT_DEATH and _in_worker():
    os._exit(INIT_DEATH_STATUS)


def _slow_start() -> None:
    time.sleep(float(os.environ[SLOW_FORK_VAR]))


if os.environ.get(SLOW_FORK_VAR) and not _in_worker():
    os.register_at_fork(after_in_child=_slow_start)


def _matches(line: str) -> bool:
    needles = [n for n in os.environ.get(MATCH_VAR, "").split(",") if n]
    return any(n in line for n in needles)


def _fault_dir() -> str:
    return os.environ[DIR_VAR]


def _note_hit() -> None:
    with open(os.path.join(_fault_dir(), "hits"), "a", encoding="ascii") as handle:
        handle.write(f"{os.getpid()}\n")


def _first_time(token: str) -> bool:
    """True exactly once per FAULT_DIR and token, across processes (O_EXCL)."""
    try:
        fd = os.open(
            os.path.join(_fault_dir(), f"once-{token}"), os.O_WRONLY | os.O_CREAT | os.O_EXCL
        )
    except FileExistsError:
        return False
    os.close(fd)
    return True


def _ppid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read().decode("ascii", "replace")
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def _parts_dir() -> str:
    from pipeline import worker

    return worker._PROCESS["job"].parts_dir


def _sibling_pool_workers(parts_dir: str) -> list[int]:
    """The *other* workers of this pool: processes that share this worker's parent and
    have an announcement file (``<parts>/.tmp/worker-<pid>``, which every pool worker
    creates in its initializer). The parent's other children (the Manager, the resource
    tracker) have none."""
    from pipeline import worker  # the package's own per-worker announcement files

    me, parent = os.getpid(), os.getppid()
    folder = os.path.dirname(worker.announcement_path(parts_dir, me))
    siblings = []
    for name in sorted(os.listdir(folder)):
        if name.startswith("worker-"):
            pid = int(name.removeprefix("worker-"))
            if pid != me and _ppid(pid) == parent:
                siblings.append(pid)
    return siblings


def _kill_idle_siblings() -> None:
    """Wait (at most 5 s) until every sibling pool worker has said "idle" for 0.3 s in a
    row — blocked in the task queue's ``get()``, one of them holding its read lock (P3) —
    then SIGKILL them all, note their pids, and stay busy a little so the supervisor sees
    the deaths while this task is still in flight."""
    from pipeline import worker

    parts_dir = _parts_dir()
    deadline = time.monotonic() + 5.0
    idle_since: float | None = None
    siblings: list[int] = []
    settled = False
    while time.monotonic() < deadline:
        siblings = _sibling_pool_workers(parts_dir)
        idle = bool(siblings) and all(
            worker.read_announcement(parts_dir, pid) is None for pid in siblings
        )
        if not idle:
            idle_since = None
        elif idle_since is None:
            idle_since = time.monotonic()
        elif time.monotonic() - idle_since >= 0.3:
            settled = True
            break
        time.sleep(0.02)
    # One line per victim: "<pid> idle" when all had been idle for 0.3 s, else "<pid> busy".
    state = "idle" if settled else "busy"
    with open(os.path.join(_fault_dir(), "killed"), "a", encoding="ascii") as handle:
        handle.write("".join(f"{pid} {state}\n" for pid in siblings))
    for pid in siblings:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)


def fault_step(record: dict[str, Any]) -> dict[str, Any]:
    """The step: returns the record unchanged unless it matches and a mode is set."""
    mode = os.environ.get(MODE_VAR)
    if not mode or not _matches(record.get("line", "")):
        return record
    _note_hit()
    if mode == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif mode == "exit":
        os._exit(3)
    elif mode == "sysexit":
        raise SystemExit("injected SystemExit")
    elif mode == "kbi":
        raise KeyboardInterrupt("injected KeyboardInterrupt")
    elif mode == "raise":
        raise ValueError("injected failure")
    elif mode == "hang":
        time.sleep(3600)
    elif mode == "kill_once":
        if _first_time("kill"):
            os.kill(os.getpid(), signal.SIGKILL)
    elif mode == "kill_idle_siblings" and _first_time("siblings"):
        _kill_idle_siblings()
    return record


def __getattr__(name: str) -> Any:
    if name == "inject":
        if os.environ.get(MODE_VAR) == INIT_DEATH and _in_worker():
            os._exit(INIT_DEATH_STATUS)  # fork: the module was inherited, not imported
        return fault_step
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
