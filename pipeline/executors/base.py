"""The contract between the runner and an executor, and the schedule every executor's
loop is written around.

An executor takes an iterator of ``Batch`` and calls ``on_outcome`` in the calling
(main) thread with the final ``TaskResult`` of every task, batch by batch (a batch whose
failed tasks are retried reports its good tasks first, then the retried ones). It pulls
batches lazily and keeps a bounded number in flight, so a million files never become a
million queued tasks. ``should_stop`` is polled between results: when it turns true the executor
submits nothing more, lets what is in flight finish (or abandons it on ``stop_now``) and
returns. Retries, timeouts and crashed workers are the executor's business, so the
runner's loop is the same for every executor. ``background`` is work for the calling
thread while it would otherwise wait for results (the rest of the plan): called in small
steps until it returns False.

``prepare`` runs before the run touches its output store (a remote cluster is reached
and checked there, so a bad address is a usage error with nothing written); ``close``
releases what the executor started, whatever happened.

Only the options every executor shares are in ``ExecutorOptions``; an executor's own
(the Pool's ``submit`` and ``start_method``, a Dask scheduler's address) are given to
that executor alone.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Protocol

from pipeline.models import Batch, JobSpec, TaskResult
from pipeline.planning import BatchShape

log = logging.getLogger(__name__)

TICK_S = 0.1  # the longest an executor's loop blocks without looking up
WINDOW_PER_WORKER = 2  # batches in flight per worker (thread)


@dataclass(frozen=True)
class ExecutorOptions:
    job: JobSpec
    workers: int = 1
    retries: int = 2
    timeout: float | None = None
    grace: float = 10.0


@dataclass(frozen=True)
class Outcome:
    """Final results of some tasks of a batch, and how many attempts they took; with the
    failed attempts of those tasks that went round again (attempt number, result), for the
    report's timeline."""

    batch: Batch
    results: list[TaskResult]
    attempts: int
    earlier: tuple[tuple[int, TaskResult], ...] = ()


class AttemptLog:
    """Failed attempts that go round again, kept until their task's outcome is final, so
    the ledger can keep them beside it. Empty (and free) while nothing fails."""

    def __init__(self) -> None:
        self._by_task: dict[str, list[tuple[int, TaskResult]]] = {}

    def add(self, results: Iterable[TaskResult], attempt: int) -> None:
        for result in results:
            if not result.ok:
                self._by_task.setdefault(result.task_id, []).append((attempt, result))

    def attach(self, outcome: Outcome | None) -> Outcome | None:
        """The outcome with its tasks' earlier attempts."""
        if outcome is None or not self._by_task:
            return outcome
        earlier = [
            attempt
            for result in outcome.results
            for attempt in self._by_task.pop(result.task_id, ())
        ]
        return replace(outcome, earlier=tuple(earlier)) if earlier else outcome


OnOutcome = Callable[[Outcome], None]
StopCheck = Callable[[], bool]
Background = Callable[[], bool]  # a step of main-thread work; False once none is left


@dataclass(frozen=True)
class WorkerActivity:
    """What one worker is on, for the live view: its batch's first task (and how many
    tasks the batch has), since when (epoch seconds; None when not known)."""

    worker: str  # "pid 1234", a Dask worker's address
    path: str
    range: str
    tasks: int
    since: float | None

    @classmethod
    def of(cls, worker: str, batch: Batch, since: float | None, task: int = 0) -> WorkerActivity:
        current = batch.tasks[task]
        return cls(worker, current.path, current.describe_range(), len(batch.tasks) - task, since)

    def as_dict(self) -> dict[str, object]:
        return {
            "worker": self.worker,
            "path": self.path,
            "range": self.range,
            "tasks": self.tasks,
            "since": self.since,
        }


@dataclass(frozen=True)
class Fault:
    """Why a batch's attempt ended without results (``kind``: crashed | timeout, or
    abandoned: stopped with its worker pool for another batch's fault, not charged), and
    when and where that attempt began (epoch seconds, the worker's host and pid; 0 and ""
    when it is not known)."""

    kind: str
    message: str
    started: float = 0.0
    host: str = ""
    pid: int = 0

    def results(self, batch: Batch) -> list[TaskResult]:
        """The batch's tasks failed by this fault, stamped with its attempt's span."""
        duration = time.time() - self.started if self.started else 0.0
        return [
            TaskResult(
                t.task_id,
                ok=False,
                error_kind=self.kind,
                error=f"{t.path}: {self.message}",
                started=self.started,
                duration_s=duration,
                host=self.host,
                pid=self.pid,
            )
            for t in batch.tasks
        ]


def settle(
    batch: Batch,
    results: list[TaskResult],
    attempt: int,
    retries: int,
    stopping: bool,
    history: AttemptLog,
) -> tuple[Outcome | None, Batch | None]:
    """Split a batch's results into what is final now and the failed tasks that go round
    again (as a batch of their own) while attempts remain; ``history`` keeps those."""
    failed = {r.task_id for r in results if not r.ok}
    if not failed or attempt > retries or stopping:
        return history.attach(Outcome(batch, results, attempt)), None
    history.add(results, attempt)
    done = [r for r in results if r.ok]
    retry = Batch.of(tuple(t for t in batch.tasks if t.task_id in failed))
    return (history.attach(Outcome(batch, done, attempt)) if done else None), retry


