"""Turning a task descriptor into records (runs in the workers).

Workers read the bytes themselves: only a ``TaskSpec`` (path, offset, length) crosses the
process boundary. A range task owns exactly the lines whose first byte lies inside
``[offset, offset + length)``: it skips the partial line it starts in (unless the byte
before ``offset`` is a newline) and reads its last line whole even when it runs past the
range end. Every line is therefore read by exactly one task, whatever the chunk size.

Lines are split on ``b"\\n"`` only (a ``\\r`` right before it is dropped); ``str.splitlines``
and text-mode universal newlines are never used because they also break on ``\\r``,
``\\x0c``, ``\\x85``, ``\\u2028``..., which are data here.

This module must stay importable in a bare worker: no config, CLI, progress or store
imports.
"""

from __future__ import annotations

import bz2
import codecs
import contextlib
import csv
import functools
import gzip
import io
import json
import lzma
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import accumulate
from typing import IO, Any

from pipeline.digest import bytes_digest, reads_small_file
from pipeline.models import MALFORMED_SAMPLE_SIZE, Rejected, TaskSpec

BLOCK_SIZE = 1 << 20
"""Bytes per read; lines are cut out of each block with ``bytes.split``."""

TAIL_READ_SIZE = 64 << 10
"""First read size past a range's end (doubling up to ``BLOCK_SIZE``): only the rest of
the last owned line is needed there, which is usually short."""

FORMATS = ("lines", "jsonl", "csv", "bytes")
LINE_FORMATS = ("lines", "jsonl")
COMPRESSIONS = ("gz", "bz2", "xz", "zst")

_NO_LIMIT = sys.maxsize
# Lone surrogates U+DC80..U+DCFF: what the "surrogateescape" handler puts in place of
# bytes that did not decode. Correctly decoded text never contains them.
_ESCAPED_BYTES = re.compile("[\udc80-\udcff]")


@dataclass
class ReadCounters:
    """Per-task counts kept by the reader (mutable; the worker reads them at the end)."""

    records_in: int = 0  # records produced by the reader, malformed ones included
    malformed: int = 0  # jsonl: blank or not a JSON object; csv: more fields than header
    undecodable: int = 0  # records with bytes that did not decode (decoded with replace)
    bytes_read: int = 0  # bytes read from disk (compressed bytes for compressed files)
    content: str | None = None  # digest of the bytes of a small file read whole
    opened: os.stat_result | None = None  # fstat of the file as it was opened
    may_grow: bool = False  # the file may grow while it is read (``JobSpec.growing``)
    # The first malformed records the reader dropped, with why (only those pay for it).
    rejected: list[Rejected] = field(default_factory=list)

    def reject(self, position: int, reason: str) -> None:
        """Count a malformed record; keep its position and reason while the sample has room."""
        self.malformed += 1
        if len(self.rejected) < MALFORMED_SAMPLE_SIZE:
            self.rejected.append((position, reason))


class FileChangedError(Exception):
    """The input was modified, truncated or replaced while the run was going."""


def check_unchanged(
    task: TaskSpec, st: os.stat_result | None = None, *, may_grow: bool = False
) -> None:
    """Fail the task if its file is not the one that was planned: its results would
    belong to neither version. The next run plans the file again. ``st``: a stat taken
    earlier (the reader's ``fstat`` of the file it opened); by default, the path now.
    ``may_grow``: a file that grew is still the one planned (a log being written); only
    one that shrank is not."""
    if st is None:
        st = os.stat(task.path)
    if may_grow:
        if st.st_size < task.size:
            raise FileChangedError(
                f"truncated since the run started (size {task.size} -> {st.st_size}); "
                "the next run processes it again"
            )
        return
    if st.st_size != task.size or st.st_mtime_ns != task.mtime_ns:
        raise FileChangedError(
            f"changed since the run started (size {task.size} -> {st.st_size}); "
            "the next run processes it again"
        )


def position_label(fmt: str, task: TaskSpec) -> str:
    """What the ``position`` yielded by ``iter_records`` means, for error messages."""
    if fmt == "csv":
        return "line"
    if task.compression is not None:
        return "decompressed byte offset"
    return "byte offset"


