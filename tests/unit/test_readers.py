"""Readers: record formats, range ownership, compression, and the chunking property."""

from __future__ import annotations

import bz2
import gzip
import importlib.util
import lzma
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.chunking import split_ranges
from pipeline.models import TaskSpec
from pipeline.readers import (
    TAIL_READ_SIZE,
    FileChangedError,
    ReadCounters,
    check_encoding,
    check_unchanged,
    iter_records,
    position_label,
    read_small_file,
)

HAVE_ZSTD = importlib.util.find_spec("zstandard") is not None


# --- helpers ---------------------------------------------------------------------------


def make_task(
    path: Path | str, offset: int = 0, length: int | None = None, compression: str | None = None
) -> TaskSpec:
    stat = os.stat(path)
    return TaskSpec(
        task_id=f"t-{offset}",
        path=str(path),
        offset=offset,
        length=length,
        size=stat.st_size,
        mtime_ns=stat.st_mtime_ns,
        compression=compression,
    )


def write(tmp_path: Path, data: bytes, name: str = "input.txt") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def read(
    task: TaskSpec, fmt: str = "lines", encoding: str = "utf-8", **kwargs: Any
) -> tuple[list[tuple[int, dict[str, Any]]], ReadCounters]:
    counters = ReadCounters()
    records = list(iter_records(task, fmt, encoding, counters, **kwargs))
    return records, counters


def read_lines(path: Path, **kwargs: Any) -> list[str]:
    records, _ = read(make_task(path), **kwargs)
    return [record["line"] for _, record in records]


def read_chunked(
    path: str, chunk_size: int, block_size: int
) -> tuple[list[tuple[int, str]], list[ReadCounters]]:
    """Read every range of the file as separate tasks; check each keeps to its range."""
    size = os.path.getsize(path)
    out: list[tuple[int, str]] = []
    all_counters = []
    for offset, length in split_ranges(size, chunk_size):
        task = make_task(path, offset, length)
        records, counters = read(task, block_size=block_size)
        for position, record in records:
            assert offset <= position < offset + length or (position, length) == (0, 0)
            out.append((position, record["line"]))
        assert counters.records_in == len(records)
        all_counters.append(counters)
    return out, all_counters


def oracle(data: bytes) -> list[tuple[int, bytes]]:
    """Lines by the spec, computed independently: split on \\n, drop the empty piece after
    a final \\n, strip one \\r only where a \\n follows."""
    pieces = data.split(b"\n")
    if pieces[-1] == b"":
        pieces.pop()  # data ends with "\n" (or is empty)
    terminated = data.count(b"\n")
    lines = []
    position = 0
    for index, piece in enumerate(pieces):
        text = piece[:-1] if index < terminated and piece.endswith(b"\r") else piece
        lines.append((position, text))
        position += len(piece) + 1
    return lines


