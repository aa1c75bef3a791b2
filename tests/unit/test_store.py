"""The output store: atomic writes, part files, the ledger, merged outputs and the run lock."""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline import aggregates
from pipeline.errors import ExitCode, LockHeldError, StoreError
from pipeline.models import TaskResult, TaskSpec
from pipeline.store import lock as lock_module
from pipeline.store import merge, parts
from pipeline.store.atomic import (
    TMP_PREFIX,
    atomic_write_bytes,
    atomic_writer,
    remove_temp_files,
)
from pipeline.store.ledger import LEDGER_NAME, Ledger, TaskRow
from pipeline.store.lock import LOCK_NAME, RunLock, lock_holder

REPO = str(Path(__file__).resolve().parents[2])


class Boom(Exception):
    pass


def temp_leftovers(folder: Path) -> list[str]:
    return [n for n in os.listdir(folder) if n.startswith(TMP_PREFIX) or n.endswith(".tmp")]


# --- atomic.py -------------------------------------------------------------------------


def test_atomic_writer_replaces_the_file(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    target.write_bytes(b"old")
    with atomic_writer(target) as handle:
        handle.write(b"new ")
        # nothing is visible under the final name until the block ends
        assert target.read_bytes() == b"old"
        assert len(temp_leftovers(tmp_path)) == 1
        handle.write(b"content")
    assert target.read_bytes() == b"new content"
    assert temp_leftovers(tmp_path) == []
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o644


def test_atomic_writer_renames_rather_than_rewrites_in_place(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_bytes(b"old")
    old_inode = os.stat(target).st_ino
    with open(target, "rb") as reader:  # a reader holding the old file keeps seeing it whole
        atomic_write_bytes(target, b"new")
        assert reader.read() == b"old"
    assert target.read_bytes() == b"new"
    assert os.stat(target).st_ino != old_inode


def test_atomic_writer_leaves_nothing_on_an_exception(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    target.write_bytes(b"old")
    with pytest.raises(Boom), atomic_writer(target) as handle:
        handle.write(b"partial")
        raise Boom
    assert target.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["out.json"]


def test_atomic_writer_leaves_nothing_on_an_exception_for_a_new_file(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt), atomic_writer(tmp_path / "new.json") as handle:
        handle.write(b"partial")
        raise KeyboardInterrupt
    assert os.listdir(tmp_path) == []


def test_atomic_writer_without_fsync_still_replaces(tmp_path: Path) -> None:
    target = tmp_path / "x"
    with atomic_writer(target, fsync=False) as handle:
        handle.write(b"data")
    assert target.read_bytes() == b"data"
    assert temp_leftovers(tmp_path) == []


def test_remove_temp_files_only_removes_temp_files(tmp_path: Path) -> None:
    (tmp_path / f"{TMP_PREFIX}abc.tmp").write_bytes(b"")
    (tmp_path / f"{TMP_PREFIX}def.tmp").write_bytes(b"")
    (tmp_path / "stats.json").write_bytes(b"{}")
    (tmp_path / f"{TMP_PREFIX}dir").mkdir()
    assert remove_temp_files(tmp_path) == 2
    assert sorted(os.listdir(tmp_path)) == [f"{TMP_PREFIX}dir", "stats.json"]
    assert remove_temp_files(tmp_path / "missing") == 0


# --- parts.py --------------------------------------------------------------------------


@pytest.fixture
def parts_dir(tmp_path: Path) -> Path:
    folder = tmp_path / parts.PARTS_DIR
    parts.prepare(str(folder))
    return folder


def test_prepare_creates_folders(tmp_path: Path) -> None:
    folder = tmp_path / "out" / "parts"
    parts.prepare(str(folder))
    assert (folder / parts.TMP_DIR).is_dir()
    parts.prepare(str(folder))  # idempotent


def test_prepare_removes_leftovers_in_tmp_only(parts_dir: Path) -> None:
    tmp = parts_dir / parts.TMP_DIR
    (tmp / "abc.jsonl.1234").write_bytes(b"half a part")
    (tmp / "other").write_bytes(b"x")
    (parts_dir / "keep.jsonl").write_bytes(b"{}\n")
    parts.prepare(str(parts_dir))
    assert os.listdir(tmp) == []
    assert (parts_dir / "keep.jsonl").read_bytes() == b"{}\n"


def test_part_writer_publishes_only_on_success(parts_dir: Path) -> None:
    name = "t1.jsonl"
    with parts.part_writer(str(parts_dir), name) as handle:
        handle.write(b'{"a":1}\n')
        assert not (parts_dir / name).exists()
        assert len(os.listdir(parts_dir / parts.TMP_DIR)) == 1
    assert (parts_dir / "t1.jsonl").read_bytes() == b'{"a":1}\n'
    assert os.listdir(parts_dir / parts.TMP_DIR) == []
    assert stat.S_IMODE(os.stat(parts_dir / "t1.jsonl").st_mode) == 0o644


def test_part_writer_cleans_up_on_failure(parts_dir: Path) -> None:
    with pytest.raises(Boom), parts.part_writer(str(parts_dir), "t2.jsonl") as handle:
        handle.write(b'{"a":1}\n')
        raise Boom
    assert sorted(os.listdir(parts_dir)) == [parts.TMP_DIR]
    assert os.listdir(parts_dir / parts.TMP_DIR) == []


def test_part_writer_failure_keeps_an_earlier_complete_part(parts_dir: Path) -> None:
    (parts_dir / "t3.jsonl").write_bytes(b"complete\n")
    with pytest.raises(Boom), parts.part_writer(str(parts_dir), "t3.jsonl") as handle:
        handle.write(b"half")
        raise Boom
    assert (parts_dir / "t3.jsonl").read_bytes() == b"complete\n"


def test_remove_unreferenced(parts_dir: Path) -> None:
    for name in ("a.jsonl", "b.jsonl", "c.jsonl"):
        (parts_dir / name).write_bytes(b"")
    (parts_dir / "notes.txt").write_bytes(b"")
    (parts_dir / parts.TMP_DIR / "x.jsonl").write_bytes(b"")
    assert parts.remove_unreferenced(str(parts_dir), {"b.jsonl", "zzz.jsonl"}) == 2
    assert sorted(os.listdir(parts_dir)) == [parts.TMP_DIR, "b.jsonl", "notes.txt"]
    assert os.listdir(parts_dir / parts.TMP_DIR) == ["x.jsonl"]


# --- ledger.py -------------------------------------------------------------------------


def spec(path: str, offset: int = 0, length: int | None = 10, tid: str | None = None) -> TaskSpec:
    return TaskSpec(tid or f"{path}@{offset}", path, offset, length, 100, 7, None, "new")


def test_schema_is_created(tmp_path: Path, ledger: Ledger) -> None:
    assert (tmp_path / LEDGER_NAME).is_file()
    db = sqlite3.connect(tmp_path / LEDGER_NAME)
    try:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"meta", "runs", "tasks", "batches"} <= tables
        assert db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == ("3",)
    finally:
        db.close()
    # reopening an existing ledger keeps it
    Ledger(tmp_path).close()


SCHEMA_1_TASKS = """
CREATE TABLE tasks (
    task_id TEXT PRIMARY KEY, path BLOB NOT NULL, offset INTEGER NOT NULL, length INTEGER,
    size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, compression TEXT,
    result_key TEXT NOT NULL, status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    run_id INTEGER, finished REAL, duration_s REAL, records_in INTEGER, records_out INTEGER,
    malformed INTEGER, undecodable INTEGER, bytes_read INTEGER, partials TEXT, part TEXT,
    part_size INTEGER, error_kind TEXT, error TEXT
);
CREATE INDEX tasks_by_path ON tasks (path, offset);
"""


def test_a_schema_1_ledger_is_rekeyed_and_keeps_its_rows(tmp_path: Path) -> None:
    """A ledger written by an earlier version (tasks keyed by task id, without the later
    columns) opens with every row, keyed by (path, offset)."""
    db = sqlite3.connect(tmp_path / LEDGER_NAME)
    db.executescript(SCHEMA_1_TASKS)
    db.executemany(
        "INSERT INTO tasks (task_id, path, offset, length, size, mtime_ns, result_key, status,"
        " partials, part, part_size) VALUES (?, ?, ?, ?, 100, 7, 'k', ?, ?, ?, ?)",
        [
            ("t2", b"/b", 0, None, "done", '{"n": 2}', "p.jsonl", 5),
            ("t1", b"/a", 50, 50, "pending", None, None, None),
            ("t0", b"/a", 0, 50, "done", '{"n": 1}', "p.jsonl", 9),
        ],
    )
    db.commit()
    db.close()
    ledger = Ledger(tmp_path)
    try:
        rows = [(r.task_id, r.path, r.offset, r.status, r.part_offset) for r in ledger.tasks()]
        assert rows == [
            ("t0", "/a", 0, "done", 0),
            ("t1", "/a", 50, "pending", 0),
            ("t2", "/b", 0, "done", 0),
        ]
        assert sorted(p["n"] for p in ledger.committed_partials("k")) == [1, 2]
        # and it works as a current ledger: a commit updates the row at (path, offset)
        run = ledger.start_run("job", "k")
        commit(ledger, done_result("t1"), 1, run, TaskSpec("t1", "/a", 50, 50, 100, 7))
        assert [r.status for r in ledger.tasks()] == ["done", "done", "done"]
    finally:
        ledger.close()
    db = sqlite3.connect(tmp_path / LEDGER_NAME)
    try:
        keys = {r[1]: r[5] for r in db.execute("PRAGMA table_info(tasks)")}
        assert (keys["path"], keys["offset"], keys["task_id"]) == (1, 2, 0)
        assert db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == ("3",)
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
        assert "tasks_v1" not in tables and "tasks_by_path" not in tables
    finally:
        db.close()


def test_wal_mode_is_on(tmp_path: Path, ledger: Ledger) -> None:
    db = sqlite3.connect(tmp_path / LEDGER_NAME)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        db.close()


def test_runs_lifecycle(ledger: Ledger) -> None:
    first = ledger.start_run("job", "k1")
    second = ledger.start_run("job", "k1")
    assert second > first
    runs = ledger.runs()
    assert [r["run_id"] for r in runs] == [second, first]  # newest first
    assert runs[0]["status"] == "running" and runs[0]["finished"] is None
    assert runs[0]["report"] is None
    report = {"status": "failed", "tasks": {"total": 3}, "text": "é"}
    ledger.finish_run(first, "failed", 1, report)
    done = {r["run_id"]: r for r in ledger.runs()}[first]
    assert (done["status"], done["exit_code"], done["report"]) == ("failed", 1, report)
    assert done["finished"] >= done["started"]
    assert [r["run_id"] for r in ledger.runs(limit=1)] == [second]


def test_replace_tasks_inserts_pending_rows(ledger: Ledger) -> None:
    run = ledger.start_run("job", "k")
    ledger.replace_tasks([], [spec("/a", 0, 10), spec("/a", 10, None)], "k", run)
    rows = list(ledger.tasks())
    assert [(r.path, r.offset, r.length, r.status, r.result_key, r.attempts) for r in rows] == [
        ("/a", 0, 10, "pending", "k", 0),
        ("/a", 10, None, "pending", "k", 0),
    ]
    assert rows[0].partials is None and rows[0].part is None
    assert rows[0].spec("interrupted") == TaskSpec("/a@0", "/a", 0, 10, 100, 7, None, "interrupted")


def done_result(tid: str, **kw) -> TaskResult:
    values = dict(
        records_in=5,
        records_out=4,
        malformed=1,
        undecodable=2,
        bytes_read=99,
        partials={"n": 4, "by": {"x": 1}},
        part=f"{tid}.jsonl",
        part_size=33,
    )
    values.update(kw)
    return TaskResult(tid, ok=True, **values)


def commit(
    ledger: Ledger,
    result: TaskResult,
    attempts: int,
    run: int,
    task: TaskSpec | None = None,
    key: str = "k",
) -> None:
    """Commit one result; its task is ``spec(path, offset)`` read from an id "path@offset"."""
    if task is None:
        path, offset = result.task_id.rsplit("@", 1)
        task = spec(path, int(offset))
    ledger.commit_task(task, result, attempts, run, key)


def test_commit_task_done_and_failed(ledger: Ledger) -> None:
    run = ledger.start_run("job", "k")
    ledger.replace_tasks([], [spec("/a", 0), spec("/b", 0)], "k", run)
    commit(ledger, done_result("/a@0"), 1, run)
    failed = TaskResult(
        "/b@0",
        ok=False,
        records_in=3,
        partials={"n": 3},
        error_kind="timeout",
        error="/b: took too long",
    )
    commit(ledger, failed, 3, run)
    a, b = ledger.tasks()
    assert (a.status, a.attempts, a.records_in, a.records_out, a.malformed, a.undecodable) == (
        "done",
        1,
        5,
        4,
        1,
        2,
    )
    assert a.partials == {"n": 4, "by": {"x": 1}}
    assert (a.part, a.part_size, a.error_kind, a.error) == ("/a@0.jsonl", 33, None, None)
    assert (b.status, b.attempts, b.error_kind, b.error) == (
        "failed",
        3,
        "timeout",
        "/b: took too long",
    )
    assert b.partials is None  # a failed task's partials never count


def test_committed_partials_can_leave_out_one_run(ledger: Ledger) -> None:
    run1 = ledger.start_run("job", "k")
    ledger.replace_tasks([], [spec("/a", 0), spec("/b", 0), spec("/c", 0)], "k", run1)
    commit(ledger, done_result("/a@0", partials={"n": 1}), 1, run1)
    commit(ledger, TaskResult("/b@0", ok=False, error="x"), 1, run1)
    run2 = ledger.start_run("job", "k")
    commit(ledger, done_result("/c@0", partials={"n": 5}), 1, run2)
    assert sorted(p["n"] for p in ledger.committed_partials("k")) == [1, 5]
    assert list(ledger.committed_partials("k", except_run=run2)) == [{"n": 1}]
    assert list(ledger.committed_partials("k", except_run=run1)) == [{"n": 5}]
    assert list(ledger.committed_partials("other")) == []


def test_replace_tasks_conflict_keeps_the_row_and_its_attempts(ledger: Ledger) -> None:
    run1 = ledger.start_run("job", "k")
    ledger.replace_tasks([], [spec("/a", 0)], "k", run1)
    commit(ledger, TaskResult("/a@0", ok=False, error_kind="error", error="x"), 2, run1)
    run2 = ledger.start_run("job", "k")
    ledger.replace_tasks([], [spec("/a", 0)], "k", run2)
    (row,) = ledger.tasks()
    assert (row.task_id, row.status, row.attempts) == ("/a@0", "pending", 2)


def test_replace_tasks_drops_rows_of_replaced_paths_only(ledger: Ledger) -> None:
    run = ledger.start_run("job", "k")
    ledger.replace_tasks([], [spec("/a", 0), spec("/a", 10), spec("/b", 0)], "k", run)
    commit(ledger, done_result("/a@0"), 1, run)
    ledger.replace_tasks(["/a"], [spec("/a", 0, 50, tid="/a@new")], "k", run)
    assert [(r.task_id, r.path, r.status) for r in ledger.tasks()] == [
        ("/a@new", "/a", "pending"),
        ("/b@0", "/b", "pending"),
    ]


def test_a_files_only_task_is_written_once_at_commit(ledger: Ledger) -> None:
    """No pending row for a whole-file task (nor for a range that is the whole file): the
    commit inserts it; a split file's ranges are pending from the start."""
    run = ledger.start_run("job", "k")
    whole = spec("/w", 0, None, tid="w")
    one_range = TaskSpec("r", "/r", 0, 100, 100, 7, None, "new")
    ledger.replace_tasks([], [whole, one_range, spec("/s", 0), spec("/s", 10)], "k", run)
    assert [r.task_id for r in ledger.tasks()] == ["/s@0", "/s@10"]
    commit(ledger, done_result("w"), 1, run, whole)
    commit(ledger, TaskResult("r", ok=False, error_kind="error", error="x"), 2, run, one_range)
    rows = {r.task_id: r for r in ledger.tasks()}
    assert (rows["w"].status, rows["w"].length, rows["w"].size, rows["w"].result_key) == (
        "done",
        None,
        100,
        "k",
    )
    assert (rows["r"].status, rows["r"].attempts, rows["r"].error) == ("failed", 2, "x")
    # committing again (a later run) updates the row in place
    commit(ledger, done_result("r"), 1, run, one_range)
    assert [r.status for r in ledger.tasks() if r.task_id == "r"] == ["done"]


def test_replace_tasks_is_one_transaction(ledger: Ledger) -> None:
    run = ledger.start_run("job", "k")
    ledger.replace_tasks([], [spec("/a", 0)], "k", run)

    def planned():
        yield spec("/b", 0)
        raise sqlite3.OperationalError("simulated failure mid-insert")

    with pytest.raises(StoreError):
        ledger.replace_tasks(["/a"], planned(), "k", run)
    # the delete of /a was rolled back with the failed insert
    assert [r.task_id for r in ledger.tasks()] == ["/a@0"]
    ledger.replace_tasks([], [spec("/c", 0)], "k", run)  # the connection is still usable
    assert [r.task_id for r in ledger.tasks()] == ["/a@0", "/c@0"]


def test_replace_tasks_rolls_back_on_any_exception(ledger: Ledger) -> None:
    run = ledger.start_run("job", "k")
    ledger.replace_tasks([], [spec("/a", 0)], "k", run)

    def planned():
        yield spec("/b", 0)
        raise ValueError("not a sqlite error")

    with pytest.raises(ValueError):
        ledger.replace_tasks(["/a"], planned(), "k", run)
    ledger.replace_tasks([], [spec("/c", 0)], "k", run)
    assert [r.task_id for r in ledger.tasks()] == ["/a@0", "/c@0"]


def test_tasks_order_by_path_bytes_then_offset(ledger: Ledger) -> None:
    run = ledger.start_run("job", "k")
    bad = os.fsdecode(b"/d/x\xff")
    planned = [
        spec(path, offset, tid=f"t{i}")
        for i, (path, offset) in enumerate(
            [
                (bad, 0),
                ("/d/x\ufffd", 0),
                ("/d/a/b", 0),
                ("/d/a-b", 0),
                ("/d/a", 100),
                ("/d/a", 20),
                ("/d/a", 3),
                ("/d/B", 0),
            ]
        )
    ]
    ledger.replace_tasks([], planned, "k", run)
    got = [(r.path, r.offset) for r in ledger.tasks()]
    assert got == [
        ("/d/B", 0),
        ("/d/a", 3),
        ("/d/a", 20),
        ("/d/a", 100),
        ("/d/a-b", 0),
        ("/d/a/b", 0),
        ("/d/x\ufffd", 0),  # bytes ef bf bd: before the raw byte ff (str order differs)
        (bad, 0),
    ]


def test_invalid_utf8_paths_round_trip(ledger: Ledger) -> None:
    run = ledger.start_run("job", "k")
    bad = os.fsdecode(b"/in/caf\xe9 \xff.log")
    ledger.replace_tasks([], [spec(bad, 0, None, tid="t")], "k", run)
    commit(ledger, done_result("t"), 1, run, spec(bad, 0, None, tid="t"))
    (row,) = ledger.tasks()
    assert row.path == bad
    assert os.fsencode(row.path) == b"/in/caf\xe9 \xff.log"
    ledger.replace_tasks([bad], [], "k", run)  # drop by the same odd path works
    assert list(ledger.tasks()) == []


def test_readonly_open_reads_and_refuses_writes(tmp_path: Path) -> None:
    writer = Ledger(tmp_path)
    run = writer.start_run("job", "k")
    writer.replace_tasks([], [spec("/a", 0)], "k", run)
    reader = Ledger(tmp_path, readonly=True)
    try:
        assert [r.task_id for r in reader.tasks()] == ["/a@0"]
        assert [r["run_id"] for r in reader.runs()] == [run]
        # it sees what the writer commits later (WAL: readers and a writer coexist)
        commit(writer, done_result("/a@0"), 1, run)
        assert [r.status for r in reader.tasks()] == ["done"]
        with pytest.raises(StoreError):
            reader.start_run("job", "k")
        with pytest.raises(StoreError):
            reader.finish_run(run, "ok", 0, {})
    finally:
        reader.close()
        writer.close()


def test_readonly_open_of_a_missing_ledger_is_a_store_error_and_creates_nothing(
    tmp_path: Path,
) -> None:
    with pytest.raises(StoreError):
        Ledger(tmp_path, readonly=True)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("name", ["a b#c?d%20e", os.fsdecode(b"out\xff")], ids=["uri", "bytes"])
def test_readonly_open_in_awkward_folders(tmp_path: Path, name: str) -> None:
    folder = tmp_path / name
    folder.mkdir()
    Ledger(folder).close()
    reader = Ledger(folder, readonly=True)
    try:
        assert reader.runs() == []
    finally:
        reader.close()


def test_unopenable_ledger_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError) as info:
        Ledger(tmp_path / "missing" / "folder")
    assert "ledger" in str(info.value)


# --- merge.py --------------------------------------------------------------------------


def trow(
    tid: str,
    *,
    path: str = "/in/a",
    offset: int = 0,
    status: str = "done",
    result_key: str = "k",
    partials: dict | None = None,
    part: str | None = None,
    part_size: int = 0,
    part_offset: int = 0,
) -> TaskRow:
    return TaskRow(
        tid,
        path,
        offset,
        None,
        1,
        1,
        None,
        result_key,
        status,
        1,
        0,
        0,
        0,
        0,
        None if partials is None else json.dumps(partials),
        part,
        part_size,
        None,
        None,
        part_offset,
    )


def whole(pdir: Path, tid: str, part: str) -> TaskRow:
    """A row whose records are the whole of ``part``."""
    return trow(tid, part=part, part_size=os.path.getsize(pdir / part))


def test_committed_rows_and_counts_come_from_done_tasks_of_this_config(ledger: Ledger) -> None:
    run = ledger.start_run("job", "k")
    ledger.replace_tasks([], [spec("/b"), spec("/a"), spec("/c"), spec("/d")], "k", run)
    ledger.replace_tasks([], [spec("/e")], "old", run)
    results = [done_result("/b@0"), done_result("/a@0"), done_result("/e@0")]
    specs = {t.task_id: t for t in (spec("/a"), spec("/b"), spec("/e"))}
    ledger.commit_tasks(specs, results, 1, run, "k")
    commit(ledger, TaskResult("/c@0", ok=False, error_kind="error", error="x"), 1, run)
    assert [r.task_id for r in ledger.committed("k")] == ["/a@0", "/b@0"]  # in path order
    assert list(ledger.committed("other")) == []
    assert ledger.committed_counts("k") == {"in": 10, "out": 8, "malformed": 2, "undecodable": 4}
    assert ledger.part_names() == {"/a@0.jsonl", "/b@0.jsonl", "/e@0.jsonl"}


def write_part(folder: Path, name: str, records: list[dict]) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in records)
    (folder / name).write_bytes(text.encode())
    return name


