"""Batch rows of the ledger: the done whole files of a batch packed into one row.

Readers (planning, the outputs, counts, partials) must see exactly what one row per file
would have shown them; writers must keep every byte range of a path in one place only.
"""

from __future__ import annotations

import math
import os
import socket
import sqlite3
import time
from pathlib import Path

from pipeline import aggregates, worker
from pipeline.live import LiveStats
from pipeline.models import Batch, JobSpec, TaskResult, TaskSpec
from pipeline.store import packing
from pipeline.store.ledger import LEDGER_NAME, Ledger
from pipeline.store.packing import pack_tasks, slim_results
from pipeline.worker import TaskRunner

SPECS = {"n": {"kind": "count", "field": None, "k": None, "where": None}}
MTIME = 1_700_000_000_000_000_000


def task(path: str, size: int = 10, length: int | None = None, offset: int = 0) -> TaskSpec:
    return TaskSpec(f"{path}@{offset}", path, offset, length, size, MTIME)


def result(t: TaskSpec, n: int, *, part: str = "b.jsonl", offset: int = 0) -> TaskResult:
    return TaskResult(
        t.task_id,
        ok=True,
        records_in=n,
        records_out=n,
        malformed=1,
        undecodable=0,
        bytes_read=t.size,
        partials={"n": n},
        part=part,
        part_offset=offset,
        part_size=3 * n,
        content=f"digest-{t.path}",
    )


def packed_results(tasks: list[TaskSpec], counts: list[int], part: str) -> list[TaskResult]:
    """Results as a worker returns them for one batch: the first carries the pack."""
    results = [
        result(t, n, part=part, offset=sum(3 * m for m in counts[:i]))
        for i, (t, n) in enumerate(zip(tasks, counts, strict=True))
    ]
    merged = aggregates.merge_many(SPECS, [r.partials for r in results])
    results[0].packed = pack_tasks(list(zip(tasks, results, strict=True)), merged)
    return results


def commit_batch(
    ledger: Ledger, run: int, paths: list[str], counts: list[int], key: str = "k"
) -> list[TaskSpec]:
    tasks = [task(p) for p in paths]
    results = packed_results(tasks, counts, part=f"{paths[0].strip('/')}.jsonl")
    ledger.commit_tasks({t.task_id: t for t in tasks}, results, 1, run, key)
    return tasks


def table_counts(tmp_path: Path) -> tuple[int, int]:
    db = sqlite3.connect(tmp_path / LEDGER_NAME)
    try:
        return (
            db.execute("SELECT count(*) FROM tasks").fetchone()[0],
            db.execute("SELECT count(*) FROM batches").fetchone()[0],
        )
    finally:
        db.close()


def test_a_packed_batch_is_one_row_read_back_as_task_rows(tmp_path: Path, ledger: Ledger) -> None:
    run = ledger.start_run("job", "k")
    commit_batch(ledger, run, ["/d/a", "/d/b", "/d/caf\udce9"], [2, 0, 5])
    assert table_counts(tmp_path) == (0, 1)
    rows = list(ledger.tasks())
    assert [(r.path, r.offset, r.length, r.size, r.mtime_ns) for r in rows] == [
        ("/d/a", 0, None, 10, MTIME),
        ("/d/b", 0, None, 10, MTIME),
        ("/d/caf\udce9", 0, None, 10, MTIME),  # not valid UTF-8: the same str comes back
    ]
    a, _, c = rows
    assert (a.status, a.attempts, a.result_key, a.task_id) == ("done", 1, "k", "/d/a@0")
    assert (a.records_in, a.records_out, a.malformed, a.undecodable) == (2, 2, 1, 0)
    assert (a.part, a.part_offset, a.part_size) == ("d/a.jsonl", 0, 6)
    assert (c.part_offset, c.part_size, c.content) == (6, 15, "digest-/d/caf\udce9")
    assert [r.partials for r in rows] == [{"n": 2}, {"n": 0}, {"n": 5}]
    assert sorted(r.path for r in ledger.tasks_for_planning()) == [r.path for r in rows]