def strict_fails(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


# --- lines -----------------------------------------------------------------------------


def test_lines_endings_and_special_characters(tmp_path: Path) -> None:
    data = (
        b"crlf\r\n"
        b"\n"
        b"lone\rcr\n"
        b"form\x0cfeed\n"
        + "nel\x85x\n".encode()
        + "ls\u2028ps\u2029\n".encode()
        + b"two\r\r\n"
        + b"\r\n"
        + b"last\r"
    )
    path = write(tmp_path, data)
    assert read_lines(path) == [
        "crlf",
        "",
        "lone\rcr",
        "form\x0cfeed",
        "nel\x85x",
        "ls\u2028ps\u2029",
        "two\r",
        "",
        "last\r",  # no newline follows: the \r is data
    ]


def test_lines_positions_and_trailing_newline(tmp_path: Path) -> None:
    path = write(tmp_path, b"ab\r\n\nc\n")
    records, counters = read(make_task(path))
    assert records == [(0, {"line": "ab"}), (4, {"line": ""}), (5, {"line": "c"})]
    assert counters.records_in == 3
    assert counters.bytes_read == 7


def test_lines_without_trailing_newline(tmp_path: Path) -> None:
    path = write(tmp_path, b"one\ntwo")
    assert read_lines(path) == ["one", "two"]


def test_lines_empty_file(tmp_path: Path) -> None:
    path = write(tmp_path, b"")
    for task in (make_task(path), make_task(path, 0, 0)):
        records, counters = read(task)
        assert records == []
        assert counters.records_in == 0


def test_lines_undecodable_replaced_and_counted(tmp_path: Path) -> None:
    path = write(tmp_path, b"ok\n\xff\xfebad\ncaf\xc3\n" + "é\n".encode())
    records, counters = read(make_task(path))
    assert [r["line"] for _, r in records] == ["ok", "\ufffd\ufffdbad", "caf\ufffd", "é"]
    assert counters.undecodable == 2
    assert counters.records_in == 4


def test_lines_other_encoding(tmp_path: Path) -> None:
    path = write(tmp_path, "café\nñ\n".encode("latin-1"))
    assert read_lines(path, encoding="latin-1") == ["café", "ñ"]


def test_lines_non_utf8_file_name(tmp_path: Path) -> None:
    path = Path(os.fsdecode(os.path.join(os.fsencode(tmp_path), b"caf\xe9 x.log")))
    path.write_bytes(b"a\n")
    assert read_lines(path) == ["a"]


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32-le", "cp037"])
def test_line_formats_reject_encodings_without_byte_newline(tmp_path: Path, encoding: str) -> None:
    path = write(tmp_path, b"")
    with pytest.raises(ValueError, match="cannot be used"):
        read(make_task(path), encoding=encoding)
    check_encoding("csv", encoding)  # fine for csv, which decodes a text stream


def test_unknown_encoding(tmp_path: Path) -> None:
    path = write(tmp_path, b"a\n")
    with pytest.raises(ValueError, match="unknown encoding"):
        read(make_task(path), encoding="no-such-codec")


def test_unknown_format(tmp_path: Path) -> None:
    path = write(tmp_path, b"a\n")
    with pytest.raises(ValueError, match="unknown format"):
        read(make_task(path), fmt="xml")


# --- ranges ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offset", "length", "expected"),
    [
        (0, 4, [(0, "aaa")]),
        (0, 1, [(0, "aaa")]),  # the owned line runs past the range end
        (1, 3, []),  # inside line 0; the next line starts at 4, outside
        (3, 1, []),  # the newline byte itself
        (4, 1, [(4, "bbb")]),  # byte 3 is a newline: offset starts a line
        (1, 4, [(4, "bbb")]),
        (2, 100, [(4, "bbb"), (8, "ccc")]),  # past the end of the file
        (8, 3, [(8, "ccc")]),
        (9, 2, []),
        (11, 5, []),  # starts at EOF
        (20, 5, []),  # starts past EOF (the file shrank)
    ],
)
def test_range_ownership(
    tmp_path: Path, offset: int, length: int, expected: list[tuple[int, str]]
) -> None:
    path = write(tmp_path, b"aaa\nbbb\nccc")
    records, _ = read(make_task(path, offset, length))
    assert [(pos, r["line"]) for pos, r in records] == expected


def test_range_reads_little_past_its_end(tmp_path: Path) -> None:
    path = write(tmp_path, b"0123456789\n" * 200_000)
    records, counters = read(make_task(path, 1100, 1100))
    assert [pos for pos, _ in records] == list(range(1100, 2200, 11))
    assert counters.bytes_read <= 1100 + 1 + TAIL_READ_SIZE


def test_range_inside_a_long_line_reads_only_the_range(tmp_path: Path) -> None:
    path = write(tmp_path, b"x" * 5_000_000 + b"\n")
    records, counters = read(make_task(path, 1_000_000, 1_000_000))
    assert records == []
    assert counters.bytes_read <= 1_000_001


@pytest.mark.parametrize("block_size", [1, 2, 3, 5, 64])
def test_block_smaller_than_lines(tmp_path: Path, block_size: int) -> None:
    data = b"x" * 300 + b"\r\n" + "é".encode() * 100 + b"\n\n" + b"tail\r"
    path = write(tmp_path, data)
    expected = [(pos, line.decode()) for pos, line in oracle(data)]
    records, counters = read(make_task(path), block_size=block_size)
    assert [(pos, r["line"]) for pos, r in records] == expected
    assert counters.bytes_read == len(data)
    chunked, _ = read_chunked(str(path), chunk_size=37, block_size=block_size)
    assert chunked == expected


