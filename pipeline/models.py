"""Frozen, picklable values that cross module and process boundaries.

Only these travel to workers and back: descriptors of work (``JobSpec``, ``TaskSpec``)
and small results (``TaskResult``). No open files, no record payloads, no proxies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

COMPRESSED_SUFFIXES = {".gz": "gz", ".bz2": "bz2", ".xz": "xz", ".zst": "zst"}


@dataclass(frozen=True)
class InputFile:
    """A file found by discovery, with the fingerprint taken at discovery time."""

    path: str
    size: int
    mtime_ns: int
    compression: str | None = None  # "gz" | "bz2" | "xz" | "zst" | None


@dataclass(frozen=True)
class SkippedInput:
    """A path matched by a glob but not processed, and why."""

    path: str
    reason: str


@dataclass(frozen=True)
class JobSpec:
    """Everything a worker needs to process any task of a run, as plain data."""

    format: str  # lines | jsonl | csv | bytes
    encoding: str
    steps: tuple[dict[str, Any], ...]  # normalised step specs, one key each
    stats: dict[str, dict[str, Any]]  # normalised aggregator specs by stat name
    write_records: bool
    parts_dir: str
    import_dirs: tuple[str, ...] = ()


@dataclass(frozen=True)
class TaskSpec:
    """One unit of work: a byte range of a file, or a whole file (``length is None``)."""

    task_id: str
    path: str
    offset: int
    length: int | None
    size: int
    mtime_ns: int
    compression: str | None = None
    reason: str = "new"

    @property
    def end(self) -> int | None:
        return None if self.length is None else self.offset + self.length

    def describe_range(self) -> str:
        if self.length is None:
            return "whole file"
        return f"bytes {self.offset}-{self.offset + self.length}"


@dataclass
class TaskResult:
    """What a worker hands back: counts, stats partials and the part file's name."""

    task_id: str
    ok: bool
    records_in: int = 0
    records_out: int = 0
    malformed: int = 0
    undecodable: int = 0
    bytes_read: int = 0
    partials: dict[str, Any] = field(default_factory=dict)
    part: str | None = None
    part_size: int = 0
    duration_s: float = 0.0
    pid: int = 0
    error_kind: str | None = None  # error | crashed | timeout
    error: str | None = None
    traceback: str | None = None