def record_where(fmt: str, task: TaskSpec, position: int) -> str:
    """Where a record of a task is, for its error message: a csv row's line, or a line's
    byte offset (the main process, which can count lines, rewrites it as a line)."""
    if fmt == "csv":
        return f"{task.path}: line {position}"
    return f"{task.path}: record at {position_label(fmt, task)} {position}"


def line_where(fmt: str, task: TaskSpec, position: int, line: int) -> str:
    """``record_where`` once the line is known: the line, and the offset (a tool such as
    ``tail -c`` goes straight there in a big file)."""
    if fmt == "csv":
        return f"{task.path}: line {line}"
    return f"{task.path}: line {line} ({position_label(fmt, task)} {position})"


@functools.cache  # a pure check, asked once per task
def check_encoding(fmt: str, encoding: str) -> None:
    """Raise ValueError if ``encoding`` is unknown, or cannot be used to split lines.

    Line formats split the raw bytes on ``b"\\n"``, so the encoding must write a newline
    as that single byte (UTF-16/32 and EBCDIC code pages do not).
    """
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise ValueError(f"unknown encoding {encoding!r}") from None
    if fmt in LINE_FORMATS and b"\n".decode(encoding, errors="replace") != "\n":
        raise ValueError(
            f"encoding {encoding!r} cannot be used with format {fmt!r}: lines are split on "
            "the byte 0x0A, which this encoding does not use for a newline"
        )


