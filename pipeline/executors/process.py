"""Tasks on a ``multiprocessing.Pool``, inside a supervisor loop that never blocks
without a deadline.

Data flow (the callback runs on the Pool's result thread; everything else on ours)::

    batches ──> Schedule (window of 2 x workers; retries and requeued batches first)
       │ async: apply_async(pool_run, callback)   │ imap: imap_unordered(feed)
       ▼                                          ▼
    worker processes: announce(batch) -> pool_run(Batch) -> BatchOutput (id, [TaskResult])
       │ callback / error_callback: results.put   │ it.next(timeout=tick)
       ▼                                          ▼
    supervisor loop (main thread): on_outcome or retry; every tick: _Watch.inspect()

The stdlib Pool loses a task whose worker dies (its result never comes), and a worker
killed while holding a queue lock can wedge the whole pool. So the supervisor watches the
pool's processes: when one dies, or runs a task past ``timeout`` (then it is killed), the
whole pool is abandoned (``terminate`` in a daemon thread, survivors killed by pid), the
batch that worker had announced is charged one attempt (or its tasks are recorded as
``crashed`` / ``timeout`` once its retries are spent), and every other batch in flight is
resubmitted to a fresh pool with its attempt count unchanged.

Callbacks only put a tuple on a ``queue.SimpleQueue``: they cannot raise, so they can
never kill the Pool's result thread.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.pool
import queue
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pipeline import worker
from pipeline.errors import ExecutionError
from pipeline.executors.base import (
    TICK_S,
    WINDOW_PER_WORKER,
    Background,
    ExecutorOptions,
    Fault,
    Idle,
    OnOutcome,
    Schedule,
    StopCheck,
    WorkerActivity,
    describe_exit,
    error_results,
)
from pipeline.executors.shield import get_context, helpers_shielded, stop_signals_blocked
from pipeline.models import Batch

log = logging.getLogger(__name__)

JOIN_GRACE_S = 5.0
MAX_BARREN_POOLS = 3  # pools in a row that died before finishing any task


def _pool_processes(pool: multiprocessing.pool.Pool) -> list[Any]:
    return list(getattr(pool, "_pool", []))


def abandon_pool(pool: multiprocessing.pool.Pool, grace: float = 0.2) -> None:
    """Stop a pool for sure. ``terminate()`` can block for ever (a worker killed while
    holding a queue lock; workers ignore SIGTERM), so it runs in a daemon thread — where it
    first stops the pool from spawning replacements — and every worker is then SIGKILLed."""
    processes = _pool_processes(pool)
    stopper = threading.Thread(target=pool.terminate, name="abandon-pool", daemon=True)
    with stop_signals_blocked():
        stopper.start()
    stopper.join(grace)
    for process in [*processes, *_pool_processes(pool)]:
        if process.exitcode is None:
            with contextlib.suppress(OSError):
                process.kill()
    for process in processes:
        process.join(2.0)
    stopper.join(grace)


def close_pool(pool: multiprocessing.pool.Pool, grace: float = JOIN_GRACE_S) -> None:
    """Orderly end of a drained pool, bounded in time."""
    pool.close()
    joiner = threading.Thread(target=pool.join, name="join-pool", daemon=True)
    with stop_signals_blocked():
        joiner.start()
    joiner.join(grace)
    if joiner.is_alive():
        log.warning("worker processes did not exit within %.0fs; killing them", grace)
        abandon_pool(pool)


@dataclass(frozen=True)
class PoolFault:
    """Why a pool must be abandoned, and which batch (if any) is to blame."""

    batch_id: str | None
    fault: Fault


class _Watch:
    """The supervisor's eyes on one pool: worker deaths and overdue tasks."""

    def __init__(
        self, pool: multiprocessing.pool.Pool, parts_dir: str, timeout: float | None
    ) -> None:
        self.pool = pool
        self.parts_dir = parts_dir
        self.timeout = timeout
        # Every worker exists once Pool() returns; a pid that disappears later has died.
        self.known: dict[int, Any] = {p.pid: p for p in _pool_processes(pool) if p.pid}
        self.next_check = 0.0
        self.host = socket.gethostname()  # the workers' (as they stamp their results)

    def running(self) -> dict[str, tuple[float, int]]:
        """The batches the live workers have announced: batch id -> (since, pid)."""
        found = {}
        for pid, process in self.known.items():
            announced = worker.read_announcement(self.parts_dir, pid)
            if announced is not None and process.exitcode is None:
                found[announced[0]] = (announced[1], pid)
        return found

    def inspect(self) -> PoolFault | None:
        now = time.monotonic()
        if now < self.next_check:
            return None
        self.next_check = now + TICK_S
        current = _pool_processes(self.pool)
        for process in current:
            if process.pid is not None:
                self.known.setdefault(process.pid, process)
        alive_pids = {p.pid for p in current}
        for pid, process in list(self.known.items()):
            if pid in alive_pids and process.exitcode is None:
                continue
            # Gone: the Pool already reaped it, or it has exited and is about to be.
            del self.known[pid]
            announced = worker.read_announcement(self.parts_dir, pid)
            message = f"the worker process (pid {pid}) {describe_exit(process.exitcode)}"
            if not announced:
                return PoolFault(None, Fault("crashed", message))
            return PoolFault(announced[0], Fault("crashed", message, announced[1], self.host, pid))
        if self.timeout is not None:
            wall = time.time()
            for pid, process in self.known.items():
                announced = worker.read_announcement(self.parts_dir, pid)
                if announced and wall - announced[1] > self.timeout:
                    with contextlib.suppress(OSError):
                        process.kill()
                    return PoolFault(
                        announced[0],
                        Fault(
                            "timeout",
                            f"task ran longer than the timeout ({self.timeout:g}s); "
                            f"its worker (pid {pid}) was killed",
                            announced[1],
                            self.host,
                            pid,
                        ),
                    )
        return None


