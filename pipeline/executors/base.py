"""The contract between the runner and an executor.

An executor takes an iterator of ``TaskSpec`` and calls ``on_outcome`` in the calling
(main) thread once per task, with the final ``TaskResult`` of that task. It pulls tasks
lazily and keeps a bounded number in flight, so a million files never become a million
queued tasks. ``should_stop`` is polled between results: when it turns true the executor
submits nothing more, lets what is in flight finish (or abandons it on ``stop_now``) and
returns. Retries, timeouts and crashed workers are the executor's business, so the
runner's loop is the same for every executor.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

from pipeline.models import JobSpec, TaskResult, TaskSpec


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
    """A task's final result and how many attempts it took."""

    task: TaskSpec
    result: TaskResult
    attempts: int


OnOutcome = Callable[[Outcome], None]
StopCheck = Callable[[], bool]


class Executor(Protocol):
    options: ExecutorOptions

    def run(
        self,
        tasks: Iterator[TaskSpec],
        on_outcome: OnOutcome,
        should_stop: StopCheck,
        stop_now: StopCheck,
    ) -> None: ...

    def describe(self) -> str: ...