def test_committed_rows_merge_batches_and_task_rows_in_path_order(ledger: Ledger) -> None:
    run = ledger.start_run("job", "k")
    commit_batch(ledger, run, ["/a", "/c", "/e"], [1, 1, 1])
    commit_batch(ledger, run, ["/b", "/f"], [1, 1])  # overlaps the first batch's range
    single = task("/d")
    ledger.commit_task(single, result(single, 4, part="d.jsonl"), 1, run, "k")
    split = [task("/a0", 20, 10, 0), task("/a0", 20, 10, 10)]
    ledger.replace_tasks([], split, "k", run)
    for t in split:
        ledger.commit_task(t, result(t, 1, part=f"a0-{t.offset}.jsonl"), 1, run, "k")
    commit_batch(ledger, run, ["/x", "/y"], [1, 1], key="old")  # another config's
    order = [(r.path, r.offset) for r in ledger.committed("k")]
    assert order == [
        ("/a", 0),
        ("/a0", 0),
        ("/a0", 10),
        ("/b", 0),
        ("/c", 0),
        ("/d", 0),
        ("/e", 0),
        ("/f", 0),
    ]
    assert [r.path for r in ledger.tasks()][-2:] == ["/x", "/y"]


def test_counts_partials_state_and_parts_cover_batch_rows(ledger: Ledger) -> None:
    run1 = ledger.start_run("job", "k")
    commit_batch(ledger, run1, ["/a", "/b"], [2, 3])
    single = task("/c")
    ledger.commit_task(single, result(single, 4, part="c.jsonl"), 1, run1, "k")
    state = ledger.committed_state("k")
    run2 = ledger.start_run("job", "k")
    commit_batch(ledger, run2, ["/d", "/e"], [5, 6])
    assert ledger.committed_state("k") != state
    assert ledger.committed_counts("k") == {"in": 20, "out": 20, "malformed": 5, "undecodable": 0}
    # one merged partial per batch row, not one per member
    assert sorted(p["n"] for p in ledger.committed_partials("k")) == [4, 5, 11]
    assert sorted(p["n"] for p in ledger.committed_partials("k", except_run=run2)) == [4, 5]
    assert ledger.part_names() == {"a.jsonl", "c.jsonl", "d.jsonl"}


def test_failures_and_ranges_of_a_batch_stay_rows_of_their_own(
    tmp_path: Path, ledger: Ledger
) -> None:
    run = ledger.start_run("job", "k")
    tasks = [task("/a"), task("/b"), task("/c")]
    results = packed_results(tasks[:2], [1, 2], part="p.jsonl")
    results.append(TaskResult("/c@0", ok=False, error_kind="error", error="/c: boom"))
    ledger.commit_tasks({t.task_id: t for t in tasks}, results, 2, run, "k")
    assert table_counts(tmp_path) == (1, 1)
    assert [(r.path, r.status, r.attempts) for r in ledger.tasks()] == [
        ("/a", "done", 2),
        ("/b", "done", 2),
        ("/c", "failed", 2),
    ]


def test_a_changed_member_leaves_its_batch_and_the_others_keep_their_stats(
    tmp_path: Path, ledger: Ledger
) -> None:
    run = ledger.start_run("job", "k")
    commit_batch(ledger, run, ["/a", "/b", "/c"], [1, 2, 4])
    ledger.replace_tasks(["/b"], [task("/b")], "k", run, touched=[("/c", 12, MTIME + 1)])
    rows = list(ledger.tasks())
    assert [(r.path, r.size, r.mtime_ns) for r in rows] == [
        ("/a", 10, MTIME),
        ("/c", 12, MTIME + 1),
    ]
    # the batch's merge included /b: the remaining members' own partials stand in
    assert sorted(p["n"] for p in ledger.committed_partials("k")) == [1, 4]
    assert ledger.committed_counts("k")["in"] == 5
    ledger.replace_tasks(["/a", "/c"], [], "k", run)
    assert table_counts(tmp_path) == (0, 0)
    assert ledger.part_names() == set()


