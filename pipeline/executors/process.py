"""Tasks on a ``multiprocessing.Pool``, inside a supervisor loop that never blocks
without a deadline.

Data flow (the callback runs on the Pool's result thread; everything else on ours)::

    batches ──> _Schedule (window of 2 x workers; retries and requeued batches first)
       │ async: apply_async(pool_run, callback)   │ imap: imap_unordered(feed)
       ▼                                          ▼
    worker processes: announce(batch) -> pool_run(Batch) -> (batch id, [TaskResult])
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
import multiprocessing.resource_tracker
import queue
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from pipeline import worker
from pipeline.errors import ExecutionError
from pipeline.executors.base import (
    Background,
    ExecutorOptions,
    OnOutcome,
    Outcome,
    StopCheck,
    settle,
)
from pipeline.models import Batch, TaskResult

log = logging.getLogger(__name__)

TICK_S = 0.1
WINDOW_PER_WORKER = 2  # batches in flight per worker
JOIN_GRACE_S = 5.0
MAX_BARREN_POOLS = 3  # pools in a row that died before finishing any task


def get_context(start_method: str) -> multiprocessing.context.BaseContext:
    return multiprocessing.get_context(None if start_method == "auto" else start_method)


STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


@contextlib.contextmanager
def stop_signals_blocked() -> Iterator[None]:
    """Block SIGINT and SIGTERM in this thread; threads it starts meanwhile inherit the
    mask, so a stop signal is only ever taken by the main thread's handlers. Signals sent
    meanwhile stay pending and are delivered when the block ends."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextlib.contextmanager
