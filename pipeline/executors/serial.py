"""In-process execution: for debugging (pdb works, tracebacks are local) and as the test
oracle that every other executor must agree with."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

from pipeline import worker
from pipeline.executors.base import (
    AttemptLog,
    Background,
    ExecutorOptions,
    OnOutcome,
    StopCheck,
    WorkerActivity,
    settle,
)
from pipeline.models import Batch


class SerialExecutor:
    batch_shape = None  # the Pool's (planning.POOL_BATCHES)

    def __init__(self, options: ExecutorOptions) -> None:
        self.options = options

    def describe(self) -> str:
        return "serial (in-process)"

    def parallelism(self) -> int:
        return self.options.workers

    def prepare(self) -> None:
        """Nothing to reach: the job is compiled with the first batch (none: no import)."""

    def close(self) -> None:
        """Nothing was started."""

    def activity(self) -> list[WorkerActivity]:
        """Nothing to tell: the tasks run in the thread that would tell it."""
        return []

    def run(
        self,
        batches: Iterator[Batch],
        on_outcome: OnOutcome,
        should_stop: StopCheck,
        stop_now: StopCheck,
        background: Background | None = None,  # nothing to wait for: batches plan as pulled
    ) -> None:
        retries: deque[tuple[Batch, int]] = deque()
        history = AttemptLog()
        while not should_stop():
            if retries:
                batch, attempt = retries.popleft()
            elif (batch := next(batches, None)) is not None:
                attempt = 1
            else:
                return
            results = worker.execute(self.options.job, batch).results  # as a worker sends them
            outcome, retry = settle(
                batch, results, attempt, self.options.retries, should_stop(), history
            )
            if outcome is not None:
                on_outcome(outcome)
            if retry is not None:
                retries.append((retry, attempt + 1))
