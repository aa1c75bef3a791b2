"""The exception tree and the exit codes the CLI maps them to.

Every subclass passes all of its constructor arguments to ``super().__init__`` so that
instances survive a pickle round trip between processes (a worker's exception that cannot
be unpickled in the parent kills the Pool's result thread).
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    TASKS_FAILED = 1
    USAGE = 2
    LOCKED = 75
    SIGINT = 130
    SIGTERM = 143


class PipelineError(Exception):
    """Base of every error the CLI reports as plain lines."""

    exit_code: ExitCode = ExitCode.USAGE

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(PipelineError):
    """The config file cannot be read, parsed or validated."""


class DiscoveryError(PipelineError):
    """Input discovery failed (an unreadable folder, a bad glob)."""


class StoreError(PipelineError):
    """The output store cannot be opened, read or written."""

    exit_code = ExitCode.TASKS_FAILED


class LedgerCorruptError(StoreError):
    """The ledger fails SQLite's integrity check; it is never silently recreated."""

    exit_code = ExitCode.USAGE


class ClusterError(PipelineError):
    """The Dask cluster cannot be used: unreachable, no TLS credentials, workers of another
    pipeline version. Nothing was run."""


class ExecutionError(PipelineError):
    """The executor cannot go on (workers keep dying at start-up)."""

    exit_code = ExitCode.TASKS_FAILED


class LockHeldError(PipelineError):
    """Another run holds the lock on the output directory."""

    exit_code = ExitCode.LOCKED


class MalformedRecord(Exception):
    """A step rejected a record as malformed (it is dropped and counted)."""
