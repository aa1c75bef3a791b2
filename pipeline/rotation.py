"""Growing logs (``input.growing: true``): which earlier stream each file continues, and
which of its bytes are new.

A stream is the content of one log over its life. logrotate renames the file
(``create``), or copies it and truncates the original (``copytruncate``), compresses the
old one, and at last deletes it: a glob like ``access.log*`` meets the same bytes under
several names over time. Each file found is matched to a stream:

1. by path, when it is the very file the last run saw there (device, inode, size, mtime);
2. by device and inode, when its first bytes are still the stream's (renamed, or grown);
3. by content, when its first bytes (decompressed) are a stream's first ``HEAD`` bytes (a
   copy, compressed or not);

else it starts a stream of its own: ``new``, or ``truncated`` when it is a file the last
run saw whose bytes are no longer the stream's.

Of the files of a stream, the one holding bytes past those processed is its owner, and
only after the digest of the last range processed proves it continues the stream (a
compressed file is decompressed once for that). Its new bytes become tasks: up to its last
``\\n`` for a plain file (a line still being written waits for the next run), to its end
for a compressed one (it will not grow) and for a plain one rotated away (renamed from
where the log is written, or a copy) that a whole run found unchanged. The stream's rows
move to its owner's path (its label), so a task run again reads its bytes where they are
now. Every other file of the stream holds bytes already processed and produces nothing.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import IO

from pipeline.digest import bytes_digest, content_windows, still_holds, uses_edges, windows_digest
from pipeline.models import InputFile, TaskSpec
from pipeline.planning import FileDecision, Planner, new_tasks, reuse_reason
from pipeline.readers import BLOCK_SIZE, opened_stream
from pipeline.store.ledger import SeenRow, StreamRow, TaskRow

HEAD = 4096  # the first bytes that name a stream (all of them while it is shorter)
WHOLE = 1 << 62  # where a stream ends whose last task read a compressed file to its end
SCAN = 64 << 10  # bytes read at a time, backwards, to find a file's last line end


class Probe:
    """One file as planning reads it: each read at most once."""

    def __init__(self, file: InputFile, st: os.stat_result) -> None:
        self.file = file
        self.dev = st.st_dev
        self.ino = st.st_ino
        self._first: bytes | None = None

    @property
    def path(self) -> str:
        return self.file.path

    @property
    def compressed(self) -> bool:
        return self.file.compression is not None

    def first(self) -> bytes:
        """Its first ``HEAD`` bytes (decompressed), fewer if it is shorter."""
        if self._first is None:
            with opened_stream(self.path, self.file.compression) as stream:
                self._first = _read_up_to(stream, HEAD)
        return self._first

    def head(self, length: int) -> str | None:
        """The digest of its first ``length`` bytes; None when it has fewer."""
        data = self.first()
        return bytes_digest(data[:length]) if len(data) >= length else None

    def ready(self, start: int) -> int:
        """A plain file's bytes that are records yet: up to its last ``\\n`` after
        ``start`` (``start`` when there is none)."""
        pos = self.file.size
        fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        try:
            while pos > start:
                low = max(start, pos - SCAN)
                at = os.pread(fd, pos - low, low).rfind(b"\n")
                if at >= 0:
                    return low + at + 1
                pos = low
        finally:
            os.close(fd)
        return start

    def holds(self, row: TaskRow | None) -> bool:
        """Whether a plain file's bytes of a done range are still what its digest names."""
        if row is None or row.length is None or row.content is None:
            return row is None
        return still_holds(self.path, row.offset, row.length, row.content)

    def compressed_holds(self, row: TaskRow | None, end: int) -> tuple[bool, bool]:
        """For a compressed file: whether its decompressed bytes of ``row`` are what the
        row's digest names, and whether it goes on past ``end`` — in one pass."""
        wanted: list[tuple[int, int]] = []
        if row is not None and row.length is not None and row.content is not None:
            found = content_windows(row.offset, row.length, row.content)
            if found is None:
                return False, True
            wanted = found
        with opened_stream(self.path, self.file.compression) as stream:
            pieces, more = _collect(stream, wanted, end)
        if row is None:
            return True, more
        complete = all(
            len(p) == stop - start for p, (start, stop) in zip(pieces, wanted, strict=True)
        )
        content = row.content or ""
        return complete and windows_digest(pieces, uses_edges(content)) == content, more


def _read_up_to(stream: IO[bytes], length: int) -> bytes:
    data = b""
    while len(data) < length:
        block = stream.read(length - len(data))
        if not block:
            break
        data += block
    return data


