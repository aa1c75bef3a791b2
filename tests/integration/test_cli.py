"""The command line end to end: validate, plan, run (incremental, --full, options),
report, warnings for odd inputs, logging options, failing plugins, the lock, the entry
points."""

from __future__ import annotations

import fcntl
import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.faults.test_signals import Harness, assert_no_process_left, kill_group, wait_for
from tests.integration.helpers import REPO, CliResult, run_cli, write_config

pytestmark = pytest.mark.timeout(60)

T = 30  # seconds: bound for every CLI subprocess

LINE_RE = r"^(?P<ip>\S+) (?P<method>\S+) (?P<path>\S+) (?P<status>\d{3}) (?P<bytes>\d+)$"
STATUSES = (200, 200, 200, 404, 500)


def log_lines(tag: int, n: int, start: int = 0) -> str:
    return "".join(
        f"10.{tag}.0.{i % 250} GET /p{i % 7} {STATUSES[i % len(STATUSES)]} {i * 3}\n"
        for i in range(start, start + n)
    )


def expected_stats(*texts: str) -> dict[str, Any]:
    records = [line.split() for text in texts for line in text.splitlines()]
    by_status: dict[str, int] = {}
    for r in records:
        by_status[r[3]] = by_status.get(r[3], 0) + 1
    return {
        "requests": len(records),
        "bytes": sum(int(r[4]) for r in records),
        "by_status": dict(sorted(by_status.items())),
    }


def make_config(tmp_path: Path, **overrides: Any) -> Path:
    config: dict[str, Any] = {
        "name": "clitest",
        "input": {"paths": ["data/*.log"], "format": "lines", "chunk_size": "2KiB"},
        "steps": [
            {"regex": LINE_RE},
            {"types": {"status": "int", "bytes": "int"}},
            {"select": ["ip", "path", "status", "bytes"]},
        ],
        "stats": {
            "requests": {"count": True},
            "bytes": {"sum": "bytes"},
            "by_status": {"count_by": "status"},
        },
        "output": {"dir": "out", "records": "jsonl"},
        "execution": {"workers": 2, "retries": 0},
    }
    for key, value in overrides.items():
        config[key] = value
    return write_config(tmp_path, config)


@pytest.fixture
def job(tmp_path: Path) -> Path:
    """data/a.log (several 2 KiB tasks), data/b.log (two), data/c.log (one); the config
    uses paths relative to its own folder."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.log").write_text(log_lines(1, 300))
    (data / "b.log").write_text(log_lines(2, 100))
    (data / "c.log").write_text(log_lines(3, 20))
    return make_config(tmp_path)


def run(config: Path, *args: str, timeout: float = T) -> CliResult:
    return run_cli(
        "run", str(config), "--progress", "none", *args, cwd=config.parent, timeout=timeout
    )


def ok(result: CliResult) -> CliResult:
    assert result.returncode == 0, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    return result


def load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder`` with its bytes (None for folders)."""
    return {
        str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(folder.rglob("*"))
    }


SQLITE_SIDECARS = ("ledger.sqlite-wal", "ledger.sqlite-shm")


def store_snapshot(out: Path) -> dict[str, bytes | None]:
    """``snapshot`` of an output store, without SQLite's -wal/-shm side files (see
    ``test_plan_and_report_leave_no_sqlite_side_files``)."""
    return {k: v for k, v in snapshot(out).items() if k not in SQLITE_SIDECARS}


def plan_rows(config: Path, *args: str) -> list[tuple[str, str]]:
    """``(reason, file name)`` per task line of ``pipeline plan``."""
    result = ok(run_cli("plan", str(config), *args, cwd=config.parent, timeout=T))
    rows = []
    for line in result.stdout.splitlines():
        reason, path = line.split()[:2]
        rows.append((reason, Path(path).name))
    assert rows, result.stdout
    return rows


def data_text(tmp_path: Path, *names: str) -> list[str]:
    return [(tmp_path / "data" / name).read_text() for name in names]


# --- validate ------------------------------------------------------------------------