def test_write_records_jsonl_concatenates_parts_in_row_order(tmp_path: Path) -> None:
    pdir = tmp_path / "parts"
    write_part(pdir, "p1.jsonl", [{"n": 1}, {"n": 2}])
    write_part(pdir, "p2.jsonl", [])
    write_part(pdir, "p3.jsonl", [{"n": 3, "s": "é"}])
    rows = [
        whole(pdir, "3", "p3.jsonl"),
        trow("x", part=None),
        whole(pdir, "1", "p1.jsonl"),
        whole(pdir, "2", "p2.jsonl"),
    ]
    (tmp_path / "records.csv").write_text("stale\n")
    merge.write_records(tmp_path, pdir, "jsonl", rows)
    assert (tmp_path / "records.jsonl").read_bytes() == (
        '{"n":3,"s":"é"}\n{"n":1}\n{"n":2}\n'.encode()
    )
    assert not (tmp_path / "records.csv").exists()
    assert temp_leftovers(tmp_path) == []


def test_write_records_reads_each_task_at_its_place_in_a_shared_part(tmp_path: Path) -> None:
    pdir = tmp_path / "parts"
    pdir.mkdir()
    (pdir / "batch.jsonl").write_bytes(b'{"t":"a"}\n{"t":"b1"}\n{"t":"b2"}\n')
    rows = [  # the ledger's order, not the part's
        trow("b", part="batch.jsonl", part_offset=10, part_size=22),
        trow("a", part="batch.jsonl", part_offset=0, part_size=10),
    ]
    merge.write_records(tmp_path, pdir, "jsonl", rows)
    assert (tmp_path / "records.jsonl").read_bytes() == b'{"t":"b1"}\n{"t":"b2"}\n{"t":"a"}\n'
    rows.append(trow("c", part="batch.jsonl", part_offset=30, part_size=10))  # past the end
    with pytest.raises(OSError, match="shorter than the ledger says"):
        merge.write_records(tmp_path, pdir, "jsonl", rows)