def test_huge_line_larger_than_block_and_chunk(tmp_path: Path) -> None:
    big = b"y" * (3 * 1024 * 1024 + 17)
    data = b"a\n" + big + b"\nb\n"
    path = write(tmp_path, data)
    chunked, _ = read_chunked(str(path), chunk_size=1024 * 1024, block_size=1024 * 1024)
    assert chunked == [(0, "a"), (2, big.decode()), (len(big) + 3, "b")]


def test_closing_early_settles_bytes_read(tmp_path: Path) -> None:
    path = write(tmp_path, b"line\n" * 1000)
    counters = ReadCounters()
    # a range, not the whole file: read block by block
    records = iter_records(make_task(path, 0, 4000), "lines", "utf-8", counters, block_size=100)
    next(records)
    records.close()
    assert counters.bytes_read == 100
    assert counters.records_in == 1
    # a small file read whole is read in one call: every byte, and its digest
    counters = ReadCounters()
    records = iter_records(make_task(path), "lines", "utf-8", counters, block_size=100)
    next(records)
    records.close()
    assert counters.bytes_read == 5000 and counters.records_in == 1
    assert counters.content is not None
    assert counters.opened is None  # the worker stats the path once the task is over


@pytest.mark.parametrize("now", [b"line\n" * 3, b"line\n" * 5, b"LINE\n" * 4])
def test_small_file_read_checks_its_length(tmp_path: Path, now: bytes) -> None:
    """A small file is read in one call, its planned size plus one byte: bytes of
    another length than planned fail the task at once; the same length with new bytes
    is the worker's final stat's business (its mtime moved)."""
    path = write(tmp_path, b"line\n" * 4)
    task = make_task(path)
    path.write_bytes(now)
    counters = ReadCounters()
    if len(now) == task.size:
        assert read_small_file(task, counters) == now
        with pytest.raises(FileChangedError, match="changed since the run started"):
            os.utime(path, ns=(task.mtime_ns + 10**9, task.mtime_ns + 10**9))
            check_unchanged(task)
        return
    with pytest.raises(FileChangedError, match=f"size {task.size} -> {len(now)}"):
        read_small_file(task, counters)


def test_rejects_inconsistent_tasks(tmp_path: Path) -> None:
    path = write(tmp_path, b"a,b\n1,2\n")
    with pytest.raises(ValueError, match="reads whole files"):
        read(make_task(path, 0, 4), fmt="csv")
    with pytest.raises(ValueError, match="reads whole files"):
        read(make_task(path, 3, None), fmt="csv")
    with pytest.raises(ValueError, match="invalid range"):
        read(make_task(path, 3, -1))


def test_a_range_of_a_compressed_file_is_of_its_decompressed_bytes(tmp_path: Path) -> None:
    """Growing logs read what a compressed copy holds past the bytes already processed:
    a range (or the rest, with no length) of the decompressed stream, owned as in a
    plain file."""
    text = b"a\nbb\nccc\ndddd"
    gz = write(tmp_path, gzip.compress(text), "a.gz")
    plain = write(tmp_path, text, "a.txt")
    for offset, length in ((2, None), (2, 3), (1, None), (0, 5), (5, None), (14, None)):
        got, _ = read(make_task(gz, offset, length, compression="gz"))
        want, _ = read(make_task(plain, offset, length))
        assert got == want, (offset, length)
    assert [r["line"] for _, r in read(make_task(gz, 2, None, compression="gz"))[0]] == [
        "bb",
        "ccc",
        "dddd",
    ]
    with pytest.raises(FileChangedError, match="fewer than the 40 bytes"):
        read(make_task(gz, 41, None, compression="gz"))


# --- the chunking property -------------------------------------------------------------