def test_validate_prints_resolved_config_and_writes_nothing(tmp_path: Path, job: Path) -> None:
    # A FIFO matching the glob: reading any input would block until the timeout.
    os.mkfifo(tmp_path / "data" / "pipe.log")
    before = snapshot(tmp_path)
    result = ok(run_cli("validate", str(job), cwd=tmp_path, timeout=T))
    resolved = yaml.safe_load(result.stdout)
    assert resolved["name"] == "clitest"
    assert resolved["input"]["paths"] == [str(tmp_path / "data" / "*.log")]
    assert resolved["input"]["chunk_size"] == 2048
    assert resolved["output"] == {
        "dir": str(tmp_path / "out"),
        "records": "jsonl",
        "report_html": True,
    }
    assert resolved["execution"]["workers"] == 2
    assert resolved["steps"][0]["regex"]["pattern"] == LINE_RE
    assert resolved["stats"]["requests"] == {"count": True}
    assert not (tmp_path / "out").exists()
    assert snapshot(tmp_path) == before


# --- plan ----------------------------------------------------------------------------


def test_plan_on_a_fresh_store_lists_new_tasks_and_writes_nothing(
    tmp_path: Path, job: Path
) -> None:
    before = snapshot(tmp_path)
    rows = plan_rows(job)
    assert {reason for reason, _ in rows} == {"new"}
    names = [name for _, name in rows]
    assert set(names) == {"a.log", "b.log", "c.log"}
    assert names.count("a.log") > 1  # 2 KiB chunks: a.log is split
    assert names.count("c.log") == 1
    assert not (tmp_path / "out").exists()
    assert snapshot(tmp_path) == before


def test_plan_reasons_follow_the_store(tmp_path: Path, job: Path) -> None:
    ok(run(job))
    report = load(tmp_path / "out" / "report.json")
    store = store_snapshot(tmp_path / "out")

    rows = plan_rows(job)
    assert len(rows) == report["tasks"]["total"]
    assert {reason for reason, _ in rows} == {"unchanged"}
    assert store_snapshot(tmp_path / "out") == store  # plan changes nothing in the store

    rows = plan_rows(job, "--set", "steps.2.select=[ip, status]")
    assert len(rows) == report["tasks"]["total"]
    assert {reason for reason, _ in rows} == {"config-changed"}
    # an execution setting is not result-affecting
    rows = plan_rows(job, "--set", "execution.retries=5", "--set", "input.chunk_size=1KiB")
    assert {reason for reason, _ in rows} == {"unchanged"}

    with (tmp_path / "data" / "b.log").open("a") as f:
        f.write(log_lines(2, 5, start=100))
    rows = plan_rows(job)  # b.log only grew: its new bytes only
    assert {reason for reason, name in rows if name == "b.log"} == {"grew", "unchanged"}
    assert {reason for reason, name in rows if name != "b.log"} == {"unchanged"}
    rows = plan_rows(job, "--set", "steps.2.select=[ip, status]")
    assert {reason for reason, name in rows if name == "b.log"} <= {"changed", "config-changed"}
    assert {reason for reason, name in rows if name != "b.log"} == {"config-changed"}
    assert store_snapshot(tmp_path / "out") == store


def test_plan_and_report_leave_no_sqlite_side_files(tmp_path: Path, job: Path) -> None:
    ok(run(job))
    store = snapshot(tmp_path / "out")
    assert not [name for name in SQLITE_SIDECARS if name in store]  # the run cleaned up
    plan_rows(job)
    ok(run_cli("report", str(job), cwd=tmp_path, timeout=T))
    assert snapshot(tmp_path / "out") == store


# --- run: incremental, --full ------------------------------------------------------------


def test_second_run_with_nothing_changed_runs_nothing(tmp_path: Path, job: Path) -> None:
    out = tmp_path / "out"
    assert "executor: process" in ok(run(job)).stderr
    first = load(out / "report.json")
    records = (out / "records.jsonl").read_bytes()
    stats = load(out / "stats.json")
    assert stats == expected_stats(*data_text(tmp_path, "a.log", "b.log", "c.log"))
    assert first["tasks"]["done"] == first["tasks"]["total"] > 3

    again = ok(run(job))
    assert "executor:" not in again.stderr  # nothing to run: no pool, no Manager started
    second = load(out / "report.json")
    assert second["tasks"]["total"] == first["tasks"]["total"]
    assert second["tasks"]["skipped"] == second["tasks"]["total"]
    assert second["tasks"]["done"] == second["tasks"]["failed"] == 0
    assert second["run"]["records"] == 0
    assert second["records"] == first["records"]
    assert (out / "records.jsonl").read_bytes() == records
    assert load(out / "stats.json") == stats


