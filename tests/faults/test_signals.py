"""Signals: SIGINT / SIGTERM mid-run, a second signal, grace expiry — then resume.

SPEC "Reliability": first SIGINT/SIGTERM stops submitting, lets in-flight tasks finish
within ``grace``, commits them, rewrites the outputs from what is committed, writes
``report.json`` with status ``interrupted``, exits 130/143 and leaves no process behind;
a second signal stops at once. RELIABILITY 5.5 (R18, R20), 5.1 and 5.10 for the harness.
Also: SIGTERM to the whole group under forkserver (it reaches the fork server too), and a
signal while the helper processes (Manager, workers) are still starting up.

Harness (shared with ``test_kill9_resume.py``): the CLI runs in its own session
(``start_new_session=True``: its pid is the process-group id, so a signal to the group is
what a terminal's Ctrl-C does), with SIGINT/SIGTERM restored to their default and no signal
blocked (a shell's ``cmd &`` would leave SIGINT ignored — RELIABILITY 1.2 S3), stdout and
stderr to files (an orphan holding a pipe would hang the harness), a hard timeout that
SIGKILLs the group and fails with HANG, and after every run a check that no live process of
the group is left (zombies are dead processes: the VM's pid 1 does not reap orphans).

Runs are made slow by ``plugins_signals.py`` (copied next to each config), whose sleeps come
from the environment: the same config (same result key) serves the slow run that is
interrupted and the fast run that resumes it, so results compare byte for byte.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.helpers import REPO, CliResult, write_config

PLUGIN = Path(__file__).with_name("plugins_signals.py")
N_FILES = 12
N_LINES = 1500
WORKERS = 2
BASE_S = 0.0003  # per record: a run of the 12 x 1,500 records takes ~4 s on 2 cores
SLOW_S = 0.05  # per record of the slow files: one task takes ~19 s
SLOW_FILES = "F0010,F0011"
HARD_TIMEOUT_S = 60.0
GONE_WITHIN_S = 5.0
WORDS = ["alpha", "beta", "gamma", "délta", "epsilon", "zêta", "eta", "θeta", "日本"]

pytestmark = pytest.mark.timeout(120)


# --------------------------------------------------------------------------- processes


def _restore_signals() -> None:
    """preexec_fn: default SIGINT/SIGTERM and an empty signal mask in the CLI process, so a
    harness started in the background (SIGINT ignored) still tests what Ctrl-C does."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT):
        signal.signal(signum, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())


