"""Line numbers of records, counted in the main process when something needs them.

A task over a byte range knows where its records start (byte offsets in the file, or in
the decompressed stream of a compressed file, which a task reads whole), not how many
lines come before its range. Only the main process can count them cheaply: once per file,
only for the few positions a sample of malformed records or a failure names, reading up
to the last of them. Lines end at ``\\n`` (a ``\\r`` before it is part of the same line
end; a blank line is a line), as readers split them. A csv task reads its file whole, so
its positions already are the lines where rows start; a ``bytes`` record has no line.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Iterable
from typing import IO

from pipeline.readers import BLOCK_SIZE, opened_stream

log = logging.getLogger(__name__)


class LineFinder:
    """Turns records' positions into 1-based line numbers, remembering what it counted
    (per file: (offset, line) checkpoints), so a file is read at most once up to any
    offset that was asked for."""

    def __init__(self) -> None:
        self._known: dict[str, list[tuple[int, int]]] = {}

    def line_of(self, fmt: str, path: str, compression: str | None, position: int) -> int | None:
        """The line where the record at ``position`` starts, or None (cannot tell)."""
        return self.lines_of(fmt, path, compression, (position,)).get(position)

    def lines_of(
        self, fmt: str, path: str, compression: str | None, positions: Iterable[int]
    ) -> dict[int, int]:
        """``{position: line}`` for the positions of one file's records (read in format
        ``fmt``); a position whose line cannot be counted (the file is gone, or shorter
        now) is left out."""
        if fmt == "csv":
            return {p: p for p in positions}
        if fmt == "bytes":
            return {}
        known = self._known.setdefault(path, [(0, 1)])
        lines = {}
        wanted = []
        for position in sorted(set(positions)):
            i = bisect.bisect_right(known, (position, 1 << 62)) - 1
            if known[i][0] == position:
                lines[position] = known[i][1]
            else:
                wanted.append(position)
        if not wanted:
            return lines
        # A plain file is read from the last checkpoint before the first wanted offset; a
        # compressed one can only be read from its start.
        start = 0 if compression else bisect.bisect_right(known, (wanted[0], 1 << 62)) - 1
        offset, line = known[start]
        try:
            with opened_stream(path, compression) as stream:
                if offset:
                    stream.seek(offset)
                counted = count_lines(stream, offset, line, wanted)
        except (OSError, EOFError, ValueError, RuntimeError) as exc:
            log.debug("%s: cannot count lines: %s", path, exc)
            return lines
        for position, found in counted.items():
            bisect.insort(known, (position, found))
        lines.update(counted)
        return lines


def count_lines(stream: IO[bytes], offset: int, line: int, targets: list[int]) -> dict[int, int]:
    """``{target: line}`` for sorted byte offsets ``targets`` (all >= ``offset``), reading
    ``stream``, positioned at ``offset``, which is the start of line ``line``. A target
    past the end of the stream is left out."""
    found: dict[int, int] = {}
    pending = iter(targets)
    target = next(pending, None)
    while target is not None:
        block = stream.read(BLOCK_SIZE)
        if not block:
            break
        end = offset + len(block)
        cut = 0
        while target is not None and target < end:
            line += block.count(b"\n", cut, target - offset)
            cut = target - offset
            found[target] = line
            target = next(pending, None)
        line += block.count(b"\n", cut)
        offset = end
    return found