def test_appended_lines_equal_a_fresh_full_run(tmp_path: Path, job: Path) -> None:
    out, fresh = tmp_path / "out", tmp_path / "fresh"
    ok(run(job))
    with (tmp_path / "data" / "a.log").open("a") as f:
        f.write(log_lines(1, 40, start=300))
    ok(run(job))
    report = load(out / "report.json")
    assert report["tasks"]["done"] > 0 and report["tasks"]["skipped"] > 0

    ok(run(job, "--full", "--set", f"output.dir={fresh}"))
    assert (out / "records.jsonl").read_bytes() == (fresh / "records.jsonl").read_bytes()
    assert load(out / "stats.json") == load(fresh / "stats.json")
    assert report["records"] == load(fresh / "report.json")["records"]
    # and no double counting: the stats are those of the current files
    assert load(out / "stats.json") == expected_stats(
        *data_text(tmp_path, "a.log", "b.log", "c.log")
    )
    n_lines = sum(t.count("\n") for t in data_text(tmp_path, "a.log", "b.log", "c.log"))
    assert len((out / "records.jsonl").read_bytes().splitlines()) == n_lines


def test_full_recomputes_everything(tmp_path: Path, job: Path) -> None:
    out = tmp_path / "out"
    ok(run(job))
    records = (out / "records.jsonl").read_bytes()
    ok(run(job, "--full"))
    report = load(out / "report.json")
    assert report["tasks"]["done"] == report["tasks"]["total"] > 0
    assert report["tasks"]["skipped"] == 0
    assert (out / "records.jsonl").read_bytes() == records
    assert load(out / "stats.json") == expected_stats(
        *data_text(tmp_path, "a.log", "b.log", "c.log")
    )


# --- report --------------------------------------------------------------------------


def test_report_shows_last_run_and_history(tmp_path: Path, job: Path) -> None:
    ok(run(job))
    ok(run(job))
    result = ok(run_cli("report", str(job), cwd=tmp_path, timeout=T))
    assert re.search(r"last run #\d+: ok \(exit 0\)", result.stdout), result.stdout
    history = result.stdout.split("history:\n", 1)[1]
    entries = [line for line in history.splitlines() if line.strip().startswith("#")]
    assert len(entries) == 2, result.stdout
    assert all(" ok " in line and "exit 0" in line for line in entries)

    result = ok(run_cli("report", str(job), "--json", cwd=tmp_path, timeout=T))
    assert json.loads(result.stdout) == load(tmp_path / "out" / "report.json")


def test_report_without_a_store_is_a_usage_error(tmp_path: Path, job: Path) -> None:
    result = run_cli("report", str(job), cwd=tmp_path, timeout=T)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert str(tmp_path / "out") in result.stderr
    assert not (tmp_path / "out").exists()


# --- options ---------------------------------------------------------------------------


def test_worker_count_options(tmp_path: Path, job: Path) -> None:
    one = ok(run(job, "--workers", "1", "--set", f"output.dir={tmp_path / 'w1'}"))
    assert re.search(r"\b1 workers?\b", one.stderr), one.stderr
    two = ok(run(job, "--set", "execution.workers=2", "--set", f"output.dir={tmp_path / 'w2'}"))
    assert re.search(r"\b2 workers\b", two.stderr), two.stderr
    assert load(tmp_path / "w1" / "stats.json") == load(tmp_path / "w2" / "stats.json")
    assert (tmp_path / "w1" / "records.jsonl").read_bytes() == (
        tmp_path / "w2" / "records.jsonl"
    ).read_bytes()


@pytest.mark.parametrize(
    ("setting", "expect"),
    [
        ("execution.wrokers=2", r"execution\.wrokers.*did you mean 'workers'"),
        ("execution.workers=lots", r"execution\.workers"),
        ("no-equals-sign", r"KEY=VALUE"),
    ],
)
def test_bad_set_exits_2(tmp_path: Path, job: Path, setting: str, expect: str) -> None:
    result = run(job, "--set", setting)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert re.search(expect, result.stderr), result.stderr
    assert not (tmp_path / "out").exists()


