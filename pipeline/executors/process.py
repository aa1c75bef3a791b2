"""Tasks on a ``multiprocessing.Pool``, inside a supervisor loop that never blocks
without a deadline.

Data flow (the callback is on the Pool's result thread; everything else on ours)::

    tasks ──> _Schedule (window of 2 x workers, retries first)
                 │ submit: apply_async(run_task, callback)      │ submit: imap_unordered(feed)
                 ▼                                              ▼
            worker processes: run_task(TaskSpec) -> TaskResult
                 │ callback / error_callback: results.put(...)  │ it.next(timeout=tick)
                 ▼                                              ▼
            supervisor loop (main thread): retry or on_outcome(...)

Callbacks only put a tuple on a ``queue.SimpleQueue``: they cannot raise, so they can
never kill the Pool's result thread. Shutdown never trusts ``Pool.terminate()`` to return:
it runs in a daemon thread and any worker still alive after a grace is killed by pid.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.pool
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from pipeline import worker
from pipeline.executors.base import ExecutorOptions, OnOutcome, Outcome, StopCheck
from pipeline.models import TaskResult, TaskSpec

log = logging.getLogger(__name__)

TICK_S = 0.2
JOIN_GRACE_S = 5.0


def get_context(start_method: str) -> multiprocessing.context.BaseContext:
    return multiprocessing.get_context(None if start_method == "auto" else start_method)


def abandon_pool(pool: multiprocessing.pool.Pool, grace: float = 2.0) -> None:
    """Stop a pool for sure: ``terminate()`` can block for ever (a worker killed while
    holding a queue lock), so it runs in a daemon thread and survivors are killed by pid."""
    processes = list(getattr(pool, "_pool", []))
    stopper = threading.Thread(target=pool.terminate, name="abandon-pool", daemon=True)
    stopper.start()
    stopper.join(grace)
    for process in processes:
        if process.is_alive():
            process.kill()
    for process in processes:
        process.join(1.0)


def close_pool(pool: multiprocessing.pool.Pool, grace: float = JOIN_GRACE_S) -> None:
    """Orderly end of a drained pool, bounded in time."""
    pool.close()
    joiner = threading.Thread(target=pool.join, name="join-pool", daemon=True)
    joiner.start()
    joiner.join(grace)
    if joiner.is_alive():
        log.warning("worker processes did not exit within %.0fs; killing them", grace)
        abandon_pool(pool)


def error_result(task: TaskSpec, kind: str, message: str) -> TaskResult:
    return TaskResult(task.task_id, ok=False, error_kind=kind, error=f"{task.path}: {message}")


class _Schedule:
    """Which task goes next, what is in flight, and when the work is over. Thread-safe:
    under ``imap`` the Pool's task thread pulls from it while the main thread retires."""

    def __init__(self, tasks: Iterator[TaskSpec], window: int, retries: int) -> None:
        self._source = tasks
        self._exhausted = False
        self._retry: deque[tuple[TaskSpec, int]] = deque()
        self.in_flight: dict[str, tuple[TaskSpec, int]] = {}
        self.window = window
        self.retries = retries
        self.stopping = False
        self._changed = threading.Condition()

    def take(self) -> tuple[TaskSpec, int] | None:
        """The next task to submit now, or None when the window is full or nothing is left."""
        with self._changed:
            if self.stopping or len(self.in_flight) >= self.window:
                return None
            if self._retry:
                task, attempt = self._retry.popleft()
            elif self._exhausted:
                return None
            else:
                task = next(self._source, None)
                if task is None:
                    self._exhausted = True
                    return None
                attempt = 1
            self.in_flight[task.task_id] = (task, attempt)
            return task, attempt

    def take_blocking(self, alive: Callable[[], bool]) -> tuple[TaskSpec, int] | None:
        """For ``imap``'s feeder: wait for room; None means the feed is over."""
        while alive():
            item = self.take()
            if item is not None:
                return item
            with self._changed:
                if self.finished():
                    return None
                self._changed.wait(TICK_S)
        return None

    def retire(self, result: TaskResult) -> Outcome | None:
        """A result arrived: the final outcome, or None when the task goes round again."""
        with self._changed:
            entry = self.in_flight.pop(result.task_id, None)
            self._changed.notify_all()
            if entry is None:
                return None  # a late result of a task already retired
            task, attempt = entry
            if result.ok or attempt > self.retries or self.stopping:
                return Outcome(task, result, attempt)
            log.info(
                "%s (%s): attempt %d failed, retrying: %s",
                task.path,
                task.describe_range(),
                attempt,
                result.error,
            )
            self._retry.append((task, attempt + 1))
            return None

    def stop(self) -> None:
        with self._changed:
            self.stopping = True
            self._changed.notify_all()

    def finished(self) -> bool:
        return not self.in_flight and (self.stopping or (self._exhausted and not self._retry))


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
        return context.Pool(
            self.options.workers, initializer=worker.init_worker, initargs=(self.options.job,)
        )

    def run(
        self,
        tasks: Iterator[TaskSpec],
        on_outcome: OnOutcome,
        should_stop: StopCheck,
        stop_now: StopCheck,
    ) -> None:
        schedule = _Schedule(tasks, 2 * self.options.workers, self.options.retries)
        pool = self._new_pool()
        try:
            if self.options.submit == "imap":
                self._run_imap(pool, schedule, on_outcome, should_stop, stop_now)
            else:
                self._run_async(pool, schedule, on_outcome, should_stop, stop_now)
        except BaseException:
            abandon_pool(pool)
            raise
        if stop_now():
            abandon_pool(pool)
        else:
            close_pool(pool)

    def _supervise(
        self,
        schedule: _Schedule,
        should_stop: StopCheck,
        stop_now: StopCheck,
        stop_deadline: list[float],
    ) -> bool:
        """Between results: note a stop request; True means abandon the in-flight work."""
        if should_stop() and not schedule.stopping:
            schedule.stop()
            stop_deadline.append(time.monotonic() + self.options.grace)
            if schedule.in_flight:
                log.warning(
                    "stopping: waiting up to %.0fs for %d task(s) in flight",
                    self.options.grace,
                    len(schedule.in_flight),
                )
        if stop_now():
            return True
        return bool(stop_deadline) and time.monotonic() > stop_deadline[0]

    def _run_async(
        self,
        pool: multiprocessing.pool.Pool,
        schedule: _Schedule,
        on_outcome: OnOutcome,
        should_stop: StopCheck,
        stop_now: StopCheck,
    ) -> None:
        results: queue.SimpleQueue[tuple[TaskSpec, Any, bool]] = queue.SimpleQueue()
        stop_deadline: list[float] = []

        def submit(task: TaskSpec) -> None:
            pool.apply_async(
                worker.run_task,
                (task,),
                callback=lambda value: results.put((task, value, True)),
                error_callback=lambda exc: results.put((task, exc, False)),
            )

        while True:
            while (item := schedule.take()) is not None:
                submit(item[0])
            if schedule.finished():
                return
            if self._supervise(schedule, should_stop, stop_now, stop_deadline):
                return
            try:
                task, value, ok = results.get(timeout=TICK_S)
            except queue.Empty:
                continue
            result = (
                value if ok else error_result(task, "error", f"{type(value).__name__}: {value}")
            )
            outcome = schedule.retire(result)
            if outcome is not None:
                on_outcome(outcome)

    def _run_imap(
        self,
        pool: multiprocessing.pool.Pool,
        schedule: _Schedule,
        on_outcome: OnOutcome,
        should_stop: StopCheck,
        stop_now: StopCheck,
    ) -> None:
        feeding = threading.Event()
        feeding.set()

        def feed() -> Iterator[TaskSpec]:
            while (item := schedule.take_blocking(feeding.is_set)) is not None:
                yield item[0]

        stop_deadline: list[float] = []
        results = pool.imap_unordered(worker.run_task, feed(), chunksize=1)
        try:
            while True:
                if self._supervise(schedule, should_stop, stop_now, stop_deadline):
                    return
                try:
                    result = results.next(timeout=TICK_S)
                except multiprocessing.TimeoutError:
                    continue
                except StopIteration:
                    return
                outcome = schedule.retire(result)
                if outcome is not None:
                    on_outcome(outcome)
        finally:
            feeding.clear()
