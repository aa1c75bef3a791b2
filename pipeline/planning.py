"""Planning: discovered files x the ledger -> the tasks to run and the work to skip.

A task's identity is a hash of its file, byte range, the file's fingerprint (size and
mtime) and the result-affecting config, so identical work always has the same id and part
file name. A file keeps its task ranges until it changes: ``chunk_size`` only shapes the
tasks of new or changed files, and never invalidates results.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise

from pipeline.chunking import is_splittable, split_ranges
from pipeline.digest import file_digest
from pipeline.models import Batch, InputFile, TaskSpec
from pipeline.store.ledger import TaskRow

REASONS = ("new", "changed", "config-changed", "failed-before", "interrupted", "full", "unchanged")


def task_id(
    path: str, offset: int, length: int | None, size: int, mtime_ns: int, result_key: str
) -> str:
    fields = f"\0{offset}\0{length}\0{size}\0{mtime_ns}\0{result_key}".encode()
    return hashlib.blake2b(os.fsencode(path) + fields, digest_size=16).hexdigest()


@dataclass
class Plan:
    run: list[TaskSpec] = field(default_factory=list)
    skip: list[TaskSpec] = field(default_factory=list)
    drop_paths: list[str] = field(default_factory=list)  # files whose old tasks are replaced
    touched: list[tuple[str, int]] = field(default_factory=list)  # (path, new mtime_ns)

    n_run: int = 0  # the counts stay when the task lists are let go (forget_tasks)
    n_skip: int = 0
    run_bytes: int = 0

    def settle(self) -> Plan:
        self.n_run, self.n_skip = len(self.run), len(self.skip)
        self.run_bytes = sum(t.size if t.length is None else t.length for t in self.run)
        return self

    def forget_tasks(self) -> None:
        self.run = []
        self.skip = []

    def reasons(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for task in (*self.run, *self.skip):
            counts[task.reason] = counts.get(task.reason, 0) + 1
        return counts


def new_tasks(
    file: InputFile, fmt: str, chunk_size: int, result_key: str, reason: str
) -> list[TaskSpec]:
    """Cut a file into range tasks, or one whole-file task when it cannot be split."""
    if is_splittable(fmt, file.compression):
        ranges: Iterable[tuple[int, int | None]] = split_ranges(file.size, chunk_size)
    else:
        ranges = [(0, None)]
    return [
        TaskSpec(
            task_id(file.path, offset, length, file.size, file.mtime_ns, result_key),
            file.path,
            offset,
            length,
            file.size,
            file.mtime_ns,
            file.compression,
            reason,
        )
        for offset, length in ranges
    ]


def _reuse_reason(row: TaskRow, part_sizes: dict[str, int] | None, parts_dir: str) -> str:
    if row.status == "failed":
        return "failed-before"
    if row.status != "done":
        return "interrupted"
    if part_sizes is not None and row.part_size:
        name = row.part or ""
        if name not in part_sizes:
            try:
                part_sizes[name] = os.path.getsize(os.path.join(parts_dir, name))
            except OSError:
                part_sizes[name] = -1
        if part_sizes[name] < row.part_offset + row.part_size:
            return "interrupted"  # its records are gone: a part deleted or truncated
    return "unchanged"


def make_plan(
    files: Iterable[InputFile],
    rows_by_path: Mapping[str, Sequence[TaskRow]],
    *,
    fmt: str,
    chunk_size: int,
    result_key: str,
    parts_dir: str | None,
    full: bool = False,
) -> Plan:
    """Decide, file by file, what runs and why. ``parts_dir`` is None when no records are
    written (then a done task needs no part file)."""
    plan = Plan()
    part_sizes: dict[str, int] | None = {} if parts_dir is not None else None
    for file in files:
        rows = rows_by_path.get(file.path, ())
        same_input = bool(rows) and all(
            r.size == file.size and r.mtime_ns == file.mtime_ns for r in rows
        )
        same_config = bool(rows) and all(r.result_key == result_key for r in rows)
        if rows and not same_input and same_config and not full and _only_touched(file, rows):
            plan.touched.append((file.path, file.mtime_ns))
            same_input = True
        if rows and same_input and same_config and not full:
            for row in rows:
                reason = _reuse_reason(row, part_sizes, parts_dir or "")
                (plan.skip if reason == "unchanged" else plan.run).append(row.spec(reason))
            if reason != "unchanged" and _single_whole(rows):
                plan.drop_paths.append(file.path)  # its new result replaces the row whole
            continue
        if full:
            reason = "full"
        elif not rows:
            reason = "new"
        elif not same_input:
            reason = "changed"
        else:
            reason = "config-changed"
        if rows:
            plan.drop_paths.append(file.path)
        plan.run.extend(new_tasks(file, fmt, chunk_size, result_key, reason))
    return plan.settle()


def _single_whole(rows: Sequence[TaskRow]) -> bool:
    """Whether a file's rows are one task covering the whole file."""
    if len(rows) != 1:
        return False
    (row,) = rows
    return row.offset == 0 and (row.length is None or row.length == row.size)


def _only_touched(file: InputFile, rows: Sequence[TaskRow]) -> bool:
    """A small file whose mtime moved but whose bytes are those already processed (a
    ``touch``, a copy that kept the content): checked by content, where that is cheap."""
    if len(rows) != 1:
        return False
    (row,) = rows
    if row.status != "done" or row.content is None or row.size != file.size:
        return False
    try:
        return file_digest(file.path) == row.content
    except OSError:
        return False


def _task_bytes(task: TaskSpec) -> int:
    return task.size if task.length is None else task.length


ALONE_WORK = 256 << 10
"""A task with at least this much work (bytes to process) is worth its own round trip,
part file and ledger transaction (each well under a millisecond; 256 KiB of lines take a
few): it travels alone. Smaller ones are batched."""

COMPRESSED_WORK = 4
"""Work per byte of a compressed file relative to plain text: a rough ratio (decompress,
then several times more lines than bytes read), used only to order and batch tasks."""


def _path_order(task: TaskSpec) -> tuple[bytes, int]:
    return os.fsencode(task.path), task.offset


def _task_work(task: TaskSpec) -> int:
    return _task_bytes(task) * (COMPRESSED_WORK if task.compression else 1)


def make_batches(tasks: Sequence[TaskSpec], workers: int, chunk_size: int) -> list[Batch]:
    """Group small tasks into batches; big ones travel alone, largest first.

    A task of at least ``min(chunk_size / 8, ALONE_WORK)`` work is a batch of its own.
    Smaller ones go, in path order, into batches of at most ``chunk_size`` work and of a
    count that still gives every worker about eight batches (at most 256 tasks each):
    enough to balance the load, few enough that per-batch costs vanish."""
    threshold = max(1, min(chunk_size // 8, ALONE_WORK))
    big = sorted((t for t in tasks if _task_work(t) >= threshold), key=_task_work, reverse=True)
    small = [t for t in tasks if _task_work(t) < threshold]
    if not all(_path_order(a) <= _path_order(b) for a, b in pairwise(small)):
        small.sort(key=_path_order)  # a plan is in path order already: no keys to hold
    per_batch = max(1, min(256, len(small) // (max(1, workers) * 8)))
    batches = [Batch.of((t,)) for t in big]
    group: list[TaskSpec] = []
    group_work = 0
    for task in small:
        work = _task_work(task)
        if group and (len(group) >= per_batch or group_work + work > chunk_size):
            batches.append(Batch.of(tuple(group)))
            group, group_work = [], 0
        group.append(task)
        group_work += work
    if group:
        batches.append(Batch.of(tuple(group)))
    return batches
