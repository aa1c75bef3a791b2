"""Fault injection into pool workers (RELIABILITY.md 5.2-5.4; SPEC "Reliability").

Black-box: each test runs ``python -m pipeline run`` in its own session on six tiny files
(2,000 self-identifying lines each, cut into 2 tasks per file) with a step plugin,
``plugins_workers.py``, copied next to the config. The plugin is inert unless the
``FAULT_*`` environment variables are set, so the re-run of every scenario runs the very
same config without the fault: the ledger must re-run only what failed or never ran, and
the final outputs must equal a clean run's byte for byte.

After every CLI invocation the run's session is scanned in /proc: any process still alive
(worker, fork server, resource tracker, Manager) fails the test; a run that does not end
within its time limit is SIGKILLed and fails as a hang.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.helpers import REPO, run_cli, write_config

pytestmark = pytest.mark.timeout(60)

PLUGIN = Path(__file__).with_name("plugins_workers.py")
PYTHON = sys.executable

N_FILES = 6
N_LINES = 2000
CHUNK = "25000"  # bytes: each 50,000-byte file is exactly two tasks
TOTAL_TASKS = 2 * N_FILES
FAULT_FILE = 3
FAULT_LINE = 1500
LEFTOVER_GRACE_S = 5.0

METHODS = ("fork", "spawn", "forkserver")
SUBMITS = ("async", "imap")
LINE_RE = re.compile(r"^F(?P<f>\d{4}) L(?P<l>\d{6})")


def line_text(f: int, n: int) -> str:
    return f"F{f:04d} L{n:06d} payload é"


LINE_WIDTH = len((line_text(0, 0) + "\n").encode())  # every line has the same byte length
FAULT_MARK = line_text(FAULT_FILE, FAULT_LINE).split(" payload")[0]  # "F0003 L001500"
FAULT_OFFSET = FAULT_LINE * LINE_WIDTH  # byte offset of the marker line in its file


# --- running the CLI in its own session --------------------------------------------------


def session_processes(sid: int) -> list[str]:
    """Live (non-zombie) processes whose session or process group is ``sid``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                stat = handle.read().decode("utf-8", "replace")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        state, pgrp, session = fields[0], int(fields[2]), int(fields[3])
        if state in ("Z", "X") or sid not in (pgrp, session):
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                cmd = handle.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
        except OSError:
            cmd = "?"
        found.append(f"pid {entry} state {state}: {cmd[:200]}")
    return found


