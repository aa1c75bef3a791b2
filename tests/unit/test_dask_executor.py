"""The dask executor's bookkeeping against a fake cluster: which batch a lost worker's
death is charged to, timeouts, stops, the order of events. No process is started: the
fake records what the loop asks of the cluster, and the tests play the cluster's events.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pickle
import queue
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import ExecutionError
from pipeline.executors.base import ExecutorOptions, Outcome
from pipeline.executors.cluster import WorkerInfo, quiet_dask_logs
from pipeline.executors.dask import (
    MAX_FREE_LOSSES,
    STARTS_PREFIX,
    DaskExecutor,
    DaskOptions,
    _Loop,
    make_starts_dir,
)
from pipeline.models import Batch, JobSpec, TaskResult, TaskSpec
from pipeline.store import parts
from pipeline.worker import BatchOutput

pytestmark = pytest.mark.timeout(30)


class FakeCluster:
    local = None

    def __init__(self, workers: int = 2) -> None:
        self.events: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self.current = {
            f"tcp://w{i}": WorkerInfo(f"tcp://w{i}", 1, "host", f"tcp://n{i}")
            for i in range(workers)
        }
        self.submitted: dict[str, str] = {}  # key -> worker
        self.cancelled: list[str] = []
        self.stopped: list[str] = []
        self.alive = True
        self.values: dict[str, Any] = {}

    def healthy(self) -> bool:
        return self.alive

    def workers(self) -> dict[str, WorkerInfo]:
        return dict(self.current)

    def submit(self, key: str, payload: bytes, address: str) -> None:
        assert isinstance(payload, bytes)
        self.submitted[key] = address

    def outcome(self, key: str) -> tuple[str, Any]:
        return self.values.pop(key, ("cancelled", None))

    def cancel(self, keys: list[str]) -> None:
        self.cancelled.extend(keys)

    def stop_worker(self, address: str) -> None:
        self.stopped.append(address)

    def restart_worker(self, address: str) -> None:
        pass

    def death_note(self, worker: WorkerInfo | None, pid: int | None) -> str | None:
        return "was killed by SIGKILL"


def batches(n: int) -> list[Batch]:
    return [Batch.of((TaskSpec(f"t{i}", f"/d/f{i}", 0, None, 10, 1),)) for i in range(n)]


def make_loop(
    tmp_path: Path,
    n: int = 6,
    retries: int = 1,
    timeout: float | None = None,
    local: bool = False,
) -> tuple[_Loop, FakeCluster, list[Outcome]]:
    job = JobSpec("lines", "utf-8", (), {}, False, str(tmp_path))
    options = ExecutorOptions(job=job, workers=2, retries=retries, timeout=timeout, grace=5)
    executor = DaskExecutor(options, DaskOptions())
    cluster = FakeCluster()
    if local:  # workers on this machine, writing their starts into the client's folder
        cluster.local = object()
        executor.starts_dir = str(tmp_path / "starts")
        os.mkdir(executor.starts_dir)
    outcomes: list[Outcome] = []
    loop = _Loop(
        executor, cluster, iter(batches(n)), outcomes.append, lambda: False, lambda: False, None
    )
    loop.refresh_workers()
    loop.submit_ready()
    return loop, cluster, outcomes


def key_of(loop: _Loop, batch_id: str) -> str:
    return next(k for k, f in loop.flights.items() if f.batch.batch_id == batch_id)


def start(loop: _Loop, key: str, pid: int = 7, task: int = 0) -> None:
    message = {"run": loop.token, "key": key, "pid": pid, "host": "host", "task": task}
    loop.handle(("start", message))


def attempt_of(key: str) -> int:
    return int(key.split("-")[3].removeprefix("a"))


def test_each_worker_gets_two_batches_pinned_to_it(tmp_path: Path) -> None:
    _, cluster, _ = make_loop(tmp_path)
    assert sorted(cluster.submitted.values()) == ["tcp://w0"] * 2 + ["tcp://w1"] * 2
    assert all(attempt_of(key) == 1 for key in cluster.submitted)


def test_a_dead_worker_charges_only_the_batch_it_had_started(tmp_path: Path) -> None:
    loop, cluster, outcomes = make_loop(tmp_path)
    on_w0 = [k for k, w in cluster.submitted.items() if w == "tcp://w0"]
    running, queued = on_w0
    start(loop, running)
    del cluster.current["tcp://w0"]
    loop.handle(("removed", "tcp://w0"))
    assert set(cluster.cancelled) == {running, queued}
    assert outcomes == []  # retries: 1, so nothing is final yet
    loop.submit_ready()  # only w1 is left, and it is full: nothing goes
    assert len(loop.flights) == 2
    cluster.current["tcp://w2"] = WorkerInfo("tcp://w2", 1, "host", "tcp://n0")
    loop.refresh_workers()
    loop.submit_ready()
    resubmitted = {
        loop.flights[k].batch.batch_id: attempt_of(k)
        for k, w in cluster.submitted.items()
        if w == "tcp://w2"
    }
    batch_of = {k: k.split("-", 4)[4] for k in (running, queued)}
    assert len(resubmitted) == 2
    by_prefix = {bid[:12]: attempt for bid, attempt in resubmitted.items()}
    assert by_prefix[batch_of[running]] == 2  # charged
    assert by_prefix[batch_of[queued]] == 1  # free


def test_the_last_attempt_of_a_crashed_batch_is_final_with_the_signal(tmp_path: Path) -> None:
    loop, cluster, outcomes = make_loop(tmp_path, retries=0)
    key = next(k for k, w in cluster.submitted.items() if w == "tcp://w0")
    start(loop, key, pid=4242)
    loop.handle(("removed", "tcp://w0"))
    [outcome] = outcomes
    [result] = outcome.results
    assert (result.ok, result.error_kind, outcome.attempts) == (False, "crashed", 1)
    assert "pid 4242" in result.error and "was killed by SIGKILL" in result.error


def test_a_batch_lost_too_often_before_it_starts_is_charged(tmp_path: Path) -> None:
    loop, cluster, outcomes = make_loop(tmp_path, n=1, retries=0)
    for i in range(MAX_FREE_LOSSES + 1):
        [address] = [w for k, w in cluster.submitted.items() if k in loop.flights]
        del cluster.current[address]
        loop.handle(("removed", address))
        cluster.current[f"tcp://new{i}"] = WorkerInfo(f"tcp://new{i}", 1, "host", None)
        loop.refresh_workers()
        loop.submit_ready()
    [outcome] = outcomes
    assert outcome.results[0].error_kind == "crashed"
    assert "before it could start" in outcome.results[0].error


def finished(loop: _Loop, cluster: FakeCluster, key: str, part: bytes) -> None:
    batch = loop.flights[key].batch
    result = TaskResult(batch.tasks[0].task_id, ok=True, part=batch.part_name, part_size=4)
    header = loop.remote.TaskHeader(1, "host", None)
    meta = pickle.dumps((BatchOutput(batch.batch_id, [result]), header))
    cluster.values[key] = ("finished", (meta, part))
    loop.handle(("done", key))


def test_a_finished_batch_writes_its_part_then_is_retired(tmp_path: Path) -> None:
    parts.prepare(str(tmp_path))
    loop, cluster, outcomes = make_loop(tmp_path, n=1)
    [key] = list(loop.flights)
    batch = loop.flights[key].batch
    finished(loop, cluster, key, b"{}\n\n")
    [outcome] = outcomes
    assert outcome.results[0].ok
    assert (tmp_path / batch.part_name).read_bytes() == b"{}\n\n"
    assert loop.schedule.finished()


def test_a_part_the_client_cannot_write_fails_the_batch(tmp_path: Path) -> None:
    loop, cluster, outcomes = make_loop(tmp_path, n=1, retries=0)
    [key] = list(loop.flights)
    (tmp_path / "parts-are-a-file").write_text("")
    loop.options = dataclasses.replace(
        loop.options,
        job=dataclasses.replace(loop.options.job, parts_dir=str(tmp_path / "parts-are-a-file")),
    )
    finished(loop, cluster, key, b"{}\n")
    [outcome] = outcomes
    [result] = outcome.results
    assert not result.ok and "cannot write" in result.error and "[Errno" in result.error


def test_a_result_lost_with_its_worker_goes_round_again_for_free(tmp_path: Path) -> None:
    loop, cluster, outcomes = make_loop(tmp_path, n=1)
    [key] = list(loop.flights)
    start(loop, key)
    cluster.values[key] = ("lost", None)
    loop.handle(("done", key))
    assert outcomes == [] and not loop.flights
    loop.submit_ready()
    [again] = list(loop.flights)
    assert attempt_of(again) == 1


def test_a_batch_past_its_timeout_is_charged_and_its_worker_stopped(tmp_path: Path) -> None:
    loop, cluster, outcomes = make_loop(tmp_path, retries=0, timeout=5.0)
    running, queued = [k for k, w in cluster.submitted.items() if w == "tcp://w0"]
    start(loop, running)
    loop.flights[running].started -= 10  # ten seconds ago
    loop.check_timeouts(loop.flights[running].started + 10)
    assert cluster.stopped == ["tcp://w0"]
    assert set(cluster.cancelled) == {running, queued}
    [outcome] = outcomes
    assert outcome.results[0].error_kind == "timeout"
    assert "timeout (5s)" in outcome.results[0].error
    loop.submit_ready()  # the stopped worker gets nothing more; the queued one goes to w1
    assert all(cluster.submitted[k] != "tcp://w0" for k in loop.flights)


def test_a_first_stop_cancels_what_has_not_started(tmp_path: Path) -> None:
    loop, cluster, _ = make_loop(tmp_path)
    started = next(iter(loop.flights))
    start(loop, started)
    loop.begin_stop()
    assert list(loop.flights) == [started]
    assert started not in cluster.cancelled and len(cluster.cancelled) == 3
    loop.submit_ready()
    assert list(loop.flights) == [started]  # nothing more is submitted


def test_a_lost_scheduler_ends_the_run(tmp_path: Path) -> None:
    loop, cluster, _ = make_loop(tmp_path)
    cluster.alive = False
    with pytest.raises(ExecutionError, match="lost the connection to the Dask scheduler"):
        loop.check()


def test_starts_are_handled_before_removals_queued_with_them(tmp_path: Path) -> None:
    """The scheduler relays a batch's start before its worker's death: handled in another
    order, a batch that crashed its worker would look as if it never started."""
    loop, cluster, _ = make_loop(tmp_path)
    key = next(k for k, w in cluster.submitted.items() if w == "tcp://w0")
    cluster.events.put(("removed", "tcp://w0"))
    cluster.events.put(("start", {"run": loop.token, "key": key, "pid": 1, "host": "h", "task": 0}))
    first = ("done", "nothing")
    order = [kind for kind, _ in loop.with_waiting(first)]
    assert order == ["start", "removed", "done"]


def test_a_worker_missing_from_one_refresh_is_not_yet_lost(tmp_path: Path) -> None:
    """Its removal event, which follows the start events of its batches, settles it; the
    refresh settles it only when it is missing twice (the event was lost)."""
    loop, cluster, _ = make_loop(tmp_path)
    del cluster.current["tcp://w0"]
    loop.refresh_workers()
    assert "tcp://w0" in loop.workers and len(loop.flights) == 4
    loop.refresh_workers()
    assert "tcp://w0" not in loop.workers and len(loop.flights) == 2


def ranges_batch(n: int) -> Batch:
    return Batch.of(tuple(TaskSpec(f"r{i}", "/d/big", i * 100, 100, n * 100, 1) for i in range(n)))


def test_a_crash_in_a_batch_of_ranges_is_charged_to_the_range_that_ran(tmp_path: Path) -> None:
    """Each range of such a batch announces its start: the one running when the worker
    died is charged, the others (done but lost with it, or not started) go round again."""
    job = JobSpec("lines", "utf-8", (), {}, False, str(tmp_path))
    options = ExecutorOptions(job=job, workers=2, retries=0, grace=5)
    cluster = FakeCluster(workers=1)
    outcomes: list[Outcome] = []
    loop = _Loop(
        DaskExecutor(options, DaskOptions()),
        cluster,
        iter([ranges_batch(4)]),
        outcomes.append,
        lambda: False,
        lambda: False,
        None,
    )
    loop.refresh_workers()
    loop.submit_ready()
    [key] = list(loop.flights)
    for index in range(3):  # ranges 0 and 1 done, range 2 running
        loop.handle(
            ("start", {"run": loop.token, "key": key, "pid": 9, "host": "h", "task": index})
        )
    loop.handle(("removed", "tcp://w0"))
    [outcome] = outcomes  # retries: 0, so the culprit fails at once
    assert [r.task_id for r in outcome.results] == ["r2"]
    assert outcome.results[0].error_kind == "crashed"
    cluster.current["tcp://w1"] = WorkerInfo("tcp://w1", 1, "host", None)
    loop.refresh_workers()
    loop.submit_ready()
    [again] = [f.batch for f in loop.flights.values()]
    assert [t.task_id for t in again.tasks] == ["r0", "r1", "r3"]


def test_an_idle_worker_takes_a_batch_waiting_behind_another_at_the_end(
    tmp_path: Path,
) -> None:
    loop, cluster, _ = make_loop(tmp_path, n=4)  # two on each worker, nothing left
    on_w1 = [k for k, w in cluster.submitted.items() if w == "tcp://w1"]
    for key in [k for k, w in cluster.submitted.items() if w == "tcp://w0"]:
        loop.flights.pop(key)  # w0 has finished both of its batches
    start(loop, on_w1[0])
    loop.submit_ready()
    assert on_w1[1] in cluster.cancelled  # the one not started moved...
    moved = [k for k in loop.flights if cluster.submitted[k] == "tcp://w0"]
    assert len(moved) == 1 and attempt_of(moved[0]) == 1  # ...to the idle worker, for free
    assert on_w1[0] in loop.flights and on_w1[0] not in cluster.cancelled


def test_a_local_workers_start_is_read_from_a_file_and_names_the_culprit(
    tmp_path: Path,
) -> None:
    """On a local cluster, a worker writes each start into a file of the client's folder
    (before the task runs); the client reads it every tick (timeouts) and when the worker
    dies (blame): no message to lose, none to wait for."""
    loop, cluster, outcomes = make_loop(tmp_path, retries=0, local=True)
    running, queued = [k for k, w in cluster.submitted.items() if w == "tcp://w0"]
    assert loop.starts_dir is not None
    path = loop.remote.start_file(loop.starts_dir, "tcp://w0")
    message = {"run": loop.token, "key": running, "task": 0, "pid": 4242, "host": "h"}
    loop.remote._announce_locally(path, message)
    assert loop.remote.read_local_start(path) == message
    assert not loop.check()  # a tick: the start is seen
    flight = loop.flights[running]
    assert flight.started is not None and flight.pid == 4242
    first = flight.started
    assert not loop.check()
    assert flight.started == first  # read again: not a new start
    queued_batch = loop.flights[queued].batch
    del cluster.current["tcp://w0"]
    loop.handle(("removed", "tcp://w0"))
    [outcome] = outcomes  # the running one, charged (retries: 0); the queued one: free
    assert outcome.results[0].error_kind == "crashed" and "pid 4242" in outcome.results[0].error
    assert loop.schedule.take() == (queued_batch, 1)


def test_a_runs_folder_of_starts_is_its_own_and_a_dead_runs_is_swept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = tmp_path / f"{STARTS_PREFIX}999999999-x"  # no such pid
    live = tmp_path / f"{STARTS_PREFIX}{os.getpid()}-y"
    dead.mkdir()
    live.mkdir()
    mine = make_starts_dir()
    assert os.path.basename(mine).startswith(f"{STARTS_PREFIX}{os.getpid()}-")
    assert not dead.exists() and live.exists()


@pytest.fixture
def dask_loggers_restored() -> Iterator[None]:
    names = ["distributed", "distributed.client", "asyncio", "tornado", "bokeh"]
    saved = {
        n: (lg.level, lg.propagate, list(lg.handlers))
        for n in names
        if (lg := logging.getLogger(n))
    }
    yield
    for name, (level, propagate, handlers) in saved.items():
        logger = logging.getLogger(name)
        logger.setLevel(level)
        logger.propagate = propagate
        logger.handlers[:] = handlers


@pytest.mark.usefixtures("dask_loggers_restored")
def test_dask_logs_reach_no_console_without_debug(capfd: pytest.CaptureFixture[str]) -> None:
    """Not dask's own handlers, not ours, and not logging's last resort (which prints to
    stderr for a logger that has no handler and does not propagate)."""
    quiet_dask_logs(debug=False)
    logging.getLogger("distributed.client").error("boom", exc_info=ValueError("x"))
    logging.getLogger("asyncio").error("Task exception was never retrieved")
    assert capfd.readouterr().err == ""
    quiet_dask_logs(debug=True)
    assert logging.getLogger("distributed").propagate  # --debug: through our handlers


def test_records_come_back_compressed_from_a_remote_cluster_only() -> None:
    from pipeline import remote
    from pipeline.executors.dask import remote_codecs

    assert remote_codecs(local=True) == ()
    codecs = remote_codecs(local=False)
    assert codecs[-1] == "zlib"  # zstd first when this process can read it
    part = b'{"ip":"10.0.0.1","path":"/index.html","status":200}\n' * 2000
    codec, sent = remote._compress(part, codecs)
    assert codec in codecs and sent is not None and len(sent) < len(part) // 10
    assert remote.decompress(codec, sent) == part
    assert remote._compress(part, ()) == (None, part)  # to this machine's own workers