def test_a_touched_member_keeps_the_merge(ledger: Ledger) -> None:
    run = ledger.start_run("job", "k")
    commit_batch(ledger, run, ["/a", "/b"], [1, 2])
    ledger.replace_tasks([], [], "k", run, touched=[("/a", 10, MTIME + 5)])
    assert [p["n"] for p in ledger.committed_partials("k")] == [3]
    assert [r.mtime_ns for r in ledger.tasks()] == [MTIME + 5, MTIME]


def test_many_dropped_paths_are_found_without_the_text_probe(ledger: Ledger) -> None:
    run = ledger.start_run("job", "k")
    paths = [f"/f{i:03d}" for i in range(100)]
    commit_batch(ledger, run, paths, [1] * 100)
    ledger.replace_tasks(paths[:70], [], "k", run)  # more than the probe's limit
    assert [r.path for r in ledger.tasks()] == paths[70:]


# --- the worker packs, the main process merges once ------------------------------------


def job(tmp_path: Path, write_records: bool = False) -> JobSpec:
    return JobSpec("lines", "utf-8", (), SPECS, write_records, str(tmp_path / "parts"))


def small_files(tmp_path: Path, n: int) -> list[TaskSpec]:
    tasks = []
    for i in range(n):
        path = tmp_path / f"f{i}.txt"
        path.write_bytes(b"x\n" * (i + 1))
        st = path.stat()
        tasks.append(TaskSpec(f"t{i}", str(path), 0, None, st.st_size, st.st_mtime_ns))
    return tasks


def test_the_worker_packs_done_whole_files_and_sends_their_partials_once(
    tmp_path: Path,
) -> None:
    tasks = small_files(tmp_path, 3)
    runner = TaskRunner(job(tmp_path))
    results = runner.run_batch(Batch.of(tuple(tasks)))
    packed = results[0].packed
    assert packed is not None and packed.task_ids == {"t0", "t1", "t2"}
    assert packed.merged == {"n": 6} and packed.totals[:2] == (3, 6)
    assert [r.partials for r in results] == [{"n": 1}, {"n": 2}, {"n": 3}]
    # across the pipe, the members' own partials are left behind: the merge stands in
    sent = worker.execute(job(tmp_path), Batch.of(tuple(tasks))).results
    # one result stands for the packed files: counts and merge in ``packed``
    assert [(r.task_id, r.partials) for r in sent] == [("t0", {})]
    assert sent[0].packed is not None and sent[0].packed.merged == {"n": 6}
    assert sent[0].packed.row_id == packing.row_id(frozenset({"t0", "t1", "t2"}))


def test_a_packed_infinite_min_or_max_reads_back_infinite(tmp_path: Path) -> None:
    """orjson would pack an infinite float as null: a job with min/max stats is checked."""
    specs = {
        "lo": {"kind": "min", "field": "v", "k": None, "where": None},
        "hi": {"kind": "max", "field": "v", "k": None, "where": None},
    }
    tasks = []
    for i, text in enumerate(['{"v": -Infinity}\n', '{"v": 1.5}\n', '{"v": Infinity}\n']):
        path = tmp_path / f"f{i}.jsonl"
        path.write_text(text)
        st = path.stat()
        tasks.append(TaskSpec(f"t{i}", str(path), 0, None, st.st_size, st.st_mtime_ns))
    runner = TaskRunner(JobSpec("jsonl", "utf-8", (), specs, False, str(tmp_path / "parts")))
    packed = runner.run_batch(Batch.of(tuple(tasks)))[0].packed
    assert packed is not None
    members = packing.unpack(packed.members)
    lows = [m[packing.M_PARTIALS]["lo"]["num"] for m in members]
    assert lows == [-math.inf, 1.5, math.inf]