def test_write_records_csv_header_values_and_removal(tmp_path: Path) -> None:
    pdir = tmp_path / "parts"
    write_part(pdir, "p1.jsonl", [{"b": 1, "a": "x"}, {"a": None, "c": True}])
    write_part(
        pdir,
        "p2.jsonl",
        [
            {"d": [1, "é"], "b": 2.5, "e": {"k": "v"}},
            {"a": 'has,comma "quoted"\nnewline', "c": False, "f": "日本"},
        ],
    )
    (tmp_path / "records.jsonl").write_text("stale\n")
    rows = [whole(pdir, "1", "p1.jsonl"), whole(pdir, "2", "p2.jsonl")]
    merge.write_records(tmp_path, pdir, "csv", rows)
    assert not (tmp_path / "records.jsonl").exists()
    raw = (tmp_path / "records.csv").read_bytes().decode("utf-8")
    table = list(csv.reader(io.StringIO(raw, newline="")))
    assert table == [
        ["b", "a", "c", "d", "e", "f"],
        ["1", "x", "", "", "", ""],
        ["", "", "true", "", "", ""],
        ["2.5", "", "", '[1,"é"]', '{"k":"v"}', ""],
        ["", 'has,comma "quoted"\nnewline', "false", "", "", "日本"],
    ]
    assert raw.startswith("b,a,c,d,e,f\n1,x,,,,\n")


