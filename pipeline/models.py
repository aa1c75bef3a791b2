"""Frozen, picklable values that cross module and process boundaries.

Only these travel to workers and back: descriptors of work (``JobSpec``, ``TaskSpec``)
and small results (``TaskResult``). No open files, no record payloads, no proxies.
"""

from __future__ import annotations

import hashlib
import marshal
from dataclasses import dataclass, field
from typing import Any, NamedTuple

COMPRESSED_SUFFIXES = {".gz": "gz", ".bz2": "bz2", ".xz": "xz", ".zst": "zst"}

MALFORMED_SAMPLE_SIZE = 100
"""Malformed records kept, with their reasons, for ``malformed.jsonl``: a run keeps its
first this many (by path, then position), so a task never needs to send more."""

Rejected = tuple[int, str]
"""A malformed record of a task: (its position, as ``readers.iter_records`` yields it;
the reason a reader or a step gave)."""

EACH_TASK_ANNOUNCED_UP_TO = 16
"""On a Dask worker, a batch of at most this many tasks announces each task's start (and
waits for the acknowledgement), so a crash is charged, and ``timeout`` applies, task by
task; the dask executor groups big tasks by at most this many. A larger batch (of small
files) announces its start only, as a Pool worker does."""


class InputFile(NamedTuple):
    """A file found by discovery, with the fingerprint taken at discovery time. (A named
    tuple: one is built per input file, four times faster than a frozen dataclass.)"""

    path: str
    size: int
    mtime_ns: int
    compression: str | None = None  # "gz" | "bz2" | "xz" | "zst" | None


@dataclass(frozen=True, slots=True)
class SkippedInput:
    """A path matched by a glob but not processed, and why."""

    path: str
    reason: str


@dataclass(frozen=True, slots=True)
class JobSpec:
    """Everything a worker needs to process any task of a run, as plain data."""

    format: str  # lines | jsonl | csv | bytes
    encoding: str
    steps: tuple[dict[str, Any], ...]  # normalised step specs, one key each
    stats: dict[str, dict[str, Any]]  # normalised aggregator specs by stat name
    write_records: bool
    parts_dir: str
    import_dirs: tuple[str, ...] = ()
    # True: a batch's records travel back with its result (its worker cannot reach
    # ``parts_dir``) and the main process writes the part file.
    records_back: bool = False
    # True (``input.growing``): an input may grow while it is read; a task reads the
    # bytes planned for it and no more, and only a file that shrank has changed.
    growing: bool = False


def covers_file(offset: int, length: int | None, size: int) -> bool:
    """Whether a byte range (``length`` None: to the end) is all of a file of ``size``."""
    return offset == 0 and (length is None or length == size)


class TaskSpec(NamedTuple):
    """One unit of work: a byte range of a file, or a whole file (``length is None``).

    A named tuple, not a frozen dataclass: tasks are built by the tens of thousands in the
    main process (planning, the spool) and again in workers (unpickling), and a tuple is
    built four times faster. Compare tasks with tasks only (a tuple of the same values
    would compare equal too)."""

    task_id: str
    path: str
    offset: int
    length: int | None
    size: int
    mtime_ns: int
    compression: str | None = None
    reason: str = "new"

    def fields(self) -> tuple[Any, ...]:
        """The constructor's arguments: ``TaskSpec(*task.fields()) == task``."""
        return tuple(self)

    @property
    def covers_file(self) -> bool:
        """Whether the task is its file's only one (the whole file, or one range that is)."""
        return covers_file(self.offset, self.length, self.size)

    @property
    def end(self) -> int | None:
        return None if self.length is None else self.offset + self.length

    def byte_range(self) -> list[int] | None:
        """``[start, end]`` as report.json and the job log give it; None: the whole file."""
        return None if self.length is None else [self.offset, self.offset + self.length]

    def describe_range(self) -> str:
        if self.length is None:
            return f"bytes {self.offset}-end" if self.offset else "whole file"
        return f"bytes {self.offset}-{self.offset + self.length}"