def _collect(
    stream: IO[bytes], wanted: list[tuple[int, int]], end: int
) -> tuple[list[bytes], bool]:
    """The bytes of the ``wanted`` windows of a stream read from its start, and whether it
    holds a byte at offset ``end``."""
    pieces = [bytearray() for _ in wanted]
    pos = 0
    while pos <= end:
        block = stream.read(BLOCK_SIZE)
        if not block:
            return [bytes(p) for p in pieces], False
        for piece, (start, stop) in zip(pieces, wanted, strict=True):
            low, high = max(start, pos), min(stop, pos + len(block))
            if low < high:
                piece += block[low - pos : high - pos]
        pos += len(block)
    return [bytes(p) for p in pieces], True


@dataclass
class _Match:
    """A file found to belong to a stream, and how."""

    probe: Probe
    seq: int
    how: str  # "same" (the file the last run saw) | "inode" | "content"
    covered: int | None = None  # with "same": how much of it the stream held
    rotated: bool = False  # renamed away from where the log is written, or a copy
    rested: bool = False  # rotated away at the last run already, and unchanged since


@dataclass
class _Stream:
    row: StreamRow
    rows: list[TaskRow]  # its task rows, in offset order
    end: int  # they cover [0, end)
    files: list[_Match] = field(default_factory=list)


@dataclass
class GrowingPlan:
    """What planning decided for growing logs: per file, and for the ledger."""

    decisions: list[FileDecision]
    forget: bool  # the store starts over (``--full``, a result-affecting change)
    moves: list[tuple[str, str]]  # streams taking a new label: (old, new)
    streams: list[StreamRow]  # new streams, and those whose first bytes were extended
    seen: list[SeenRow]  # the files of this run


def plan_growing(
    files: Iterable[InputFile],
    rows: Iterable[TaskRow],
    streams: Sequence[StreamRow],
    seen: Sequence[SeenRow],
    planner: Planner,
) -> GrowingPlan:
    """Match every file to a stream and plan its new bytes (see the module's docstring)."""
    all_rows = list(rows)
    forget = planner.full or any(r.result_key != planner.result_key for r in all_rows)
    if forget:
        all_rows, streams, seen = [], [], []
    by_label: dict[str, list[TaskRow]] = {}
    for row in all_rows:
        by_label.setdefault(row.path, []).append(row)
    known: dict[int, _Stream] = {}
    for stream in streams:
        mine = sorted(by_label.get(stream.label, ()), key=lambda r: r.offset)
        known[stream.seq] = _Stream(stream, mine, _covered_end(mine))
    seen_at = {s.path: s for s in seen if s.seq in known}
    seen_as = {(s.dev, s.ino): s for s in seen if s.seq in known}
    heads: dict[tuple[int, str], int] = {}
    for stream in known.values():
        heads.setdefault((stream.row.head_len, stream.row.head), stream.row.seq)
    head_lengths = sorted({length for length, _ in heads})

    fresh: list[tuple[Probe, str]] = []
    for file in files:
        try:
            probe = Probe(file, os.stat(file.path))
        except OSError:
            continue  # gone since discovery: the next run sees what is there
        found = _match(probe, seen_at, seen_as, known, heads, head_lengths)
        if isinstance(found, str):
            fresh.append((probe, found))
        else:
            known[found.seq].files.append(found)

    builder = _Builder(planner, forget)
    for stream in known.values():
        if stream.files:
            fresh += builder.extend(stream)
    next_seq = max(known, default=0) + 1
    for probe, reason in sorted(fresh, key=lambda pr: _age_order(pr[0].file)):
        if builder.start(probe, reason, next_seq):
            next_seq += 1
    builder.label_orphans(known.values())
    return GrowingPlan(builder.decisions, forget, builder.moves, builder.streams, builder.seen)


_ROTATED = re.compile(r"\.(\d+)(?:\.(?:gz|bz2|xz|zst))?$")


def _age_order(file: InputFile) -> tuple[int, int, bytes]:
    """Files first seen together, oldest first: by mtime (``gzip`` keeps the log's), then,
    for equal mtimes, by logrotate's number (``.2`` before ``.1`` before the live log)."""
    number = _ROTATED.search(file.path)
    return file.mtime_ns, -int(number.group(1)) if number else 0, os.fsencode(file.path)


def _covered_end(rows: Sequence[TaskRow]) -> int:
    """Where the contiguous rows from offset 0 end (``WHOLE`` after a row that read a
    compressed file to its end: nothing can follow it)."""
    end = 0
    for row in rows:
        if row.offset != end:
            break
        if row.length is None:
            return WHOLE
        end += row.length
    return end


