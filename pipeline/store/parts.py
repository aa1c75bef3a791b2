"""Part files: one per batch of tasks, the records they produced, published atomically by
the worker; the ledger knows where each task's records start and how long they are.

The final name is a pure function of the batch's task identities (which cover the inputs'
fingerprints and the result-affecting config), so a repeated or zombie attempt can only
replace a part with identical bytes. Temporary files live in ``parts/.tmp`` on the same
filesystem, and are removed by the next run if a ``kill -9`` left any.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import BinaryIO

from pipeline.store.atomic import FILE_MODE, fsync_dir, make_dirs

PARTS_DIR = "parts"
TMP_DIR = ".tmp"


@contextlib.contextmanager
def part_writer(parts_dir: str, name: str) -> Iterator[BinaryIO]:
    """Yield a file; it appears as ``parts/<name>`` only when complete (fsynced, renamed)."""
    tmp = os.path.join(parts_dir, TMP_DIR, f"{name}.{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
        os.fchmod(fd, FILE_MODE)  # the umask must not make the store unreadable to others
        with open(fd, "wb", buffering=1 << 20) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, os.path.join(parts_dir, name))
        fsync_dir(parts_dir)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def prepare(parts_dir: str) -> None:
    """Create ``parts/`` and ``parts/.tmp``, removing temporary files a crash left behind."""
    make_dirs(os.path.join(parts_dir, TMP_DIR))
    clear_tmp(parts_dir)


def clear_tmp(parts_dir: str) -> None:
    """Empty ``parts/.tmp`` (only when no worker of this store is running)."""
    with os.scandir(os.path.join(parts_dir, TMP_DIR)) as entries:
        for entry in entries:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)


def remove_unreferenced(parts_dir: str, referenced: set[str]) -> int:
    """Delete part files that no ledger row points at (results of replaced tasks)."""
    removed = 0
    with os.scandir(parts_dir) as entries:
        for entry in entries:
            if entry.is_file() and entry.name.endswith(".jsonl") and entry.name not in referenced:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed += 1
    return removed
