"""Runs that execute while they plan: with small planning steps and small batches, the
first batches reach the workers long before the plan is over, and results are committed
between the plan's own ledger transactions. The store must still be the one a plain
``--full`` run makes, after edits too, and a stop in the middle of planning must leave a
store the next run completes."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import threading
from pathlib import Path
from typing import Any

import pytest

from pipeline import planning
from pipeline.config import load_config
from pipeline.planfeed import PlanFeed
from pipeline.runner import Run, RunOptions, RunResult, discover_inputs, planner_for
from pipeline.store.ledger import Ledger
from tests.integration.helpers import (
    run_cli,
    small_log_path,
    small_logs_config,
    write_small_log,
)

pytestmark = pytest.mark.timeout(180)

N_FILES = 600


def config(tmp_path: Path, out: str, submit: str = "async") -> Path:
    return small_logs_config(tmp_path, out, executor="process", submit=submit)


class FeedWatch:
    """Records, for every batch handed out and every planning step, whether the plan was
    over and which thread asked."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.handed_before_done = 0
        self.handed = 0
        self.threads: set[str] = set()
        real_next, real_step = PlanFeed.__next__, PlanFeed.step

        def watched_next(feed: PlanFeed) -> Any:
            batch = real_next(feed)
            self.handed += 1
            self.handed_before_done += not feed.done
            self.threads.add(threading.current_thread().name)
            return batch

        def watched_step(feed: PlanFeed) -> None:
            self.threads.add(threading.current_thread().name)
            real_step(feed)

        monkeypatch.setattr(PlanFeed, "__next__", watched_next)
        monkeypatch.setattr(PlanFeed, "step", watched_step)


@pytest.fixture
def small_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    """Plan 7 files a step; batches of at most 4 small tasks, released after 64."""
    monkeypatch.setattr(PlanFeed, "STEP_FILES", 7)
    shape = dataclasses.replace(planning.POOL_BATCHES, per_batch=4)
    monkeypatch.setattr(planning, "POOL_BATCHES", shape)


def run_in_process(cfg_path: Path, full: bool = False) -> RunResult:
    cfg = load_config(cfg_path)
    return Run(cfg, RunOptions(full=full, progress="none", quiet=True)).execute()


def assert_same_store(out: Path, reference: Path) -> None:
    assert (out / "records.jsonl").read_bytes() == (reference / "records.jsonl").read_bytes()
    stats = json.loads((out / "stats.json").read_text())
    assert stats == json.loads((reference / "stats.json").read_text())
    report = json.loads((out / "report.json").read_text())
    assert report["records"] == json.loads((reference / "report.json").read_text())["records"]


@pytest.mark.parametrize("submit", ["async", "imap"])
@pytest.mark.usefixtures("small_steps")
def test_a_run_that_executes_while_planning_gives_the_plain_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, submit: str
) -> None:
    data = tmp_path / "data"
    for i in range(N_FILES):
        write_small_log(data, i)
    watch = FeedWatch(monkeypatch)
    cfg = config(tmp_path, "out", submit)
    first = run_in_process(cfg)
    assert first.exit_code == 0
    assert first.report["tasks"]["done"] == N_FILES
    # the first window of batches (2 per worker) left while most files were unplanned
    assert watch.handed_before_done >= 4
    assert watch.threads == {"MainThread"}  # imap's feeder thread never plans

    # edits: other bytes, a touch with the same bytes, new files; then a re-run
    for i in range(0, N_FILES, 9):
        write_small_log(data, i, salt="x")
    for i in range(4, N_FILES, 31):
        path = small_log_path(data, i)
        os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    for i in range(N_FILES, N_FILES + 40):
        write_small_log(data, i)
    watch.handed_before_done = 0
    second = run_in_process(cfg)
    assert second.exit_code == 0
    changed = len(range(0, N_FILES, 9)) + 40
    assert second.report["tasks"]["done"] == changed
    assert second.report["tasks"]["skipped"] == N_FILES - len(range(0, N_FILES, 9))

    reference = run_cli("run", str(config(tmp_path, "reference", submit)), "--progress", "none")
    assert reference.returncode == 0, reference.stderr
    assert_same_store(tmp_path / "out", tmp_path / "reference")


@pytest.mark.usefixtures("small_steps")
def test_a_stop_while_planning_leaves_a_store_the_next_run_completes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "data"
    for i in range(N_FILES):
        write_small_log(data, i)
    cfg = config(tmp_path, "out")
    assert run_in_process(cfg).exit_code == 0
    for i in range(0, N_FILES, 3):  # a third changes: old rows dropped as planned
        write_small_log(data, i, salt="y")

    steps = [0]
    real_step = PlanFeed.step

    def step_then_interrupt(feed: PlanFeed) -> None:
        real_step(feed)
        steps[0] += 1
        if steps[0] == 30:  # well before the end (600 files, 7 a step)
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(PlanFeed, "step", step_then_interrupt)
    with caplog.at_level(logging.INFO, logger="pipeline"):
        stopped = run_in_process(cfg)
    assert stopped.exit_code == 130
    assert stopped.report["status"] == "interrupted"
    planned = stopped.report["tasks"]["total"]
    assert 0 < planned < N_FILES
    assert "stopped while planning" in caplog.text

    monkeypatch.setattr(PlanFeed, "step", real_step)
    resumed = run_in_process(cfg)
    assert resumed.exit_code == 0
    assert resumed.report["tasks"]["done"] + resumed.report["tasks"]["skipped"] == N_FILES
    reference = run_cli("run", str(config(tmp_path, "reference")), "--progress", "none")
    assert reference.returncode == 0, reference.stderr
    assert_same_store(tmp_path / "out", tmp_path / "reference")


def _open_folders(under: Path) -> set[str]:
    """The folders under ``under`` this process holds open (Linux: /proc/self/fd)."""
    held = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(under)):
            held.add(target)
    return held


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
@pytest.mark.usefixtures("small_steps")
def test_a_feed_closed_mid_plan_lets_go_of_the_folders_it_walks(tmp_path: Path) -> None:
    """The walk stats each file by name in its open folder: a plan stopped half-way
    (a signal, an error) must not leave those folders open."""
    data = tmp_path / "data"
    for i in range(60):
        write_small_log(data, i)
    cfg = load_config(small_logs_config(tmp_path, "out"))
    out = tmp_path / "out"
    out.mkdir()
    ledger = Ledger(out)
    batcher = planning.Batcher(2, cfg.input.chunk_size)
    run_id = ledger.start_run(cfg.name, cfg.result_key())
    feed = PlanFeed(
        ledger, discover_inputs(cfg), planner_for(cfg), batcher, cfg.result_key(), run_id
    )
    try:
        feed.step()  # 7 files of 60: the walk is inside a folder
        assert not feed.done and _open_folders(data)
        feed.close()
        assert _open_folders(data) == set()
    finally:
        batcher.close()
        ledger.close()
