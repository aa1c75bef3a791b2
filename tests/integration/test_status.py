"""``pipeline status`` against a real run, from a second process: a run held mid-way by a
``call`` plugin (``plugins_status.hold``) that waits for a marker file the test creates,
then the same store after the run ended, and after a ``kill -9`` of a run."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import queue
import shutil
import signal
import stat
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.store.lock import lock_holder
from tests.integration.helpers import REPO, run_cli, write_config

PLUGIN = Path(__file__).with_name("plugins_status.py")
N_FILES = 20
N_LINES = 200
HELD = "f00.log"  # its sixth line holds its worker
WAIT_S = 60.0  # the longest any step of a test waits for an event


@pytest.fixture
def job(tmp_path: Path) -> Path:
    """Twenty small files; a config (plugin beside it) that runs them on two workers."""
    data = tmp_path / "data"
    data.mkdir()
    for f in range(N_FILES):
        lines = [f"F{f:02d} L{i:04d} word {i % 97}\n" for i in range(N_LINES)]
        if f == 0:
            lines[5] = "F00 L0005 HOLD 1\n"
        (data / f"f{f:02d}.log").write_text("".join(lines))
    shutil.copy(PLUGIN, tmp_path / PLUGIN.name)
    (tmp_path / "marks").mkdir()
    config = {
        "name": "held",
        "input": {"paths": [str(data / "*.log")], "format": "lines"},
        "steps": [
            {"call": "plugins_status:hold"},
            {"regex": r"^F(?P<f>\d+) L(?P<l>\d+) (?P<word>\S+) (?P<v>\d+)"},
            {"types": {"v": "int"}},
        ],
        "stats": {"n": {"count": True}, "v_sum": {"sum": "v"}},
        "output": {"dir": str(tmp_path / "out"), "records": "jsonl"},
        "execution": {"workers": 2, "start_method": "fork"},
    }
    return write_config(tmp_path, config)


def env_for(job: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "STATUS_HOLD_DIR": str(job.parent / "marks")}


def start_pipeline(job: Path, *args: str, stdout: int) -> subprocess.Popen[str]:
    """``pipeline ARGS...`` on ``job`` in the background; its stderr piped."""
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", *args],
        env=env_for(job),
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
    )


def start_run(job: Path) -> subprocess.Popen[str]:
    return start_pipeline(job, "run", str(job), "--progress", "none", stdout=subprocess.DEVNULL)


def wait_for(what: str, condition: Callable[[], Any], run: subprocess.Popen[str]) -> Any:
    """Poll ``condition`` (each poll is an event check, not a timed wait) until it is
    truthy; fail at once if the run ended, or after WAIT_S."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if run.poll() is not None:
            pytest.fail(f"the run ended (exit {run.returncode}) before {what}: {run.stderr}")
        time.sleep(0.02)  # pacing the polls only
    pytest.fail(f"timed out waiting for {what}")


def held(job: Path) -> bool:
    return any(p.name.startswith("waiting-") for p in (job.parent / "marks").iterdir())


def release(job: Path) -> None:
    (job.parent / "marks" / "release").touch()


def status_json(job: Path) -> dict[str, Any]:
    result = run_cli("status", str(job), "--json", env=env_for(job), timeout=WAIT_S)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture
def running(job: Path) -> Iterator[subprocess.Popen[str]]:
    """A run of ``job``, held on its first file; released and reaped at the end."""
    run = start_run(job)
    try:
        wait_for("the held task", lambda: held(job), run)
        yield run
    finally:
        release(job)
        try:
            run.wait(WAIT_S)
        except subprocess.TimeoutExpired:
            run.kill()
            run.wait(WAIT_S)


def test_status_reads_the_live_view_of_a_held_run_then_the_last_run(
    job: Path, running: subprocess.Popen[str]
) -> None:
    out = job.parent / "out"
    held_path = str(job.parent / "data" / HELD)

    def settled() -> dict[str, Any] | None:
        # Every other file committed and the held worker's task published: the view then
        # stays as it is until the test lets the run go.
        view = status_json(job)
        on_held = [w for w in view.get("workers", []) if w["path"] == held_path]
        rest_done = on_held and view["tasks_done"] + on_held[0]["tasks"] == N_FILES
        return view if view["running"] and view.get("live") and rest_done else None

    view = wait_for("a settled live view", settled, running)
    assert view["pid"] == running.pid
    assert view["run_id"] == 1
    assert view["tasks_done"] < view["tasks_total"] == N_FILES
    assert view["planning_done"] is True
    assert view["tasks_failed"] == 0
    assert view["records_in"] == view["records_out"] == view["tasks_done"] * N_LINES
    assert view["stats"]["n"] == view["records_in"]  # the stats so far, finalised
    assert view["records_per_s"] > 0 and view["bytes_per_s"] > 0
    [worker] = [w for w in view["workers"] if w["path"] == held_path]
    assert worker["worker"].startswith("pid ") and worker["since"] > view["started"]

    address = out / "live.json"
    assert stat.S_IMODE(address.stat().st_mode) == 0o600
    assert json.loads(address.read_text())["pid"] == running.pid

    human = run_cli("status", str(job), env=env_for(job), timeout=WAIT_S)
    assert human.returncode == 0, human.stderr
    assert f"pid {running.pid}" in human.stdout
    assert f"tasks: {view['tasks_done']}/{N_FILES} done" in human.stdout
    assert held_path in human.stdout and "n: " in human.stdout

    release(job)
    assert running.wait(WAIT_S) == 0, running.stderr
    assert not address.exists()
    after = status_json(job)
    assert after["running"] is False
    assert after["last_run"]["run_id"] == 1 and after["last_run"]["status"] == "ok"
    # stats.json comes from the committed partials, whatever the view said
    assert json.loads((out / "stats.json").read_text())["n"] == N_FILES * N_LINES
    human = run_cli("status", str(job), env=env_for(job), timeout=WAIT_S)
    assert human.returncode == 0
    assert human.stdout.startswith("no run is going on\n")
    assert "last run #1: ok (exit 0)" in human.stdout