def process_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            state = handle.read().decode("utf-8", "replace").rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def assert_no_leftovers(sid: int, grace: float = LEFTOVER_GRACE_S) -> None:
    """Fail if any process of session ``sid`` is still alive ``grace`` s from now (and kill
    it, so one failure does not leak into the next test)."""
    deadline = time.monotonic() + grace
    while (left := session_processes(sid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    if left:
        for item in left:
            pid = int(item.split()[1])
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        pytest.fail(f"processes of run (session {sid}) left behind:\n" + "\n".join(left))


@dataclass
class Run:
    rc: int
    stdout: str
    stderr: str
    elapsed: float
    out: Path

    @property
    def report(self) -> dict[str, Any]:
        return json.loads((self.out / "report.json").read_text())

    @property
    def stats(self) -> dict[str, Any]:
        return json.loads((self.out / "stats.json").read_text())

    @property
    def records(self) -> bytes:
        return (self.out / "records.jsonl").read_bytes()


def run_pipeline(
    config: Path, env: dict[str, str] | None = None, timeout: float = 30, args: tuple = ()
) -> Run:
    """``pipeline run CONFIG`` in a new session, output to files; hard time limit; then
    assert that nothing of the run is left alive."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("FAULT_")}
    full_env = {**base, "PYTHONPATH": str(REPO), **(env or {})}
    folder = config.parent
    index = len(list(folder.glob("cli-*.err")))
    out_path, err_path = folder / f"cli-{index}.out", folder / f"cli-{index}.err"
    started = time.monotonic()
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(
            [PYTHON, "-m", "pipeline", "run", str(config), "--progress", "none", *args],
            cwd=REPO,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
    try:
        rc = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        for item in session_processes(proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(item.split()[1]), signal.SIGKILL)
        proc.wait()
        pytest.fail(
            f"HANG: pipeline run did not end within {timeout}s; stderr:\n"
            + err_path.read_text(errors="replace")[-3000:]
        )
    elapsed = time.monotonic() - started
    assert_no_leftovers(proc.pid)
    return Run(
        rc,
        out_path.read_text(errors="replace"),
        err_path.read_text(errors="replace"),
        elapsed,
        folder / "out",
    )


# --- data, configs, the clean reference ---------------------------------------------------


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("fault-data")
    for f in range(N_FILES):
        body = "".join(line_text(f, n) + "\n" for n in range(N_LINES)).encode()
        assert len(body) == N_LINES * LINE_WIDTH
        (data / f"f{f}.log").write_bytes(body)
    return data


def make_job(
    folder: Path,
    data: Path,
    start_method: str,
    submit: str = "async",
    **execution: Any,
) -> Path:
    shutil.copy(PLUGIN, folder / PLUGIN.name)
    config = {
        "name": "worker-faults",
        "input": {"paths": [str(data / "*.log")], "format": "lines", "chunk_size": CHUNK},
        "steps": [
            {"regex": LINE_RE.pattern},
            {"call": "plugins_workers:inject"},
        ],
        "stats": {"n": {"count": True}, "by_file": {"count_by": "f"}},
        "output": {"dir": str(folder / "out"), "records": "jsonl"},
        "execution": {
            "executor": "process",
            "workers": 2,
            "submit": submit,
            "start_method": start_method,
            "retries": 1,
            **execution,
        },
    }
    return write_config(folder, config)


def encode(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True)
class Clean:
    records: bytes
    stats: dict[str, Any]


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Clean:
    """One run without any fault, checked against the obvious computation."""
    folder = tmp_path_factory.mktemp("clean")
    result = run_pipeline(make_job(folder, data_dir, "fork"))
    assert result.rc == 0, result.stderr
    want = "".join(
        encode({"line": line_text(f, n), "f": f"{f:04d}", "l": f"{n:06d}"}) + "\n"
        for f in range(N_FILES)
        for n in range(N_LINES)
    ).encode()
    assert result.records == want
    stats = {"by_file": {f"{f:04d}": N_LINES for f in range(N_FILES)}, "n": N_FILES * N_LINES}
    assert result.stats == stats
    return Clean(result.records, stats)


def fault_env(folder: Path, mode: str, match: str = FAULT_MARK, **extra: str) -> dict[str, str]:
    fault_dir = folder / "fault"
    fault_dir.mkdir(exist_ok=True)
    return {"FAULT_MODE": mode, "FAULT_MATCH": match, "FAULT_DIR": str(fault_dir), **extra}


def hits(folder: Path) -> list[int]:
    """Pids of the workers that reached a matching record, one per attempt."""
    path = folder / "fault" / "hits"
    return [int(x) for x in path.read_text().split()] if path.exists() else []


def cases(*params: tuple) -> list[tuple]:
    """Each param combined with every start method, submit modes alternating."""
    out = []
    for i, param in enumerate(params):
        for j, method in enumerate(METHODS):
            submit = SUBMITS[(i + j) % 2]
            name = "-".join((*param, method, submit))
            out.append(pytest.param(*param, method, submit, id=name))
    return out


def method_cases(offset: int = 0) -> list[Any]:
    return [
        pytest.param(m, SUBMITS[(j + offset) % 2], id=f"{m}-{SUBMITS[(j + offset) % 2]}")
        for j, m in enumerate(METHODS)
    ]


# --- checks shared by the scenarios -------------------------------------------------------


def records_without(clean: Clean, path: str, lo: int, hi: int) -> bytes:
    """The clean records minus the lines of ``path`` whose first byte is in [lo, hi)."""
    name = os.path.basename(path)
    kept = []
    for line in clean.records.splitlines(keepends=True):
        rec = json.loads(line)
        m = LINE_RE.match(rec["line"])
        assert m
        f, n = int(m["f"]), int(m["l"])
        if f"f{f}.log" == name and lo <= n * LINE_WIDTH < hi:
            continue
        kept.append(line)
    return b"".join(kept)


def stats_of(records: bytes) -> dict[str, Any]:
    files = Counter(json.loads(line)["f"] for line in records.splitlines())
    return {"by_file": dict(sorted(files.items())), "n": sum(files.values())}


def assert_store_ok(out: Path) -> None:
    with sqlite3.connect(out / "ledger.sqlite") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    db.close()
    tmp = out / "parts" / ".tmp"
    assert not tmp.exists() or not list(tmp.iterdir()), list(tmp.iterdir())
    stray = [p for p in out.rglob("*") if p.is_file() and ".tmp" in p.name]
    assert not stray, stray


def assert_one_failure(
    result: Run, clean: Clean, kind: str, *error_parts: str, attempts: int = 2
) -> dict[str, Any]:
    """Exit 1; exactly the marker's task failed as ``kind``; everything else committed."""
    assert result.rc == 1, result.stderr
    assert "Traceback" not in result.stderr
    report = result.report
    assert report["status"] == "failed" and report["exit_code"] == 1
    assert report["tasks"] == {
        "total": TOTAL_TASKS,
        "done": TOTAL_TASKS - 1,
        "failed": 1,
        "skipped": 0,
        "pending": 0,
    }
    [failure] = report["failures"]
    assert failure["path"].endswith(f"f{FAULT_FILE}.log")
    lo, hi = failure["range"]
    assert lo <= FAULT_OFFSET < hi <= N_LINES * LINE_WIDTH
    assert hi - lo < N_LINES * LINE_WIDTH  # a byte range, not the whole file
    assert failure["kind"] == kind, failure
    assert failure["attempts"] == attempts
    assert failure["path"] in failure["error"]
    for part in error_parts:
        assert part in failure["error"], failure["error"]
    want = records_without(clean, failure["path"], lo, hi)
    assert result.records == want  # nothing of the failed task, nothing else lost
    assert result.stats == stats_of(want)
    assert result.stats["n"] == N_FILES * N_LINES - (hi - lo) // LINE_WIDTH
    assert report["records"]["out"] == result.stats["n"]
    assert_store_ok(result.out)
    return failure


def assert_rerun_repairs(config: Path, clean: Clean, first: dict[str, Any]) -> Run:
    """Scenario 8: the same config again, fault gone: only what failed or never ran runs,
    and the outputs equal a clean run's."""
    rerun = run_pipeline(config)
    assert rerun.rc == 0, rerun.stderr
    redo = first["tasks"]["failed"] + first["tasks"]["pending"]
    assert rerun.report["tasks"] == {
        "total": TOTAL_TASKS,
        "done": redo,
        "failed": 0,
        "skipped": TOTAL_TASKS - redo,
        "pending": 0,
    }
    assert rerun.report["status"] == "ok" and rerun.report["failures"] == []
    assert rerun.records == clean.records
    assert rerun.stats == clean.stats
    assert rerun.report["records"]["in"] == N_FILES * N_LINES
    assert_store_ok(rerun.out)
    return rerun


# --- the harness itself -------------------------------------------------------------------


@pytest.mark.timeout(20)
def test_leftover_check_detects_a_stray_process() -> None:
    """The no-leftover check can fail: a session whose leader exits but leaves a child."""
    proc = subprocess.Popen(
        ["sh", "-c", "sleep 30 & exit 0"], start_new_session=True, stdin=subprocess.DEVNULL
    )
    proc.wait(10)
    assert session_processes(proc.pid), "the stray sleep was not seen"
    with pytest.raises(pytest.fail.Exception, match="left behind"):
        assert_no_leftovers(proc.pid, grace=0.3)
    time.sleep(0.1)
    assert not session_processes(proc.pid)  # and the check cleaned it up


# --- 1. a worker that dies (or raises a BaseException) on every attempt --------------------


@pytest.mark.parametrize(
    ("fault", "method", "submit"),
    [
        *cases(("kill",), ("exit",), ("sysexit",)),
        pytest.param("kbi", "forkserver", "async", id="kbi-forkserver-async"),
    ],
)
def test_worker_dies_mid_task_every_attempt(
    tmp_path: Path, data_dir: Path, clean: Clean, fault: str, method: str, submit: str
) -> None:
    config = make_job(tmp_path, data_dir, method, submit)
    result = run_pipeline(config, fault_env(tmp_path, fault))
    assert result.elapsed < 20
    if fault == "kill":
        assert_one_failure(result, clean, "crashed", "SIGKILL")
    elif fault == "exit":
        assert_one_failure(result, clean, "crashed", "exited with status 3")
    else:
        # SystemExit / KeyboardInterrupt raised by a step are caught by the task wrapper
        # (it catches BaseException): an ordinary step error, with the record's position;
        # the worker survives. Sensible: the task fails, nothing hangs, nothing is lost.
        name = {"sysexit": "SystemExit", "kbi": "KeyboardInterrupt"}[fault]
        assert_one_failure(
            result, clean, "error", f"byte offset {FAULT_OFFSET}", f"{name}: injected {name}"
        )
    pids = hits(tmp_path)
    assert len(pids) == 2  # retries + 1 attempts, each reached the marker
    if fault in ("kill", "exit"):
        assert pids[0] != pids[1]  # the retry ran on a fresh worker
    assert_rerun_repairs(config, clean, result.report)


# --- 2. a crash on the first attempt only --------------------------------------------------


@pytest.mark.parametrize(("method", "submit"), method_cases(1))
def test_crash_once_then_retry_succeeds(
    tmp_path: Path, data_dir: Path, clean: Clean, method: str, submit: str
) -> None:
    config = make_job(tmp_path, data_dir, method, submit)
    result = run_pipeline(config, fault_env(tmp_path, "kill_once"))
    assert result.rc == 0, result.stderr
    assert result.elapsed < 20
    pids = hits(tmp_path)
    assert len(pids) == 2 and pids[0] != pids[1]
    assert (tmp_path / "fault" / "once-kill").exists()
    report = result.report
    assert report["status"] == "ok" and report["failures"] == []
    assert report["tasks"]["done"] == TOTAL_TASKS
    assert result.records == clean.records  # byte-identical to the run without the fault
    assert result.stats == clean.stats
    assert_store_ok(result.out)
    assert_rerun_repairs(config, clean, report)


# --- 3. a task that hangs past the timeout -------------------------------------------------


@pytest.mark.parametrize(("method", "submit"), method_cases(0))
def test_hung_task_is_stopped_retried_then_failed(
    tmp_path: Path, data_dir: Path, clean: Clean, method: str, submit: str
) -> None:
    config = make_job(tmp_path, data_dir, method, submit, timeout="1s")
    result = run_pipeline(config, fault_env(tmp_path, "hang"))
    assert result.elapsed < 15, result.elapsed  # 2 attempts x 1 s + pool restarts
    assert_one_failure(result, clean, "timeout", "timeout")
    pids = hits(tmp_path)
    assert len(pids) == 2 and pids[0] != pids[1]
    for pid in pids:  # the hung workers were killed, not left sleeping
        assert not process_alive(pid), pid
    assert_rerun_repairs(config, clean, result.report)


# --- 4. a step that raises on one record ---------------------------------------------------


@pytest.mark.parametrize(("method", "submit"), method_cases(1))
def test_step_error_fails_only_its_task(
    tmp_path: Path, data_dir: Path, clean: Clean, method: str, submit: str
) -> None:
    config = make_job(tmp_path, data_dir, method, submit)
    result = run_pipeline(config, fault_env(tmp_path, "raise"))
    failure = assert_one_failure(
        result, clean, "error", f"byte offset {FAULT_OFFSET}", "ValueError: injected failure"
    )
    assert len(hits(tmp_path)) == 2
    # The plan names the failed task (and only it) as the work of the next run.
    plan = run_cli("plan", str(config), timeout=30)
    assert plan.returncode == 0, plan.stderr
    lo, hi = failure["range"]
    lines = [x for x in plan.stdout.splitlines() if x.strip()]
    assert len(lines) == TOTAL_TASKS
    rerun = [x for x in lines if x.startswith("failed-before")]
    assert len(rerun) == 1 and rerun[0].endswith(f"f{FAULT_FILE}.log  bytes {lo}-{hi}")
    assert all(x.startswith("unchanged") for x in lines if x not in rerun)
    assert_rerun_repairs(config, clean, result.report)


# --- 5. the error budget -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("max_failures", "budget", "method", "submit"),
    [
        pytest.param(1, 1, "fork", "async", id="1-fork-async"),
        pytest.param("50%", 6, "forkserver", "imap", id="50pct-forkserver-imap"),
    ],
)
def test_error_budget_stops_submitting(
    tmp_path: Path,
    data_dir: Path,
    clean: Clean,
    max_failures: int | str,
    budget: int,
    method: str,
    submit: str,
) -> None:
    """Files 1-5 fail on every record (10 of 12 tasks); one worker, so a window of 2."""
    workers = 1
    config = make_job(
        tmp_path, data_dir, method, submit, workers=workers, max_failures=max_failures
    )
    match = ",".join(f"F{f:04d} " for f in range(1, N_FILES))
    result = run_pipeline(config, fault_env(tmp_path, "raise", match))
    assert result.rc == 1, result.stderr
    assert "Traceback" not in result.stderr
    report = result.report
    tasks = report["tasks"]
    assert report["status"] == "failed" and report["exit_code"] == 1
    assert "stopped_by" in report, report
    assert budget <= tasks["failed"] <= budget + 2 * workers, tasks
    assert tasks["pending"] > 0, tasks
    assert tasks["skipped"] == 0
    assert tasks["done"] + tasks["failed"] + tasks["skipped"] + tasks["pending"] == TOTAL_TASKS
    assert len(report["failures"]) == tasks["failed"]
    assert all(f["kind"] == "error" for f in report["failures"])
    # The failures that spent the budget had used their retries; tasks that were in flight
    # when the budget ran out are final whatever their attempt (no retry once stopping).
    assert all(f["attempts"] in (1, 2) for f in report["failures"])
    assert sum(f["attempts"] == 2 for f in report["failures"]) >= budget
    # Only the good file's tasks can be done, and what is committed is exactly theirs.
    assert tasks["done"] <= 2
    want = b"".join(
        line for line in clean.records.splitlines(keepends=True) if json.loads(line)["f"] == "0000"
    )
    if tasks["done"] == 2:
        assert result.records == want
    assert result.stats["n"] == report["records"]["out"] == tasks["done"] * N_LINES // 2
    assert_store_ok(result.out)
    assert_rerun_repairs(config, clean, report)


# --- 6. a worker that dies at start-up, every time -----------------------------------------


@pytest.mark.parametrize(("method", "submit"), method_cases(0))
def test_worker_dying_at_startup_ends_the_run(
    tmp_path: Path, data_dir: Path, clean: Clean, method: str, submit: str
) -> None:
    """The plugin kills every pool worker while the initializer imports / looks it up
    (``os._exit(1)``): the run must give up with a plain error, not respawn for ever."""
    config = make_job(tmp_path, data_dir, method, submit)
    result = run_pipeline(config, fault_env(tmp_path, "die_in_worker_init"))
    assert result.rc == 1, result.stderr
    assert result.elapsed < 15
    assert "Traceback" not in result.stderr
    errors = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert errors and any("exited with status 1" in x for x in errors), result.stderr
    assert len(result.stderr.splitlines()) < 50  # no respawn storm on the console
    report = result.report
    assert report["status"] == "failed" and report["exit_code"] == 1
    assert report["tasks"] == {
        "total": TOTAL_TASKS,
        "done": 0,
        "failed": 0,
        "skipped": 0,
        "pending": TOTAL_TASKS,
    }
    assert "exited with status 1" in report.get("error", ""), report
    assert hits(tmp_path) == []
    assert result.records == b""
    assert_store_ok(result.out)
    assert_rerun_repairs(config, clean, report)


# --- 7. idle workers killed (P3) -----------------------------------------------------------


@pytest.mark.parametrize(("method", "submit"), method_cases(1))
def test_idle_workers_killed_are_replaced_without_loss(
    tmp_path: Path, data_dir: Path, clean: Clean, method: str, submit: str
) -> None:
    """On the marker, the task waits until its sibling pool worker is idle (blocked in the
    task queue, holding its read lock), SIGKILLs it, and stays busy 0.5 s; it does so
    once only and otherwise passes every record through. The dead worker ran no task, so
    nothing is blamed: the pool is replaced, the killer's task resubmitted, and the results
    are exactly a clean run's — nothing lost, nothing duplicated."""
    config = make_job(tmp_path, data_dir, method, submit)
    result = run_pipeline(config, fault_env(tmp_path, "kill_idle_siblings"))
    assert result.rc == 0, result.stderr
    assert result.elapsed < 20
    killed = (tmp_path / "fault" / "killed").read_text().split("\n")
    victims = [line.split() for line in killed if line]
    assert victims, "the plugin found no sibling worker to kill"
    assert all(state == "idle" for _, state in victims), victims
    for pid, _ in victims:
        assert f"(pid {pid}) was killed by SIGKILL" in result.stderr, result.stderr
    pids = hits(tmp_path)
    assert len(pids) == 2 and pids[0] != pids[1]  # the killer's task ran again, elsewhere
    report = result.report
    assert report["status"] == "ok" and report["failures"] == []
    assert report["tasks"]["done"] == TOTAL_TASKS
    assert result.records == clean.records
    assert result.stats == clean.stats
    assert_store_ok(result.out)
    assert_rerun_repairs(config, clean, report)


# --- a package bug found on the way --------------------------------------------------------


@pytest.mark.timeout(40)
def test_fork_worker_in_start_up_does_not_report_a_sigterm(
    tmp_path: Path, data_dir: Path, clean: Clean
) -> None:
    """Every forked process sleeps 0.4 s right after fork() (plugin, FAULT_SLOW_FORK), so
    the replacement the Pool forks when a worker dies is still starting when the
    supervisor abandons that pool. No one signals the run: its console must not say so."""
    config = make_job(tmp_path, data_dir, "fork", "async")
    env = fault_env(tmp_path, "kill", FAULT_SLOW_FORK="0.4")
    result = run_pipeline(config, env)
    assert_one_failure(result, clean, "crashed", "SIGKILL")
    assert "SIGTERM" not in result.stderr, result.stderr