def test_globs_matching_nothing_warn_and_exit_0(tmp_path: Path) -> None:
    (tmp_path / "incoming").mkdir()
    config = make_config(
        tmp_path, input={"paths": ["incoming/*.log", "archive/**/*.gz"], "format": "lines"}
    )
    result = ok(run(config))
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning")]
    assert warnings, result.stderr
    text = "\n".join(warnings)
    assert "incoming/*.log" in text and "archive/**/*.gz" in text


def test_directory_and_fifo_are_skipped_with_a_warning(tmp_path: Path, job: Path) -> None:
    (tmp_path / "data" / "folder.log").mkdir()
    os.mkfifo(tmp_path / "data" / "pipe.log")
    result = ok(run(job, timeout=30))
    warnings = "\n".join(line for line in result.stderr.splitlines() if "warning" in line)
    assert "folder.log" in warnings, result.stderr
    assert "pipe.log" in warnings, result.stderr
    assert load(tmp_path / "out" / "stats.json") == expected_stats(
        *data_text(tmp_path, "a.log", "b.log", "c.log")
    )
    assert load(tmp_path / "out" / "report.json")["status"] == "ok"


def test_progress_log_quiet_and_log_file(tmp_path: Path, job: Path) -> None:
    args = ("--set", "execution.workers=1")
    result = ok(run_cli("run", str(job), "--progress", "log", *args, cwd=tmp_path, timeout=T))
    assert "clitest: ok" in result.stderr, result.stderr
    assert re.search(r"tasks: \d+ done, 0 failed", result.stderr), result.stderr
    assert "requests:" in result.stderr
    assert re.search(r"progress: (\d+)/\1 tasks \(0 failed\)", result.stderr), result.stderr

    result = ok(
        run_cli("run", str(job), "--full", "--progress", "bar", *args, cwd=tmp_path, timeout=T)
    )
    assert re.search(r"tasks: 100%\|.*\| (\d+)/\1 ", result.stderr), result.stderr
    assert re.search(r"bytes: 100%\|.*B/s", result.stderr), result.stderr

    result = ok(run_cli("run", str(job), "--full", "--quiet", *args, cwd=tmp_path, timeout=T))
    assert result.stderr == ""
    assert load(tmp_path / "out" / "report.json")["tasks"]["done"] > 0  # it did run

    log_file = tmp_path / "run.log"
    result = ok(
        run_cli(
            "run",
            str(job),
            "--full",
            "--progress",
            "none",
            "--log-file",
            str(log_file),
            *args,
            cwd=tmp_path,
            timeout=T,
        )
    )
    text = log_file.read_text(encoding="utf-8")
    assert re.search(r"task\(s\) to run", text), text
    assert re.search(r"\b1 workers?\b", text), text
    assert "clitest: ok" in text and "requests:" in text, text
    assert "clitest: ok" in result.stderr  # the console still gets the lines

    quiet_log = tmp_path / "quiet.log"
    result = ok(
        run_cli(
            "run",
            str(job),
            "--full",
            "--quiet",
            "--log-file",
            str(quiet_log),
            *args,
            cwd=tmp_path,
            timeout=T,
        )
    )
    assert result.stderr == ""
    assert re.search(r"task\(s\) to run", quiet_log.read_text(encoding="utf-8"))


# --- a failing plugin --------------------------------------------------------------------

PLUGIN = """
def check(record):
    if "EXPLODE" in record["line"]:
        raise ValueError("kaboom in the plugin")
    return record
"""