def start_watch(job: Path) -> tuple[subprocess.Popen[str], queue.SimpleQueue[str], Any]:
    """``status --watch --json``, its lines put on a queue by a reader thread."""
    watch = start_pipeline(job, "status", str(job), "--watch", "--json", stdout=subprocess.PIPE)
    lines: queue.SimpleQueue[str] = queue.SimpleQueue()
    reader = threading.Thread(target=lambda: [lines.put(x) for x in watch.stdout], daemon=True)
    reader.start()
    return watch, lines, reader


def test_watch_follows_the_run_until_it_ends(job: Path, running: subprocess.Popen[str]) -> None:
    watch, lines, reader = start_watch(job)
    try:
        first = json.loads(lines.get(timeout=WAIT_S))
        assert first["running"] is True and first["pid"] == running.pid
        release(job)
        assert watch.wait(WAIT_S) == 0, watch.stderr.read()
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait(WAIT_S)
    reader.join(WAIT_S)
    rest = []
    while not lines.empty():
        rest.append(json.loads(lines.get()))
    assert rest, "no final line"
    assert rest[-1]["running"] is False and rest[-1]["last_run"]["status"] == "ok"
    assert all(v["running"] for v in rest[:-1])


def test_ctrl_c_stops_watching_with_130(job: Path, running: subprocess.Popen[str]) -> None:
    watch, lines, _ = start_watch(job)
    try:
        assert json.loads(lines.get(timeout=WAIT_S))["running"] is True  # it is watching
        watch.send_signal(signal.SIGINT)
        assert watch.wait(WAIT_S) == 130, watch.stderr.read()
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait(WAIT_S)
    assert running.poll() is None  # only the watching stopped


def test_a_file_left_by_kill_9_is_ignored(job: Path) -> None:
    run = start_run(job)
    out = job.parent / "out"
    try:
        wait_for("the held task", lambda: held(job), run)
        wait_for("the published address", (out / "live.json").exists, run)
        assert status_json(job)["running"] is True
        os.kill(run.pid, signal.SIGKILL)
        assert run.wait(WAIT_S) == -signal.SIGKILL
    finally:
        if run.poll() is None:
            run.kill()
            run.wait(WAIT_S)
    # The kernel drops the lock once the last process holding it is gone (the workers and
    # the Manager, forked with its descriptor, end when they see their parent gone).
    deadline = time.monotonic() + WAIT_S
    while lock_holder(out) is not None:
        assert time.monotonic() < deadline, "the lock of a killed run was never released"
        time.sleep(0.02)
    assert (out / "live.json").exists()  # stale: the lock is free

    view = status_json(job)
    assert view["running"] is False
    assert view["last_run"]["run_id"] == 1 and view["last_run"]["status"] != "running"
    human = run_cli("status", str(job), env=env_for(job), timeout=WAIT_S)
    assert human.returncode == 0
    assert human.stdout.startswith("no run is going on\n"), human.stdout

    # the next run replaces the stale file, and removes its own at its end
    release(job)
    result = run_cli("run", str(job), "--progress", "none", env=env_for(job), timeout=WAIT_S)
    assert result.returncode == 0, result.stderr
    assert not (out / "live.json").exists()


def test_bars_in_a_terminal_show_records_malformed_failed_and_a_stat(job: Path) -> None:
    """In a real pseudo-terminal (160 columns: tqdm sizes its bars to it), the task bar's
    counters come from the live view: records, malformed, failed, the first numeric stat."""
    release(job)  # nothing is held
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 160, 0, 0))
    run = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "run", str(job)],
        env=env_for(job),
        stdin=slave,
        stdout=slave,
        stderr=slave,
    )
    os.close(slave)
    chunks: list[bytes] = []

    def read() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every writer closed the terminal
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert run.wait(WAIT_S) == 0
    finally:
        if run.poll() is None:
            run.kill()
            run.wait(WAIT_S)
        reader.join(WAIT_S)
        os.close(master)
    screen = b"".join(chunks).decode("utf-8", "replace").replace("\r", "\n")
    bars = [line for line in screen.splitlines() if line.startswith("tasks: 100%")]
    assert bars, screen
    total = N_FILES * N_LINES
    assert f"records={total:,}, malformed=0, failed=0, n={total:,}]" in bars[-1], bars[-1]


def test_status_without_a_store_is_one_line_and_exit_2(job: Path) -> None:
    result = run_cli("status", str(job), env=env_for(job), timeout=WAIT_S)
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert str(job.parent / "out") in result.stderr