ATOMS = [
    b"",
    b"a",
    b"hello world",
    b" ",
    b"\r",
    b"\x0c",
    "\x85".encode(),
    "\u2028".encode(),
    "é".encode(),
    "€".encode(),
    "😀".encode(),
    b"\xff",  # never valid UTF-8
    b"\xe2\x82",  # a truncated multibyte sequence
]
short_line = st.lists(st.sampled_from(ATOMS), max_size=8).map(b"".join)
long_line = st.builds(
    lambda unit, count: unit * count,
    st.sampled_from([b"x", "é".encode(), b"ab\r", "\u2028".encode()]),
    st.integers(100, 1200),
)
line_body = st.one_of(short_line, short_line, short_line, long_line)
terminated_line = st.builds(bytes.__add__, line_body, st.sampled_from([b"\n", b"\r\n"]))
file_contents = st.builds(
    lambda lines, last: b"".join(lines) + last,
    st.lists(terminated_line, max_size=25),
    st.one_of(st.just(b""), line_body),  # with or without a trailing newline
)


@settings(max_examples=300, deadline=None)
@given(
    data=file_contents,
    chunk_size=st.integers(1, 300),
    block_size=st.sampled_from([1, 2, 3, 7, 16, 100, 4096, 1 << 20]),
)
def test_every_line_once_whatever_the_chunking(
    data: bytes, chunk_size: int, block_size: int
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "data.txt")
        with open(path, "wb") as handle:
            handle.write(data)
        chunked, counters = read_chunked(path, chunk_size, block_size)
    expected = oracle(data)
    assert chunked == [(pos, line.decode("utf-8", errors="replace")) for pos, line in expected]
    # positions are exactly the line starts
    starts = [0] + [i + 1 for i, byte in enumerate(data) if byte == 0x0A and i + 1 < len(data)]
    assert [pos for pos, _ in chunked] == (starts if data else [])
    assert sum(c.undecodable for c in counters) == sum(strict_fails(line) for _, line in expected)
    assert sum(c.bytes_read for c in counters) >= len(data)


# --- jsonl -----------------------------------------------------------------------------


def test_jsonl_records_and_malformed(tmp_path: Path) -> None:
    data = (
        b'{"a": 1}\n'
        b"\n"
        b"   \t\n"
        b"[1, 2]\n"
        b"42\n"
        b'"text"\n'
        b"null\n"
        b"{not json\n"
        b'{"b": "x\\u2028y"}\r\n'
        b'{"c": "\xff"}\n'
        b'{"d": true}'
    )
    path = write(tmp_path, data)
    records, counters = read(make_task(path), fmt="jsonl")
    assert [record for _, record in records] == [
        {"a": 1},
        {"b": "x\u2028y"},
        {"c": "\ufffd"},
        {"d": True},
    ]
    assert records[0][0] == 0
    assert records[1][0] == data.index(b'{"b"')
    assert counters.records_in == 11
    assert counters.malformed == 7
    assert counters.undecodable == 1


def test_jsonl_chunked(tmp_path: Path) -> None:
    data = b"".join(b'{"i": %d, "pad": "%s"}\n' % (i, b"z" * (i % 17)) for i in range(200))
    path = write(tmp_path, data)
    seen = []
    for offset, length in split_ranges(len(data), 50):
        records, _ = read(make_task(path, offset, length), fmt="jsonl")
        seen.extend(record["i"] for _, record in records)
    assert seen == list(range(200))


# --- csv -------------------------------------------------------------------------------


def test_csv_quoted_newlines_and_positions(tmp_path: Path) -> None:
    data = (
        b"id,text,n\r\n"
        b'1,"multi\r\nline",5\r\n'
        b'2,"with ""quotes"", comma",6\r\n'
        b'3,"lf\nand \xe2\x80\xa8 sep",7\r\n'
        b"\r\n"
        b"4,short\r\n"
    )
    path = write(tmp_path, data)
    records, counters = read(make_task(path), fmt="csv")
    # positions: the line where each row starts (quoted newlines and blank lines counted)
    assert records == [
        (2, {"id": "1", "text": "multi\r\nline", "n": "5"}),
        (4, {"id": "2", "text": 'with "quotes", comma', "n": "6"}),
        (5, {"id": "3", "text": "lf\nand \u2028 sep", "n": "7"}),
        (8, {"id": "4", "text": "short", "n": None}),  # fewer fields: None
    ]
    assert counters.records_in == 4
    assert counters.malformed == 0
    assert counters.bytes_read == len(data)
    assert position_label("csv", make_task(path)) == "line"