def test_failing_call_step_fails_only_its_task(tmp_path: Path, job: Path) -> None:
    (tmp_path / "boomplug.py").write_text(PLUGIN)
    bad = tmp_path / "data" / "c.log"
    head = log_lines(3, 5)
    bad.write_text(head + "10.3.9.9 EXPLODE /x 200 1\n" + log_lines(3, 5, start=5))
    config = make_config(
        tmp_path,
        steps=[
            {"call": "boomplug:check"},
            {"regex": LINE_RE},
            {"types": {"status": "int", "bytes": "int"}},
            {"select": ["ip", "path", "status", "bytes"]},
        ],
    )
    result = run(config, "--set", "execution.retries=1")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr

    out = tmp_path / "out"
    report = load(out / "report.json")
    assert report["status"] == "failed" and report["exit_code"] == 1
    assert report["tasks"]["failed"] == 1
    assert report["tasks"]["done"] == report["tasks"]["total"] - 1
    assert len(report["failures"]) == 1
    failure = report["failures"][0]
    assert failure["path"] == str(bad)
    assert failure["kind"] == "error"
    assert failure["attempts"] == 2
    assert "kaboom in the plugin" in failure["error"]
    assert "ValueError" in failure["error"]
    assert re.search(r"\bline 6\b", failure["error"]), failure["error"]  # the 6th line raised
    assert "kaboom in the plugin" in result.stderr

    # the other files are committed; nothing of the failed task is
    assert load(out / "stats.json") == expected_stats(*data_text(tmp_path, "a.log", "b.log"))
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert records and not [r for r in records if r["ip"].startswith("10.3.")]
    assert report["records"]["in"] == sum(
        t.count("\n") for t in data_text(tmp_path, "a.log", "b.log")
    )

    # the next run retries just the failed task (and fails it again)
    rows = plan_rows(config)
    assert {reason for reason, name in rows if name == "c.log"} == {"failed-before"}
    assert {reason for reason, name in rows if name != "c.log"} == {"unchanged"}


GC_PLUGIN = """
import gc

def mark(record):
    return {"frozen": gc.get_freeze_count()}
"""


def test_workers_start_with_the_parents_heap_frozen(tmp_path: Path, job: Path) -> None:
    """Forked workers inherit a frozen heap: their full collections skip (and so never
    copy) the parent's tens of thousands of objects."""
    (tmp_path / "gcplug.py").write_text(GC_PLUGIN)
    config = make_config(tmp_path, steps=[{"call": "gcplug:mark"}], stats={})
    ok(run(config, "--set", "execution.start_method=fork"))
    frozen = {r["frozen"] for r in map(json.loads, (tmp_path / "out" / "records.jsonl").open())}
    assert frozen and min(frozen) > 10_000, frozen


# --- entry points ----------------------------------------------------------------------


def test_python_m_pipeline_help() -> None:
    result = ok(run_cli("--help", timeout=T))
    for command in ("run", "validate", "plan", "report"):
        assert re.search(rf"\b{command}\b", result.stdout), result.stdout


