"""The code that runs batches in worker processes: a batch of tasks in, small results out.

``execute`` is the one entry point of every executor (the Pool's ``pool_run``, the
serial executor, the Dask worker's ``remote.run_remote``): a job and a batch in, a
``BatchOutput`` out — every task's result and, when the job says its records travel back
(``JobSpec.records_back``: the output store is not on this machine), the batch's part
bytes. The job is compiled once per process (the step chain, the aggregators, the plugin
folders on ``sys.path``) and kept for the next batches.

``init_worker`` (the Pool initializer) compiles the job up front. It also ignores SIGINT
(Ctrl-C is the parent's business: it reaches the whole process group) and starts a thread
that ends the process when the parent dies, so no orphan keeps writing into the output
directory.

``execute`` never raises: every failure becomes a ``TaskResult(ok=False)`` carrying plain
strings, so nothing unpicklable or unexpected reaches the Pool's result thread.

Compiled jobs live in ``_PROCESS`` — the single per-process slot that a Pool initializer
(or a Dask worker's earlier task) needs to hand state to later tasks.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import logging
import multiprocessing
import multiprocessing.connection
import os
import pickle
import signal
import socket
import sys
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from typing import Any, BinaryIO, NamedTuple

from pipeline import aggregates, fastpath, readers, steps
from pipeline.digest import range_digest, reads_small_file
from pipeline.heap import keep_freed_heap
from pipeline.models import (
    MALFORMED_SAMPLE_SIZE,
    Batch,
    JobSpec,
    Rejected,
    TaskResult,
    TaskSpec,
)
from pipeline.readers import check_unchanged
from pipeline.store.packing import pack_tasks, slim_results
from pipeline.store.parts import TMP_DIR, part_writer

PARENT_GONE_EXIT = 70
log = logging.getLogger(__name__)
OnTask = Callable[[int], None]  # told the index of each task of a batch as it starts


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    return str(value)


def to_utf8(text: str) -> bytes:
    """UTF-8 bytes of JSON text. A lone surrogate (a file name that is not valid UTF-8,
    decoded by ``os.fsdecode``) can only sit inside a JSON string, where backslashreplace
    writes it as the JSON escape ``\\udcXX``: the output stays valid UTF-8 and valid JSON."""
    return text.encode("utf-8", "backslashreplace")


def make_encoder() -> Callable[[Any], str]:
    """The one record encoder: compact JSON, non-ASCII kept, bytes as base64."""
    encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=_json_default)
    return encoder.encode


class TaskRunner:
    """A job compiled for one process; runs batches of tasks one after another."""

    def __init__(self, job: JobSpec) -> None:
        for folder in reversed(job.import_dirs):
            if folder not in sys.path:
                sys.path.insert(0, folder)
        self.job = job
        self.pid = os.getpid()  # built in the process that runs the tasks
        self.host = socket.gethostname()
        self.reasons: list[str] = []  # the chain's reasons for the record just rejected
        # The chain cut at its batch calls; without one, ``head`` is the whole chain.
        self.stages = steps.compile_stages(job.steps, self.reasons)
        self.batch_records = steps.BATCH_RECORDS
        self.aggregators = aggregates.Aggregators(job.stats)
        self.extremes = any(spec["kind"] in ("min", "max") for spec in job.stats.values())
        self.encode = make_encoder()
        stat_fields = {
            field
            for spec in job.stats.values()
            for field in (spec.get("field"), *(spec.get("where") or {}))
            if field
        }
        self.block_size = readers.BLOCK_SIZE
        self.declined_blocks = 0  # blocks the fast path handed to the generic one
        self.fast = fastpath.LinePlan.compile(job.format, job.steps, job.write_records, stat_fields)

    def run_batch(self, batch: Batch) -> list[TaskResult]:
        """Every task of the batch, records into one part file. A task that fails leaves
        nothing in the part; the others are unaffected. The done whole files of a batch
        of several are packed for their ledger row (``TaskResult.packed``, on the first)."""
        return self.execute(batch).results

    def execute(self, batch: Batch, on_task: OnTask | None = None) -> BatchOutput:
        """``run_batch``, with the part's bytes when they travel back; ``on_task(i)`` is
        called as the batch's ``i``-th task starts."""
        results, part = self._run_batch(batch, on_task)
        done = [(task, r) for task, r in zip(batch.tasks, results, strict=True) if r.ok]
        # Growing logs are never packed: their rows move with renames (``rotation``).
        if len(done) > 1 and not self.job.growing and all(t.covers_file for t, _ in done):
            try:
                merged = aggregates.merge_many(self.job.stats, [r.partials for _, r in done])
                done[0][1].packed = pack_tasks(done, merged, extremes=self.extremes)
            except Exception:  # unpacked, they are committed one row each
                log.exception("%s: cannot pack the batch's results", batch.describe())
        return BatchOutput(batch.batch_id, results, part)

    def _part(self, batch: Batch) -> contextlib.AbstractContextManager[BinaryIO]:
        if self.job.records_back:
            return contextlib.nullcontext(io.BytesIO())
        return part_writer(self.job.parts_dir, batch.part_name)

    def _run_batch(
        self, batch: Batch, on_task: OnTask | None
    ) -> tuple[list[TaskResult], bytes | None]:
        if not self.job.write_records:
            return [self._run(task, None, i, on_task) for i, task in enumerate(batch.tasks)], None
        results: list[TaskResult] = []
        part = None
        try:
            with self._part(batch) as handle:
                for i, task in enumerate(batch.tasks):
                    results.append(self._run(task, handle, i, on_task))
                if handle.tell() == 0:
                    raise _NothingToPublish
                if isinstance(handle, io.BytesIO):
                    part = handle.getvalue()
        except _NothingToPublish:
            return results, None  # no records at all: no part file
        except Exception as exc:  # the part could not be published (a full disk...)
            failed = [
                _failed(task, f"{task.path}: cannot write {batch.part_name}: {exc}")
                for task in batch.tasks
            ]
            return failed, None
        for result in results:
            if result.ok:
                result.part = batch.part_name
        return results, part

    def run(self, task: TaskSpec) -> TaskResult:
        """One task on its own (a batch of one)."""
        return self.run_batch(Batch.of((task,)))[0]

    def _run(
        self,
        task: TaskSpec,
        handle: BinaryIO | None,
        index: int = 0,
        on_task: OnTask | None = None,
    ) -> TaskResult:
        if on_task is not None:
            on_task(index)
        started = time.perf_counter()
        counters = readers.ReadCounters(may_grow=self.job.growing)
        result = TaskResult(task.task_id, ok=False, pid=self.pid, host=self.host)
        result.started = time.time()
        sink = _Sink(self, handle)
        try:
            if self.fast is not None:
                self._run_fast(task, counters, sink)
            elif self.job.format == "lines" and not self.stages.batches:
                self._run_lines(task, counters, sink)
            else:
                sink.consume(
                    readers.iter_records(task, self.job.format, self.job.encoding, counters)
                )
            sink.flush()
            result.content = counters.content
            if counters.content is None:  # read as a stream
                if task.length is not None and task.compression is None:
                    # a range of lines: what the next run checks
                    result.content = range_digest(task.path, task.offset, task.length)
                # the file as it was opened, and as it is now, after reading and digesting
                grows = self.job.growing
                if counters.opened is not None:
                    check_unchanged(task, counters.opened, may_grow=grows)
                check_unchanged(task, may_grow=grows)
            # A small file read whole needs no second look: one read took one version of
            # its bytes, of the planned length; ``content`` names that version, and the
            # next run, seeing a new mtime, compares it with the file as it is then.
            result.partials = self.aggregators.partials(sink.state)
            result.records_out = sink.records_out
            result.malformed = sink.malformed + counters.malformed
            if sink.rejected or counters.rejected:
                rejected = sorted(sink.rejected + counters.rejected)
                result.rejected = tuple(rejected[:MALFORMED_SAMPLE_SIZE])
            if handle is not None:
                result.part_offset = sink.start
                result.part_size = handle.tell() - sink.start
            result.ok = True
        except BaseException as exc:  # SystemExit from a plugin is a task failure too
            if handle is not None:  # nothing of a failed task stays in the part
                handle.seek(sink.start)
                handle.truncate()
            where = task.path
            if sink.position is not None and self.job.format != "bytes":
                where = readers.record_where(self.job.format, task, sink.position)
                result.error_at = sink.position
            result.error_kind = "error"
            result.error = f"{where}: {type(exc).__name__}: {exc}"
            result.traceback = traceback.format_exc()
        result.records_in = counters.records_in
        result.undecodable = counters.undecodable
        result.bytes_read = counters.bytes_read
        result.duration_s = time.perf_counter() - started
        return result

    def _run_fast(self, task: TaskSpec, counters: readers.ReadCounters, sink: _Sink) -> None:
        """Blocks of lines through the columnar plan; a block it declines goes line by
        line through the generic chain (same results, only slower)."""
        assert self.fast is not None
        encoding = self.job.encoding
        for start, data in self._line_blocks(task, counters):
            room = MALFORMED_SAMPLE_SIZE - len(sink.rejected)
            try:
                text = data.decode(encoding)
                columns, rows, lines, malformed, rejected = self.fast.run_block(text, room > 0)
            except (UnicodeDecodeError, fastpath.Declined):
                self.declined_blocks += 1
                sink.consume(readers.block_records(start, data, encoding, counters))
                continue
            counters.records_in += lines
            sink.malformed += malformed
            if rejected:
                sink.rejected += _at_offsets(start, data, rejected[:room])
            sink.records_out += rows
            self.aggregators.add_columns(sink.state, columns, rows)
            if sink.handle is not None and rows:
                encode = self.encode
                sink.write([encode(r) for r in fastpath.records_of(columns, rows)])

    def _run_lines(self, task: TaskSpec, counters: readers.ReadCounters, sink: _Sink) -> None:
        """A ``lines`` task on the generic path, a block at a time: each block's lines
        through the chain in one loop (``_Sink.consume_lines``); a block that must be
        decoded line by line goes record by record."""
        encoding = self.job.encoding
        for start, data in self._line_blocks(task, counters):
            lines = readers.block_lines(data, encoding)
            if lines is None:
                sink.consume(readers.records_line_by_line(start, data, encoding, counters))
            else:
                sink.consume_lines(start, data, lines, counters)

    def _line_blocks(
        self, task: TaskSpec, counters: readers.ReadCounters
    ) -> Iterable[tuple[int, bytes]]:
        """``(start, data)``: the runs of whole lines the task owns; a small file is read
        whole, in one block."""
        if task.compression is None and reads_small_file(task):
            data = readers.read_small_file(task, counters)
            return ((0, data),) if data else ()
        return readers.iter_line_blocks(task, counters, block_size=self.block_size)


