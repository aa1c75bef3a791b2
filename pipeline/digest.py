"""Content digests: the proof, kept in the ledger, that bytes already processed are
still the file's.

A done task keeps the digest of the bytes it covered (``content``): all of them for a
small file read whole (at most ``CONTENT_CHECK_MAX`` bytes, digested from that same read)
or a range of at most two ``EDGE`` s, else its first and last ``EDGE`` bytes (marked
``EDGES``). A file whose mtime moved
but whose bytes did not (a ``touch``) is then not processed again, and a file that only
grew is processed from where its last run stopped: checking either reads at most two
ranges' worth of edges, never a whole big file.
"""

from __future__ import annotations

import hashlib
import os

from pipeline.models import TaskSpec

CONTENT_CHECK_MAX = 1 << 20
EDGE = 64 << 10  # bytes digested at each end of a longer range
EDGES = "e:"  # marks a digest of the edges only


def bytes_digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def windows(offset: int, length: int, edges: bool) -> list[tuple[int, int]]:
    """The ``(start, stop)`` byte windows a range's digest covers."""
    stop = offset + length
    return [(offset, offset + EDGE), (stop - EDGE, stop)] if edges else [(offset, stop)]


def windows_digest(pieces: list[bytes], edges: bool) -> str:
    """The digest of a range from the bytes of its ``windows``, as ``content`` names it."""
    text = bytes_digest(b"".join(pieces))
    return EDGES + text if edges else text


def range_digest(path: str, offset: int, length: int, *, edges: bool | None = None) -> str | None:
    """The digest of ``[offset, offset + length)`` of a file as a task's ``content``
    names it, or None when the file holds fewer bytes. ``edges``: whether to digest only
    the two edges (by default, when the range is longer than two of them)."""
    if edges is None:
        edges = length > 2 * EDGE
    pieces = []
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        for start, stop in windows(offset, length, edges):
            piece = _pread_all(fd, stop - start, start)
            if len(piece) != stop - start:
                return None
            pieces.append(piece)
    finally:
        os.close(fd)
    return windows_digest(pieces, edges)


def uses_edges(content: str) -> bool:
    return content.startswith(EDGES)


def content_windows(offset: int, length: int, content: str) -> list[tuple[int, int]] | None:
    """The windows to read to check a range against its ``content``; None when that
    digest cannot be of such a range (its edges would overlap)."""
    edges = uses_edges(content)
    if edges and length < 2 * EDGE:
        return None
    return windows(offset, length, edges)


def still_holds(path: str, offset: int, length: int, content: str) -> bool:
    """Whether ``[offset, offset + length)`` of the file now is what ``content`` names."""
    if content_windows(offset, length, content) is None:
        return False
    return range_digest(path, offset, length, edges=uses_edges(content)) == content


def byte_at(path: str, offset: int) -> bytes:
    """The one byte at ``offset`` (empty past the end)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        return os.pread(fd, 1, offset)
    finally:
        os.close(fd)


def _pread_all(fd: int, length: int, offset: int) -> bytes:
    data = os.pread(fd, length, offset)
    while 0 < len(data) < length:  # a short read (rare for a regular file): go on
        more = os.pread(fd, length - len(data), offset + len(data))
        if not more:
            break
        data += more
    return data


def reads_small_file(task: TaskSpec) -> bool:
    """Whether the task reads all of a file small enough to digest (and to read in one go)."""
    return task.size <= CONTENT_CHECK_MAX and task.covers_file