def test_csv_extra_fields_are_malformed(tmp_path: Path) -> None:
    path = write(tmp_path, b"a,b\n1,2\n3,4,5\n6,7\n")
    records, counters = read(make_task(path), fmt="csv")
    assert records == [(2, {"a": "1", "b": "2"}), (4, {"a": "6", "b": "7"})]
    assert counters.rejected == [(3, "3 fields, the header has 2")]
    assert counters.records_in == 3
    assert counters.malformed == 1


def test_csv_undecodable_values_and_header(tmp_path: Path) -> None:
    path = write(tmp_path, b"k\xff,v\nok,1\n\xe9t\xe9,\xc3\n")
    records, counters = read(make_task(path), fmt="csv")
    assert records == [
        (2, {"k\ufffd": "ok", "v": "1"}),
        (3, {"k\ufffd": "\ufffdt\ufffd", "v": "\ufffd"}),
    ]
    assert counters.undecodable == 1  # one record; the header is not a record


def test_csv_empty_and_header_only(tmp_path: Path) -> None:
    for data in (b"", b"a,b\n"):
        records, counters = read(make_task(write(tmp_path, data)), fmt="csv")
        assert records == []
        assert counters.records_in == 0


# --- bytes -----------------------------------------------------------------------------


def test_bytes_record(tmp_path: Path) -> None:
    data = bytes(range(256)) * 10
    path = write(tmp_path, data, "blob.bin")
    records, counters = read(make_task(path), fmt="bytes", block_size=1000)
    assert records == [(0, {"path": str(path), "size": len(data), "data": data})]
    assert counters.records_in == 1
    assert counters.bytes_read == len(data)


def test_bytes_empty_file(tmp_path: Path) -> None:
    path = write(tmp_path, b"", "empty.bin")
    records, _ = read(make_task(path), fmt="bytes")
    assert records == [(0, {"path": str(path), "size": 0, "data": b""})]


# --- compression -----------------------------------------------------------------------

COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "gz": gzip.compress,
    "bz2": bz2.compress,
    "xz": lzma.compress,
}
if HAVE_ZSTD:
    import zstandard

    COMPRESSORS["zst"] = lambda data: zstandard.ZstdCompressor().compress(data)


@pytest.mark.parametrize("compression", sorted(COMPRESSORS))
def test_compressed_round_trip(tmp_path: Path, compression: str) -> None:
    compress = COMPRESSORS[compression]
    lines_data = b"first\r\nsecond\n\nlong " + b"z" * 300_000 + b"\nlast\r"
    path = write(tmp_path, compress(lines_data), f"in.log.{compression}")
    task = make_task(path, compression=compression)
    records, counters = read(task, block_size=4096)
    expected = [(pos, line.decode()) for pos, line in oracle(lines_data)]
    assert [(pos, r["line"]) for pos, r in records] == expected
    assert counters.bytes_read == os.path.getsize(path)
    assert position_label("lines", task) == "decompressed byte offset"

    jsonl = write(tmp_path, compress(b'{"a": 1}\nnope\n{"a": 2}\n'), f"in.jsonl.{compression}")
    records, counters = read(make_task(jsonl, compression=compression), fmt="jsonl")
    assert [r for _, r in records] == [{"a": 1}, {"a": 2}]
    assert counters.malformed == 1

    csv_path = write(tmp_path, compress(b'a,b\n1,"x\ny"\n'), f"in.csv.{compression}")
    records, _ = read(make_task(csv_path, compression=compression), fmt="csv")
    assert records == [(2, {"a": "1", "b": "x\ny"})]

    blob = os.urandom(5000)
    blob_path = write(tmp_path, compress(blob), f"in.bin.{compression}")
    records, _ = read(make_task(blob_path, compression=compression), fmt="bytes")
    assert records[0][1]["data"] == blob
    assert records[0][1]["size"] == len(blob)


