"""One run at a time per output directory.

``flock`` on ``.lock``: the kernel releases it when the holder dies, so ``kill -9`` leaves
no stale lock. The file is never unlinked (unlinking lets two runs each hold "the" lock),
and POSIX ``lockf`` locks are not used (closing any fd of the file drops them).
"""

from __future__ import annotations

import fcntl
import os
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import LockHeldError
from pipeline.store.atomic import FILE_MODE

LOCK_NAME = ".lock"
# A reader probing the lock (``lock_holder`` without /proc/locks) holds it for a moment:
# a run that finds it taken tries again this many times, a few milliseconds apart.
ACQUIRE_TRIES = 5
_PID = re.compile(r"pid (\d+)")


@dataclass(frozen=True)
class LockHolder:
    """The run holding an output directory's lock, as it wrote itself into the file."""

    pid: int | None
    text: str  # "pid 123 on host since 2026-12-05 12:00:00"


def lock_holder(out_dir: Path) -> LockHolder | None:
    """The run holding the lock on ``out_dir`` now, or None when the lock is free (no
    run, or one killed by ``kill -9``: the kernel dropped its lock). Never takes the lock
    where Linux lists the locks in /proc/locks, so it cannot get in a starting run's way."""
    path = out_dir / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        held = _held_per_proc(os.fstat(fd))
        if held is None:  # no /proc/locks: probe
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                held = True
            else:
                fcntl.flock(fd, fcntl.LOCK_UN)
                held = False
        if not held:
            return None
        text = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
    finally:
        os.close(fd)
    match = _PID.match(text)
    return LockHolder(int(match.group(1)) if match else None, text)


def _held_per_proc(info: os.stat_result) -> bool | None:
    """Whether /proc/locks lists a ``flock`` on this file (None: no /proc/locks)."""
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as locks:
            table = locks.read()
    except OSError:
        return None
    wanted = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
    for line in table.splitlines():
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF" (blocked waiters have "->")
        if "->" in fields or "FLOCK" not in fields:
            continue
        device = next((f for f in fields if f.count(":") == 2), "")
        if device.lower() == wanted:
            return True
    return False


class RunLock:
    def __init__(self, out_dir: Path) -> None:
        self.path = out_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, FILE_MODE)
        os.fchmod(fd, FILE_MODE)
        for attempt in range(ACQUIRE_TRIES):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if attempt < ACQUIRE_TRIES - 1:
                    time.sleep(0.005)
        else:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
            os.close(fd)
            detail = f" ({holder})" if holder else ""
            raise LockHeldError(
                f"{self.path.parent}: another run holds the lock{detail}; try again later"
            )
        os.ftruncate(fd, 0)
        info = f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%F %T')}\n"
        os.pwrite(fd, info.encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