def test_console_script_help() -> None:
    script = REPO / ".venv" / "bin" / "pipeline"
    assert script.exists(), script
    proc = subprocess.run(
        [str(script), "--help"],
        capture_output=True,
        text=True,
        timeout=T,
        stdin=subprocess.DEVNULL,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    for command in ("run", "validate", "plan", "report"):
        assert re.search(rf"\b{command}\b", proc.stdout), proc.stdout
    proc = subprocess.run(
        [str(script), "run", "--help"], capture_output=True, text=True, timeout=T, cwd=REPO
    )
    assert proc.returncode == 0 and "--workers" in proc.stdout and "--full" in proc.stdout


# --- the lock ----------------------------------------------------------------------------


def test_second_run_exits_75_while_the_lock_is_held(tmp_path: Path, job: Path) -> None:
    out = tmp_path / "out"
    ok(run(job))
    report_before = (out / "report.json").read_bytes()
    fd = os.open(out / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        started = time.monotonic()
        result = run(job, "--full", timeout=20)
        elapsed = time.monotonic() - started
        assert result.returncode == 75, (result.returncode, result.stderr)
        assert elapsed < 10
        assert "lock" in result.stderr and str(out) in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) <= 3, result.stderr
        assert (out / "report.json").read_bytes() == report_before
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    # released: runs again
    ok(run(job))


def test_small_files_packed_in_batch_rows_are_replaced_one_by_one(tmp_path: Path) -> None:
    """Small files are committed as batch rows of the ledger (one row per batch). An
    edited file leaves its batch, a touched one stays, a new one joins later: the store
    then equals a fresh --full run, with nothing counted twice."""
    data = tmp_path / "data"
    data.mkdir()
    for i in range(40):
        (data / f"f{i:02d}.log").write_text(log_lines(i, 3 + i % 4))
    job = make_config(tmp_path)
    out, fresh = tmp_path / "out", tmp_path / "fresh"
    ok(run(job))
    with sqlite3.connect(out / "ledger.sqlite") as db:
        assert db.execute("SELECT count(*) FROM batches").fetchone()[0] > 1
        assert db.execute("SELECT count(*) FROM tasks").fetchone()[0] < 40
    (data / "f07.log").write_text(log_lines(99, 9))  # edited
    st = (data / "f21.log").stat()
    os.utime(data / "f21.log", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched
    (data / "f40.log").write_text(log_lines(40, 5))  # new
    reasons = dict((name, reason) for reason, name in plan_rows(job))
    assert (reasons["f07.log"], reasons["f21.log"], reasons["f40.log"]) == (
        "changed",
        "unchanged",
        "new",
    )
    ok(run(job))
    assert load(out / "report.json")["tasks"]["done"] == 2
    ok(run(job, "--full", "--set", f"output.dir={fresh}"))
    assert (out / "records.jsonl").read_bytes() == (fresh / "records.jsonl").read_bytes()
    assert load(out / "stats.json") == load(fresh / "stats.json")
    names = sorted(p.name for p in data.iterdir())
    assert load(out / "stats.json") == expected_stats(*data_text(tmp_path, *names))
    assert load(out / "report.json")["records"] == load(fresh / "report.json")["records"]


def test_touched_files_are_not_processed_again(tmp_path: Path, job: Path) -> None:
    """A file whose mtime moved but whose bytes did not (touch, cp -p of the same data)
    is checked by content (small files) and skipped; a same-size edit is not."""
    ok(run(job))
    records = (tmp_path / "out" / "records.jsonl").read_bytes()
    target = tmp_path / "data" / "c.log"  # one task: read whole, so it has a digest
    stat = target.stat()
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert {reason for reason, _ in plan_rows(job)} == {"unchanged"}
    ok(run(job))
    report = load(tmp_path / "out" / "report.json")
    assert report["tasks"]["done"] == 0 and report["tasks"]["skipped"] == report["tasks"]["total"]
    assert (tmp_path / "out" / "records.jsonl").read_bytes() == records
    data = target.read_bytes()
    target.write_bytes(data.replace(b"200", b"201", 1))  # same size, other bytes
    rows = plan_rows(job)
    assert {reason for reason, name in rows if name == target.name} == {"changed"}


# --- the command line: typer, usage errors, help, completion -----------------------------

COMMANDS = ("run", "validate", "plan", "report", "status", "schema", "version")


def one_error_line(result: CliResult) -> str:
    """The single ``error:`` line a failed command printed (no traceback, no stdout)."""
    assert "Traceback" not in result.stderr
    assert result.stdout == "", result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_version_option_and_command() -> None:
    from pipeline import __version__

    for args in (("--version",), ("version",)):
        assert ok(run_cli(*args, timeout=T)).stdout == f"pipeline {__version__}\n"


def test_no_command_prints_the_help_on_stderr_and_exits_2() -> None:
    result = run_cli(timeout=T)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert "Usage: pipeline" in result.stderr
    for command in COMMANDS:
        assert re.search(rf"^\s+{command}\s", result.stderr, re.M), result.stderr


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (("run", "{config}", "--bogus"), r"No such option: --bogus"),
        (("run", "{config}", "--workers", "0"), r"'--workers'"),
        (("run", "{config}", "--workers", "lots"), r"'--workers'"),
        (("run", "{config}", "--progress", "fancy"), r"'--progress'"),
        (("run",), r"Missing argument 'CONFIG'"),
        (("frobnicate", "{config}"), r"No such command 'frobnicate'"),
        (("report", "{config}", "--slowest", "0"), r"'--slowest'"),
    ],
)
def test_usage_errors_exit_2_with_one_line_and_write_nothing(
    tmp_path: Path, job: Path, args: tuple[str, ...], expect: str
) -> None:
    before = snapshot(tmp_path)
    result = run_cli(*(a.format(config=job) for a in args), cwd=tmp_path, timeout=T)
    assert result.returncode == 2, result.stderr
    assert re.search(expect, one_error_line(result)), result.stderr
    assert snapshot(tmp_path) == before


