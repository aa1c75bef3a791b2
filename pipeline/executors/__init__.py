"""Executors: how tasks reach workers. The schedule loop's contract is in ``base``.

Only ``dask`` needs a package beyond the standard library: its module imports nothing of
dask until a cluster is used, so a run with another executor never imports it."""

from __future__ import annotations

from pipeline.executors.base import Executor, ExecutorOptions, Outcome
from pipeline.executors.dask import DaskExecutor, DaskOptions
from pipeline.executors.process import PoolOptions, ProcessExecutor
from pipeline.executors.serial import SerialExecutor


def make_executor(
    kind: str,
    options: ExecutorOptions,
    pool: PoolOptions | None = None,
    dask: DaskOptions | None = None,
) -> Executor:
    if kind == "serial":
        return SerialExecutor(options)
    if kind == "process":
        return ProcessExecutor(options, pool)
    if kind == "dask":
        return DaskExecutor(options, dask or DaskOptions())
    raise ValueError(f"unknown executor {kind!r}")


__all__ = [
    "DaskOptions",
    "Executor",
    "ExecutorOptions",
    "Outcome",
    "PoolOptions",
    "make_executor",
]