def test_the_worker_does_not_pack_a_range_or_a_batch_of_one(tmp_path: Path) -> None:
    tasks = small_files(tmp_path, 2)
    runner = TaskRunner(job(tmp_path))
    assert runner.run_batch(Batch.of((tasks[0],)))[0].packed is None
    ranged = TaskSpec("r", tasks[1].path, 0, 2, tasks[1].size, tasks[1].mtime_ns)
    results = runner.run_batch(Batch.of((tasks[0], ranged)))
    assert all(r.packed is None for r in results)


def test_live_stats_count_a_packed_batch_once() -> None:
    tasks = [task("/a"), task("/b"), task("/c")]
    results = packed_results(tasks[:2], [2, 3], part="p.jsonl")
    failed = TaskResult("/c", ok=False, records_in=4, error="boom")
    sent = slim_results([*results, failed])  # as every executor hands them over
    assert len(sent) == 2
    mapping: dict = {}
    live = LiveStats(mapping, _NoLock(), SPECS)
    live.add(sent)
    assert live.snapshot() == {"n": 5}
    assert mapping["tasks_done"] == 2 and mapping["tasks_failed"] == 1
    assert mapping["records_in"] == 2 + 3 + 4


class _NoLock:
    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        return True

    def release(self) -> None:
        return None


# --- when and where each task ran (the report's timeline) ------------------------------


def test_the_ledger_keeps_when_and_where_each_task_ran(tmp_path: Path) -> None:
    """A task row: its start and its worker (host:pid); a packed batch: the span from its
    first task's start to its last one's end, and its worker, shown on every member."""
    (tmp_path / "store").mkdir()
    ledger = Ledger(tmp_path / "store")
    run = ledger.start_run("job", "k")
    tasks = small_files(tmp_path, 3)
    before = time.time()
    sent = worker.execute(job(tmp_path), Batch.of(tuple(tasks))).results
    alone = worker.execute(job(tmp_path), Batch.of((tasks[0]._replace(task_id="solo"),)))
    ledger.commit_tasks({t.task_id: t for t in tasks}, sent, 1, run, "k")
    solo = tasks[0]._replace(task_id="solo", path=str(tmp_path / "solo"))
    ledger.commit_tasks({"solo": solo}, alone.results, 1, run, "k")
    here = f"{socket.gethostname()}:{os.getpid()}"
    rows = {row.task_id: row for row in ledger.tasks()}
    assert {row.worker for row in rows.values()} == {here}
    assert all(before <= (row.started or 0) <= time.time() for row in rows.values())
    assert rows["t0"].started == rows["t2"].started  # a batch: one bar from its start
    ((started, ended, worker_id),) = sqlite3.connect(tmp_path / "store" / LEDGER_NAME).execute(
        "SELECT started, ended, worker FROM batches"
    )
    assert started <= ended and worker_id == here
    ledger.close()


def test_a_ledger_from_before_the_timing_columns_gains_them(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    ledger = Ledger(store)
    run = ledger.start_run("job", "k")
    (task,) = small_files(tmp_path, 1)
    ledger.commit_tasks({task.task_id: task}, [result(task, 2)], 1, run, "k")
    ledger.close()
    db = sqlite3.connect(store / LEDGER_NAME)
    for table, columns in (
        ("tasks", ("started", "worker")),
        ("batches", ("started", "ended", "worker")),
    ):
        for column in columns:
            db.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    db.commit()
    db.close()
    readonly = Ledger(store, readonly=True)  # not migrated (``plan``, ``report``): NULLs
    (row,) = readonly.tasks_for_planning()
    assert (row.task_id, row.started, row.worker) == (task.task_id, None, None)
    readonly.close()
    ledger = Ledger(store)  # migrated in place
    (row,) = ledger.tasks()
    assert (row.task_id, row.records_in, row.started, row.worker) == (task.task_id, 2, None, None)
    ledger.close()
