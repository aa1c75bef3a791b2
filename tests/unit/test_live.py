"""LiveStats: one locked Manager-dict update per committed batch, the view it publishes, the
address file ``pipeline status`` reads; a broken Manager only disables the live view."""

from __future__ import annotations

import copy
import dataclasses
import io
import json
import logging
import multiprocessing
import os
import stat
import sys
import threading
from multiprocessing.managers import SyncManager
from pathlib import Path
from typing import Any

import pytest

from pipeline import aggregates, status
from pipeline import live as live_module
from pipeline.live import (
    ADDRESS_NAME,
    LiveAddress,
    LiveStats,
    PlanTotals,
    RunFacts,
    build_view,
    read_address,
    remove_address,
    write_address,
)
from pipeline.models import TaskResult
from pipeline.reporting import Progress, format_count, live_counters
from pipeline.store.ledger import Ledger
from pipeline.store.lock import RunLock

SPECS = {
    "n": {"kind": "count"},
    "total": {"kind": "sum", "field": "v"},
    "by": {"kind": "count_by", "field": "s"},
}


def partials_of(records: list[dict]) -> dict:
    aggs = aggregates.Aggregators(SPECS)
    state = aggs.new_state()
    for record in records:
        aggs.add(state, record)
    return aggs.partials(state)


def result(ok: bool, partials: dict, records_in: int, records_out: int) -> TaskResult:
    return TaskResult("t", ok, records_in, records_out, partials=partials)


P1 = partials_of([{"v": 1, "s": "a"}, {"v": 2, "s": "b"}])
P2 = partials_of([{"v": 10, "s": "a"}])


