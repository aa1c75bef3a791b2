"""What an output store says about its runs and tasks, as ``pipeline report`` shows it.

A run's ledger row says "running" from its start to its end. If the process died on the
way (``kill -9``, a crash), the row keeps saying so, but the kernel has dropped its lock:
a "running" row with the lock free is a run that died, and is shown as one (so is a row
that a later run marked "killed"). Only the newest row can be the run going on now.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.store.ledger import TaskRow
from pipeline.store.lock import LockHolder

DIED = "died"
RUNNING = "running"
_DEAD_STATUSES = ("killed", RUNNING)  # as the ledger writes them


def iso_time(timestamp: float) -> str:
    """A timestamp as report.json writes them: local time with its UTC offset."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(timestamp))


def _local(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def run_status(entry: dict[str, Any], *, newest: bool, holder: LockHolder | None) -> str:
    """The status to show for a ledger run row (``Ledger.runs()``): "running" only for
    the newest row while the lock is held; a run that ended without finishing: "died"."""
    status = str(entry["status"])
    if status == RUNNING and newest and holder is not None:
        return RUNNING
    return DIED if status in _DEAD_STATUSES else status


def unfinished_json(
    entry: dict[str, Any], status: str, holder: LockHolder | None
) -> dict[str, Any]:
    """``report --json`` for a newest run that wrote no report: it died, or it is going on."""
    shown: dict[str, Any] = {
        "run_id": entry["run_id"],
        "status": status,
        "started": iso_time(entry["started"]),
    }
    if status == RUNNING and holder is not None:
        shown["pid"] = holder.pid
    return shown


def unfinished_line(entry: dict[str, Any], status: str, holder: LockHolder | None) -> str:
    """The first line of ``report`` when the newest run wrote no report."""
    started = _local(entry["started"])
    if status == RUNNING and holder is not None:
        pid = f"pid {holder.pid}" if holder.pid is not None else holder.text
        return f"run #{entry['run_id']}: running now ({pid}, started {started})"
    return (
        f"run #{entry['run_id']}: died (started {started}; it was killed or crashed and "
        "wrote no report; the next run resumes its work)"
    )


def last_run_lines(entry: dict[str, Any], label: str = "last run") -> list[str]:
    """A finished run's summary (from its report) and its failures."""
    rep = entry["report"]
    t = rep["tasks"]
    lines = [
        f"{label} #{entry['run_id']}: {rep['status']} (exit {rep['exit_code']}) at "
        f"{rep['finished']}, {rep['run']['duration_s']}s; tasks {t['done']} done, "
        f"{t['failed']} failed, {t['skipped']} skipped, {t['pending']} pending"
    ]
    lines += [
        f"  failed: {f['error']} ({f['kind']}, {f['attempts']} attempts)" for f in rep["failures"]
    ]
    return lines


def history_line(entry: dict[str, Any], status: str) -> str:
    """One run of the history: when, status, exit code, duration and task counts."""
    exit_code = "-" if entry["exit_code"] is None else entry["exit_code"]
    line = f"  #{entry['run_id']:<5} {_local(entry['started'])}  {status:<11} exit {exit_code}"
    if entry["finished"] is not None:
        line += f"  {entry['finished'] - entry['started']:8.2f}s"
    rep = entry["report"]
    if rep:
        t = rep["tasks"]
        line += f"  {t['done']} done, {t['failed']} failed, {t['skipped']} skipped"
    return line


# --- the job log ---------------------------------------------------------------------


@dataclass(frozen=True)
class TaskLine:
    """One task of the job log, as ``report --tasks`` shows it."""

    path: str
    byte_range: list[int] | None
    range_text: str
    status: str
    attempts: int
    duration_s: float | None
    records_in: int
    records_out: int
    malformed: int
    error: str | None

    def as_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "range": self.byte_range,
            "status": self.status,
            "attempts": self.attempts,
            "duration_s": self.duration_s,
            "records_in": self.records_in,
            "records_out": self.records_out,
            "malformed": self.malformed,
            "error": self.error,
        }


def task_line(row: TaskRow) -> TaskLine:
    spec = row.spec(row.status)
    return TaskLine(
        row.path,
        spec.byte_range(),
        spec.describe_range(),
        row.status,
        row.attempts,
        row.duration_s,
        row.records_in,
        row.records_out,
        row.malformed,
        row.error,
    )


def slowest(lines: Iterable[TaskLine], n: int) -> list[TaskLine]:
    """The ``n`` slowest tasks, slowest first (tasks without a duration last)."""
    return heapq.nsmallest(n, lines, key=lambda t: (t.duration_s is None, -(t.duration_s or 0.0)))


JOB_LOG_HEADER = f"{'status':<9} {'tries':>5} {'seconds':>9} {'records':>9}  {'range':<24} path"


def job_log_lines(lines: Sequence[TaskLine]) -> list[str]:
    """A job log in the spirit of GNU parallel's ``--joblog``: a header, one row a task."""
    rows = [JOB_LOG_HEADER]
    for t in lines:
        seconds = "-" if t.duration_s is None else f"{t.duration_s:.3f}"
        rows.append(
            f"{t.status:<9} {t.attempts:>5} {seconds:>9} {t.records_in:>9}  "
            f"{t.range_text:<24} {t.path}"
        )
    return rows
