"""Planning: discovered files x the ledger -> the tasks to run and the work to skip.

A task's identity is a hash of its file, byte range, the file's fingerprint (size and
mtime) and the result-affecting config, so identical work always has the same id and part
file name. A file keeps its task ranges until it changes: ``chunk_size`` only shapes the
tasks of new or changed files, and never invalidates results.
"""

from __future__ import annotations

import dataclasses
import hashlib
import marshal
import os
import tempfile
from collections import deque
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import IO, NamedTuple

from pipeline.chunking import is_splittable, split_ranges
from pipeline.digest import byte_at, still_holds, uses_edges
from pipeline.errors import StoreError
from pipeline.models import EACH_TASK_ANNOUNCED_UP_TO, Batch, InputFile, TaskSpec, covers_file
from pipeline.store.ledger import TaskRow

REASONS = (
    "new",
    "changed",
    "grew",
    "renamed",
    "rotated",
    "truncated",
    "config-changed",
    "failed-before",
    "interrupted",
    "full",
    "unchanged",
)


def task_id(
    path: str, offset: int, length: int | None, size: int, mtime_ns: int, result_key: str
) -> str:
    text = f"{path}\0{offset}\0{length}\0{size}\0{mtime_ns}\0{result_key}"
    return hashlib.blake2b(os.fsencode(text), digest_size=16).hexdigest()


class FileDecision(NamedTuple):
    """What planning decided for one file (one per input file: a named tuple, cheap)."""

    file: InputFile
    run: list[TaskSpec]
    skip: list[TaskSpec]
    drop: bool = False  # its earlier rows go when the plan is recorded (new ones replace them)
    touched: bool = False  # same bytes (maybe more after them): its rows take the file's
    # size and mtime
    note: str | None = None  # a growing log's: what the file is (``plan`` shows it)


@dataclass
class Plan:
    """The counts of a plan; with ``keep``, also its tasks and ledger changes as lists
    (``pipeline plan`` and tests; a run streams them instead and keeps only counts)."""

    keep: bool = True
    run: list[TaskSpec] = field(default_factory=list)
    skip: list[TaskSpec] = field(default_factory=list)
    drop_paths: list[str] = field(default_factory=list)  # files whose old tasks are replaced
    touched: list[tuple[str, int, int]] = field(default_factory=list)  # (path, size, mtime_ns)

    n_files: int = 0
    n_run: int = 0
    n_skip: int = 0
    run_bytes: int = 0
    reason_counts: dict[str, int] = field(default_factory=dict)

    def add(self, decision: FileDecision) -> None:
        self.n_files += 1
        counts = self.reason_counts
        run, skip = decision.run, decision.skip
        if len(run) == 1 and not skip:  # the usual case, in short
            task = run[0]
            counts[task.reason] = counts.get(task.reason, 0) + 1
            self.run_bytes += task.size if task.length is None else task.length
            self.n_run += 1
        else:
            for task in run:
                counts[task.reason] = counts.get(task.reason, 0) + 1
                self.run_bytes += _task_bytes(task)
            for task in skip:
                counts[task.reason] = counts.get(task.reason, 0) + 1
            self.n_run += len(run)
            self.n_skip += len(skip)
        if self.keep:
            self.run.extend(decision.run)
            self.skip.extend(decision.skip)
            if decision.drop:
                self.drop_paths.append(decision.file.path)
            if decision.touched:
                file = decision.file
                self.touched.append((file.path, file.size, file.mtime_ns))

    def add_task(self, task: TaskSpec) -> None:
        """A file planned as one task to run (``Planner.fresh_task``): ``add`` in short."""
        self.n_files += 1
        counts = self.reason_counts
        counts[task.reason] = counts.get(task.reason, 0) + 1
        self.run_bytes += task.size if task.length is None else task.length
        self.n_run += 1
        if self.keep:
            self.run.append(task)

    def reasons(self) -> dict[str, int]:
        return dict(self.reason_counts)