def _at_offsets(start: int, data: bytes, rejected: list[tuple[int, str]]) -> list[Rejected]:
    """Rejected lines of a block, from their index in the block to their byte offset in
    the (decompressed) file: what the generic path calls their position."""
    starts = readers.line_starts(start, data, rejected[-1][0] + 1)
    return [(starts[i], reason) for i, reason in rejected]


# Records out of the chain are added to the stats this many at a time: enough to pay the
# per-stat set-up many times over, few enough to stay in the CPU's cache.
STATS_EVERY = 1024


class _Sink:
    """Where one task's records go: the step chain, the stats, the part file. The stats
    see the records as they leave the chain, a list at a time; a plugin must hand over a
    record it does not change afterwards (its argument, or a new dict)."""

    def __init__(self, runner: TaskRunner, handle: BinaryIO | None) -> None:
        self.runner = runner
        self.handle = handle
        self.start = handle.tell() if handle is not None else 0
        self.state = runner.aggregators.new_state()
        self.records_out = 0
        self.malformed = 0
        self.position: int | None = None  # of the record being processed, for errors
        self.rejected: list[Rejected] = []  # the first malformed records, in file order
        self._buffer: list[str] = []
        runner.reasons.clear()  # what an earlier, failed task's chain may have left

    def consume(self, records: Iterator[tuple[int, dict[str, Any]]]) -> None:
        """Records one by one through the generic chain."""
        if self.runner.stages.batches:
            self._consume_batches(records)
            return
        feed = self.runner.stages.head
        encode = self.runner.encode
        buffer = self._buffer
        writing = self.handle is not None
        outs: list[dict] = []  # records out of the chain whose stats are not taken yet
        position = None
        try:
            for position, record in records:
                done = len(outs)
                bad = feed(record, outs)
                if bad:
                    self._reject(position, bad)
                if writing and len(outs) > done:
                    buffer.extend(map(encode, outs[done:]))
                    if len(buffer) >= 4096:
                        self.flush()
                if len(outs) >= STATS_EVERY:
                    self._add_stats(outs)
                    outs = []
        except BaseException:
            self.position = position  # the record the error is about, for its message
            raise
        self._add_stats(outs)

    def consume_lines(
        self, start: int, data: bytes, lines: list[str], counters: readers.ReadCounters
    ) -> None:
        """A block's lines (``readers.block_lines``) through the chain, ``STATS_EVERY`` at
        a time: what ``consume`` does with the block's records, in one loop."""
        feed_lines = self.runner.stages.head_lines
        position = readers.LinePositions(start, data, lines, self.runner.job.encoding)
        base = 0  # the index in the block of the first line of the slice being fed

        def on_bad(i: int, bad: int) -> None:
            sampled = len(self.rejected) < MALFORMED_SAMPLE_SIZE  # else no position is kept
            self._reject(position(base + i) if sampled else start, bad)

        failed_at: list[int] = []
        encode = self.runner.encode
        try:
            for base in range(0, len(lines), STATS_EVERY):
                outs: list[dict] = []
                feed_lines(lines[base : base + STATS_EVERY], outs, on_bad, failed_at)
                if self.handle is not None and outs:
                    self.write(list(map(encode, outs)))
                self._add_stats(outs)
        except BaseException:
            # the line a step raised on, or the slice's last (its stats or output failed)
            at = base + failed_at[0] if failed_at else min(base + STATS_EVERY, len(lines)) - 1
            self.position = position(at)
            counters.records_in += at + 1
            raise
        counters.records_in += len(lines)

    def _add_stats(self, outs: list[dict]) -> None:
        """The stats of records out of the chain, a list at a time (``add_records``:
        stat by stat, a fraction of the cost of record by record)."""
        self.runner.aggregators.add_records(self.state, outs)
        self.records_out += len(outs)

    def _consume_batches(self, records: Iterator[tuple[int, dict[str, Any]]]) -> None:
        """Records through a chain with batch calls: the steps before the first one record
        by record, then ``batch_records`` of their records at a time through the rest."""
        stages = self.runner.stages
        head = stages.head if stages.head_steps else None
        size = self.runner.batch_records
        batch: list[dict] = []
        first = 0  # the position of the batch's first record, which its errors name
        for position, record in records:
            if not batch:
                first = position  # until a record reaches the batch
            if head is None:
                batch.append(record)
            else:
                self.position = position
                bad = head(record, batch)
                if bad:
                    self._reject(position, bad)
            if len(batch) >= size:
                self._through_batch_calls(batch, first)
                batch = []
        if batch:
            self._through_batch_calls(batch, first)
        self.position = None

    def _through_batch_calls(self, batch: list[dict], first: int) -> None:
        """One batch through the batch calls and the steps after each, then out. Which
        record a later step rejects is not known: it is counted at the batch's first."""
        self.position = first
        for stage in self.runner.stages.batches:
            batch, bad = stage.call(batch)
            if bad:
                self._reject(first, bad)
            if stage.after is not None:
                feed = stage.after
                outs: list[dict] = []
                for record in batch:
                    bad = feed(record, outs)
                    if bad:
                        self._reject(first, bad)
                batch = outs
            if not batch:
                break  # a later batch function is never called with no records
        self._add_stats(batch)
        if self.handle is not None:
            self.write(list(map(self.runner.encode, batch)))
        self.position = None

    def _reject(self, position: int, bad: int) -> None:
        """Count a record's malformed outputs; keep why while the sample has room."""
        self.malformed += bad
        reasons = self.runner.reasons
        room = MALFORMED_SAMPLE_SIZE - len(self.rejected)
        if room > 0:
            self.rejected += [(position, reason) for reason in reasons[:room]]
        reasons.clear()

    def write(self, lines: list[str]) -> None:
        self._buffer.extend(lines)
        if len(self._buffer) >= 4096:
            self.flush()

    def flush(self) -> None:
        if self._buffer and self.handle is not None:
            self._buffer.append("")
            self.handle.write(to_utf8("\n".join(self._buffer)))
        self._buffer.clear()


