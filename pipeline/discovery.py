"""Input discovery: globs to a deterministic list of regular files.

``glob`` with ``**`` follows directory symlinks, so one file can appear under many paths
(or endlessly, through a loop); files are deduplicated by (device, inode) and the first
path in sorted order wins. Directories, FIFOs, sockets and devices are skipped with a
reason: opening a FIFO would block for ever.
"""

from __future__ import annotations

import fnmatch
import glob
import logging
import os
import stat
from collections.abc import Sequence

from pipeline.chunking import compression_of
from pipeline.models import InputFile, SkippedInput

log = logging.getLogger(__name__)


def _excluded(path: str, patterns: Sequence[str]) -> bool:
    base = os.path.basename(path)
    for pattern in patterns:
        target = path if "/" in pattern else base
        if fnmatch.fnmatchcase(target, pattern):
            return True
    return False


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def path_sort_key(path: str) -> bytes:
    """Byte order of the path: deterministic even for names that are not valid UTF-8."""
    return os.fsencode(path)


def discover(
    patterns: Sequence[str], exclude: Sequence[str] = ()
) -> tuple[list[InputFile], list[SkippedInput], list[str]]:
    """Expand ``patterns`` into files; returns (files, skipped, patterns that matched nothing)."""
    matched: set[str] = set()
    unmatched: list[str] = []
    for pattern in patterns:
        hits = glob.glob(pattern, recursive=True)
        if not hits and os.path.lexists(pattern):
            hits = [pattern]  # a literal name with glob characters in it
        if not hits:
            unmatched.append(pattern)
        matched.update(os.path.normpath(h) for h in hits)

    files: list[InputFile] = []
    skipped: list[SkippedInput] = []
    seen: set[tuple[int, int]] = set()
    for path in sorted(matched, key=path_sort_key):
        if _excluded(path, exclude):
            continue
        try:
            st = os.stat(path)
        except OSError as exc:
            skipped.append(SkippedInput(path, f"cannot stat: {exc.strerror or exc}"))
            continue
        if not stat.S_ISREG(st.st_mode):
            skipped.append(SkippedInput(path, f"skipped: {_kind(st.st_mode)}"))
            continue
        identity = (st.st_dev, st.st_ino)
        if identity in seen:
            log.debug("%s: same file as an earlier path, skipped", path)
            continue
        seen.add(identity)
        files.append(InputFile(path, st.st_size, st.st_mtime_ns, compression_of(path)))
    return files, skipped, unmatched
