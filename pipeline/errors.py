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
    INTERNAL = 70  # EX_SOFTWARE: a bug, not the input's fault
    LOCKED = 75
    SIGINT = 130
    SIGTERM = 143


# What each exit code means, for people (every command's --help lists them).
EXIT_CODE_MEANINGS: tuple[tuple[str, str], ...] = (
    ("0", "every task succeeded (or was already done)"),
    ("1", "the run finished but at least one task failed"),
    ("2", "usage, config or input-discovery error; nothing was run and nothing written"),
    ("70", "an internal error (a bug: please report it, with --debug)"),
    ("75", "another run holds the lock on the output directory (cron tries later)"),
    ("130/143", "interrupted by SIGINT/SIGTERM; the next run resumes"),
)


class PipelineError(Exception):
    """Base of every error the CLI reports as plain lines."""

    exit_code: ExitCode = ExitCode.USAGE

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class CommandLineError(PipelineError):
    """The command line asks for something that cannot be done (a --log-file that cannot
    be opened): found before anything is run or written."""


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


class MissingExtraError(PipelineError):
    """An optional extra this command needs is not installed."""


class LockHeldError(PipelineError):
    """Another run holds the lock on the output directory."""

    exit_code = ExitCode.LOCKED


class MalformedRecord(Exception):
    """A step rejected a record as malformed (it is dropped and counted)."""