def new_tasks(
    file: InputFile,
    fmt: str,
    chunk_size: int,
    result_key: str,
    reason: str,
    spread: int = 1,
    start: int = 0,
    stop: int | None = None,
) -> list[TaskSpec]:
    """Cut a file into range tasks, or one whole-file task when it cannot be split;
    ``spread``: the worker count the ranges are spread over (``split_ranges``); ``start``
    and ``stop``: the bytes to process, when not all of them (a file that grew; a growing
    log up to its last line end; a compressed one, decompressed, from ``start`` on)."""
    path, size, mtime_ns, compression = file
    stop = size if stop is None else stop
    if not is_splittable(fmt, compression):
        ranges: Iterable[tuple[int, int | None]] = [(start, None)]
    elif stop - start <= chunk_size:  # the usual case, without the general cut
        ranges = [(start, stop - start)]
    else:
        ranges = [
            (start + offset, length)
            for offset, length in split_ranges(stop - start, chunk_size, spread)
        ]
    return [
        TaskSpec(
            task_id(path, offset, length, size, mtime_ns, result_key),
            path,
            offset,
            length,
            size,
            mtime_ns,
            compression,
            reason,
        )
        for offset, length in ranges
    ]


def reuse_reason(row: TaskRow, part_sizes: dict[str, int] | None, parts_dir: str) -> str:
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


@dataclass
class Planner:
    """Decides, file by file, what runs and why. ``parts_dir`` is None when no records
    are written (then a done task needs no part file)."""

    fmt: str
    chunk_size: int
    result_key: str
    parts_dir: str | None
    full: bool = False
    spread: int = 1  # the worker count a big file's ranges are spread over
    growing: bool = False  # growing logs: planned by ``rotation``, all files at once
    _part_sizes: dict[str, int] = field(default_factory=dict)

    def fresh_task(self, file: InputFile) -> TaskSpec | None:
        """The one task of a file the ledger has never seen, when it is one task (the
        usual case of a first run; ``decide`` in short); None when it is cut in ranges."""
        path, size, mtime_ns, compression = file
        splittable = is_splittable(self.fmt, compression)
        if splittable and size > self.chunk_size:
            return None
        length = size if splittable else None  # as new_tasks cuts it
        reason = "full" if self.full else "new"
        return TaskSpec(
            task_id(path, 0, length, size, mtime_ns, self.result_key),
            path,
            0,
            length,
            size,
            mtime_ns,
            compression,
            reason,
        )

    def decide(self, file: InputFile, rows: Sequence[TaskRow]) -> FileDecision:
        full, result_key = self.full, self.result_key
        if not rows:  # a file the ledger has never seen: the usual case of a first run
            reason = "full" if full else "new"
            return FileDecision(file, self._new_tasks(file, reason), [])
        same_input = bool(rows) and all(
            r.size == file.size and r.mtime_ns == file.mtime_ns for r in rows
        )
        same_config = bool(rows) and all(r.result_key == result_key for r in rows)
        touched = False
        if rows and not same_input and same_config and not full:
            if _only_touched(file, rows):
                touched = same_input = True
            elif is_splittable(self.fmt, file.compression):
                end = _grown_from(file, rows)
                if end is not None and self._parts_present(rows):
                    run = self._new_tasks(file, "grew", start=end)
                    skip = [
                        r.spec("unchanged")._replace(size=file.size, mtime_ns=file.mtime_ns)
                        for r in rows
                    ]
                    return FileDecision(file, run, skip, touched=True)
        if rows and same_input and same_config and not full:
            run: list[TaskSpec] = []
            skip: list[TaskSpec] = []
            part_sizes = self._part_sizes if self.parts_dir is not None else None
            for row in rows:
                reason = reuse_reason(row, part_sizes, self.parts_dir or "")
                spec = row.spec(reason)
                if touched:  # the file as it is now (the row takes its new mtime too)
                    spec = spec._replace(mtime_ns=file.mtime_ns)
                (skip if reason == "unchanged" else run).append(spec)
            # a whole file re-run is replaced whole by its new result (maybe in a batch row)
            drop = bool(run) and len(rows) == 1 and _covers(rows[0])
            return FileDecision(file, run, skip, drop=drop, touched=touched)
        if full:
            reason = "full"
        elif not rows:
            reason = "new"
        elif not same_input:
            reason = "changed"
        else:
            reason = "config-changed"
        return FileDecision(file, self._new_tasks(file, reason), [], drop=bool(rows))

    def _new_tasks(self, file: InputFile, reason: str, start: int = 0) -> list[TaskSpec]:
        return new_tasks(
            file, self.fmt, self.chunk_size, self.result_key, reason, self.spread, start
        )

    def _parts_present(self, rows: Sequence[TaskRow]) -> bool:
        """Whether every row's records are still in its part file (``reuse_reason``)."""
        part_sizes = self._part_sizes if self.parts_dir is not None else None
        return all(
            reuse_reason(row, part_sizes, self.parts_dir or "") == "unchanged" for row in rows
        )