def test_gzip_multiple_members(tmp_path: Path) -> None:
    path = write(tmp_path, gzip.compress(b"a\nb") + gzip.compress(b"c\n"), "multi.gz")
    records, _ = read(make_task(path, compression="gz"), block_size=2)
    assert [r["line"] for _, r in records] == ["a", "bc"]


@pytest.mark.parametrize("compression", ["gz", "bz2", "xz"])
def test_corrupt_compressed_raises(tmp_path: Path, compression: str) -> None:
    good = COMPRESSORS[compression](b"some text\n" * 1000)
    for data in (b"this is not compressed", good[: len(good) // 2]):
        path = write(tmp_path, data, f"bad.{compression}")
        with pytest.raises((OSError, EOFError, lzma.LZMAError)):
            read(make_task(path, compression=compression))


@pytest.mark.skipif(HAVE_ZSTD, reason="zstandard is installed")
def test_zst_without_zstandard_is_a_clear_error(tmp_path: Path) -> None:
    path = write(tmp_path, b"\x28\xb5\x2f\xfd", "a.zst")
    with pytest.raises(RuntimeError, match="zstandard"):
        read(make_task(path, compression="zst"))


def test_position_labels(tmp_path: Path) -> None:
    path = write(tmp_path, b"")
    assert position_label("lines", make_task(path)) == "byte offset"
    assert position_label("jsonl", make_task(path, 0, 0)) == "byte offset"
    assert position_label("csv", make_task(path)) == "line"


# --- a block decoded at once == the same block line by line ---------------------------

_TEXTS = st.lists(
    st.sampled_from(["abc", "é", "日本", " ", "\n", "\r", "\r\n", "\x00", "\u2028", "x\n"]),
    max_size=30,
).map("".join)


@settings(max_examples=300, deadline=None)
@given(
    text=_TEXTS,
    junk=st.booleans(),
    encoding=st.sampled_from(["utf-8", "latin-1", "cp1252", "ascii", "utf-8-sig", "shift_jis"]),
    start=st.integers(0, 10_000),
)
def test_block_records_equal_the_line_by_line_records(
    text: str, junk: bool, encoding: str, start: int
) -> None:
    from pipeline import readers

    data = text.encode(encoding, errors="replace") + (b"\xff\xfe\n" if junk else b"")
    whole = readers.ReadCounters()
    got = list(readers.block_records(start, data, encoding, whole))
    by_line = readers.ReadCounters()
    want = list(readers._line_records(readers._split_block(start, data), encoding, by_line))
    assert got == want
    assert (whole.records_in, whole.undecodable) == (by_line.records_in, by_line.undecodable)


@settings(max_examples=300, deadline=None)
@given(
    text=st.builds(
        lambda lines, end: "\n".join(lines) + end,
        st.lists(st.text(alphabet="ab é日\x00\u2028", max_size=6), min_size=1, max_size=30),
        st.sampled_from(["", "\n"]),
    ),
    encoding=st.sampled_from(["utf-8", "latin-1", "cp1252", "ascii"]),
    start=st.integers(0, 10_000),
    asked=st.lists(st.integers(0, 40), max_size=8),
    in_order=st.booleans(),
)
def test_line_positions_are_the_lines_byte_offsets(
    text: str, encoding: str, start: int, asked: list[int], in_order: bool
) -> None:
    """A line's position from its lengths (characters of one byte) or from the bytes
    (others) is its byte offset, asked in order (as messages do) or not."""
    from pipeline import readers

    data = text.encode(encoding, errors="replace")
    lines = readers.block_lines(data, encoding)
    if not lines:
        return  # a block this path never sees (a \r, undecodable, or nothing)
    starts = readers.line_starts(start, data)
    positions = readers.LinePositions(start, data, lines, encoding)
    indices = [i % len(lines) for i in asked]
    for i in sorted(indices) if in_order else indices:
        assert positions(i) == starts[i]
        assert readers.line_starts(start, data, i + 1) == starts[: i + 1]  # split no further