def _stat_fields(pid: str) -> list[str] | None:
    """/proc/<pid>/stat fields from ``state`` on (field 3), or None if the pid is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            text = handle.read().decode("ascii", "replace")
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def group_processes(pgid: int) -> dict[int, str]:
    """Live processes whose process-group id is ``pgid``: pid -> "state ppid cmdline".
    Zombies (Z) and dead (X) entries are not processes that can run or write any more."""
    found: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(entry)
        if fields is None or int(fields[2]) != pgid or fields[0] in ("Z", "X"):
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                cmdline = handle.read().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            cmdline = "?"
        found[int(entry)] = f"{fields[0]} ppid={fields[1]} {cmdline.strip()[:160]}"
    return found


def descendants(pid: int) -> set[int]:
    """Every descendant of ``pid`` through /proc/<pid>/task/*/children."""
    seen: set[int] = set()
    stack = [pid]
    while stack:
        current = stack.pop()
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{current}/task/{tid}/children") as handle:
                    children = [int(c) for c in handle.read().split()]
            except OSError:
                continue
            for child in children:
                if child not in seen:
                    seen.add(child)
                    stack.append(child)
    return seen


def wait_group_gone(pgid: int, within: float) -> dict[int, str]:
    """Poll until no live process has ``pgid``; return what is left after ``within`` s."""
    deadline = time.monotonic() + within
    while True:
        left = group_processes(pgid)
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.05)


def kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def assert_no_process_left(pgid: int, within: float = GONE_WITHIN_S) -> None:
    """No live process of the run's process group ``within`` s from now; survivors are
    SIGKILLed (so they cannot disturb later tests) and the test fails, naming them."""
    left = wait_group_gone(pgid, within)
    if left:
        kill_group(pgid)
        listing = "\n".join(f"  {pid}: {desc}" for pid, desc in sorted(left.items()))
        pytest.fail(f"processes of the run (pgid {pgid}) still alive after {within}s:\n{listing}")


@dataclass
class Launched:
    proc: subprocess.Popen
    started: float
    stdout_path: Path
    stderr_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def pgid(self) -> int:
        return self.proc.pid  # start_new_session: the leader's pid is the group id

    def signal_group(self, signum: int) -> None:
        os.killpg(self.pgid, signum)

    def signal_parent(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def running(self) -> bool:
        return self.proc.poll() is None

    def wait(self, timeout: float = HARD_TIMEOUT_S) -> CliResult:
        """Wait for the CLI with a hard limit: a hang kills the whole group and fails."""
        try:
            self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(self.pgid)
            self.proc.wait(10)
            pytest.fail(
                f"HANG: the run did not end within {timeout}s; stderr:\n{self.stderr()[-3000:]}"
            )
        return CliResult(self.proc.returncode, self.stdout(), self.stderr())

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")


def run_env(
    base_s: float = 0.0, slow_s: float = 0.0, slow_files: str = "", mark_dir: Path | None = None
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGTEST_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env["SIGTEST_BASE_S"] = repr(base_s)
    env["SIGTEST_SLOW_S"] = repr(slow_s)
    env["SIGTEST_SLOW_FILES"] = slow_files
    if mark_dir is not None:
        mark_dir.mkdir(parents=True, exist_ok=True)
        env["SIGTEST_MARK_DIR"] = str(mark_dir)
    return env


class Harness:
    """Starts CLI runs in their own sessions; at teardown SIGKILLs any group still alive
    (a failed test must not leave processes that disturb the next one)."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.logs.mkdir(parents=True, exist_ok=True)
        self.launched: list[Launched] = []

    def launch(self, *args: str, env: dict[str, str]) -> Launched:
        n = len(self.launched)
        stdout_path = self.logs / f"run{n}.out"
        stderr_path = self.logs / f"run{n}.err"
        with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "pipeline", *args],
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
                preexec_fn=_restore_signals,
            )
        launched = Launched(proc, time.monotonic(), stdout_path, stderr_path)
        self.launched.append(launched)
        return launched

    def run(self, *args: str, env: dict[str, str], timeout: float = HARD_TIMEOUT_S) -> CliResult:
        """Launch, wait, and check that the run left no process behind."""
        launched = self.launch(*args, env=env)
        result = launched.wait(timeout)
        assert_no_process_left(launched.pgid)
        return result

    def cleanup(self) -> None:
        for launched in self.launched:
            if group_processes(launched.pgid):
                kill_group(launched.pgid)
            if launched.proc.poll() is None:
                launched.proc.kill()
                launched.proc.wait(10)


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path / "logs")
    yield h
    h.cleanup()


def wait_for(
    condition: Callable[[], bool], timeout: float, what: str, launched: Launched | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if launched is not None and not launched.running():
            pytest.fail(
                f"the run ended (rc {launched.proc.returncode}) before {what}; "
                f"stderr:\n{launched.stderr()[-3000:]}"
            )
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


# ------------------------------------------------------------------------ data and store


def write_inputs(data: Path, seed: int = 20261127) -> None:
    """Self-identifying lines ``F<file> L<line> <word> <value>``, non-ASCII words."""
    rng = random.Random(seed)
    data.mkdir(parents=True, exist_ok=True)
    for f in range(N_FILES):
        lines = [
            f"F{f:04d} L{i:06d} {rng.choice(WORDS)} {rng.randint(0, 9999)}\n"
            for i in range(N_LINES)
        ]
        (data / f"f{f:02d}.log").write_text("".join(lines), encoding="utf-8")


def job_config(
    folder: Path, data: Path, out: Path, name: str = "job.yaml", **execution: Any
) -> Path:
    """A config in ``folder`` (with the plugin next to it) over ``data``, writing ``out``."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(PLUGIN, folder / PLUGIN.name)
    config = {
        "name": "sig",
        "input": {"paths": [str(data / "*.log")], "format": "lines", "chunk_size": "16KiB"},
        "steps": [
            {"call": "plugins_signals:slow"},
            {"regex": r"^F(?P<f>\d{4}) L(?P<l>\d{6}) (?P<word>\S+) (?P<v>\d+)"},
            {"types": {"l": "int", "v": "int"}},
            {"select": ["f", "l", "word", "v"]},
        ],
        "stats": {
            "n": {"count": True},
            "by_file": {"count_by": "f"},
            "v_sum": {"sum": "v"},
            "v_mean": {"mean": "v"},
            "top_words": {"top": "word", "k": 3},
            "v_max": {"max": "v"},
        },
        "output": {"dir": str(out), "records": "jsonl"},
        "execution": {"workers": WORKERS, "start_method": "fork", "submit": "async", **execution},
    }
    return write_config(folder, config, name)


def run_args(config: Path, *extra: str) -> list[str]:
    return ["run", str(config), "--progress", "none", *extra]


@dataclass
class Baseline:
    data: Path
    records: bytes
    stats: dict[str, Any]
    report: dict[str, Any]
    seconds: float  # wall time of the baseline run

    @property
    def lines(self) -> list[bytes]:
        return self.records.splitlines()

    @property
    def total_tasks(self) -> int:
        return self.report["tasks"]["total"]


def make_baseline(folder: Path, base_s: float = 0.0) -> Baseline:
    """Inputs plus an uninterrupted run of them (the reference for byte-identity)."""
    data = folder / "data"
    write_inputs(data)
    out = folder / "baseline-out"
    config = job_config(folder / "baseline-cfg", data, out)
    harness = Harness(folder / "baseline-logs")
    try:
        started = time.monotonic()
        result = harness.run(*run_args(config), env=run_env(base_s=base_s))
        seconds = time.monotonic() - started
    finally:
        harness.cleanup()
    assert result.returncode == 0, result.stderr
    report = read_json(out / "report.json")
    assert report["status"] == "ok"
    assert report["records"]["out"] == N_FILES * N_LINES
    return Baseline(
        data, (out / "records.jsonl").read_bytes(), read_json(out / "stats.json"), report, seconds
    )


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def parts_count(out: Path) -> int:
    try:
        return sum(1 for p in (out / "parts").iterdir() if p.name.endswith(".jsonl"))
    except FileNotFoundError:
        return 0


def marks(mark_dir: Path, kind: str) -> list[str]:
    return [p.name for p in mark_dir.iterdir() if p.name.startswith(f"{kind}-")]


def assert_no_temp_files(out: Path) -> None:
    tmp_dir = out / "parts" / ".tmp"
    left = sorted(p.name for p in tmp_dir.iterdir()) if tmp_dir.exists() else []
    assert left == [], f"parts/.tmp is not empty: {left}"
    stray = sorted(str(p.relative_to(out)) for p in out.rglob(".tmp-*"))
    assert stray == [], f"temporary files left in {out}: {stray}"


def assert_no_traceback(stderr: str) -> None:
    assert "Traceback" not in stderr, stderr[-3000:]


def assert_tasks_add_up(report: dict[str, Any]) -> None:
    t = report["tasks"]
    assert t["done"] + t["failed"] + t["skipped"] + t["pending"] == t["total"], t
    assert min(t.values()) >= 0, t


def assert_interrupted(out: Path, code: int, baseline: Baseline) -> dict[str, Any]:
    """report.json of an interrupted run, and outputs that hold exactly the committed
    tasks: records.jsonl is the baseline restricted to them, in order, no duplicates."""
    report = read_json(out / "report.json")
    assert report["status"] == "interrupted", report
    assert report["exit_code"] == code, report
    assert_tasks_add_up(report)
    assert report["tasks"]["pending"] > 0, report["tasks"]
    assert report["tasks"]["failed"] == 0, report["failures"]
    lines = (out / "records.jsonl").read_bytes().splitlines()
    stats = read_json(out / "stats.json")
    assert stats["n"] == report["records"]["out"] == len(lines), (stats["n"], report["records"])
    assert len(set(lines)) == len(lines), "duplicated records"
    kept = set(lines)
    assert lines == [line for line in baseline.lines if line in kept], (
        "records.jsonl holds records that are not the baseline's, or out of order"
    )
    assert sum(stats["by_file"].values()) == stats["n"]
    page = (out / "report.html").read_text(encoding="utf-8")  # the page too, even now
    assert "<b>interrupted</b><span>status</span>" in page
    assert f"<b>{code}</b><span>exit code</span>" in page
    return report


def assert_same_as_baseline(out: Path, baseline: Baseline) -> dict[str, Any]:
    records = (out / "records.jsonl").read_bytes()
    assert len(records.splitlines()) == len(baseline.lines), "record count differs"
    assert records == baseline.records, "records.jsonl differs from the uninterrupted run"
    assert read_json(out / "stats.json") == baseline.stats
    report = read_json(out / "report.json")
    assert report["status"] == "ok", report
    assert report["exit_code"] == 0
    assert_tasks_add_up(report)
    assert_no_temp_files(out)
    return report


def resume_and_check(
    harness: Harness, config: Path, out: Path, baseline: Baseline, done_before: int
) -> dict[str, Any]:
    """A plain re-run (fast) completes, re-running only what was not committed."""
    result = harness.run(*run_args(config), env=run_env())
    assert result.returncode == 0, result.stderr[-3000:]
    assert_no_traceback(result.stderr)
    report = assert_same_as_baseline(out, baseline)
    assert report["tasks"]["skipped"] == done_before, report["tasks"]
    assert report["tasks"]["done"] == report["tasks"]["total"] - done_before
    return report


# --------------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Baseline:
    return make_baseline(tmp_path_factory.mktemp("signals"))


@pytest.mark.timeout(30)
def test_leftover_check_detects_a_live_process() -> None:
    """The "no process left" check can fail: a live process in the group is found, and a
    process that has exited is not."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True
    )
    try:
        assert proc.pid in group_processes(proc.pid)
        with pytest.raises(pytest.fail.Exception, match="still alive"):
            assert_no_process_left(proc.pid, within=0.3)
        proc.wait(10)  # assert_no_process_left SIGKILLed the survivor
        assert group_processes(proc.pid) == {}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


FIRST_SIGNAL_CASES = [
    # start method, submit, signal, sent to
    pytest.param("fork", "async", signal.SIGINT, "group", id="fork-async-SIGINT-group"),
    pytest.param("spawn", "async", signal.SIGINT, "group", id="spawn-async-SIGINT-group"),
    pytest.param("forkserver", "async", signal.SIGINT, "group", id="forkserver-async-SIGINT-group"),
    pytest.param("fork", "imap", signal.SIGINT, "group", id="fork-imap-SIGINT-group"),
    pytest.param("fork", "async", signal.SIGTERM, "group", id="fork-async-SIGTERM-group"),
    pytest.param("spawn", "imap", signal.SIGTERM, "group", id="spawn-imap-SIGTERM-group"),
    # SIGTERM to the group under forkserver: see test_sigterm_to_group_drains_in_flight_tasks
    pytest.param(
        "forkserver", "imap", signal.SIGTERM, "parent", id="forkserver-imap-SIGTERM-parent"
    ),
    pytest.param("fork", "async", signal.SIGTERM, "parent", id="fork-async-SIGTERM-parent"),
    pytest.param("spawn", "imap", signal.SIGTERM, "parent", id="spawn-imap-SIGTERM-parent"),
]


@pytest.mark.timeout(90)
@pytest.mark.parametrize(("method", "submit", "signum", "target"), FIRST_SIGNAL_CASES)
def test_first_signal_drains_commits_and_resumes(
    tmp_path: Path,
    harness: Harness,
    baseline: Baseline,
    method: str,
    submit: str,
    signum: int,
    target: str,
) -> None:
    """R18: one SIGINT/SIGTERM mid-run (to the group, like Ctrl-C / a service manager, or to
    the main process only) -> exit 130/143, status interrupted, committed work only, no
    process or temp file left; a re-run completes byte-identical to an uninterrupted run."""
    grace = 10.0
    out = tmp_path / "out"
    config = job_config(
        tmp_path / "cfg",
        baseline.data,
        out,
        start_method=method,
        submit=submit,
        grace=f"{grace:g}s",
    )
    run = harness.launch(*run_args(config), env=run_env(base_s=BASE_S))
    # Mid-run: a few tasks have published their part, most have not.
    wait_for(lambda: parts_count(out) >= 5, 30, "5 part files", run)
    sent = time.monotonic()
    if target == "group":
        run.signal_group(signum)
    else:
        run.signal_parent(signum)
    result = run.wait()
    elapsed = time.monotonic() - sent
    code = 130 if signum == signal.SIGINT else 143

    assert result.returncode == code, result.stderr[-3000:]
    assert_no_traceback(result.stderr)
    # In-flight tasks are ~0.1 s each: the drain ends long before the grace does.
    assert elapsed < grace + 2.0, f"took {elapsed:.1f}s after the signal (grace {grace}s)"
    assert elapsed < 6.0, f"draining short tasks took {elapsed:.1f}s"
    assert_no_process_left(run.pgid)
    assert_no_temp_files(out)
    report = assert_interrupted(out, code, baseline)
    assert report["tasks"]["skipped"] == 0
    assert report["tasks"]["done"] > 0
    assert report["complete"] is False
    pending = report["tasks"]["pending"]
    assert f"interrupted: {pending} task(s) pending; run again to resume" in result.stderr

    resume_and_check(harness, config, out, baseline, done_before=report["tasks"]["done"])


SECOND_SIGNAL_CASES = [
    pytest.param("fork", signal.SIGINT, id="fork-SIGINT"),
    pytest.param("spawn", signal.SIGINT, id="spawn-imap-SIGINT"),
    pytest.param("forkserver", signal.SIGINT, id="forkserver-SIGINT"),
    pytest.param("fork", signal.SIGTERM, id="fork-SIGTERM"),
]
SECOND_SIGNAL_SUBMIT = {"spawn": "imap"}  # imap once; async elsewhere


@pytest.mark.timeout(90)
@pytest.mark.parametrize(("method", "signum"), SECOND_SIGNAL_CASES)
def test_second_signal_stops_at_once(
    tmp_path: Path, harness: Harness, baseline: Baseline, method: str, signum: int
) -> None:
    """R20: both workers inside ~19 s tasks, grace 30 s; first signal -> still draining;
    a second signal -> exit 130/143 within a few seconds, no process left; resume exact."""
    out = tmp_path / "out"
    mark_dir = tmp_path / "marks"
    config = job_config(
        tmp_path / "cfg",
        baseline.data,
        out,
        start_method=method,
        submit=SECOND_SIGNAL_SUBMIT.get(method, "async"),
        grace="30s",
    )
    env = run_env(slow_s=SLOW_S, slow_files=SLOW_FILES, mark_dir=mark_dir)
    run = harness.launch(*run_args(config), env=env)
    wait_for(lambda: len(marks(mark_dir, "slow")) >= WORKERS, 30, "both workers in slow tasks", run)
    run.signal_group(signum)
    # The second signal goes once the run has handled the first: two signals that reach
    # a process while its main thread is held in a system call (a commit's fsync) are one.
    handled = f"{signal.Signals(signum).name} received: finishing tasks in flight"
    wait_for(lambda: handled in run.stderr(), 30, "the first signal handled", run)
    assert run.running(), "the first signal must let the (long) tasks in flight go on"
    sent = time.monotonic()
    run.signal_group(signum)
    result = run.wait()
    elapsed = time.monotonic() - sent
    code = 130 if signum == signal.SIGINT else 143

    assert result.returncode == code, result.stderr[-3000:]
    assert elapsed < 5.0, (
        f"a second signal took {elapsed:.1f}s to stop the run (grace 30s); stderr:\n"
        f"{result.stderr[-3000:]}"
    )
    assert_no_traceback(result.stderr)
    assert_no_process_left(run.pgid)
    assert_no_temp_files(out)
    report = assert_interrupted(out, code, baseline)
    assert report["tasks"]["pending"] >= WORKERS  # the abandoned slow tasks

    resume_and_check(harness, config, out, baseline, done_before=report["tasks"]["done"])


@pytest.mark.timeout(90)
@pytest.mark.parametrize(
    "method",
    [
        "fork",
        "spawn",
        "forkserver",
    ],
)
def test_sigterm_to_group_drains_in_flight_tasks(
    tmp_path: Path, harness: Harness, baseline: Baseline, method: str
) -> None:
    """SIGTERM to the whole group (systemd's default KillMode, `kill -TERM -PGID`) while both
    workers are inside ~1.5 s tasks, grace 30 s: those tasks finish and are committed (their
    records are in records.jsonl), exit 143, no traceback, no process left; resume exact."""
    out = tmp_path / "out"
    mark_dir = tmp_path / "marks"
    config = job_config(
        tmp_path / "cfg", baseline.data, out, start_method=method, submit="imap", grace="30s"
    )
    env = run_env(slow_s=0.003, slow_files=SLOW_FILES, mark_dir=mark_dir)
    run = harness.launch(*run_args(config), env=env)
    wait_for(lambda: len(marks(mark_dir, "slow")) >= WORKERS, 30, "both workers in slow tasks", run)
    run.signal_group(signal.SIGTERM)  # no slow task has finished yet: both just started one
    result = run.wait()

    assert_no_process_left(run.pgid)
    assert_no_temp_files(out)
    assert result.returncode == 143, result.stderr[-3000:]
    report = assert_interrupted(out, 143, baseline)
    stats = read_json(out / "stats.json")
    slow_records = sum(stats["by_file"].get(f[1:], 0) for f in SLOW_FILES.split(","))
    # Each slow file's task holds ~500 records; the two that were running must be committed.
    assert slow_records >= 2 * 400, (
        f"the tasks in flight were not drained: {slow_records} records of the slow files "
        f"committed; stderr:\n{result.stderr[-3000:]}"
    )
    assert_no_traceback(result.stderr)

    resume_and_check(harness, config, out, baseline, done_before=report["tasks"]["done"])


@pytest.mark.timeout(90)
def test_grace_expiry_leaves_in_flight_tasks_pending(
    tmp_path: Path, harness: Harness, baseline: Baseline
) -> None:
    """grace 1s, tasks in flight that need ~19 s: the run stops about 1 s after the signal,
    the in-flight tasks stay pending (not failed), and the re-run resumes them exactly."""
    out = tmp_path / "out"
    mark_dir = tmp_path / "marks"
    config = job_config(tmp_path / "cfg", baseline.data, out, grace="1s")
    env = run_env(slow_s=SLOW_S, slow_files=SLOW_FILES, mark_dir=mark_dir)
    run = harness.launch(*run_args(config), env=env)
    wait_for(lambda: len(marks(mark_dir, "slow")) >= WORKERS, 30, "both workers in slow tasks", run)
    sent = time.monotonic()
    run.signal_group(signal.SIGTERM)
    result = run.wait()
    elapsed = time.monotonic() - sent

    assert result.returncode == 143, result.stderr[-3000:]
    assert 0.9 <= elapsed < 1.0 + 4.0, f"stopped {elapsed:.2f}s after the signal (grace 1s)"
    assert_no_traceback(result.stderr)
    assert_no_process_left(run.pgid)
    assert_no_temp_files(out)
    report = assert_interrupted(out, 143, baseline)
    assert report["tasks"]["pending"] >= WORKERS
    assert report["failures"] == []

    resume_and_check(harness, config, out, baseline, done_before=report["tasks"]["done"])


# ---------------------------------------------------------- a signal during start-up


class ContractViolation(AssertionError):
    """A SPEC promise about signals that the run broke (raised by the start-up cases);
    plain ``assert`` failures in the same tests stay real failures."""


def _signal_disposition(pid: int, signum: int) -> tuple[bool, bool] | None:
    """(caught by a handler, ignored) for ``signum`` in process ``pid``, from its status."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            status = dict(line.split(":", 1) for line in handle if ":" in line)
    except OSError:
        return None
    bit = 1 << (signum - 1)
    return bool(int(status["SigCgt"], 16) & bit), bool(int(status["SigIgn"], 16) & bit)


def _in_startup_window(pid: int, signum: int) -> bool:
    """A helper process that a ``signum`` would still hurt: for SIGINT it has a Python
    handler (KeyboardInterrupt) and does not ignore it yet; for SIGTERM it does not
    ignore it (the default kills it)."""
    disposition = _signal_disposition(pid, signum)
    if disposition is None:
        return False
    caught, ignored = disposition
    if ignored:
        return False
    return caught if signum == signal.SIGINT else True


def _helper_processes(run: Launched, exclude: set[int]) -> list[int]:
    """Processes of the run that exec'd a multiprocessing entry point (spawn_main, the fork
    server and its children) — not a child between fork and exec, which still has the
    parent's handlers — and not the resource tracker (it ignores both signals)."""
    return [
        pid
        for pid, desc in group_processes(run.pgid).items()
        if pid != run.pid
        and pid not in exclude
        and "from multiprocessing." in desc
        and "resource_tracker" not in desc
    ]


STARTUP_CASES = [
    pytest.param(
        "spawn",
        signal.SIGINT,
        "manager",
        id="spawn-SIGINT-manager",
    ),
    pytest.param(
        "spawn",
        signal.SIGTERM,
        "manager",
        id="spawn-SIGTERM-manager",
    ),
    pytest.param(
        "forkserver",
        signal.SIGINT,
        "manager",
        id="forkserver-SIGINT-manager",
    ),
    pytest.param(
        "spawn",
        signal.SIGINT,
        "workers",
        id="spawn-SIGINT-workers",
    ),
    pytest.param("spawn", signal.SIGTERM, "workers", id="spawn-SIGTERM-workers"),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("method", "signum", "phase"), STARTUP_CASES)
def test_signal_while_helper_processes_start(
    tmp_path: Path, harness: Harness, baseline: Baseline, method: str, signum: int, phase: str
) -> None:
    """Ctrl-C / SIGTERM right at the start — while the Manager process, or the pool's
    workers, are starting — is still an interruption: exit 130/143, report.json
    interrupted, no traceback; and no process is left, and the next run completes
    exactly. (The helpers inherit "ignore" for both signals, so there is no window in
    which one of them can be killed before its initializer runs.)"""
    out = tmp_path / "out"
    config = job_config(tmp_path / "cfg", baseline.data, out, start_method=method)
    run = harness.launch(*run_args(config), env=run_env(base_s=BASE_S))
    exclude: set[int] = set()
    if phase == "workers":
        # "executor:" is logged once the Manager is up, right before the pool starts: the
        # processes seen before that line are not workers.
        deadline = time.monotonic() + 30
        while True:
            before = set(group_processes(run.pgid))
            if "executor:" in run.stderr():
                break
            exclude = before
            assert run.running() and time.monotonic() < deadline, run.stderr()
            time.sleep(0.001)
    deadline = time.monotonic() + 30
    # As soon as a helper process exists: it must already be shielded from the signal
    # (ignored from its first instruction), so nothing dies and the run drains normally.
    while not _helper_processes(run, exclude):
        assert run.running(), f"no {phase} process was seen starting:\n{run.stderr()}"
        assert time.monotonic() < deadline, f"no {phase} process was seen starting"
        time.sleep(0.001)
    run.signal_group(signum)
    result = run.wait()
    code = 130 if signum == signal.SIGINT else 143

    # Whatever the exit path: nothing left behind, and the store is usable.
    assert_no_process_left(run.pgid)
    if (out / "parts").exists():
        assert_no_temp_files(out)
    problems = []
    if result.returncode != code:
        problems.append(f"exit {result.returncode}, expected {code}")
    if "Traceback" in result.stderr:
        problems.append("a traceback on stderr")
    report_path = out / "report.json"
    status = read_json(report_path)["status"] if report_path.exists() else None
    if status != "interrupted":
        problems.append(f"report.json status {status!r}, expected 'interrupted'")

    resume = harness.run(*run_args(config), env=run_env())
    assert resume.returncode == 0, resume.stderr[-3000:]
    assert_same_as_baseline(out, baseline)
    if problems:
        raise ContractViolation("; ".join(problems) + f"\nstderr:\n{result.stderr[-3000:]}")
