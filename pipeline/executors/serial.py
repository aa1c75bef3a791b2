"""In-process execution: for debugging (pdb works, tracebacks are local) and as the test
oracle that every other executor must agree with."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

from pipeline.executors.base import Background, ExecutorOptions, OnOutcome, StopCheck, settle
from pipeline.models import Batch
from pipeline.store.packing import slim_results
from pipeline.worker import TaskRunner


class SerialExecutor:
    def __init__(self, options: ExecutorOptions) -> None:
        self.options = options

    def describe(self) -> str:
        return "serial (in-process)"

    def run(
        self,
        batches: Iterator[Batch],
        on_outcome: OnOutcome,
        should_stop: StopCheck,
        stop_now: StopCheck,
        background: Background | None = None,  # nothing to wait for: batches plan as pulled
    ) -> None:
        runner: TaskRunner | None = None  # built for the first batch (none: no plugin import)
        retries: deque[tuple[Batch, int]] = deque()
        while not should_stop():
            if retries:
                batch, attempt = retries.popleft()
            elif (batch := next(batches, None)) is not None:
                attempt = 1
            else:
                return
            if runner is None:
                runner = TaskRunner(self.options.job)
            results = slim_results(runner.run_batch(batch))  # as a worker sends them
            outcome, retry = settle(batch, results, attempt, self.options.retries, should_stop())
            if outcome is not None:
                on_outcome(outcome)
            if retry is not None:
                retries.append((retry, attempt + 1))
