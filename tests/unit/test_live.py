"""LiveStats: one locked Manager-dict update per committed batch; a broken Manager only
disables the live view."""

from __future__ import annotations

import logging
import multiprocessing
import threading
from typing import Any

import pytest

from pipeline import aggregates
from pipeline.live import LiveStats
from pipeline.models import TaskResult

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

    def __enter__(self) -> RecordingLock:
        assert not self.held, "lock is not re-entrant"
        self.held = True
        self.acquired += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self.held = False


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
    assert mapping["partials"] == aggregates.merge_partials(SPECS, None, P1)
    assert (mapping["tasks_done"], mapping["tasks_failed"]) == (1, 0)
    assert (mapping["records_in"], mapping["records_out"]) == (2, 2)

    live.add([result(True, P2, 5, 1)])
    assert len(mapping.updates) == 2 and lock.acquired == 2
    assert mapping["partials"] == aggregates.merge_partials(SPECS, P1, P2)
    assert aggregates.finalize(SPECS, mapping["partials"]) == {
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
    assert mapping["partials"] == aggregates.merge_partials(SPECS, None, P1)
    assert (mapping["tasks_done"], mapping["tasks_failed"]) == (1, 1)
    assert (mapping["records_in"], mapping["records_out"]) == (6, 2)
    assert live.snapshot()["n"] == 2


def test_published_values_are_not_aliased_to_later_state() -> None:
    """What was published for task 1 must not change when task 2 is merged."""
    lock = RecordingLock()
    mapping = LockCheckingDict(lock)
    live = LiveStats(mapping, lock, SPECS)
    live.add([result(True, P1, 2, 2)])
    first = aggregates.finalize(SPECS, mapping.updates[0]["partials"])
    live.add([result(True, P2, 1, 1)])
    assert aggregates.finalize(SPECS, mapping.updates[0]["partials"]) == first


def test_inputs_are_not_mutated() -> None:
    import copy

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
        assert aggregates.finalize(SPECS, seen["partials"]) == live.snapshot()
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
        def __enter__(self) -> None:
            raise BrokenPipeError(32, "Broken pipe")

        def __exit__(self, *exc: object) -> None:
            raise AssertionError("never entered")

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