class _NothingToPublish(Exception):
    """Every task of the batch failed or produced no record."""


def _failed(task: TaskSpec, message: str) -> TaskResult:
    return TaskResult(task.task_id, ok=False, pid=os.getpid(), error_kind="error", error=message)


_PROCESS: dict[str, Any] = {}
ANNOUNCE_WIDTH = 256


def announcement_path(parts_dir: str, pid: int) -> str:
    return os.path.join(parts_dir, TMP_DIR, f"worker-{pid}")


def write_announcement(fd: int, fields: Iterable[object]) -> None:
    """A worker's announcement: one fixed-width record rewritten in place with ``pwrite``
    (a reader never sees half of one), without any cross-process lock (a lock held by a
    killed worker would never be released). A Pool worker's, and a local Dask worker's."""
    text = " ".join(map(str, fields)).ljust(ANNOUNCE_WIDTH)
    os.pwrite(fd, text.encode("utf-8", "replace")[:ANNOUNCE_WIDTH], 0)


def read_announcement_fields(path: str) -> list[str] | None:
    """The fields of the record at ``path`` (``write_announcement``), or None."""
    try:
        with open(path, "rb") as handle:
            return handle.read(ANNOUNCE_WIDTH).decode("utf-8", "replace").split()
    except OSError:
        return None


