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

from pipeline.chunking import is_splittable, split_ranges
from pipeline.models import InputFile, TaskSpec
from pipeline.store.ledger import TaskRow

REASONS = ("new", "changed", "config-changed", "failed-before", "interrupted", "full", "unchanged")


def task_id(
    path: str, offset: int, length: int | None, size: int, mtime_ns: int, result_key: str
) -> str:
    digest = hashlib.sha256()
    for part in (
        os.fsencode(path),
        str(offset).encode(),
        str(length).encode(),
        str(size).encode(),
        str(mtime_ns).encode(),
        result_key.encode(),
    ):
        digest.update(part)
        digest.update(b"\0")
    return digest.hexdigest()[:32]


@dataclass
class Plan:
    run: list[TaskSpec] = field(default_factory=list)
    skip: list[TaskSpec] = field(default_factory=list)
    drop_paths: list[str] = field(default_factory=list)  # files whose old tasks are replaced

    @property
    def run_bytes(self) -> int:
        return sum(t.size if t.length is None else t.length for t in self.run)

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


def _reuse_reason(row: TaskRow, parts_dir: str | None) -> str:
    if row.status == "failed":
        return "failed-before"
    if row.status != "done":
        return "interrupted"
    if parts_dir is not None:
        part = os.path.join(parts_dir, row.part or "")
        try:
            if row.part is None or os.path.getsize(part) != row.part_size:
                return "interrupted"
        except OSError:
            return "interrupted"
    return "unchanged"


def make_plan(
    files: Sequence[InputFile],
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
    for file in files:
        rows = rows_by_path.get(file.path, ())
        same_input = bool(rows) and all(
            r.size == file.size and r.mtime_ns == file.mtime_ns for r in rows
        )
        same_config = bool(rows) and all(r.result_key == result_key for r in rows)
        if rows and same_input and same_config and not full:
            for row in rows:
                reason = _reuse_reason(row, parts_dir)
                (plan.skip if reason == "unchanged" else plan.run).append(row.spec(reason))
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
    # Largest first: long tasks start early and the pool's tail stays short.
    plan.run.sort(key=lambda t: t.size if t.length is None else t.length, reverse=True)
    return plan