class RecordingLock:
    """A lock that counts acquisitions and knows whether it is held."""

    def __init__(self) -> None:
        self.held = False
        self.acquired = 0

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        assert not self.held, "lock is not re-entrant"
        self.held = True
        self.acquired += 1
        return True

    def release(self) -> None:
        assert self.held
        self.held = False

    def __enter__(self) -> RecordingLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class LockCheckingDict(dict):
    """A mapping that records its updates and checks the lock is held for each."""

    def __init__(self, lock: RecordingLock) -> None:
        super().__init__()
        self.lock = lock
        self.updates: list[dict[str, Any]] = []

    def update(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        assert self.lock.held, "mapping updated without the lock"
        merged = dict(*args, **kwargs)
        self.updates.append(merged)
        super().update(merged)

    def __setitem__(self, key: str, value: Any) -> None:
        assert self.lock.held, "mapping written without the lock"
        super().__setitem__(key, value)


def test_add_publishes_merged_partials_and_counts_under_the_lock() -> None:
    lock = RecordingLock()
    mapping = LockCheckingDict(lock)
    live = LiveStats(mapping, lock, SPECS)

    live.add([result(True, P1, 2, 2)])
    assert len(mapping.updates) == 1 and lock.acquired == 1
    assert mapping["stats"] == aggregates.finalize(SPECS, P1)
    assert (mapping["tasks_done"], mapping["tasks_failed"]) == (1, 0)
    assert (mapping["records_in"], mapping["records_out"]) == (2, 2)

    live.add([result(True, P2, 5, 1)])
    assert len(mapping.updates) == 2 and lock.acquired == 2
    assert "partials" not in mapping  # finalised only: partials can be large
    assert mapping["stats"] == {
        "n": 3,
        "total": 13,
        "by": {"a": 2, "b": 1},
    }
    assert (mapping["tasks_done"], mapping["records_in"], mapping["records_out"]) == (2, 7, 3)


def test_failed_task_counts_but_its_partials_are_ignored() -> None:
    lock = RecordingLock()
    mapping = LockCheckingDict(lock)
    live = LiveStats(mapping, lock, SPECS)
    live.add([result(True, P1, 2, 2)])
    live.add([result(False, P2, 4, 0)])
    assert len(mapping.updates) == 2
    assert mapping["stats"] == aggregates.finalize(SPECS, P1)
    assert (mapping["tasks_done"], mapping["tasks_failed"]) == (1, 1)
    assert (mapping["records_in"], mapping["records_out"]) == (6, 2)
    assert live.snapshot()["n"] == 2


def test_published_values_are_not_aliased_to_later_state() -> None:
    """What was published for task 1 must not change when task 2 is merged."""
    lock = RecordingLock()
    mapping = LockCheckingDict(lock)
    live = LiveStats(mapping, lock, SPECS)
    live.add([result(True, P1, 2, 2)])
    first = copy.deepcopy(mapping.updates[0]["stats"])
    live.add([result(True, P2, 1, 1)])
    assert mapping.updates[0]["stats"] == first


def test_inputs_are_not_mutated() -> None:
    before = copy.deepcopy(P1)
    live = LiveStats({}, threading.Lock(), SPECS)
    live.add([result(True, P1, 1, 1)])
    live.add([result(True, P1, 1, 1)])
    assert before == P1


def test_a_batch_is_one_merge_and_one_update() -> None:
    lock = RecordingLock()
    mapping = LockCheckingDict(lock)
    live = LiveStats(mapping, lock, SPECS)
    live.add([result(True, P1, 2, 2), result(False, P2, 4, 0), result(True, P2, 1, 1)])
    assert len(mapping.updates) == 1 and lock.acquired == 1
    assert live.partials == aggregates.merge_partials(SPECS, P1, P2)
    assert (mapping["tasks_done"], mapping["tasks_failed"]) == (2, 1)
    assert (mapping["records_in"], mapping["records_out"]) == (7, 3)


def test_snapshot_is_finalised() -> None:
    live = LiveStats({}, threading.Lock(), SPECS)
    assert live.snapshot() == {"n": 0, "total": 0, "by": {}}
    live.add([result(True, P1, 2, 2)])
    live.add([result(True, P2, 1, 1)])
    assert live.snapshot() == {"n": 3, "total": 13, "by": {"a": 2, "b": 1}}


def _read_from_child(mapping: Any, lock: Any, queue: Any) -> None:
    with lock:
        queue.put(dict(mapping))


@pytest.mark.timeout(60)
def test_with_a_real_manager_dict_and_lock() -> None:
    ctx = multiprocessing.get_context("fork")
    with ctx.Manager() as manager:
        mapping = manager.dict()
        lock = manager.Lock()
        live = LiveStats(mapping, lock, SPECS)
        live.add([result(True, P1, 2, 2)])
        live.add([result(False, None, 3, 0)])
        live.add([result(True, P2, 1, 1)])
        assert live.enabled
        seen = dict(mapping)
        assert seen["stats"] == live.snapshot()
        keys = ("tasks_done", "tasks_failed", "records_in", "records_out")
        assert {k: seen[k] for k in keys} == {
            "tasks_done": 2,
            "tasks_failed": 1,
            "records_in": 6,
            "records_out": 3,
        }
        # another process sees the same live view through the proxies
        queue = ctx.Queue()
        child = ctx.Process(target=_read_from_child, args=(mapping, lock, queue))
        child.start()
        from_child = queue.get(timeout=20)
        child.join(20)
        assert child.exitcode == 0
        assert from_child == seen


@pytest.mark.parametrize("error", [BrokenPipeError, EOFError, ConnectionResetError])
def test_broken_mapping_disables_the_live_view_without_raising(
    error: type[BaseException], caplog: pytest.LogCaptureFixture
) -> None:
    class Broken(dict):
        calls = 0

        def update(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
            Broken.calls += 1
            raise error(32, "Broken pipe") if error is not EOFError else error()

    mapping = Broken()
    live = LiveStats(mapping, threading.Lock(), SPECS)
    with caplog.at_level(logging.WARNING, logger="pipeline.live"):
        live.add([result(True, P1, 2, 2)])
    assert live.enabled is False
    assert Broken.calls == 1
    assert any("live stats disabled" in r.getMessage() for r in caplog.records)
    live.add([result(True, P2, 1, 1)])  # no further Manager round trips once disabled
    assert Broken.calls == 1
    # the parent's own totals keep going
    assert live.snapshot() == {"n": 3, "total": 13, "by": {"a": 2, "b": 1}}


def test_broken_lock_disables_the_live_view_without_raising() -> None:
    class DeadLock:
        def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
            raise BrokenPipeError(32, "Broken pipe")

        def release(self) -> None:
            raise AssertionError("never acquired")

    live = LiveStats({}, DeadLock(), SPECS)
    live.add([result(True, P1, 2, 2)])
    assert live.enabled is False


@pytest.mark.timeout(60)
def test_manager_that_went_away_disables_the_live_view() -> None:
    ctx = multiprocessing.get_context("fork")
    manager = ctx.Manager()
    mapping = manager.dict()
    lock = manager.Lock()
    live = LiveStats(mapping, lock, SPECS)
    live.add([result(True, P1, 2, 2)])
    assert live.enabled
    manager.shutdown()
    live.add([result(True, P2, 1, 1)])  # must not raise
    assert live.enabled is False
    assert live.snapshot()["n"] == 3


# --- the view --------------------------------------------------------------------------

COUNTS = {
    "tasks_done": 3,
    "tasks_failed": 1,
    "records_in": 1000,
    "records_out": 900,
    "malformed": 7,
    "bytes_read": 4000,
}
FACTS = RunFacts(run_id=5, pid=4242, started=1_800_000_000.0, executor="process (2 workers)")


def test_view_has_counts_totals_rates_and_eta_once_the_plan_is_complete() -> None:
    workers = [{"worker": "pid 1", "path": "a.log", "range": "whole file", "tasks": 1}]
    view = build_view(COUNTS, PlanTotals(10, 10_000, True), {"n": 1}, workers, FACTS, 2.0)
    assert {k: view[k] for k in COUNTS} == COUNTS
    assert (view["tasks_total"], view["bytes_total"], view["planning_done"]) == (10, 10_000, True)
    assert (view["records_per_s"], view["bytes_per_s"]) == (500.0, 2000.0)
    assert view["eta_s"] == 3.0  # 6,000 bytes left at 2,000 a second
    assert view["stats"] == {"n": 1} and view["workers"] == workers
    assert (view["run_id"], view["pid"], view["started"]) == (5, 4242, FACTS.started)
    assert json.loads(json.dumps(view)) == view

    growing = build_view(COUNTS, PlanTotals(10, 10_000, False), {}, [], FACTS, 2.0)
    assert growing["eta_s"] is None and growing["planning_done"] is False


def test_published_view_carries_plan_totals_and_what_the_workers_are_on() -> None:
    lock = RecordingLock()
    mapping = LockCheckingDict(lock)
    workers = [{"worker": "pid 7", "path": "x.log", "range": "bytes 0-10", "tasks": 2}]
    live = LiveStats(
        mapping,
        lock,
        SPECS,
        facts=FACTS,
        totals=lambda: PlanTotals(4, 100, False),
        activity=lambda: workers,
    )
    live.add([TaskResult("t", True, 2, 2, malformed=3, bytes_read=50, partials=P1)])
    assert mapping["tasks_total"] == 4 and mapping["planning_done"] is False
    assert (mapping["malformed"], mapping["bytes_read"]) == (3, 50)
    assert mapping["workers"] == workers and mapping["run_id"] == 5
    assert live.view == dict(mapping)


def test_a_failing_activity_source_leaves_the_view_without_workers() -> None:
    def broken() -> list[dict[str, Any]]:
        raise RuntimeError("no idea")

    live = LiveStats({}, threading.Lock(), SPECS, activity=broken)
    live.add([result(True, P1, 2, 2)])
    assert live.enabled and live.view["workers"] == [] and live.view["records_in"] == 2


def test_the_publisher_thread_publishes_while_nothing_is_committed() -> None:
    published = threading.Event()

    class Signalling(dict):
        def update(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
            super().update(*args, **kwargs)
            published.set()

    mapping = Signalling()
    live = LiveStats(mapping, threading.Lock(), SPECS, 0.01, totals=lambda: PlanTotals(2, 9, True))
    live.start_publisher()
    try:
        assert published.wait(30), "the publisher never published"
    finally:
        live.stop_publisher()
    assert mapping["tasks_total"] == 2 and mapping["tasks_done"] == 0


# --- the address file -------------------------------------------------------------------


def address(pid: int = 4242) -> LiveAddress:
    return LiveAddress("/tmp/pymp-x/listener-y", b"\x01\xfe" * 16, "7f01", "7f02", pid, 3)


def test_address_file_is_owner_only_whatever_the_umask_and_round_trips(tmp_path: Path) -> None:
    previous = os.umask(0)
    try:
        write_address(tmp_path, address())
    finally:
        os.umask(previous)
    path = tmp_path / ADDRESS_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_address(tmp_path) == address()
    assert json.loads(path.read_text())["authkey"] == (b"\x01\xfe" * 16).hex()
    write_address(tmp_path, address(pid=99))  # replaced whole, still 0600
    assert read_address(tmp_path).pid == 99
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == [ADDRESS_NAME]  # no temporary left
    remove_address(tmp_path)
    assert not path.exists()
    remove_address(tmp_path)  # already gone: fine


def test_a_tcp_address_round_trips_as_a_tuple(tmp_path: Path) -> None:
    tcp = LiveAddress(("127.0.0.1", 5000), b"k", "1", "2", 1, 1)
    write_address(tmp_path, tcp)
    assert read_address(tmp_path) == tcp


@pytest.mark.parametrize("text", ["", "{", "[]", '{"address": 1}', '{"pid": 1}'])
def test_a_malformed_address_file_is_no_address(tmp_path: Path, text: str) -> None:
    (tmp_path / ADDRESS_NAME).write_text(text)
    assert read_address(tmp_path) is None


# --- status: stale files, unreachable Managers, a real one ------------------------------


def store(tmp_path: Path) -> Path:
    Ledger(tmp_path).close()
    return tmp_path


def test_no_store_is_no_state(tmp_path: Path) -> None:
    assert status.current_state(tmp_path) is None


def test_a_stale_address_file_is_ignored_when_the_lock_is_free(tmp_path: Path) -> None:
    write_address(store(tmp_path), address(pid=os.getpid()))
    state = status.current_state(tmp_path)
    assert state == {"running": False, "last_run": None}
    assert status.state_lines(state, 0.0)[0] == "no run is going on"


@pytest.mark.timeout(30)
def test_an_unreachable_manager_while_the_lock_is_held_says_a_run_is_going_on(
    tmp_path: Path,
) -> None:
    store(tmp_path)
    with RunLock(tmp_path):
        write_address(tmp_path, address(pid=os.getpid()))  # no Manager listens there
        state = status.current_state(tmp_path)
    assert state is not None and state["running"] is True and state["live"] is False
    assert state["pid"] == os.getpid()
    assert "a run is going on" in status.state_lines(state, 0.0)[0]


@pytest.mark.timeout(60)
def test_status_reads_a_real_managers_view_under_its_lock(tmp_path: Path) -> None:
    store(tmp_path)
    ctx = multiprocessing.get_context("fork")
    manager = SyncManager(ctx=ctx, authkey=os.urandom(32))
    manager.start()
    try:
        mapping, lock = manager.dict(), manager.Lock()
        live = LiveStats(mapping, lock, SPECS, facts=FACTS, totals=lambda: PlanTotals(3, 9, True))
        live.add([result(True, P1, 2, 2)])
        found = LiveAddress(
            manager.address,
            bytes(manager._authkey),  # type: ignore[attr-defined]
            mapping._token.id,  # type: ignore[attr-defined]
            lock._token.id,  # type: ignore[attr-defined]
            FACTS.pid,
            FACTS.run_id,
        )
        assert status.read_view(found, 10.0) == live.view
        wrong_key = dataclasses.replace(found, authkey=b"not the key")
        assert status.read_view(wrong_key, 10.0) is None
        with lock:  # a writer holding the lock: the reader gives up in its time
            assert status.read_view(found, 0.5) is None
    finally:
        manager.shutdown()
    assert status.read_view(found, 10.0) is None  # gone: no view, no hang


def test_view_lines_for_people() -> None:
    view = build_view(
        COUNTS,
        PlanTotals(10, 10_000, False),
        {"n": 12345, "by": {"a": 1}},
        [
            {
                "worker": "pid 9",
                "path": "/d/a.log",
                "range": "bytes 0-100",
                "tasks": 3,
                "since": 1_800_000_010.0,
            }
        ],
        FACTS,
        2.0,
    )
    lines = status.view_lines(view, 1_800_000_015.0)
    text = "\n".join(lines)
    assert lines[0].startswith("running: run #5, pid 4242")
    assert "tasks: 3/10 done, 1 failed, planning goes on" in text
    assert "records: 1,000 in, 900 out, 7 malformed, 500/s" in text
    assert "  n: 12345" in text and '  by: {"a": 1}' in text
    assert "  pid 9: /d/a.log (bytes 0-100) and 2 more files, for 5s" in text


# --- the bars -----------------------------------------------------------------------------


def test_counters_come_from_the_published_view() -> None:
    view = build_view(COUNTS, None, {"label": "x", "flag": True, "requests": 12345.0}, [], None, 1)
    assert live_counters(view) == {
        "records": "1,000",
        "malformed": "7",
        "failed": "1",
        "requests": "12,345",
    }
    assert live_counters({}) == {}
    assert format_count(0.123456) == "0.1235" and format_count(7) == "7"


def test_bars_show_records_malformed_failed_and_the_headline_stat(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    screen = io.StringIO()
    monkeypatch.setattr(sys, "stderr", screen)
    live = LiveStats({}, threading.Lock(), SPECS)
    progress = Progress("bar", 2, 100, live)
    live.add([TaskResult("t", True, 3, 3, malformed=2, bytes_read=60, partials=P1)])
    progress.advance(60, 1, 0)
    live.add([TaskResult("u", False, 0, 0)])
    progress.advance(40, 1, 1)
    progress.close()
    last = screen.getvalue().replace("\r", "\n").strip().splitlines()
    tasks_line = next(line for line in reversed(last) if line.startswith("tasks"))
    assert "2/2" in tasks_line
    assert "records=3, malformed=2, failed=1, n=2" in tasks_line, tasks_line


def test_log_lines_carry_records_and_malformed(caplog: pytest.LogCaptureFixture) -> None:
    live = LiveStats({}, threading.Lock(), SPECS)
    progress = Progress("log", 1, 10, live)
    live.add([TaskResult("t", True, 4, 4, malformed=1, bytes_read=10, partials=P1)])
    progress.advance(10, 1, 0)
    with caplog.at_level(logging.INFO, logger="pipeline"):
        progress.close()
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("progress")]
    assert "1/1 tasks (0 failed)" in line and "records=4, malformed=1, n=2" in line


def test_a_lock_held_for_good_skips_the_update_and_never_hangs_the_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A ``pipeline status`` killed while it held the view's lock leaves it held: the
    run's publish gives up after LOCK_WAIT_S and goes on."""
    monkeypatch.setattr(live_module, "LOCK_WAIT_S", 0.01)
    lock = threading.Lock()
    mapping: dict[str, Any] = {}
    live = LiveStats(mapping, lock, SPECS)
    lock.acquire()  # the reader that died
    live.add([result(True, P1, 2, 2)])
    assert mapping == {} and live.enabled  # skipped, not disabled
    assert live.view["records_in"] == 2  # the bars still see it
    lock.release()
    live.publish()
    assert mapping["records_in"] == 2