class Announcer:
    """Tells the supervisor which task this Pool worker is running, and since when: its
    announcement (``write_announcement``) rewritten at each task start and end."""

    def __init__(self, parts_dir: str) -> None:
        path = announcement_path(parts_dir, os.getpid())
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        self.idle()

    def busy(self, task_id: str) -> None:
        write_announcement(self._fd, ("busy", task_id, f"{time.time():.3f}"))

    def idle(self) -> None:
        write_announcement(self._fd, ("idle",))


def read_announcement(parts_dir: str, pid: int) -> tuple[str, float] | None:
    """(task id, start time) of the task ``pid`` is running, or None when idle/unknown."""
    fields = read_announcement_fields(announcement_path(parts_dir, pid))
    if fields is None or len(fields) != 3 or fields[0] != "busy":
        return None
    try:
        return fields[1], float(fields[2])
    except ValueError:
        return None


def _exit_when_parent_dies() -> None:
    parent = multiprocessing.parent_process()
    if parent is None:
        return
    multiprocessing.connection.wait([parent.sentinel])
    os._exit(PARENT_GONE_EXIT)


def _ignore_stop_signals() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def watch_parent() -> None:
    """End this process as soon as its parent is gone (works under every start method)."""
    threading.Thread(target=_exit_when_parent_dies, name="parent-watch", daemon=True).start()