def test_write_records_none_removes_both_and_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "records.jsonl").write_text("x\n")
    (tmp_path / "records.csv").write_text("x\n")
    merge.write_records(tmp_path, tmp_path / "parts", "none", [trow("1", part="p1.jsonl")])
    assert os.listdir(tmp_path) == []


def test_write_json_is_atomic_and_keeps_non_ascii(tmp_path: Path) -> None:
    merge.write_json(tmp_path / "stats.json", {"z": 1, "a": "é"})
    text = (tmp_path / "stats.json").read_text("utf-8")
    assert json.loads(text) == {"z": 1, "a": "é"}
    assert list(json.loads(text)) == ["z", "a"]  # order kept, not sorted
    assert "é" in text and text.endswith("\n")
    assert temp_leftovers(tmp_path) == []


def test_outputs_stay_valid_utf8_with_names_that_are_not(tmp_path: Path) -> None:
    odd = os.fsdecode(b"/in/bad\xff.log")
    merge.write_json(tmp_path / "report.json", {"failures": [{"path": odd}]})
    raw = (tmp_path / "report.json").read_bytes()
    assert json.loads(raw.decode("utf-8"))["failures"][0]["path"] == odd
    pdir = tmp_path / "parts"
    pdir.mkdir()
    (pdir / "p.jsonl").write_bytes(b'{"path":"/in/bad\\udcff.log","n":1}\n')
    merge.write_records(tmp_path, pdir, "csv", [whole(pdir, "1", "p.jsonl")])
    text = (tmp_path / "records.csv").read_bytes().decode("utf-8")  # strict
    assert text.splitlines()[0] == "path,n"
    assert text.splitlines()[1].endswith(",1")