def join_rows(
    files: Iterable[InputFile], rows: Iterable[TaskRow]
) -> Generator[tuple[InputFile, list[TaskRow]], None, None]:
    """Each file with its ledger rows. Both come in path-byte order (discovery sorts, the
    ledger reads in order), so one pass pairs them and nothing is held per file; rows of
    files that are no longer inputs are passed over (their results stay in the store)."""
    pending = iter(rows)
    row = next(pending, None)
    if row is None:  # no ledger rows at all (a first run): nothing to compare
        for file in files:
            yield file, []
        return
    row_key = os.fsencode(row.path)
    for file in files:
        key = os.fsencode(file.path)
        while row is not None and row_key < key:
            row = next(pending, None)
            row_key = os.fsencode(row.path) if row is not None else b""
        mine = []
        while row is not None and row_key == key:
            mine.append(row)
            row = next(pending, None)
            row_key = os.fsencode(row.path) if row is not None else b""
        yield file, mine


def make_plan(
    files: Iterable[InputFile],
    rows_by_path: Mapping[str, Sequence[TaskRow]],
    *,
    fmt: str,
    chunk_size: int,
    result_key: str,
    parts_dir: str | None,
    full: bool = False,
    spread: int = 1,
) -> Plan:
    """The whole plan as lists (see ``Planner``)."""
    planner = Planner(fmt, chunk_size, result_key, parts_dir, full, spread)
    plan = Plan()
    for file in files:
        plan.add(planner.decide(file, rows_by_path.get(file.path, ())))
    return plan


def _covers(row: TaskRow) -> bool:
    return covers_file(row.offset, row.length, row.size)


def _only_touched(file: InputFile, rows: Sequence[TaskRow]) -> bool:
    """A small file whose mtime moved but whose bytes are those already processed (a
    ``touch``, a copy that kept the content): checked by content, where that is cheap
    (all of its bytes, digested whole)."""
    if len(rows) != 1:
        return False
    (row,) = rows
    content = row.content
    if row.status != "done" or content is None or uses_edges(content):
        return False
    if row.size != file.size:
        return False
    try:
        return still_holds(file.path, 0, file.size, content)
    except OSError:
        return False


def _grown_from(file: InputFile, rows: Sequence[TaskRow]) -> int | None:
    """Where a file that only grew since its rows were done starts anew, or None: the rows
    (in offset order) are done and cover ``[0, end)`` with ``end`` short of the file's
    size, the byte before ``end`` ends a line, and the first and last rows' bytes are
    still those they digested (their edges, for a long range: the proof stays cheap)."""
    rows = sorted(rows, key=lambda row: row.offset)
    end = 0
    for row in rows:
        if row.status != "done" or row.content is None or row.length is None:
            return None
        if row.offset != end:
            return None
        end += row.length
    if not 0 < end < file.size:
        return None
    first, last = rows[0], rows[-1]
    try:
        if byte_at(file.path, end - 1) != b"\n":
            return None
        for row in (first, last) if last is not first else (first,):
            if not still_holds(file.path, row.offset, row.length or 0, row.content or ""):
                return None
    except OSError:
        return None
    return end


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


