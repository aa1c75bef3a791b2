"""The process executor's pieces that need no job: the schedule's threading rule and the
quiet Pool's maintenance thread."""

from __future__ import annotations

import multiprocessing
import multiprocessing.pool
import threading
import time
from collections.abc import Iterator

import pytest

from pipeline.executors.base import Schedule
from pipeline.executors.process import QuietPool
from pipeline.models import Batch, TaskSpec

pytestmark = pytest.mark.timeout(60)


def batches(n: int, pulled_by: list[str]) -> Iterator[Batch]:
    for i in range(n):
        pulled_by.append(threading.current_thread().name)
        yield Batch.of((TaskSpec(f"t{i}", f"/d/{i}", 0, None, 1, 1),))


def test_with_prefetch_only_refill_pulls_from_the_source() -> None:
    """Under imap the Pool's task thread takes batches; the source (the plan, made on
    the ledger's connection) must only ever be pulled by the main thread, in refill."""
    pulled_by: list[str] = []
    schedule = Schedule(batches(10, pulled_by), window=3, retries=0, prefetch=True)
    assert schedule.take() is None  # nothing queued: take never pulls itself
    assert pulled_by == []
    schedule.refill()
    assert len(pulled_by) == 3  # a window queued
    taken: list[str] = []

    def feeder() -> None:
        while (item := schedule.take_blocking(lambda: True)) is not None:
            taken.append(item[0].batch_id)

    thread = threading.Thread(target=feeder, name="feeder")
    thread.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not schedule.finished():
        for batch_id in list(schedule.in_flight):
            schedule.retire(batch_id, [])
        schedule.refill()
        time.sleep(0.005)
    thread.join(10)
    assert not thread.is_alive()
    assert len(taken) == 10 and len(set(taken)) == 10
    assert set(pulled_by) == {threading.current_thread().name}


def test_without_prefetch_take_pulls_and_respects_the_window() -> None:
    pulled_by: list[str] = []
    schedule = Schedule(batches(5, pulled_by), window=2, retries=0)
    first, second = schedule.take(), schedule.take()
    assert first is not None and second is not None
    assert schedule.take() is None  # the window is full
    assert len(pulled_by) == 2


def _square(x: int) -> list[int]:
    return [x] * 2000  # results big enough to sit in the pipe a while


def _counting_maintenance(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls = [0]
    real = multiprocessing.pool.Pool._maintain_pool

    def counting(*args: object) -> None:
        calls[0] += 1
        real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(multiprocessing.pool.Pool, "_maintain_pool", staticmethod(counting))
    return calls


def test_quiet_pool_maintenance_sleeps_while_results_flow(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The stdlib Pool's maintenance thread wakes whenever a result waits in the pipe;
    the quiet one only on worker exits, close/terminate and an emptied task cache."""
    calls = _counting_maintenance(monkeypatch)
    with QuietPool(2, context=multiprocessing.get_context("fork")) as pool:
        # one job in the task cache (so it empties once), 300 results through the pipe
        results = pool.map_async(_square, range(300), chunksize=1).get(timeout=30)
    assert [r[0] for r in results] == list(range(300))
    assert calls[0] < 10  # one per wake-up; the stdlib pool makes hundreds here


def test_quiet_pool_still_replaces_workers_that_exit(monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker's exit still wakes the maintenance thread: with one task per worker,
    every task after the first two needs a replacement worker, or the map never ends."""
    calls = _counting_maintenance(monkeypatch)
    with QuietPool(2, maxtasksperchild=1, context=multiprocessing.get_context("fork")) as pool:
        results = pool.map_async(_square, range(12), chunksize=1).get(timeout=30)
    assert [r[0] for r in results] == list(range(12))
    assert calls[0] >= 6  # woken for the exits
