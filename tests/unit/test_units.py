"""Sizes and durations as written in configs."""

from __future__ import annotations

import pytest

from pipeline.units import format_size, parse_duration, parse_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (0, 0),
        (1, 1),
        (4096, 4096),
        (1.9, 1),
        ("0", 0),
        ("1", 1),
        ("512", 512),
        ("512B", 512),
        ("1KB", 1000),
        ("1kb", 1000),
        ("1KiB", 1024),
        ("4KiB", 4096),
        ("8MiB", 8 * 1024**2),
        ("8MB", 8_000_000),
        ("1GiB", 1024**3),
        ("2GB", 2_000_000_000),
        ("1TiB", 1024**4),
        ("1.5KiB", 1536),
        (".5KiB", 512),
        (" 64 KiB ", 65536),
    ],
)
def test_parse_size(text: int | float | str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "abc", "8XB", "8 MiB MiB", "-1", "-1KiB", "1e3", "MiB", "8MiB8", True, False, -5],
)
def test_parse_size_rejects(text: object) -> None:
    with pytest.raises(ValueError):
        parse_size(text)  # type: ignore[arg-type]


def test_parse_size_message_names_the_value() -> None:
    with pytest.raises(ValueError, match="8XB"):
        parse_size("8XB")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (0, 0.0),
        (30, 30.0),
        (2.5, 2.5),
        ("30", 30.0),
        ("500ms", 0.5),
        ("30s", 30.0),
        ("1.5s", 1.5),
        ("10m", 600.0),
        ("1h", 3600.0),
        ("2d", 172800.0),
        ("10M", 600.0),
        (" 10 s ", 10.0),
    ],
)
def test_parse_duration(text: int | float | str, expected: float) -> None:
    assert parse_duration(text) == pytest.approx(expected)


@pytest.mark.parametrize(
    "text", ["", "soon", "10 minutes", "1w", "-1s", "10m10s", "ms", True, -1, -0.5]
)
def test_parse_duration_rejects(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)  # type: ignore[arg-type]


def test_parse_duration_message_names_the_value() -> None:
    with pytest.raises(ValueError, match="10 minutes"):
        parse_duration("10 minutes")


@pytest.mark.parametrize(
    ("n", "expected"),
    [(0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (1536, "1.5 KiB"), (8 * 1024**2, "8.0 MiB")],
)
def test_format_size(n: int, expected: str) -> None:
    assert format_size(n) == expected
