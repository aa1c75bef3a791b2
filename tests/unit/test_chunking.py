"""Byte ranges, splittability and compression detection."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.chunking import compression_of, is_splittable, split_ranges


def assert_partition(ranges: list[tuple[int, int]], size: int, chunk_size: int) -> None:
    """The ranges cover [0, size) exactly, in order, none longer than chunk_size."""
    assert ranges
    position = 0
    for offset, length in ranges:
        assert offset == position
        assert 0 <= length <= chunk_size
        position += length
    assert position == size


@given(size=st.integers(0, 10_000), chunk_size=st.integers(1, 2_000))
def test_split_ranges_partition(size: int, chunk_size: int) -> None:
    ranges = split_ranges(size, chunk_size)
    assert_partition(ranges, size, chunk_size)
    if size:
        assert len(ranges) == -(-size // chunk_size)
        lengths = [length for _, length in ranges]
        assert max(lengths) - min(lengths) <= 1  # spread evenly
        assert min(lengths) >= 1


@given(size=st.integers(0, 10_000), chunk_size=st.integers(1, 2_000), spread=st.integers(1, 16))
def test_split_ranges_spread_over_workers(size: int, chunk_size: int, spread: int) -> None:
    ranges = split_ranges(size, chunk_size, spread)
    assert_partition(ranges, size, chunk_size)
    plain = len(split_ranges(size, chunk_size))
    if plain < spread:  # fewer ranges than workers: cut as without spreading
        assert len(ranges) == plain
    else:  # whole rounds of `spread` ranges (no more ranges than bytes), as few as can be
        assert len(ranges) % spread == 0 or len(ranges) == size
        assert plain <= len(ranges) < plain + spread
    lengths = [length for _, length in ranges]
    assert max(lengths) - min(lengths) <= 1


def test_split_ranges_spread_ends_a_big_file_on_every_worker() -> None:
    size = 256 * 1024**2 + 138  # 32 chunks and a few bytes: 33 tasks unspread
    chunk = 8 * 1024**2
    assert len(split_ranges(size, chunk)) == 33
    assert len(split_ranges(size, chunk, 2)) == 34
    assert len(split_ranges(size, chunk, 8)) == 40
    assert len(split_ranges(size, chunk, 64)) == 33  # fewer chunks than workers: as is


@pytest.mark.parametrize(
    ("size", "chunk_size", "expected"),
    [
        (0, 10, [(0, 0)]),
        (0, 1, [(0, 0)]),
        (5, 10, [(0, 5)]),
        (10, 10, [(0, 10)]),
        (11, 10, [(0, 6), (6, 5)]),
        (20, 10, [(0, 10), (10, 10)]),
        (3, 1, [(0, 1), (1, 1), (2, 1)]),
        (1, 1, [(0, 1)]),
    ],
)
def test_split_ranges_edges(size: int, chunk_size: int, expected: list[tuple[int, int]]) -> None:
    assert split_ranges(size, chunk_size) == expected


def test_split_ranges_large_file() -> None:
    size = 10 * 1024**3 + 7
    chunk = 8 * 1024**2
    ranges = split_ranges(size, chunk)
    assert_partition(ranges, size, chunk)
    assert len(ranges) == 1281


@pytest.mark.parametrize(
    ("size", "chunk_size", "spread"), [(10, 0, 1), (10, -1, 1), (-1, 10, 1), (10, 1, 0)]
)
def test_split_ranges_rejects_bad_arguments(size: int, chunk_size: int, spread: int) -> None:
    with pytest.raises(ValueError):
        split_ranges(size, chunk_size, spread)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("a/b.log", None),
        ("a/b.log.gz", "gz"),
        ("b.GZ", "gz"),
        ("b.csv.bz2", "bz2"),
        ("b.jsonl.xz", "xz"),
        ("b.Zst", "zst"),
        ("b.gz.txt", None),
        ("b.tgz", None),
        ("dir.gz/b.log", None),
        ("no suffix", None),
        ("caf\udce9.gz", "gz"),  # a non-UTF-8 file name, as os.fsdecode gives it
    ],
)
def test_compression_of(path: str, expected: str | None) -> None:
    assert compression_of(path) == expected


@pytest.mark.parametrize(
    ("fmt", "compression", "expected"),
    [
        ("lines", None, True),
        ("jsonl", None, True),
        ("csv", None, False),
        ("bytes", None, False),
        ("lines", "gz", False),
        ("jsonl", "zst", False),
        ("csv", "bz2", False),
        ("bytes", "xz", False),
    ],
)
def test_is_splittable(fmt: str, compression: str | None, expected: bool) -> None:
    assert is_splittable(fmt, compression) is expected
