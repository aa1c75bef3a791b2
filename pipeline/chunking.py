"""Cutting input files into task ranges (pure; runs in the parent process).

Only uncompressed line-oriented files are split. The ranges are plain byte ranges: the
line alignment happens in the worker (see ``readers``), which owns exactly the lines whose
first byte lies inside its range, so any cut is correct and no line is read twice.
"""

from __future__ import annotations

import os

from pipeline.models import COMPRESSED_SUFFIXES

SPLITTABLE_FORMATS = frozenset({"lines", "jsonl"})
_SUFFIXES = tuple(COMPRESSED_SUFFIXES)


def split_ranges(size: int, chunk_size: int, spread: int = 1) -> list[tuple[int, int]]:
    """Cut ``[0, size)`` into ``ceil(size / chunk_size)`` contiguous ``(offset, length)``
    ranges of nearly equal length (none longer than ``chunk_size``).

    When there are at least ``spread`` ranges (the worker count), their count is rounded
    up to a multiple of it: equal tasks then end together on every worker, where 33 tasks
    on two workers would leave one idle for a task's time at the end of the file.

    An empty file gives the single range ``(0, 0)`` so that it still becomes a task
    (and so is recorded as processed).
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1 byte, got {chunk_size}")
    if size < 0:
        raise ValueError(f"size must not be negative, got {size}")
    if spread < 1:
        raise ValueError(f"spread must be at least 1, got {spread}")
    if size == 0:
        return [(0, 0)]
    count = -(-size // chunk_size)
    if count >= spread > 1:
        count = min(size, -(-count // spread) * spread)
    base, extra = divmod(size, count)
    ranges: list[tuple[int, int]] = []
    offset = 0
    for index in range(count):
        length = base + 1 if index < extra else base
        ranges.append((offset, length))
        offset += length
    return ranges


def is_splittable(fmt: str, compression: str | None) -> bool:
    """Whether a file may be cut into byte ranges.

    CSV is never split (a quoted field may contain newlines), ``bytes`` is whole-file by
    definition, and a compressed stream cannot be entered at an arbitrary offset.
    """
    return fmt in SPLITTABLE_FORMATS and compression is None


def compression_of(path: str) -> str | None:
    """The compression named by the file's suffix (case-insensitive), or None."""
    if not path[-4:].lower().endswith(_SUFFIXES):  # the usual case, checked cheaply
        return None
    return COMPRESSED_SUFFIXES.get(os.path.splitext(path)[1].lower())