def _match(
    probe: Probe,
    seen_at: dict[str, SeenRow],
    seen_as: dict[tuple[int, int], SeenRow],
    known: dict[int, _Stream],
    heads: dict[tuple[int, str], int],
    head_lengths: list[int],
) -> _Match | str:
    """The stream a file belongs to, or why it starts one (``new``, ``truncated``)."""
    file = probe.file
    last = seen_at.get(file.path)
    if last is not None and (last.dev, last.ino, last.size, last.mtime_ns) == (
        probe.dev,
        probe.ino,
        file.size,
        file.mtime_ns,
    ):
        return _Match(probe, last.seq, "same", last.covered, last.rotated, rested=last.rotated)
    reason = "new"
    last = seen_as.get((probe.dev, probe.ino))
    if last is not None:
        renamed = last.rotated or last.path != file.path
        if (last.size, last.mtime_ns) == (file.size, file.mtime_ns):
            return _Match(probe, last.seq, "same", last.covered, renamed, rested=last.rotated)
        stream = known[last.seq]
        shrank = not probe.compressed and file.size < (last.covered or 0)
        if not shrank and probe.head(stream.row.head_len) == stream.row.head:
            return _Match(probe, last.seq, "inode", rotated=renamed)
        if last.path == file.path:  # else a new file given a deleted one's inode
            reason = "truncated"
    for length in head_lengths:
        digest = probe.head(length)
        if digest is None:
            break
        seq = heads.get((length, digest))
        if seq is not None:
            return _Match(probe, seq, "content", rotated=True)
    return reason


