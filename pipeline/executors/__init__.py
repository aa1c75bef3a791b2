"""Executors: how tasks reach workers. The schedule loop's contract is in ``base``."""

from __future__ import annotations

from pipeline.executors.base import Executor, ExecutorOptions, Outcome
from pipeline.executors.process import ProcessExecutor
from pipeline.executors.serial import SerialExecutor


def make_executor(kind: str, options: ExecutorOptions) -> Executor:
    if kind == "serial":
        return SerialExecutor(options)
    if kind == "process":
        return ProcessExecutor(options)
    raise ValueError(f"executor {kind!r} is not available yet")


__all__ = ["Executor", "ExecutorOptions", "Outcome", "make_executor"]