def test_every_commands_help_has_examples_and_exit_codes() -> None:
    for command in COMMANDS:
        text = ok(run_cli(command, "--help", timeout=T)).stdout
        assert "Examples:" in text and "Exit codes:" in text, text
        examples = text.split("Examples:", 1)[1].split("Exit codes:", 1)[0]
        assert re.search(rf"^\s+pipeline (--)?{command}\b", examples, re.M), text
    exits = ok(run_cli("run", "--help", timeout=T)).stdout.split("Exit codes:", 1)[1]
    for code in ("0", "1", "2", "70", "75", "130/143"):
        assert re.search(rf"^\s+{re.escape(code)}\s+\w", exits, re.M), exits


def test_shell_completion(tmp_path: Path) -> None:
    script = ok(run_cli("--show-completion", "bash", timeout=T)).stdout
    assert "_PIPELINE_COMPLETE=complete_bash" in script, script
    ok(run_cli("--install-completion", "bash", env={"HOME": str(tmp_path)}, timeout=T))
    installed = "\n".join(p.read_text() for p in tmp_path.rglob("*") if p.is_file())
    assert "_PIPELINE_COMPLETE=complete_bash" in installed
    # what bash asks for when the user presses Tab
    words = {"re": "report", "run x.yaml --pro": "--progress", "report x.yaml --sl": "--slowest"}
    for typed, expected in words.items():
        env = {
            "_PIPELINE_COMPLETE": "complete_bash",
            "COMP_WORDS": f"pipeline {typed}",
            "COMP_CWORD": str(len(typed.split())),
        }
        assert ok(run_cli(env=env, timeout=T)).stdout.split() == [expected]


def test_schema_is_the_configs_json_schema() -> None:
    from pipeline.config import PipelineConfig

    schema = json.loads(ok(run_cli("schema", timeout=T)).stdout)
    assert schema == PipelineConfig.model_json_schema()
    assert {"input", "output", "steps", "stats", "execution"} <= set(schema["properties"])


# --- the error contract ------------------------------------------------------------------

# The CLI with load_config replaced by a function that raises: an unexpected error, a bug.
INTERNAL_FAULT = """
import sys

import pipeline.cli
import pipeline.config


def broken(*args, **kwargs):
    raise RuntimeError("an injected fault")


pipeline.config.load_config = broken
pipeline.cli.main(sys.argv[1:])
"""


