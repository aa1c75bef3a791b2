"""What ``pipeline report`` shows: a run that died is not "running", the newest run is
running only while its lock is held; the job log and its slowest tasks."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.store.lock import LockHolder
from pipeline.storeview import (
    JOB_LOG_HEADER,
    TaskLine,
    history_line,
    job_log_lines,
    run_status,
    slowest,
    unfinished_json,
    unfinished_line,
)

HOLDER = LockHolder(4242, "pid 4242 on host since 2026-12-05 12:00:00")


def entry(status: str, report: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    return {
        "run_id": 7,
        "started": 1_800_000_000.0,
        "finished": None,
        "status": status,
        "exit_code": None,
        "report": report,
        **fields,
    }


@pytest.mark.parametrize(
    ("status", "newest", "holder", "shown"),
    [
        ("running", True, HOLDER, "running"),  # the run going on now
        ("running", True, None, "died"),  # its lock is free: it was killed
        ("running", False, HOLDER, "died"),  # the lock is the newest run's
        ("killed", True, None, "died"),  # a later run marked it
        ("ok", True, HOLDER, "ok"),
        ("failed", False, None, "failed"),
    ],
)
def test_run_status(status: str, newest: bool, holder: LockHolder | None, shown: str) -> None:
    assert run_status(entry(status), newest=newest, holder=holder) == shown


def test_an_unfinished_run_in_json_is_never_null() -> None:
    died = unfinished_json(entry("running"), "died", None)
    assert died["run_id"] == 7 and died["status"] == "died" and "pid" not in died
    assert died["started"].startswith("20")
    going = unfinished_json(entry("running"), "running", HOLDER)
    assert going["status"] == "running" and going["pid"] == 4242


def test_unfinished_lines() -> None:
    assert unfinished_line(entry("running"), "running", HOLDER).startswith(
        "run #7: running now (pid 4242, started "
    )
    assert unfinished_line(entry("running"), "died", None).startswith("run #7: died (started ")


def test_history_line_has_duration_and_counts() -> None:
    report = {"tasks": {"done": 5, "failed": 1, "skipped": 2}}
    line = history_line(entry("failed", report, finished=1_800_000_012.5, exit_code=1), "failed")
    assert "failed" in line and "exit 1" in line and "12.50s" in line
    assert line.endswith("5 done, 1 failed, 2 skipped")
    assert "exit -" in history_line(entry("running"), "died")


def task(path: str, duration: float | None) -> TaskLine:
    return TaskLine(path, [0, 10], "bytes 0-10", "done", 1, duration, 3, 3, 0, None)


def test_slowest_first_and_unknown_durations_last() -> None:
    lines = [task("a", 0.5), task("b", None), task("c", 2.0), task("d", 1.0)]
    assert [t.path for t in slowest(lines, 3)] == ["c", "d", "a"]
    assert [t.path for t in slowest(lines, 10)] == ["c", "d", "a", "b"]


def test_job_log_lines() -> None:
    header, first, second = job_log_lines([task("/x/a.log", 0.25), task("/x/b.log", None)])
    assert header == JOB_LOG_HEADER
    assert first.split() == ["done", "1", "0.250", "3", "bytes", "0-10", "/x/a.log"]
    assert second.split()[2] == "-"