def error_results(batch: Batch, kind: str, message: str) -> list[TaskResult]:
    """The batch's tasks failed with ``message``, when and where unknown."""
    return Fault(kind, message).results(batch)


def describe_exit(exitcode: int | None) -> str:
    """How a process ended, from its exit code (negative: the signal that killed it)."""
    if exitcode is None:
        return "was lost"
    if exitcode < 0:
        try:
            return f"was killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"was killed by signal {-exitcode}"
    return f"exited with status {exitcode}"


class Schedule:
    """Which batch goes next, what is in flight, and when the work is over.

    Batches that must go round again (a failed task's retry, a batch whose worker was
    lost) come before new ones. A lost batch is charged an attempt only when it is to
    blame (``release`` with a fault): a batch that merely sat on a worker that died or
    was stopped for another batch goes round at the same attempt.

    Thread-safe: under ``imap`` the Pool's task thread takes batches while the main
    thread retires them. Only the main thread pulls from ``batches`` (the plan may be made
    as it is pulled, on the ledger's connection): with ``prefetch`` it queues them
    (``refill``) for the task thread to take."""

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
        self.history = AttemptLog()
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
            outcome, retry = settle(
                batch, results, attempt, self.retries, self.stopping, self.history
            )
            if retry is not None:
                for result in results:
                    if not result.ok:
                        log.info("%s: attempt %d failed, retrying", result.error, attempt)
                self._retry.append((retry, attempt + 1))
            return outcome

    def release(
        self,
        batch_id: str,
        fault: Fault | None = None,
        culprit: str | None = None,
        lost: Fault | None = None,
    ) -> Outcome | None:
        """A batch in flight will never report (its worker is gone): it goes round again,
        first in line. With a ``fault`` it is to blame: charged one attempt, or failed
        with the fault once its retries are spent — only its task ``culprit`` when that
        is known, the others going round again at their attempt. Without one, ``lost``
        says when and where it had started (kind ``abandoned``): the attempt is kept for
        the report, uncharged. While stopping it just stays pending (the ledger has no row
        for it: the next run resumes it)."""
        with self._changed:
            entry = self.in_flight.pop(batch_id, None)
            self._changed.notify_all()
            if entry is None or self.stopping:
                return None
            batch, attempt = entry
            if fault is None:
                if lost is not None:
                    self.history.add(lost.results(batch), attempt)
                self._retry.appendleft((batch, attempt))
                return None
            if culprit is not None and len(batch.tasks) > 1:
                others = tuple(t for t in batch.tasks if t.task_id != culprit)
                blamed = tuple(t for t in batch.tasks if t.task_id == culprit)
                if others and blamed:
                    self._retry.appendleft((Batch.of(others), attempt))
                    batch = Batch.of(blamed)
            if attempt > self.retries:
                return self.history.attach(Outcome(batch, fault.results(batch), attempt))
            self.history.add(fault.results(batch), attempt)
            log.warning(
                "%s: %s; retrying (attempt %d)", batch.describe(), fault.message, attempt + 1
            )
            self._retry.appendleft((batch, attempt + 1))
            return None

    def final_attempt(self, batch_id: str) -> bool:
        """Whether the batch in flight is on its last attempt."""
        with self._changed:
            entry = self.in_flight.get(batch_id)
            return entry is not None and entry[1] > self.retries

    def stop(self) -> None:
        with self._changed:
            self.stopping = True
            self._retry.clear()
            self._changed.notify_all()

    def finished(self) -> bool:
        return not self.in_flight and (
            self.stopping or (self._exhausted and not self._retry and not self._queued)
        )


class Idle:
    """The main thread's spare time while results are awaited: ``background`` work (the
    plan made ahead) in small steps, the results polled between them; a blocking wait of
    up to a tick once there is none left (or the run is stopping)."""

    def __init__(self, background: Background | None) -> None:
        self._background = background

    def wait(self, schedule: Schedule) -> float:
        return 0.0 if self._background is not None and not schedule.stopping else TICK_S

    def work(self, schedule: Schedule) -> None:
        if self._background is not None and not schedule.stopping and not self._background():
            self._background = None


class Executor(Protocol):
    options: ExecutorOptions
    # How coarsely the plan's tasks are batched for this executor (None: the Pool's
    # ``planning.POOL_BATCHES``).
    batch_shape: BatchShape | None

    def prepare(self) -> None: ...

    def parallelism(self) -> int: ...

    def run(
        self,
        batches: Iterator[Batch],
        on_outcome: OnOutcome,
        should_stop: StopCheck,
        stop_now: StopCheck,
        background: Background | None = None,
    ) -> None: ...

    def describe(self) -> str: ...

    def activity(self) -> list[WorkerActivity]:
        """What each worker is on now (any thread may ask; a best effort)."""
        ...

    def close(self) -> None: ...