class QuietPool(multiprocessing.pool.Pool):
    """A ``Pool`` whose worker-maintenance thread sleeps while results flow.

    The stdlib thread waits on the workers' sentinels, its change notifier and the result
    pipe; a result waiting in that pipe wakes it again and again (it does not read the
    pipe; the result thread does), so it spins, taking the GIL from the main thread, until
    every result is read: 0.05-0.1 s of CPU for 80 batches of small files (CPython
    3.8-3.13, ``Pool._get_sentinels``). It has nothing to do with results: it acts on a
    worker's exit (its sentinel) and on ``close``, ``terminate`` or an emptied task cache
    (each puts a note in the change notifier), which are what it now waits for."""

    def _get_sentinels(self) -> list[Any]:
        return [self._change_notifier._reader]  # type: ignore[attr-defined]


@dataclass(frozen=True)
class PoolOptions:
    """The process executor's own options (no other executor has them)."""

    submit: str = "async"  # async | imap
    start_method: str = "auto"


class ProcessExecutor:
    batch_shape = None  # the Pool's (planning.POOL_BATCHES)

    def __init__(self, options: ExecutorOptions, pool: PoolOptions | None = None) -> None:
        self.options = options
        self.pool = pool or PoolOptions()
        # The schedule and the pool's watch while ``run`` goes: what ``activity`` reads.
        self._watching: tuple[Schedule, _Watch] | None = None

    def describe(self) -> str:
        method = self.pool.start_method
        if method == "auto":
            method = multiprocessing.get_start_method()
        return f"process ({self.options.workers} workers, {method}, submit={self.pool.submit})"

    def parallelism(self) -> int:
        return self.options.workers

    def prepare(self) -> None:
        """Nothing to reach before the run: the pool starts with ``run``."""

    def close(self) -> None:
        """Nothing outlives ``run``."""

    def activity(self) -> list[WorkerActivity]:
        """Each worker's announced batch (``worker.Announcer``), matched with the batches
        in flight. Called from another thread: it only copies (atomic under the GIL) what
        the supervisor loop changes, and reads the workers' announcement files."""
        watching = self._watching
        if watching is None:
            return []
        schedule, watch = watching
        in_flight = dict(schedule.in_flight)
        found = []
        for pid in sorted(list(watch.known)):
            announced = worker.read_announcement(self.options.job.parts_dir, pid)
            entry = in_flight.get(announced[0]) if announced else None
            if announced and entry is not None:
                found.append(WorkerActivity.of(f"pid {pid}", entry[0], announced[1]))
        return found

    def _new_pool(self) -> multiprocessing.pool.Pool:
        context = get_context(self.pool.start_method)
        with helpers_shielded(context):
            return QuietPool(
                self.options.workers, worker.init_worker, (self.options.job,), context=context
            )

    def run(
        self,
        batches: Iterator[Batch],
        on_outcome: OnOutcome,
        should_stop: StopCheck,
        stop_now: StopCheck,
        background: Background | None = None,
    ) -> None:
        imap = self.pool.submit == "imap"
        schedule = Schedule(
            batches, WINDOW_PER_WORKER * self.options.workers, self.options.retries, imap
        )
        idle = Idle(background)
        stop_deadline: list[float] = []
        barren = 0
        while True:
            pool = self._new_pool()
            watch = _Watch(pool, self.options.job.parts_dir, self.options.timeout)
            self._watching = (schedule, watch)
            completed_before = schedule.completed
            try:
                drive = self._drive_imap if imap else self._drive_async
                fault = drive(
                    pool, watch, schedule, on_outcome, should_stop, stop_now, stop_deadline, idle
                )
            except BaseException:
                abandon_pool(pool)
                raise
            if fault is None:
                if schedule.in_flight:  # stopped with work in flight: do not wait for it
                    abandon_pool(pool)
                else:
                    close_pool(pool)
                return
            running = watch.running()  # before the pool goes: what each worker was on
            abandon_pool(pool)
            # Everything in flight goes round again, in its order; the blamed batch is
            # charged an attempt (or fails once its retries are spent), the others that
            # had started are kept as abandoned attempts.
            for batch_id in reversed(list(schedule.in_flight)):
                blame = fault.fault if batch_id == fault.batch_id else None
                since, pid = running.get(batch_id, (0.0, 0))
                lost = None
                if pid:
                    message = f"stopped with its pool ({fault.fault.message})"
                    lost = Fault("abandoned", message, since, watch.host, pid)
                outcome = schedule.release(batch_id, blame, lost=lost)
                if outcome is not None:
                    on_outcome(outcome)
            if schedule.stopping:
                return
            message = fault.fault.message
            log.warning("%s; restarting the worker pool", message)
            barren = 0 if schedule.completed > completed_before or fault.batch_id else barren + 1
            if barren >= MAX_BARREN_POOLS:
                raise ExecutionError(
                    f"worker processes keep dying before finishing any task ({message}); "
                    "is a plugin crashing the interpreter at import?"
                )

    def _between_results(
        self,
        watch: _Watch,
        schedule: Schedule,
        should_stop: StopCheck,
        stop_now: StopCheck,
        stop_deadline: list[float],
    ) -> PoolFault | bool:
        """True: stop now, abandoning work in flight; a PoolFault: the pool must go."""
        if should_stop() and not schedule.stopping:
            schedule.stop()
            stop_deadline.append(time.monotonic() + self.options.grace)
            if schedule.in_flight:
                log.warning(
                    "stopping: waiting up to %gs for %d batch(es) of tasks in flight",
                    self.options.grace,
                    len(schedule.in_flight),
                )
        if stop_now() or (stop_deadline and time.monotonic() > stop_deadline[0]):
            return True
        return watch.inspect() or False

    def _drive_async(
        self,
        pool: multiprocessing.pool.Pool,
        watch: _Watch,
        schedule: Schedule,
        on_outcome: OnOutcome,
        should_stop: StopCheck,
        stop_now: StopCheck,
        stop_deadline: list[float],
        idle: Idle,
    ) -> PoolFault | None:
        results: queue.SimpleQueue[tuple[Batch, Any, bool]] = queue.SimpleQueue()

        def submit(batch: Batch) -> None:
            pool.apply_async(
                worker.pool_run,
                (batch,),
                callback=lambda value: results.put((batch, value, True)),
                error_callback=lambda exc: results.put((batch, exc, False)),
            )

        while True:
            while (item := schedule.take()) is not None:
                submit(item[0])
            if schedule.finished():
                return None
            verdict = self._between_results(watch, schedule, should_stop, stop_now, stop_deadline)
            if verdict is True:
                return None
            if isinstance(verdict, PoolFault):
                return verdict
            try:
                batch, value, ok = results.get(timeout=idle.wait(schedule))
            except queue.Empty:
                idle.work(schedule)
                continue
            if ok:
                outcome = schedule.retire(value.batch_id, value.results)
            else:  # the batch could not reach the worker or come back (pickling)
                error = f"{type(value).__name__}: {value}"
                outcome = schedule.retire(batch.batch_id, error_results(batch, "error", error))
            if outcome is not None:
                on_outcome(outcome)

    def _drive_imap(
        self,
        pool: multiprocessing.pool.Pool,
        watch: _Watch,
        schedule: Schedule,
        on_outcome: OnOutcome,
        should_stop: StopCheck,
        stop_now: StopCheck,
        stop_deadline: list[float],
        idle: Idle,
    ) -> PoolFault | None:
        feeding = threading.Event()
        feeding.set()

        def feed() -> Iterator[Batch]:
            while (item := schedule.take_blocking(feeding.is_set)) is not None:
                yield item[0]

        schedule.refill()
        results = pool.imap_unordered(worker.pool_run, feed(), chunksize=1)
        try:
            while True:
                schedule.refill()
                verdict = self._between_results(
                    watch, schedule, should_stop, stop_now, stop_deadline
                )
                if verdict is True:
                    return None
                if isinstance(verdict, PoolFault):
                    return verdict
                try:
                    output = results.next(timeout=idle.wait(schedule))
                except multiprocessing.TimeoutError:
                    idle.work(schedule)
                    continue
                except StopIteration:
                    return None
                outcome = schedule.retire(output.batch_id, output.results)
                if outcome is not None:
                    on_outcome(outcome)
        finally:
            feeding.clear()