STAT_SPECS = {
    "n": {"kind": "count"},
    "total": {"kind": "sum", "field": "v"},
    "avg": {"kind": "mean", "field": "v"},
    "lo": {"kind": "min", "field": "v"},
    "hi": {"kind": "max", "field": "v"},
    "by": {"kind": "count_by", "field": "s"},
    "top": {"kind": "top", "field": "s", "k": 2},
}


def partials_of(records: list[dict]) -> dict:
    aggs = aggregates.Aggregators(STAT_SPECS)
    state = aggs.new_state()
    for record in records:
        aggs.add(state, record)
    return json.loads(json.dumps(aggs.partials(state)))  # as stored in the ledger


def test_merged_stats_is_independent_of_row_order() -> None:
    groups = [
        [{"v": 1, "s": "a"}, {"v": 0.1, "s": "b"}],
        [{"v": 1e20, "s": "a"}],
        [{"v": -1e20, "s": "c"}, {"s": "b"}, {"v": 2, "s": "b"}],
        [],
    ]
    rows = [trow(str(i), partials=partials_of(g)) for i, g in enumerate(groups)]
    expected = merge.merged_stats(STAT_SPECS, [r.partials for r in rows])
    assert expected["n"] == 6
    assert expected["by"] == {"a": 2, "b": 3, "c": 1}
    assert expected["top"] == [["b", 3], ["a", 2]]
    assert (expected["lo"], expected["hi"]) == (-1e20, 1e20)
    everything = partials_of([r for g in groups for r in g])
    assert expected == aggregates.finalize(STAT_SPECS, everything)
    for perm in itertools.permutations(rows):
        got = merge.merged_stats(STAT_SPECS, [r.partials for r in perm])
        assert json.dumps(got) == json.dumps(expected)


