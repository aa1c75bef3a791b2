"""One run at a time per output directory.

``flock`` on ``.lock``: the kernel releases it when the holder dies, so ``kill -9`` leaves
no stale lock. The file is never unlinked (unlinking lets two runs each hold "the" lock),
and POSIX ``lockf`` locks are not used (closing any fd of the file drops them).
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path

from pipeline.errors import LockHeldError

LOCK_NAME = ".lock"


class RunLock:
    def __init__(self, out_dir: Path) -> None:
        self.path = out_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
            os.close(fd)
            detail = f" ({holder})" if holder else ""
            raise LockHeldError(
                f"{self.path.parent}: another run holds the lock{detail}; try again later"
            ) from None
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
