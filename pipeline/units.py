"""Human sizes (``64KiB``, ``8MB``) and durations (``500ms``, ``10m``)."""

from __future__ import annotations

import re

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_DURATION_UNITS = {"": 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_NUMBER_UNIT = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*([A-Za-z]*)\s*$")


def parse_size(value: int | float | str) -> int:
    """Bytes from an int or a string like ``8MiB``; KiB/MiB/GiB are powers of 1024,
    KB/MB/GB of 1000, a bare number is bytes."""
    if isinstance(value, bool):
        raise ValueError(f"not a size: {value!r}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"size must not be negative: {value!r}")
        return int(value)
    match = _NUMBER_UNIT.match(value)
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _SIZE_UNITS:
        raise ValueError(
            f"not a size: {value!r} (use a number of bytes or units like 64KiB, 8MiB, 1GB)"
        )
    return int(float(match.group(1)) * _SIZE_UNITS[unit])


def parse_duration(value: int | float | str) -> float:
    """Seconds from a number or a string like ``500ms``, ``30s``, ``10m``, ``1h``."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"duration must not be negative: {value!r}")
        return float(value)
    match = _NUMBER_UNIT.match(value)
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _DURATION_UNITS:
        raise ValueError(
            f"not a duration: {value!r} (use seconds or units like 500ms, 30s, 10m, 1h)"
        )
    return float(match.group(1)) * _DURATION_UNITS[unit]


def format_size(n: float) -> str:
    """Short human form of a byte count, for logs and summaries."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