@dataclass(frozen=True)
class BatchShape:
    """How coarsely tasks are grouped, for an executor whose cost per batch is what it is:
    a task with at least ``min(chunk_size * chunks / 8, alone_work)`` of work is big;
    smaller ones go into batches of at most ``chunk_size * chunks`` of work and
    ``per_batch`` tasks, and of a count that gives every worker about ``per_worker``. Big
    tasks go alone when ``big_per_batch`` is 1, else in path order (a big file's
    consecutive ranges together), in groups of up to ``big_per_batch`` tasks and
    ``chunk_size * big_chunks`` of work that shrink as the work left shrinks (guided
    self-scheduling: the last ones are a task each, so no worker is left with a long batch
    while the others idle at the end)."""

    alone_work: int
    per_batch: int
    per_worker: int
    chunks: int = 1
    big_chunks: int = 1  # the most chunks of big tasks a batch holds
    big_per_batch: int = 1  # and the most big tasks

    def alone_threshold(self, chunk_size: int) -> int:
        return max(1, min(chunk_size * self.chunks // 8, self.alone_work))


POOL_BATCHES = BatchShape(alone_work=ALONE_WORK, per_batch=256, per_worker=8)
"""A Pool's round trip costs well under a millisecond."""

DASK_BATCHES = BatchShape(
    alone_work=1 << 20,
    per_batch=4096,
    per_worker=4,
    chunks=4,
    big_chunks=EACH_TASK_ANNOUNCED_UP_TO,
    big_per_batch=EACH_TASK_ANNOUNCED_UP_TO,  # so that each is announced (blame, timeout)
)
"""A Dask task costs 2-8 ms of overhead (scheduler, events, fetching the result): each
should carry a few hundred milliseconds of work (docs/dask-executor.md)."""

DASK_RECORD_BATCHES = dataclasses.replace(DASK_BATCHES, big_chunks=DASK_BATCHES.chunks)
"""When a job's records come back with its results, a batch's are in the client's memory
at once: no more than a few chunks' worth, whatever the input."""


def make_batches(
    tasks: Sequence[TaskSpec], workers: int, chunk_size: int, shape: BatchShape | None = None
) -> list[Batch]:
    """``Batcher`` over a list of tasks (put in path order first if they are not)."""
    shape = shape or POOL_BATCHES
    threshold = shape.alone_threshold(chunk_size)
    small = [t for t in tasks if _task_work(t) < threshold]
    if not all(_path_order(a) <= _path_order(b) for a, b in pairwise(small)):
        small.sort(key=_path_order)  # a plan is in path order already: no keys to hold
    batcher = Batcher(workers, chunk_size, shape=shape)
    for task in (*(t for t in tasks if _task_work(t) >= threshold), *small):
        batcher.add(task)
    return list(batcher.batches())


class Batcher:
    """Groups small tasks into batches as they are planned; big ones travel alone,
    largest first.

    With the Pool's ``shape``, a task of at least ``min(chunk_size / 8, ALONE_WORK)`` work
    is a batch of its own. Smaller ones go, in the order they come (path order), into
    batches of at most ``chunk_size`` work and of a count that still gives every worker
    about eight batches (at most 256 tasks each): enough to balance the load, few enough
    that per-batch costs vanish. The count needs the number of small tasks, so the first
    ones wait until that is known or large enough not to matter.

    Batches can be taken while tasks are still being added (``take``): the run starts
    executing while it plans. Small batches come out in the order they were made: the
    first ones (``SPOOL_AFTER`` tasks) from memory, later ones from a spool file (with
    ``spool_dir``) once a few are waiting, so a plan of a million files is never a million
    objects in memory. Big tasks are held, to be sorted, and come out first once the plan
    is over (``finish``)."""

    SPOOL_AFTER = 4096  # tasks of the first batches, kept in memory (about 1 MB)

    def __init__(
        self,
        workers: int,
        chunk_size: int,
        spool_dir: str | None = None,
        shape: BatchShape | None = None,
    ) -> None:
        self.shape = shape = shape or POOL_BATCHES
        self.chunk_size = chunk_size
        self.max_work = chunk_size * shape.chunks
        self.workers = max(1, workers)
        self.threshold = shape.alone_threshold(chunk_size)
        self.big: list[TaskSpec] = []
        self._big_batches: list[Batch] = []  # made of ``big`` when the plan is finished
        self._waiting: list[TaskSpec] | None = []  # small tasks before the count is known
        self._enough = shape.per_batch * self.workers * shape.per_worker
        self._per_batch = shape.per_batch
        self._group: list[TaskSpec] = []
        self._group_work = 0
        self._head: deque[Batch] = deque()  # the first batches, in memory
        self._head_tasks = 0
        self._spooled: deque[Batch] = deque()  # read back from the spool, not yet taken
        self._ready: deque[Batch] = deque()  # made after the head, not (yet) spooled
        self._spool_dir = spool_dir
        self._spool: IO[bytes] | None = None
        self._spool_read = 0  # offset of the next blob to read back
        self._spool_end = 0  # offset where the next blob is written
        self.finished = False

    def add(self, task: TaskSpec) -> None:
        work = task.size if task.length is None else task.length  # _task_work, inline
        if task.compression:
            work *= COMPRESSED_WORK
        if work >= self.threshold:
            self.big.append(task)
        elif self._waiting is None:
            self._grouped(task, work)
        else:
            self._waiting.append(task)
            if len(self._waiting) >= self._enough:  # the count is large: 256 a batch
                self._release(self.shape.per_batch)

    def _release(self, per_batch: int) -> None:
        waiting, self._waiting = self._waiting or [], None
        self._per_batch = per_batch
        for task in waiting:
            self._grouped(task, _task_work(task))

    def _grouped(self, task: TaskSpec, work: int) -> None:
        group = self._group
        if group and (len(group) >= self._per_batch or self._group_work + work > self.max_work):
            self._emit()
            group = self._group
        group.append(task)
        self._group_work += work

    def _emit(self) -> None:
        batch = Batch.of(tuple(self._group))
        self._group, self._group_work = [], 0
        if self._spool_dir is None or self._head_tasks < self.SPOOL_AFTER:
            self._head.append(batch)  # the first batches out: kept in memory
            self._head_tasks += len(batch.tasks)
            return
        self._ready.append(batch)
        if len(self._ready) >= SPOOL_CHUNK:
            self._to_spool()

    def _to_spool(self) -> None:
        """The waiting batches go to the spool as one length-prefixed marshal blob of
        plain tuples (three times faster than pickling the objects; the file is this
        process's own, written and read back by it alone)."""
        blob = marshal.dumps([batch.fields() for batch in self._ready])
        try:
            if self._spool is None:
                self._spool = tempfile.TemporaryFile(dir=self._spool_dir, prefix=".spool-")  # noqa: SIM115 - read back by take()
            self._spool.seek(self._spool_end)
            self._spool.write(len(blob).to_bytes(8, "little") + blob)
            self._spool_end = self._spool.tell()
        except OSError as exc:
            raise StoreError(
                f"{self._spool_dir}: cannot write the plan's spool file: {exc}"
            ) from exc
        self._ready.clear()

    def _from_spool(self) -> bool:
        """Read the next blob back into ``_spooled``; False when none is left."""
        if self._spool is None or self._spool_read >= self._spool_end:
            return False
        self._spool.seek(self._spool_read)
        size = int.from_bytes(self._spool.read(8), "little")
        blob = self._spool.read(size)
        self._spool_read = self._spool.tell()
        for batch_id, tasks in marshal.loads(blob):
            self._spooled.append(Batch.from_fields(batch_id, tasks))
        return True

    def finish(self) -> None:
        """Every task is added: the last small batches are made, big tasks sorted."""
        if self.finished:
            return
        self.finished = True
        if self._waiting is not None:
            per_worker = self.workers * self.shape.per_worker
            self._release(max(1, min(self.shape.per_batch, len(self._waiting) // per_worker)))
        if self._group:
            self._emit()
        groups = self._big_groups()
        groups.sort(key=lambda group: sum(map(_task_work, group)), reverse=True)  # largest first
        self._big_batches = [Batch.of(group) for group in reversed(groups)]  # taken from the end

    def _big_groups(self) -> list[tuple[TaskSpec, ...]]:
        """Big tasks alone, or in path order in groups of at most a share of the work
        left (``BatchShape``): a chunk at least, ``big_chunks`` and ``big_per_batch``
        at most."""
        if self.shape.big_per_batch == 1:
            return [(task,) for task in self.big]
        cap = self.chunk_size * self.shape.big_chunks
        most = self.shape.big_per_batch
        share = 2 * self.workers  # a group: at most a half of each worker's share left
        left = sum(map(_task_work, self.big))
        groups: list[tuple[TaskSpec, ...]] = []
        group: list[TaskSpec] = []
        work = 0
        for task in sorted(self.big, key=_path_order):
            size = _task_work(task)
            target = min(cap, max(self.chunk_size, left // share))
            if group and (len(group) >= most or work + size > target):
                groups.append(tuple(group))
                left -= work
                group, work = [], 0
            group.append(task)
            work += size
        if group:
            groups.append(tuple(group))
        return groups

    def take(self) -> Batch | None:
        """The next batch that can go now, or None: the big tasks (largest first) once
        the plan is finished, then the small batches in the order they were made."""
        if self.finished and self._big_batches:
            return self._big_batches.pop()
        if self._head:
            return self._head.popleft()
        if self._spooled or self._from_spool():
            return self._spooled.popleft()
        if self._ready:
            return self._ready.popleft()
        return None

    def batches(self) -> Iterator[Batch]:
        """Every batch, once all tasks are added (``finish``, then ``take`` until None)."""
        self.finish()
        while (batch := self.take()) is not None:
            yield batch

    def close(self) -> None:
        if self._spool is not None:
            self._spool.close()
            self._spool = None


SPOOL_CHUNK = 16  # batches written to the spool at a time