class BatchOutput(NamedTuple):
    """What a worker hands back for a batch: every task's result (slimmed: see
    ``packing.slim_results``) and, with ``JobSpec.records_back``, the part's bytes."""

    batch_id: str
    results: list[TaskResult]
    part: bytes | None = None


COMPILED_KEPT = 4  # compiled jobs a process keeps (a Dask worker may serve several jobs)


def job_key(job: JobSpec) -> bytes:
    """Equal for equal jobs: the cache key of their compiled form."""
    return pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL)


def compiled(job: JobSpec) -> TaskRunner:
    """This process's compiled form of ``job``, built on first use (plugins imported,
    steps compiled) and kept for later batches; raises what compiling raised."""
    last = _PROCESS.get("last")
    if last is not None and last[0] is job:  # a Pool worker's every batch: no key to make
        return last[1]
    cache: OrderedDict[bytes, TaskRunner | str] = _PROCESS.setdefault("compiled", OrderedDict())
    key = job_key(job)
    runner = cache.get(key)
    if runner is None:
        try:
            runner = TaskRunner(job)
        except BaseException as exc:  # a plugin's import may raise anything
            runner = f"{type(exc).__name__}: {exc}"
        cache[key] = runner
        while len(cache) > COMPILED_KEPT:
            cache.popitem(last=False)
    else:
        cache.move_to_end(key)
    if isinstance(runner, str):
        raise WorkerStartError(runner)
    _PROCESS["last"] = (job, runner)
    return runner