def run_with_a_fault(*args: str, cwd: Path) -> CliResult:
    proc = subprocess.run(
        [sys.executable, "-c", INTERNAL_FAULT, *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=T,
        stdin=subprocess.DEVNULL,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


@pytest.mark.parametrize("command", ["run", "validate", "plan", "report", "status"])
def test_an_internal_error_exits_70_with_one_line(tmp_path: Path, job: Path, command: str) -> None:
    before = snapshot(tmp_path)
    result = run_with_a_fault(command, str(job), cwd=tmp_path)
    assert result.returncode == 70, result.stderr
    line = one_error_line(result)
    assert "internal error" in line and "RuntimeError: an injected fault" in line
    assert "--debug" in line
    assert snapshot(tmp_path) == before

    result = run_with_a_fault(command, str(job), "--debug", cwd=tmp_path)
    assert result.returncode == 70, result.stderr
    assert "Traceback" in result.stderr and "an injected fault" in result.stderr


@pytest.mark.parametrize("where", ["missing/run.log", "data"])  # no such folder; a folder
def test_a_log_file_that_cannot_be_opened_exits_2_and_writes_nothing(
    tmp_path: Path, job: Path, where: str
) -> None:
    before = snapshot(tmp_path)
    log_file = tmp_path / where
    result = run(job, "--log-file", str(log_file))
    assert result.returncode == 2, result.stderr
    line = one_error_line(result)
    assert "--log-file" in line and str(log_file) in line, line
    assert snapshot(tmp_path) == before


# --- report: the job log, a run going on, a run that died -----------------------------------


def failing_job(tmp_path: Path) -> tuple[Path, Path]:
    """The ``job`` data with a plugin that fails c.log's only task; its config and c.log."""
    (tmp_path / "boomplug.py").write_text(PLUGIN)
    bad = tmp_path / "data" / "c.log"
    bad.write_text(log_lines(3, 5) + "10.3.9.9 EXPLODE /x 200 1\n")
    config = make_config(
        tmp_path,
        steps=[
            {"call": "boomplug:check"},
            {"regex": LINE_RE},
            {"types": {"status": "int", "bytes": "int"}},
        ],
        execution={"workers": 2, "retries": 1},
    )
    return config, bad


def test_report_tasks_is_a_job_log(tmp_path: Path, job: Path) -> None:
    config, bad = failing_job(tmp_path)
    assert run(config).returncode == 1
    report = load(tmp_path / "out" / "report.json")
    total = report["tasks"]["total"]

    text = ok(run_cli("report", str(config), "--tasks", cwd=tmp_path, timeout=T)).stdout
    header, *rows = text.splitlines()
    assert header.split() == ["status", "tries", "seconds", "records", "range", "path"]
    assert len(rows) == total, text
    failed = [row for row in rows if row.split()[0] == "failed"]
    assert len(failed) == 1 and failed[0].endswith(str(bad)), text
    assert failed[0].split()[1] == "2"  # attempts: one retry
    done = [row.split() for row in rows if row.split()[0] == "done"]
    assert len(done) == total - 1
    assert sum(int(fields[3]) for fields in done) == report["records"]["in"]
    assert all(re.search(r" bytes \d+-\d+ ", row) for row in rows), text

    tasks = json.loads(
        ok(run_cli("report", str(config), "--tasks", "--json", cwd=tmp_path, timeout=T)).stdout
    )
    assert len(tasks) == total
    (failure,) = [t for t in tasks if t["status"] == "failed"]
    assert failure["path"] == str(bad) and failure["attempts"] == 2
    assert "kaboom in the plugin" in failure["error"]
    assert sum(t["records_in"] for t in tasks if t["status"] == "done") == (report["records"]["in"])

    slowest = json.loads(
        ok(
            run_cli("report", str(config), "--slowest", "2", "--json", cwd=tmp_path, timeout=T)
        ).stdout
    )
    assert len(slowest) == 2
    durations = [t["duration_s"] for t in slowest if t["duration_s"] is not None]
    assert durations == sorted(durations, reverse=True)
    text = ok(run_cli("report", str(config), "--slowest", "3", cwd=tmp_path, timeout=T)).stdout
    assert len(text.splitlines()) == 1 + 3


HOLD_PLUGIN = """
import os
import signal


def hold(record):
    # tells the test the run is under way, then waits for the test's kill -9
    open(os.environ["HOLD_MARKER"], "w").close()
    signal.pause()
"""


def test_report_shows_a_run_going_on_then_that_it_died(tmp_path: Path, job: Path) -> None:
    ok(run(job))  # a finished run first: its report must not stand for the newer runs
    (tmp_path / "holdplug.py").write_text(HOLD_PLUGIN)
    marker = tmp_path / "held"
    config = make_config(
        tmp_path,
        steps=[{"call": "holdplug:hold"}],
        execution={"executor": "serial", "retries": 0},
    )
    harness = Harness(tmp_path / "logs")
    try:
        env = {**os.environ, "PYTHONPATH": str(REPO), "HOLD_MARKER": str(marker)}
        held = harness.launch("run", str(config), "--progress", "none", "--full", env=env)
        wait_for(marker.exists, 60, "the plugin's marker", held)

        text = ok(run_cli("report", str(config), cwd=tmp_path, timeout=T)).stdout
        assert re.search(rf"^run #2: running now \(pid {held.pid}\b", text, re.M), text
        assert re.search(r"^last finished run #1: ok \(exit 0\)", text, re.M), text
        assert re.search(r"^\s+#2\s.*\brunning\b", text, re.M), text
        now = json.loads(
            ok(run_cli("report", str(config), "--json", cwd=tmp_path, timeout=T)).stdout
        )
        assert now["run_id"] == 2 and now["status"] == "running" and now["pid"] == held.pid

        kill_group(held.pgid)
        held.wait(30)
        assert_no_process_left(held.pgid)
    finally:
        harness.cleanup()

    text = ok(run_cli("report", str(config), cwd=tmp_path, timeout=T)).stdout
    assert re.search(r"^run #2: died \(started ", text, re.M), text
    assert re.search(r"^\s+#2\s.*\bdied\b", text, re.M), text
    assert "running" not in text, text
    died = json.loads(ok(run_cli("report", str(config), "--json", cwd=tmp_path, timeout=T)).stdout)
    assert died is not None and died["run_id"] == 2 and died["status"] == "died", died
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", died["started"]), died
