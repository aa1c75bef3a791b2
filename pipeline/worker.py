"""The only code that runs in worker processes: one task in, one small result out.

``init_worker`` (the Pool initializer) compiles the job once per process: the step chain,
the aggregators, the plugin folders on ``sys.path``. It also ignores SIGINT (Ctrl-C is the
parent's business: it reaches the whole process group) and starts a thread that ends the
process when the parent dies, so no orphan keeps writing into the output directory.

``run_task`` never raises: every failure becomes a ``TaskResult(ok=False)`` carrying plain
strings, so nothing unpicklable or unexpected reaches the Pool's result thread.

The compiled job lives in ``_PROCESS`` — the single per-process slot that a Pool
initializer needs to hand state to later tasks; the parent never touches it.
"""

from __future__ import annotations

import base64
import json
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from pipeline import aggregates, readers, steps
from pipeline.models import JobSpec, TaskResult, TaskSpec
from pipeline.store.parts import TMP_DIR, part_writer

PARENT_GONE_EXIT = 70


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


class FileChangedError(Exception):
    """The input was modified, truncated or replaced while the run was going."""


def check_unchanged(task: TaskSpec) -> None:
    """Fail the task if its file is not the one that was planned: its results would
    belong to neither version. The next run plans the file again."""
    st = os.stat(task.path)
    if st.st_size != task.size or st.st_mtime_ns != task.mtime_ns:
        raise FileChangedError(
            f"changed since the run started (size {task.size} -> {st.st_size}); "
            "the next run processes it again"
        )


def make_encoder() -> Callable[[Any], str]:
    """The one record encoder: compact JSON, non-ASCII kept, bytes as base64."""
    encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=_json_default)
    return encoder.encode


class TaskRunner:
    """A job compiled for one process; runs tasks one after another."""

    def __init__(self, job: JobSpec) -> None:
        for folder in reversed(job.import_dirs):
            if folder not in sys.path:
                sys.path.insert(0, folder)
        self.job = job
        self.chain = steps.compile_steps(job.steps)
        self.aggregators = aggregates.Aggregators(job.stats)
        self.encode = make_encoder()

    def run(self, task: TaskSpec) -> TaskResult:
        started = time.perf_counter()
        counters = readers.ReadCounters()
        result = TaskResult(task.task_id, ok=False, pid=os.getpid())
        position = None
        try:
            check_unchanged(task)
            state = self.aggregators.new_state()
            add = self.aggregators.add
            chain = self.chain
            encode = self.encode
            records_out = malformed = 0
            records = readers.iter_records(task, self.job.format, self.job.encoding, counters)
            if self.job.write_records:
                with part_writer(self.job.parts_dir, task.task_id) as (handle, name):
                    buffer: list[str] = []
                    for position, record in records:  # noqa: B007 - read in except
                        outs, bad = chain(record)
                        malformed += bad
                        for out in outs:
                            add(state, out)
                            buffer.append(encode(out))
                        if len(buffer) >= 4096:
                            buffer.append("")
                            handle.write(to_utf8("\n".join(buffer)))
                            records_out += len(buffer) - 1
                            buffer.clear()
                    if buffer:
                        buffer.append("")
                        handle.write(to_utf8("\n".join(buffer)))
                        records_out += len(buffer) - 1
                    result.part_size = handle.tell()
                result.part = name
            else:
                for position, record in records:  # noqa: B007 - read in except
                    outs, bad = chain(record)
                    malformed += bad
                    for out in outs:
                        add(state, out)
                        records_out += 1
            check_unchanged(task)
            result.partials = self.aggregators.partials(state)
            result.records_out = records_out
            result.malformed = malformed + counters.malformed
            result.ok = True
        except BaseException as exc:
            where = task.path
            if position is not None:
                label = readers.position_label(self.job.format, task)
                where = f"{task.path}: record at {label} {position}"
            result.error_kind = "error"
            result.error = f"{where}: {type(exc).__name__}: {exc}"
            result.traceback = traceback.format_exc()
        result.records_in = counters.records_in
        result.undecodable = counters.undecodable
        result.bytes_read = counters.bytes_read
        result.duration_s = time.perf_counter() - started
        return result


_PROCESS: dict[str, Any] = {}
ANNOUNCE_WIDTH = 80


def announcement_path(parts_dir: str, pid: int) -> str:
    return os.path.join(parts_dir, TMP_DIR, f"worker-{pid}")


class Announcer:
    """Tells the supervisor which task this worker is running, and since when, without
    any cross-process lock (a lock held by a killed worker would never be released):
    one fixed-width record rewritten in place with ``pwrite`` at each task start and end."""

    def __init__(self, parts_dir: str) -> None:
        path = announcement_path(parts_dir, os.getpid())
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        self.idle()

    def _write(self, text: str) -> None:
        os.pwrite(self._fd, text.ljust(ANNOUNCE_WIDTH).encode("ascii"), 0)

    def busy(self, task_id: str) -> None:
        self._write(f"busy {task_id} {time.time():.3f}")

    def idle(self) -> None:
        self._write("idle")


def read_announcement(parts_dir: str, pid: int) -> tuple[str, float] | None:
    """(task id, start time) of the task ``pid`` is running, or None when idle/unknown."""
    try:
        with open(announcement_path(parts_dir, pid), "rb") as handle:
            fields = handle.read(ANNOUNCE_WIDTH).decode("ascii", "replace").split()
    except OSError:
        return None
    if len(fields) != 3 or fields[0] != "busy":
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


def init_worker(job: JobSpec) -> None:
    """Pool initializer: must not raise (a raising initializer makes Pool respawn for ever).

    SIGINT and SIGTERM are ignored: Ctrl-C and a service manager's SIGTERM reach the whole
    process group, and stopping is the parent's decision (it lets tasks in flight finish,
    then SIGKILLs what is left)."""
    _ignore_stop_signals()
    watch_parent()
    try:
        _PROCESS["announcer"] = Announcer(job.parts_dir)
        _PROCESS["runner"] = TaskRunner(job)
    except BaseException as exc:
        _PROCESS["error"] = f"{type(exc).__name__}: {exc}"


def run_task(task: TaskSpec) -> TaskResult:
    """Pool entry point for one task."""
    runner = _PROCESS.get("runner")
    if runner is None:
        error = _PROCESS.get("error", "worker was not initialised")
        return TaskResult(
            task.task_id,
            ok=False,
            pid=os.getpid(),
            error_kind="error",
            error=f"{task.path}: cannot start the worker: {error}",
        )
    announcer: Announcer = _PROCESS["announcer"]
    announcer.busy(task.task_id)
    try:
        return runner.run(task)
    finally:
        announcer.idle()


def init_manager() -> None:
    """Initializer of the live-stats Manager process: same signal rules as a worker, and
    it too ends when the parent dies (a Manager server never notices that by itself)."""
    _ignore_stop_signals()
    watch_parent()