def iter_records(
    task: TaskSpec,
    fmt: str,
    encoding: str,
    counters: ReadCounters,
    *,
    block_size: int = BLOCK_SIZE,
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(position, record)`` for every record the task owns, in file order.

    ``position`` is the byte offset of the line's first byte in the (decompressed) stream
    for ``lines``/``jsonl``, the 1-based line where the row starts for ``csv`` (a task
    reads a csv file whole, so it can count), and 0 for ``bytes``.
    Counts go into ``counters`` as reading progresses; ``bytes_read`` is settled when the
    generator finishes or is closed.
    """
    _check_task(task, fmt)
    check_encoding(fmt, encoding)
    if block_size < 1:
        raise ValueError(f"block_size must be at least 1, got {block_size}")
    if fmt == "bytes" and task.compression is None and reads_small_file(task):
        data = read_small_file(task, counters)  # the usual whole small file, in short
        counters.records_in += 1
        yield 0, {"path": task.path, "size": len(data), "data": data}
        return
    with _opened(task, counters) as (stream, pos, skip_partial):
        if fmt in LINE_FORMATS:
            limit = _NO_LIMIT if task.end is None else task.end
            if fmt == "lines":
                for start, data in _blocks(stream, pos, skip_partial, limit, block_size):
                    yield from block_records(start, data, encoding, counters)
            else:
                lines = _iter_lines(stream, pos, skip_partial, limit, block_size)
                yield from _jsonl_records(lines, encoding, counters)
        elif fmt == "csv":
            yield from _csv_records(stream, encoding, counters)
        else:
            data = _read_all(stream, block_size)
            counters.records_in += 1
            yield 0, {"path": task.path, "size": len(data), "data": data}


@contextlib.contextmanager
def _opened(task: TaskSpec, counters: ReadCounters) -> Iterator[tuple[IO[bytes], int, bool]]:
    """``(stream, pos, skip_partial)`` for a task: the (decompressed) stream positioned
    at ``pos``. A range that does not start the file begins reading one byte early: that
    byte says whether ``offset`` starts a line or is inside one an earlier task owns.
    The bytes read from disk are counted when the stream is done with.

    The opened file's ``fstat`` goes into ``counters.opened``, for the caller to compare
    with the planned fingerprint. A small file read whole is read in one call (its planned
    size plus one byte, enough to see it grew), and its content digest is taken from those
    same bytes: one open and one read per small file."""
    skip_partial = task.offset > 0
    pos = task.offset - 1 if skip_partial else 0
    if reads_small_file(task):
        raw: IO[bytes] = io.BytesIO(read_small_file(task, counters))
        stream: IO[bytes] = raw if task.compression is None else _decompressed(raw, task)
        try:
            yield stream, pos, skip_partial
        finally:
            if stream is not raw:
                stream.close()
        return
    with open(task.path, "rb", buffering=0) as handle:
        counters.opened = os.fstat(handle.fileno())
        if pos and task.compression is None:
            handle.seek(pos)
        start = handle.tell()
        stream = handle if task.compression is None else _decompressed(handle, task)
        try:
            if pos and stream is not handle:  # a range of the decompressed bytes
                _skip(stream, pos)
            yield stream, pos, skip_partial
        finally:
            counters.bytes_read += handle.tell() - start
            if stream is not handle:
                stream.close()


@contextlib.contextmanager
def opened_stream(path: str, compression: str | None) -> Iterator[IO[bytes]]:
    """A file's bytes from its start, decompressed: the stream ``iter_records`` reads,
    whose offsets its positions are (for the main process's line counts)."""
    with open(path, "rb") as handle:
        if compression is None:
            yield handle
            return
        stream = _decompressed(handle, TaskSpec("", path, 0, None, 0, 0, compression))
        try:
            yield stream
        finally:
            stream.close()


def read_small_file(task: TaskSpec, counters: ReadCounters) -> bytes:
    """All the bytes of a small file read whole (``digest.reads_small_file``), in one
    call: its planned size plus one byte, enough to see it grew. Sets ``content`` (the
    digest of these very bytes) and ``bytes_read``. Another length than planned fails at
    once, as a changed file; bytes of the planned length are one version of the file,
    which ``content`` names, so the next run tells whether it is still the file's."""
    # os.open, not open(): no file object to build (a third of the cost for a tiny file).
    # O_NONBLOCK: a path that became a FIFO since discovery must not block the open.
    fd = os.open(task.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        want = task.size + 1
        data = os.read(fd, want)
        while 0 < len(data) < task.size:  # a short read (rare for a regular file): go on
            more = os.read(fd, want - len(data))
            if not more:
                break
            data += more
        if len(data) > task.size and counters.may_grow:
            data = data[: task.size]  # the planned bytes: the rest is the next run's
        if len(data) != task.size:
            st = os.fstat(fd)
            check_unchanged(task, st, may_grow=counters.may_grow)
            raise FileChangedError(
                f"changed since the run started ({len(data)} bytes read, {task.size} planned); "
                "the next run processes it again"
            )
    finally:
        os.close(fd)
    counters.content = bytes_digest(data)
    counters.bytes_read += len(data)
    return data


def _check_task(task: TaskSpec, fmt: str) -> None:
    """Reject descriptors the planner must never produce (they would double-read data)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if task.compression is not None and task.compression not in COMPRESSIONS:
        raise ValueError(f"unknown compression {task.compression!r} for {task.path!r}")
    if task.length is not None or task.offset:
        if fmt not in LINE_FORMATS:
            raise ValueError(f"format {fmt!r} reads whole files, got a range of {task.path!r}")
        if task.offset < 0 or (task.length is not None and task.length < 0):
            raise ValueError(f"invalid range {task.describe_range()} of {task.path!r}")


def _skip(stream: IO[bytes], count: int) -> None:
    """Read past the first ``count`` bytes of a decompressed stream."""
    left = count
    while left > 0:
        block = stream.read(min(left, BLOCK_SIZE))
        if not block:
            raise FileChangedError(f"holds fewer than the {count} bytes planned to be skipped")
        left -= len(block)


def _decompressed(raw: IO[bytes], task: TaskSpec) -> IO[bytes]:
    """A streaming decompressor over ``raw`` (which it does not close)."""
    if task.compression == "gz":
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if task.compression == "bz2":
        return bz2.BZ2File(raw, mode="rb")
    if task.compression == "xz":
        return lzma.LZMAFile(raw, mode="rb")
    try:
        import zstandard  # optional extra: pip install 'pipeline[zstd]'
    except ImportError:
        raise RuntimeError(
            f"cannot read {task.path!r}: .zst files need the optional 'zstandard' package "
            "(pip install 'pipeline[zstd]')"
        ) from None
    return zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True, closefd=False)


def _iter_lines(
    stream: IO[bytes], pos: int, skip_partial: bool, limit: int, block_size: int
) -> Iterator[tuple[int, bytes]]:
    """Yield ``(start, line)`` for the lines starting before ``limit``, ``\\n`` and a
    ``\\r`` before it removed (``stream`` is positioned at ``pos``; see ``_blocks``)."""
    for start, data in _blocks(stream, pos, skip_partial, limit, block_size):
        yield from _split_block(start, data)


def _split_block(start: int, data: bytes) -> Iterator[tuple[int, bytes]]:
    """The lines of a block of whole lines, with their start offsets."""
    pieces = data.split(b"\n")
    last = pieces.pop()  # b"" when the block ends with a newline
    for line in pieces:
        yield start, (line[:-1] if line.endswith(b"\r") else line)
        start += len(line) + 1
    if last:  # the file's last line, without a newline: a "\r" there is data
        yield start, last


def iter_line_blocks(
    task: TaskSpec, counters: ReadCounters, *, block_size: int = BLOCK_SIZE
) -> Iterator[tuple[int, bytes]]:
    """The lines a task owns, as raw blocks: ``(start, data)`` where ``data`` holds whole
    lines, each with its ``\n`` (and any ``\r`` before it), except that the file's last
    line may lack one. For fast paths that work on many lines at once; the same lines,
    split, are exactly what ``iter_records`` reads. ``bytes_read`` is counted here."""
    _check_task(task, "lines")
    limit = _NO_LIMIT if task.end is None else task.end
    with _opened(task, counters) as (stream, pos, skip_partial):
        yield from _blocks(stream, pos, skip_partial, limit, block_size)


def _blocks(
    stream: IO[bytes], pos: int, skipping: bool, limit: int, block_size: int
) -> Iterator[tuple[int, bytes]]:
    """Yield ``(start, data)``: runs of whole lines starting before ``limit``.

    ``stream`` is positioned at ``pos``. With ``skipping`` the bytes up to and including
    the first ``\\n`` belong to an earlier task's line and are skipped. Reads stop at
    ``limit`` unless the last owned line goes on past it (then in small, growing reads).
    """
    tail_size = min(TAIL_READ_SIZE, block_size)
    pending = b""  # the start of a line whose newline has not been read yet
    line_start = pos
    while line_start < limit or pending:
        if pos < limit:
            want = min(block_size, limit - pos)
        else:
            want = tail_size
            tail_size = min(tail_size * 2, block_size)
        block = stream.read(want)
        if not block:
            break
        block_pos = pos
        pos += len(block)
        if skipping:
            cut = block.find(b"\n")
            if cut < 0:
                if pos >= limit:
                    return
                continue
            skipping = False
            line_start = block_pos + cut + 1
            block = block[cut + 1 :]
            if line_start >= limit:
                return
        data = pending + block if pending else block
        last = data.rfind(b"\n")
        if last < 0:
            pending = data
            continue
        whole, pending = data[: last + 1], data[last + 1 :]
        if line_start + len(whole) > limit:
            # Keep the lines that start before the limit; the one holding limit-1 ends it.
            cut = whole.find(b"\n", limit - line_start - 1)
            yield line_start, whole[: cut + 1]
            return
        yield line_start, whole
        line_start += len(whole)
        if line_start >= limit:
            return
    if pending and line_start < limit and not skipping:
        yield line_start, pending  # the file's last line, without a newline


def block_records(
    start: int, data: bytes, encoding: str, counters: ReadCounters
) -> Iterator[tuple[int, dict[str, Any]]]:
    """The ``lines`` records of a block from ``iter_line_blocks``, exactly as
    ``iter_records`` gives them: decoded and split at once when ``block_lines`` can,
    else line by line (each line decoded on its own, so a bad byte costs only its line
    a replacement character)."""
    lines = block_lines(data, encoding)
    if lines is None:
        return records_line_by_line(start, data, encoding, counters)
    return _text_records(lines, line_starts(start, data), counters)


def records_line_by_line(
    start: int, data: bytes, encoding: str, counters: ReadCounters
) -> Iterator[tuple[int, dict[str, Any]]]:
    """``block_records`` of a block ``block_lines`` declines."""
    return _line_records(_split_block(start, data), encoding, counters)


def block_lines(data: bytes, encoding: str) -> list[str] | None:
    """The lines of a block from ``iter_line_blocks`` as text, decoded once and split
    once, or None when that would not give what decoding line by line gives.

    In an encoding where the byte ``\n`` is always the character ``\n`` and never part of
    another character (UTF-8, ASCII, the Latin and Windows code pages), a block without
    ``\r`` that decodes cleanly (the usual case) splits into exactly the lines of its
    bytes."""
    if b"\r" in data or codecs.lookup(encoding).name not in BLOCK_SPLIT_ENCODINGS:
        return None
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError:
        return None
    lines = text.split("\n")
    if not lines[-1]:
        lines.pop()  # the block ends with a newline (only the file's last line may not)
    return lines


def line_starts(start: int, data: bytes, count: int | None = None) -> list[int]:
    """The byte offset of each line of a block starting at ``start`` (its position, in
    messages), from the block's bytes: a line's characters may be several bytes each.
    With ``count``, of the first ``count`` lines only (the block is split no further)."""
    if count is None:
        pieces = data.split(b"\n")
    else:
        pieces = data.split(b"\n", count - 1)[: count - 1] if count > 1 else []
    ends = accumulate(map(len, pieces), initial=start)  # without the newlines
    return [end + i for i, end in enumerate(ends)]


ONE_BYTE_ENCODINGS = frozenset(
    {"ascii", "latin-1", "iso8859-1"}
    | {f"iso8859-{n}" for n in range(2, 17)}
    | {f"cp{n}" for n in range(1250, 1259)}
)
"""Codec names (as ``codecs.lookup`` gives them) of one byte per character."""

BLOCK_SPLIT_ENCODINGS = ONE_BYTE_ENCODINGS | {"utf-8"}
"""Codec names (as ``codecs.lookup`` gives them) whose text splits like its bytes."""


class LinePositions:
    """The byte offset of line ``i`` of a block of ``block_lines`` (its position, in
    messages), worked out only as far as asked. When every character is one byte (a
    one-byte encoding, or ASCII text) the lines' lengths give it, from the last line
    asked onwards (messages ask in order); else the block's bytes are split once."""

    __slots__ = (
        "_data",
        "_encoding",
        "_lines",
        "_offset",
        "_one_byte",
        "_start",
        "_starts",
        "_upto",
    )

    def __init__(self, start: int, data: bytes, lines: list[str], encoding: str) -> None:
        self._start = start
        self._data = data
        self._lines = lines
        self._encoding = encoding
        self._one_byte: bool | None = None  # whether characters are bytes: decided once
        self._upto = 0  # the line whose offset is _offset
        self._offset = start
        self._starts: list[int] | None = None  # every line's, when characters are not

    def __call__(self, i: int) -> int:
        if self._starts is None and i >= self._upto and self._chars_are_bytes():
            upto = self._upto
            self._offset += sum(map(len, self._lines[upto:i])) + i - upto  # and newlines
            self._upto = i
            return self._offset
        if self._starts is None:
            self._starts = line_starts(self._start, self._data)
        return self._starts[i]

    def _chars_are_bytes(self) -> bool:
        if self._one_byte is None:
            self._one_byte = (
                codecs.lookup(self._encoding).name in ONE_BYTE_ENCODINGS or self._data.isascii()
            )
        return self._one_byte


def _text_records(
    lines: list[str], starts: list[int], counters: ReadCounters
) -> Iterator[tuple[int, dict[str, Any]]]:
    for line, start in zip(lines, starts, strict=False):  # one more start than lines
        counters.records_in += 1
        yield start, {"line": line}


def _decode(data: bytes, encoding: str, counters: ReadCounters) -> str:
    """Strict decode, falling back to replacement characters (counted, never fatal)."""
    try:
        return data.decode(encoding)
    except UnicodeDecodeError:
        counters.undecodable += 1
        return data.decode(encoding, errors="replace")


def _line_records(
    lines: Iterator[tuple[int, bytes]], encoding: str, counters: ReadCounters
) -> Iterator[tuple[int, dict[str, Any]]]:
    for position, data in lines:
        counters.records_in += 1
        yield position, {"line": _decode(data, encoding, counters)}


def _jsonl_records(
    lines: Iterator[tuple[int, bytes]], encoding: str, counters: ReadCounters
) -> Iterator[tuple[int, dict[str, Any]]]:
    """JSON objects, one per line; blank lines and non-objects are counted and skipped."""
    for position, data in lines:
        counters.records_in += 1
        text = _decode(data, encoding, counters)
        try:
            record = json.loads(text)
        except (ValueError, RecursionError):  # invalid JSON (blank lines included)
            counters.reject(position, "blank line" if not text.strip() else "not valid JSON")
            continue
        if not isinstance(record, dict):
            counters.reject(position, "not a JSON object")
            continue
        yield position, record


def _csv_records(
    stream: IO[bytes], encoding: str, counters: ReadCounters
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Rows as dicts keyed by the header, streamed.

    Decoding uses ``surrogateescape`` so a bad byte does not stop the stream; a row whose
    values hold escaped bytes counts once as undecodable and those values are re-decoded
    with ``errors="replace"`` (what a replacing decoder would have produced). Header
    names are repaired the same way, without counting. A row with more fields than the
    header is malformed and skipped; a shorter row keeps ``None`` for the missing fields.
    Positions are the 1-based lines where rows start (as the csv module counts lines: a
    ``\r`` alone ends one too): a row that ends one line after the previous one starts
    there; otherwise (a quoted newline, blank lines before it) its own line breaks are
    counted back from where it ends.
    """
    text = io.TextIOWrapper(stream, encoding=encoding, errors="surrogateescape", newline="")
    try:
        reader = csv.DictReader(text)
        ended = 0  # the line where the last row (or the header) ended
        try:
            if reader.fieldnames is not None:
                reader.fieldnames = [_unescape(name, encoding) for name in reader.fieldnames]
            rows = reader.reader  # its line_num: a plain attribute (DictReader's: a property)
            ended = rows.line_num
            for row in reader:
                counters.records_in += 1
                line = rows.line_num
                start = line if line == ended + 1 else line - _line_breaks(row)
                ended = line
                if None in row:
                    counters.reject(
                        start,
                        f"{len(row) - 1 + len(row[None])} fields, the header has {len(row) - 1}",
                    )
                    continue
                if _ESCAPED_BYTES.search("".join(filter(None, row.values()))):
                    counters.undecodable += 1
                    row = {key: _unescape(value, encoding) for key, value in row.items()}
                yield start, row
        except csv.Error as exc:
            raise ValueError(f"CSV error after line {ended}: {exc}") from exc
    finally:
        text.detach()  # leave the byte stream open: the caller closes it


def _line_breaks(row: dict[Any, Any]) -> int:
    """Line breaks inside a csv row's values (``\r\n`` is one), as the csv module counts."""
    breaks = 0
    for value in row.values():
        for text in value if isinstance(value, list) else (value,):
            if text:
                breaks += text.count("\n") + text.count("\r") - text.count("\r\n")
    return breaks


def _unescape(value: str | None, encoding: str) -> str | None:
    """Turn surrogate-escaped bytes back into bytes and decode them with replacement."""
    if value is None or not _ESCAPED_BYTES.search(value):
        return value
    return value.encode(encoding, errors="surrogateescape").decode(encoding, errors="replace")


def _read_all(stream: IO[bytes], block_size: int) -> bytes:
    """The whole rest of the stream, read in blocks (decompressors may return short reads)."""
    blocks: list[bytes] = []
    while block := stream.read(block_size):
        blocks.append(block)
    return b"".join(blocks)