def test_merged_stats_streams_many_partials_in_groups() -> None:
    records = [{"v": i % 7, "s": "ab"[i % 2]} for i in range(2 * merge.MERGE_GROUP + 5)]
    partials = (partials_of([r]) for r in records)  # a generator, read once
    assert merge.merged_stats(STAT_SPECS, partials) == aggregates.finalize(
        STAT_SPECS, partials_of(records)
    )


def test_merged_stats_of_nothing() -> None:
    assert merge.merged_stats(STAT_SPECS, []) == {
        "n": 0,
        "total": 0,
        "avg": None,
        "lo": None,
        "hi": None,
        "by": {},
        "top": [],
    }


# --- lock.py ---------------------------------------------------------------------------

HOLD_SNIPPET = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
os.pwrite(fd, b"pid %d on testhost\\n" % os.getpid(), 0)
print("locked", flush=True)
sys.stdin.readline()
"""

TRY_SNIPPET = """
import sys
from pathlib import Path
from pipeline.errors import LockHeldError
from pipeline.store.lock import RunLock
lock = RunLock(Path(sys.argv[1]))
try:
    lock.acquire()
except LockHeldError as exc:
    print("held", int(exc.exit_code), exc)
else:
    print("acquired")
    lock.release()
"""


def try_in_subprocess(out_dir: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-c", TRY_SNIPPET, str(out_dir)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_lock_held_here_blocks_another_process(tmp_path: Path) -> None:
    lock = RunLock(tmp_path)
    lock.acquire()
    try:
        started = time.monotonic()
        answer = try_in_subprocess(tmp_path)
        assert time.monotonic() - started < 10  # at once, not after waiting
        assert answer.startswith("held 75 ")
        assert f"pid {os.getpid()}" in answer  # the holder is named
    finally:
        lock.release()
    assert try_in_subprocess(tmp_path) == "acquired"
    assert (tmp_path / LOCK_NAME).exists()


@pytest.fixture
def holder(tmp_path: Path):
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD_SNIPPET, str(tmp_path / LOCK_NAME)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "locked"
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def test_lock_held_by_another_process_raises_exit_75(tmp_path: Path, holder) -> None:
    lock = RunLock(tmp_path)
    with pytest.raises(LockHeldError) as info:
        lock.acquire()
    assert info.value.exit_code == ExitCode.LOCKED == 75
    assert f"pid {holder.pid} on testhost" in str(info.value)
    with pytest.raises(LockHeldError), RunLock(tmp_path):
        pass
    # the holder's identity was not overwritten by the failed attempts
    assert f"pid {holder.pid}".encode() in (tmp_path / LOCK_NAME).read_bytes()
    holder.stdin.write("\n")
    holder.stdin.flush()
    holder.wait(10)
    with RunLock(tmp_path) as taken:
        assert taken is not None
        assert f"pid {os.getpid()}".encode() in (tmp_path / LOCK_NAME).read_bytes()
    assert (tmp_path / LOCK_NAME).exists()


def test_lock_of_a_killed_holder_is_free(tmp_path: Path, holder) -> None:
    holder.send_signal(signal.SIGKILL)
    holder.wait(10)
    lock = RunLock(tmp_path)
    lock.acquire()  # no stale lock after kill -9
    lock.release()


def test_lock_holder_names_the_live_holder_only(
    tmp_path: Path, holder, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert lock_holder(tmp_path / "no-store") is None
    found = lock_holder(tmp_path)
    assert found is not None and found.pid == holder.pid and "testhost" in found.text
    # without /proc/locks it probes the lock, and still sees the holder
    monkeypatch.setattr(lock_module, "_held_per_proc", lambda _info: None)
    assert lock_holder(tmp_path) == found
    monkeypatch.undo()
    holder.send_signal(signal.SIGKILL)
    holder.wait(10)
    assert (tmp_path / LOCK_NAME).read_text().startswith(f"pid {holder.pid}")  # stale text
    assert lock_holder(tmp_path) is None
    with RunLock(tmp_path):
        mine = lock_holder(tmp_path)
        assert mine is not None and mine.pid == os.getpid()
    assert lock_holder(tmp_path) is None


def test_a_probe_of_the_lock_does_not_turn_a_starting_run_away(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader without /proc/locks takes the lock for a moment: the run retries."""
    real_flock = lock_module.fcntl.flock
    refusals = []

    def busy_once(fd: int, operation: int) -> None:
        if operation & lock_module.fcntl.LOCK_EX and not refusals:
            refusals.append(fd)
            raise BlockingIOError("a probe holds it")
        real_flock(fd, operation)

    monkeypatch.setattr(lock_module.fcntl, "flock", busy_once)
    with RunLock(tmp_path):
        assert len(refusals) == 1


def test_lock_file_is_never_deleted(tmp_path: Path) -> None:
    lock = RunLock(tmp_path)
    lock.acquire()
    inode = os.stat(tmp_path / LOCK_NAME).st_ino
    lock.release()
    lock.release()  # releasing twice is harmless
    assert os.stat(tmp_path / LOCK_NAME).st_ino == inode
    with RunLock(tmp_path):
        pass
    assert os.stat(tmp_path / LOCK_NAME).st_ino == inode
    with pytest.raises(RuntimeError), RunLock(tmp_path):
        raise RuntimeError("run failed")
    assert os.stat(tmp_path / LOCK_NAME).st_ino == inode
    assert try_in_subprocess(tmp_path) == "acquired"  # released after the exception