class WorkerStartError(Exception):
    """The job cannot be compiled in this process (a plugin fails to import...)."""


def failed_output(batch: Batch, message: str) -> BatchOutput:
    """Every task of ``batch`` failed with ``message`` (the worker cannot run it)."""
    return BatchOutput(batch.batch_id, [_failed(t, f"{t.path}: {message}") for t in batch.tasks])


def execute(job: JobSpec, batch: Batch, on_task: OnTask | None = None) -> BatchOutput:
    """The one entry point: a batch of ``job`` in, its results (and part bytes) out.
    Never raises: a job that cannot be compiled fails every task of the batch."""
    try:
        runner = compiled(job)
    except WorkerStartError as exc:
        return failed_output(batch, f"cannot start the worker: {exc}")
    output = runner.execute(batch, on_task)
    return output._replace(results=slim_results(output.results))


def init_worker(job: JobSpec) -> None:
    """Pool initializer: must not raise (a raising initializer makes Pool respawn for ever).

    SIGINT and SIGTERM are ignored: Ctrl-C and a service manager's SIGTERM reach the whole
    process group, and stopping is the parent's decision (it lets tasks in flight finish,
    then SIGKILLs what is left)."""
    _ignore_stop_signals()
    watch_parent()
    keep_freed_heap()
    _PROCESS["job"] = job
    with contextlib.suppress(WorkerStartError):  # execute reports it, batch by batch
        compiled(job)
    try:
        _PROCESS["announcer"] = Announcer(job.parts_dir)
    except OSError as exc:
        _PROCESS["error"] = f"{type(exc).__name__}: {exc}"


def pool_run(batch: Batch) -> BatchOutput:
    """Pool entry point: one batch of the job the initializer was given."""
    job: JobSpec | None = _PROCESS.get("job")
    announcer: Announcer | None = _PROCESS.get("announcer")
    if job is None or announcer is None:
        error = _PROCESS.get("error", "worker was not initialised")
        return failed_output(batch, f"cannot start the worker: {error}")
    announcer.busy(batch.batch_id)
    try:
        return execute(job, batch)
    finally:
        announcer.idle()


def init_manager() -> None:
    """Initializer of the live-stats Manager process: same signal rules as a worker, and
    it too ends when the parent dies (a Manager server never notices that by itself)."""
    _ignore_stop_signals()
    watch_parent()
