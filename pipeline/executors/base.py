"""The contract between the runner and an executor.

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
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

from pipeline.models import Batch, JobSpec, TaskResult


@dataclass(frozen=True)
class ExecutorOptions:
    job: JobSpec
    workers: int = 1
    submit: str = "async"  # async | imap
    start_method: str = "auto"
    retries: int = 2
    timeout: float | None = None
    grace: float = 10.0


@dataclass(frozen=True)
class Outcome:
    """Final results of some tasks of a batch, and how many attempts they took."""

    batch: Batch
    results: list[TaskResult]
    attempts: int


OnOutcome = Callable[[Outcome], None]
StopCheck = Callable[[], bool]
Background = Callable[[], bool]  # a step of main-thread work; False once none is left


def settle(
    batch: Batch, results: list[TaskResult], attempt: int, retries: int, stopping: bool
) -> tuple[Outcome | None, Batch | None]:
    """Split a batch's results into what is final now and the failed tasks that go round
    again (as a batch of their own) while attempts remain."""
    failed = {r.task_id for r in results if not r.ok}
    if not failed or attempt > retries or stopping:
        return Outcome(batch, results, attempt), None
    done = [r for r in results if r.ok]
    retry = Batch.of(tuple(t for t in batch.tasks if t.task_id in failed))
    return (Outcome(batch, done, attempt) if done else None), retry


class Executor(Protocol):
    options: ExecutorOptions

    def run(
        self,
        batches: Iterator[Batch],
        on_outcome: OnOutcome,
        should_stop: StopCheck,
        stop_now: StopCheck,
        background: Background | None = None,
    ) -> None: ...

    def describe(self) -> str: ...