def helpers_shielded(context: multiprocessing.context.BaseContext) -> Iterator[None]:
    """Start helper processes (workers, the fork server, the Manager) shielded from stop
    signals from their first instruction: they inherit "ignore" (also across the exec of
    spawn and of the fork server, which resets the signal mask), so Ctrl-C or a service
    manager's SIGTERM to the whole group never kills one that has not yet run its
    initializer. This process blocks the signals meanwhile (blocked signals are queued
    even while ignored), restores its handlers, then takes what arrived."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if context.get_start_method() != "fork":
        # Started on first use, the resource tracker unblocks SIGINT/SIGTERM when done
        # (multiprocessing.resource_tracker): start it now, before anything is blocked.
        multiprocessing.resource_tracker.ensure_running()
    with stop_signals_blocked():
        previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
        for signum in STOP_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


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


def error_results(batch: Batch, kind: str, message: str) -> list[TaskResult]:
    return [
        TaskResult(t.task_id, ok=False, error_kind=kind, error=f"{t.path}: {message}")
        for t in batch.tasks
    ]


def describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "was lost"
    if exitcode < 0:
        try:
            return f"was killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"was killed by signal {-exitcode}"
    return f"exited with status {exitcode}"


@dataclass(frozen=True)
class Fault:
    """Why a pool must be abandoned, and which task (if any) is to blame."""

    kind: str  # crashed | timeout
    batch_id: str | None
    message: str


class _Schedule:
    """Which batch goes next, what is in flight, and when the work is over. Thread-safe:
    under ``imap`` the Pool's task thread takes batches while the main thread retires
    them. Only the main thread pulls from ``batches`` (the plan may be made as it is
    pulled, on the ledger's connection): with ``prefetch`` it queues them (``refill``)
    for the task thread to take."""

    def __init__(
        self, batches: Iterator[Batch], window: int, retries: int, prefetch: bool = False
    ) -> None:
        self._source = batches
        self._exhausted = False
        self._retry: deque[tuple[Batch, int]] = deque()
        self._queued: deque[Batch] = deque()
        self._prefetch = prefetch
        self.in_flight: dict[str, tuple[Batch, int]] = {}
        self.window = window
        self.retries = retries
        self.stopping = False
        self.completed = 0
        self._changed = threading.Condition()

    def refill(self) -> None:
        """Main thread, with ``prefetch``: queue up to a window of batches."""
        while not self._exhausted and not self.stopping and len(self._queued) < self.window:
            batch = next(self._source, None)
            with self._changed:
                if batch is None:
                    self._exhausted = True
                else:
                    self._queued.append(batch)
                self._changed.notify_all()

    def take(self, alive: Callable[[], bool] | None = None) -> tuple[Batch, int] | None:
        """The next batch to submit now, or None when the window is full or nothing is left
        (or, for a feeder, when ``alive`` says its pool is being abandoned)."""
        with self._changed:
            if self.stopping or len(self.in_flight) >= self.window:
                return None
            if alive is not None and not alive():
                return None
            if self._retry:
                batch, attempt = self._retry.popleft()
            elif self._queued:
                batch, attempt = self._queued.popleft(), 1
            elif self._exhausted or self._prefetch:
                return None
            else:
                batch = next(self._source, None)
                if batch is None:
                    self._exhausted = True
                    return None
                attempt = 1
            self.in_flight[batch.batch_id] = (batch, attempt)
            return batch, attempt

    def take_blocking(self, alive: Callable[[], bool]) -> tuple[Batch, int] | None:
        """For ``imap``'s feeder: wait for room; None means the feed is over."""
        while alive():
            item = self.take(alive)
            if item is not None:
                return item
            with self._changed:
                if self.finished():
                    return None
                self._changed.wait(TICK_S)
        return None

    def retire(self, batch_id: str, results: list[TaskResult]) -> Outcome | None:
        """A batch's results arrived: what is final (the rest goes round again)."""
        with self._changed:
            entry = self.in_flight.pop(batch_id, None)
            self._changed.notify_all()
            if entry is None:
                return None  # a late result of a batch already retired
            self.completed += 1
            batch, attempt = entry
            outcome, retry = settle(batch, results, attempt, self.retries, self.stopping)
            if retry is not None:
                for result in results:
                    if not result.ok:
                        log.info("%s: attempt %d failed, retrying", result.error, attempt)
                self._retry.append((retry, attempt + 1))
            return outcome

    def requeue(self, fault: Fault) -> Outcome | None:
        """The pool is gone: everything in flight goes round again, first in line; the
        blamed batch is charged an attempt, or fails once its retries are spent."""
        with self._changed:
            outcome = None
            entries = list(self.in_flight.values())
            self.in_flight.clear()
            self._changed.notify_all()
            if self.stopping:
                return None  # they stay pending in the ledger; the next run resumes them
            for batch, attempt in reversed(entries):
                if batch.batch_id == fault.batch_id:
                    if attempt > self.retries:
                        results = error_results(batch, fault.kind, fault.message)
                        outcome = Outcome(batch, results, attempt)
                        continue
                    log.warning(
                        "%s: %s; retrying (attempt %d)",
                        batch.describe(),
                        fault.message,
                        attempt + 1,
                    )
                    attempt += 1
                self._retry.appendleft((batch, attempt))
            return outcome

    def stop(self) -> None:
        with self._changed:
            self.stopping = True
            self._retry.clear()
            self._changed.notify_all()

    def finished(self) -> bool:
        return not self.in_flight and (
            self.stopping or (self._exhausted and not self._retry and not self._queued)
        )


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

    def inspect(self) -> Fault | None:
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
            return Fault("crashed", announced[0] if announced else None, message)
        if self.timeout is not None:
            wall = time.time()
            for pid, process in self.known.items():
                announced = worker.read_announcement(self.parts_dir, pid)
                if announced and wall - announced[1] > self.timeout:
                    with contextlib.suppress(OSError):
                        process.kill()
                    return Fault(
                        "timeout",
                        announced[0],
                        f"task ran longer than the timeout ({self.timeout:g}s); "
                        f"its worker (pid {pid}) was killed",
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


class _Idle:
    """The main thread's spare time while results are awaited: ``background`` work (the
    plan made ahead) in small steps, the results polled between them; a blocking wait of
    up to a tick once there is none left (or the run is stopping)."""

    def __init__(self, background: Background | None) -> None:
        self._background = background

    def wait(self, schedule: _Schedule) -> float:
        return 0.0 if self._background is not None and not schedule.stopping else TICK_S

    def work(self, schedule: _Schedule) -> None:
        if self._background is not None and not schedule.stopping and not self._background():
            self._background = None


class ProcessExecutor:
    def __init__(self, options: ExecutorOptions) -> None:
        self.options = options

    def describe(self) -> str:
        method = self.options.start_method
        if method == "auto":
            method = multiprocessing.get_start_method()
        return f"process ({self.options.workers} workers, {method}, submit={self.options.submit})"

    def _new_pool(self) -> multiprocessing.pool.Pool:
        context = get_context(self.options.start_method)
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
        imap = self.options.submit == "imap"
        schedule = _Schedule(
            batches, WINDOW_PER_WORKER * self.options.workers, self.options.retries, imap
        )
        idle = _Idle(background)
        stop_deadline: list[float] = []
        barren = 0
        while True:
            pool = self._new_pool()
            watch = _Watch(pool, self.options.job.parts_dir, self.options.timeout)
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
            abandon_pool(pool)
            outcome = schedule.requeue(fault)
            if outcome is not None:
                on_outcome(outcome)
            if schedule.stopping:
                return
            log.warning("%s; restarting the worker pool", fault.message)
            barren = 0 if schedule.completed > completed_before or fault.batch_id else barren + 1
            if barren >= MAX_BARREN_POOLS:
                raise ExecutionError(
                    f"worker processes keep dying before finishing any task ({fault.message}); "
                    "is a plugin crashing the interpreter at import?"
                )

    def _between_results(
        self,
        watch: _Watch,
        schedule: _Schedule,
        should_stop: StopCheck,
        stop_now: StopCheck,
        stop_deadline: list[float],
    ) -> Fault | bool:
        """True: stop now, abandoning work in flight; a Fault: the pool must go."""
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
        schedule: _Schedule,
        on_outcome: OnOutcome,
        should_stop: StopCheck,
        stop_now: StopCheck,
        stop_deadline: list[float],
        idle: _Idle,
    ) -> Fault | None:
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
            if isinstance(verdict, Fault):
                return verdict
            try:
                batch, value, ok = results.get(timeout=idle.wait(schedule))
            except queue.Empty:
                idle.work(schedule)
                continue
            if ok:
                outcome = schedule.retire(*value)
            else:  # the batch could not reach the worker or come back (pickling)
                error = f"{type(value).__name__}: {value}"
                outcome = schedule.retire(batch.batch_id, error_results(batch, "error", error))
            if outcome is not None:
                on_outcome(outcome)

    def _drive_imap(
        self,
        pool: multiprocessing.pool.Pool,
        watch: _Watch,
        schedule: _Schedule,
        on_outcome: OnOutcome,
        should_stop: StopCheck,
        stop_now: StopCheck,
        stop_deadline: list[float],
        idle: _Idle,
    ) -> Fault | None:
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
                if isinstance(verdict, Fault):
                    return verdict
                try:
                    batch_id, batch_results = results.next(timeout=idle.wait(schedule))
                except multiprocessing.TimeoutError:
                    idle.work(schedule)
                    continue
                except StopIteration:
                    return None
                outcome = schedule.retire(batch_id, batch_results)
                if outcome is not None:
                    on_outcome(outcome)
        finally:
            feeding.clear()
