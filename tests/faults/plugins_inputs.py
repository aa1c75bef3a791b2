"""Step plugins for the bad-input fault tests: change an input file at a chosen moment.

Used as ``steps: [{call: tests.faults.plugins_inputs:mutate}]`` (``run_cli`` puts the
repository on ``PYTHONPATH``, so every worker can import this module under any start
method). The plugin passes records through unchanged. When a record's ``line`` contains
``@@MUTATE@@`` it performs, once per test (an ``O_EXCL`` marker file makes it fire only
the first time, whichever process sees the marker line first, and never again in a rerun
or a clean comparison run), the action named by the environment:

- ``FAULTS_MUTATE=delete:/path``   unlink the file
- ``FAULTS_MUTATE=truncate:/path`` cut the file after its first line
- ``FAULTS_MUTATE=append:/path``   append one line to the file
- ``FAULTS_MUTATE_ONCE=/path``     the marker file (required; no marker, no action)
"""

from __future__ import annotations

import os
from typing import Any

MARKER = "@@MUTATE@@"
APPENDED_LINE = b"appended after discovery\n"


def _first_time(marker: str) -> bool:
    try:
        fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    os.close(fd)
    return True


def _apply(action: str, path: str) -> None:
    if action == "delete":
        os.unlink(path)
    elif action == "truncate":
        with open(path, "r+b") as handle:
            first = handle.readline()
            handle.truncate(len(first))
    elif action == "append":
        with open(path, "ab") as handle:
            handle.write(APPENDED_LINE)
    else:
        raise ValueError(f"unknown FAULTS_MUTATE action {action!r}")


def mutate(record: dict[str, Any]) -> dict[str, Any]:
    line = record.get("line")
    if isinstance(line, str) and MARKER in line:
        spec = os.environ.get("FAULTS_MUTATE", "")
        marker = os.environ.get("FAULTS_MUTATE_ONCE", "")
        if spec and marker and _first_time(marker):
            action, _, path = spec.partition(":")
            _apply(action, path)
    return record