@dataclass(frozen=True, slots=True)
class Batch:
    """Tasks that travel to a worker together and share one part file: small files are
    batched so that the per-task costs (a pipe round trip, a part file, an fsync, a
    SQLite transaction) are paid once per batch, not once per file. A big file's range
    is a batch of one."""

    batch_id: str
    tasks: tuple[TaskSpec, ...]

    @classmethod
    def of(cls, tasks: tuple[TaskSpec, ...]) -> Batch:
        """A batch named by its tasks: a batch of one is named like its task."""
        if len(tasks) == 1:
            return cls(tasks[0].task_id, tasks)
        digest = hashlib.sha256()
        for task in tasks:
            digest.update(task.task_id.encode())
        return cls(digest.hexdigest()[:32], tasks)

    @property
    def part_name(self) -> str:
        return f"{self.batch_id}.jsonl"

    @property
    def nbytes(self) -> int:
        return sum(t.size if t.length is None else t.length for t in self.tasks)

    def describe(self) -> str:
        first = self.tasks[0]
        if len(self.tasks) == 1:
            return f"{first.path} ({first.describe_range()})"
        return f"{first.path} and {len(self.tasks) - 1} more files"

    def fields(self) -> tuple[str, list[tuple[Any, ...]]]:
        """Plain values that ``marshal`` writes: ``Batch.from_fields(*b.fields()) == b``."""
        return self.batch_id, [t.fields() for t in self.tasks]

    @classmethod
    def from_fields(cls, batch_id: str, fields: list[tuple[Any, ...]]) -> Batch:
        return cls(batch_id, tuple(TaskSpec(*f) for f in fields))

    def __reduce__(self) -> tuple[Any, tuple[bytes]]:
        # Every batch is pickled by the main process (the Pool's task thread, holding the
        # GIL): as one marshal blob of its fields, in a third of the time.
        return _unpack_batch, (marshal.dumps(self.fields()),)


def _unpack_batch(blob: bytes) -> Batch:
    return Batch.from_fields(*marshal.loads(blob))


@dataclass(frozen=True, slots=True)
class PackedTasks:
    """The done whole files of a batch, packed by the worker into what their one ledger
    row holds (``store.ledger.pack_tasks``): the main process commits them without
    touching each file, and never merges or encodes their partials itself."""

    task_ids: frozenset[str]
    members: str  # JSON, the ledger's format
    merged: dict[str, Any]  # their partials, merged
    first_path: bytes
    totals: tuple[int, ...]  # files, records in/out, malformed, undecodable, bytes read, part
    part: str | None
    row_id: str  # the batch row's key (``packing.row_id``)
    # The packed files that had malformed records, as (path, compression, records in,
    # malformed, first rejected records): their results do not travel back on their own.
    flagged: tuple[tuple[str, str | None, int, int, tuple[Rejected, ...]], ...] = ()
    span: tuple[float, float] = (0.0, 0.0)  # when the worker began the first, ended the last

    @property
    def files(self) -> int:
        return self.totals[0]

    @property
    def records_in(self) -> int:
        return self.totals[1]

    @property
    def records_out(self) -> int:
        return self.totals[2]

    @property
    def malformed(self) -> int:
        return self.totals[3]

    @property
    def bytes_read(self) -> int:
        return self.totals[5]


@dataclass(slots=True)
class TaskResult:
    """What a worker hands back per task: counts, stats partials, and where the task's
    records sit in its batch's part file (``part``, ``part_offset``, ``part_size``)."""

    task_id: str
    ok: bool
    records_in: int = 0
    records_out: int = 0
    malformed: int = 0
    undecodable: int = 0
    bytes_read: int = 0
    partials: dict[str, Any] = field(default_factory=dict)
    part: str | None = None
    part_offset: int = 0
    part_size: int = 0
    duration_s: float = 0.0
    pid: int = 0
    content: str | None = None  # digest of a small whole file, for touched-but-same checks
    started: float = 0.0  # when the worker began it (epoch seconds; 0: it never began)
    host: str = ""  # the worker's machine, with ``pid`` the worker
    error_kind: str | None = None  # error | crashed | timeout
    error: str | None = None
    traceback: str | None = None
    # On the first done result of a batch: every done whole file of the batch, packed
    # (their own ``partials`` are then left empty for the trip back).
    packed: PackedTasks | None = None
    # The task's first malformed records (at most ``MALFORMED_SAMPLE_SIZE``, by position).
    rejected: tuple[Rejected, ...] = ()
    # Where a failed task's record sits (a position, as in ``rejected``): the main process
    # turns it into a line number, which only it can count cheaply.
    error_at: int | None = None

    def __reduce__(self) -> tuple[type[TaskResult], tuple[Any, ...]]:
        # Every task's result crosses back from a worker: a constructor call unpickles in a
        # third of the time of the default (slot by slot).
        return TaskResult, (
            self.task_id,
            self.ok,
            self.records_in,
            self.records_out,
            self.malformed,
            self.undecodable,
            self.bytes_read,
            self.partials,
            self.part,
            self.part_offset,
            self.part_size,
            self.duration_s,
            self.pid,
            self.content,
            self.started,
            self.host,
            self.error_kind,
            self.error,
            self.traceback,
            self.packed,
            self.rejected,
            self.error_at,
        )
