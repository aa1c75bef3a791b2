"""In-process execution: for debugging (pdb works, tracebacks are local) and as the test
oracle that every other executor must agree with."""

from __future__ import annotations

from collections.abc import Iterator

from pipeline.executors.base import ExecutorOptions, OnOutcome, Outcome, StopCheck
from pipeline.models import TaskSpec
from pipeline.worker import TaskRunner


class SerialExecutor:
    def __init__(self, options: ExecutorOptions) -> None:
        self.options = options

    def describe(self) -> str:
        return "serial (in-process)"

    def run(
        self,
        tasks: Iterator[TaskSpec],
        on_outcome: OnOutcome,
        should_stop: StopCheck,
        stop_now: StopCheck,
    ) -> None:
        runner = TaskRunner(self.options.job)
        for task in tasks:
            if should_stop():
                return
            attempts = 0
            while True:
                attempts += 1
                result = runner.run(task)
                if result.ok or attempts > self.options.retries or should_stop():
                    break
            on_outcome(Outcome(task, result, attempts))