class _Builder:
    """Collects a growing plan stream by stream."""

    def __init__(self, planner: Planner, forget: bool) -> None:
        self.planner = planner
        self.forget = forget
        self.decisions: list[FileDecision] = []
        self.moves: list[tuple[str, str]] = []
        self.streams: list[StreamRow] = []
        self.seen: list[SeenRow] = []
        self.labels: set[str] = set()  # the labels streams with files take
        self.owned: set[int] = set()  # the streams with files

    def extend(self, stream: _Stream) -> list[tuple[Probe, str]]:
        """Plan a known stream's new bytes from its owner; its files that turn out not to
        continue it come back, to start streams of their own."""
        end = stream.end
        last = next((r for r in reversed(stream.rows) if r.status == "done" and r.content), None)
        strays: list[tuple[Probe, str]] = []
        members: list[tuple[_Match, int | None]] = []  # with how far each holds the stream
        extra: list[tuple[_Match, int | None]] = []  # those with bytes past ``end``
        for match in stream.files:
            probe = match.probe
            inode_here = match.how == "inode" and probe.path == stream.row.label
            stray = "truncated" if inode_here else "new"
            if probe.compressed:
                if match.how == "same" or end == WHOLE:
                    members.append((match, None))
                    continue
                holds, more = probe.compressed_holds(last, end)
                if more and not holds:
                    strays.append((probe, stray))
                    continue
                members.append((match, None))
                if more:
                    extra.append((match, None))
                continue
            if match.how == "same" and match.rested and match.covered == end < probe.file.size:
                # rotated away and left as it was for a whole run: its last line is final
                members.append((match, probe.file.size))
                extra.append((match, probe.file.size))
                continue
            if probe.file.size <= end or (match.how == "same" and (match.covered or 0) <= end):
                members.append((match, min(probe.file.size, end)))
                continue
            if match.how != "same" and not probe.holds(last):
                strays.append((probe, stray))
                continue
            ready = probe.ready(end)
            members.append((match, ready))
            if ready > end:
                extra.append((match, ready))
        if not members:
            return strays
        self.owned.add(stream.row.seq)
        plain = [(ready, m.probe.path, m) for m, ready in extra if ready is not None]
        owner: _Match | None = None
        owner_end = end
        if plain:
            owner_end, _, owner = max(plain, key=lambda t: (t[0], t[1]))
        elif extra:
            owner, owner_end = extra[0][0], WHOLE
        holder = owner or self._holder(stream, members)
        label = holder.probe.path
        if label != stream.row.label:
            self.moves.append((stream.row.label, label))
        self.labels.add(label)
        if stream.row.head_len < HEAD and owner is not None:
            self._extend_head(stream.row, label, owner.probe, owner_end)
        for match, covered in members:
            run: list[TaskSpec] = []
            skip: list[TaskSpec] = []
            reason = _reason(match, stream.row.label)
            if match is owner and match.how == "same":
                reason = "rotated"  # the last line of a file rotated away
            if match is holder:
                run, skip = self._rows(stream, holder, reason)
                if owner is not None:
                    run += self._tasks(owner.probe, end, owner_end, reason)
                    covered = None if owner.probe.compressed else owner_end
            self.decisions.append(FileDecision(match.probe.file, run, skip, note=reason))
            self._see(match.probe, stream.row.seq, covered, match.rotated)
        return strays

    def _extend_head(self, row: StreamRow, label: str, probe: Probe, stop: int) -> None:
        """A stream shorter than ``HEAD`` when first seen is named by more of its first
        bytes as it grows (``label``: the one it takes in this plan)."""
        length = len(probe.first()) if probe.compressed else min(HEAD, stop)
        digest = probe.head(length)
        if digest is not None and length > row.head_len:
            self.streams.append(StreamRow(row.seq, label, digest, length))

    def _holder(self, stream: _Stream, members: list[tuple[_Match, int | None]]) -> _Match:
        """The file a stream's rows are under when none has new bytes: the one already
        there, else the plain one holding the most of it, else a compressed one."""
        for match, _ in members:
            if match.probe.path == stream.row.label:
                return match
        plain = [(held or 0, m.probe.path, m) for m, held in members if not m.probe.compressed]
        if plain:
            return max(plain, key=lambda t: (t[0], t[1]))[2]
        return members[0][0]

    def _rows(
        self, stream: _Stream, holder: _Match, reason: str
    ) -> tuple[list[TaskSpec], list[TaskSpec]]:
        """A stream's rows as tasks of its holder: those not done run again (read where
        the bytes are now), the done ones are skipped."""
        file = holder.probe.file
        run, skip = [], []
        for row in stream.rows:
            why = reuse_reason(row, None, "")
            shown = why if why != "unchanged" else ("unchanged" if reason == "grew" else reason)
            spec = row.spec(shown)._replace(
                path=file.path, size=file.size, mtime_ns=file.mtime_ns, compression=file.compression
            )
            (skip if why == "unchanged" else run).append(spec)
        return run, skip

    def _tasks(self, probe: Probe, start: int, stop: int, reason: str) -> list[TaskSpec]:
        """Tasks for a file's bytes ``[start, stop)`` (a compressed one's: to its end)."""
        planner = self.planner
        return new_tasks(
            probe.file,
            planner.fmt,
            planner.chunk_size,
            planner.result_key,
            reason,
            planner.spread,
            start,
            stop,
        )

    def start(self, probe: Probe, reason: str, seq: int) -> bool:
        """A file that starts a stream of its own; False when it has no whole line yet
        (it waits, unrecorded)."""
        if self.forget:
            reason = "full" if self.planner.full else "config-changed"
        if probe.compressed:
            length = len(probe.first())
            stop = 0
        else:
            stop = probe.ready(0)
            length = min(HEAD, stop)
        if length == 0:  # nothing to name it by: no whole line yet, or an empty copy
            self.decisions.append(FileDecision(probe.file, [], [], note="waiting"))
            return False
        digest = probe.head(length)
        if digest is None:  # it changed under us: the next run looks again
            return False
        self.streams.append(StreamRow(seq, probe.path, digest, length))
        self.labels.add(probe.path)
        run = self._tasks(probe, 0, stop, reason)
        self.decisions.append(FileDecision(probe.file, run, [], note=reason))
        self._see(probe, seq, None if probe.compressed else stop)
        return True

    def label_orphans(self, streams: Iterable[_Stream]) -> None:
        """A stream whose files are all gone keeps its rows, under a label of its own if a
        file now has its old one (with a NUL: no path can be that label)."""
        for stream in streams:
            label = stream.row.label
            if stream.row.seq not in self.owned and label in self.labels:
                self.moves.append((label, f"{label}\0{stream.row.seq}"))

    def _see(self, probe: Probe, seq: int, covered: int | None, rotated: bool = False) -> None:
        file = probe.file
        self.seen.append(
            SeenRow(
                file.path, probe.dev, probe.ino, file.size, file.mtime_ns, seq, covered, rotated
            )
        )


def _reason(match: _Match, label: str) -> str:
    """Why a file of a known stream is what it is (``plan`` shows it)."""
    if match.how == "content":
        return "rotated"
    if match.probe.path != label:
        return "renamed"
    return "grew" if match.how == "inode" else "unchanged"
