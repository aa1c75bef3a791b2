"""Planning: discovered files x ledger rows -> tasks to run (with reasons) and work to skip."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import digest
from pipeline.digest import bytes_digest, range_digest
from pipeline.models import Batch, InputFile, TaskSpec
from pipeline.planning import (
    DASK_BATCHES,
    DASK_RECORD_BATCHES,
    REASONS,
    Batcher,
    Plan,
    Planner,
    join_rows,
    make_batches,
    make_plan,
    new_tasks,
    task_id,
)
from pipeline.store.ledger import TaskRow

KEY = "result-key-1"
MTIME = 1_700_000_000_000_000_000


def row_for(
    spec: TaskSpec,
    *,
    status: str = "done",
    result_key: str = KEY,
    part: str | None = "auto",
    part_size: int = 0,
    attempts: int = 1,
) -> TaskRow:
    return TaskRow(
        task_id=spec.task_id,
        path=spec.path,
        offset=spec.offset,
        length=spec.length,
        size=spec.size,
        mtime_ns=spec.mtime_ns,
        compression=spec.compression,
        result_key=result_key,
        status=status,
        attempts=attempts,
        records_in=0,
        records_out=0,
        malformed=0,
        undecodable=0,
        partials_json="{}" if status == "done" else None,
        part=f"{spec.task_id}.jsonl" if part == "auto" else part,
        part_size=part_size,
        error_kind="error" if status == "failed" else None,
        error="boom" if status == "failed" else None,
    )


def rows_for(
    file: InputFile, chunk_size: int, fmt: str = "lines", result_key: str = KEY, **kwargs
) -> list[TaskRow]:
    """Ledger rows as a completed earlier run over ``file`` would have left them."""
    return [
        row_for(spec, result_key=result_key, **kwargs)
        for spec in new_tasks(file, fmt, chunk_size, result_key, "new")
    ]


def write_parts(parts_dir: Path, rows: list[TaskRow], size: int = 0) -> None:
    parts_dir.mkdir(parents=True, exist_ok=True)
    for row in rows:
        assert row.part is not None
        (parts_dir / row.part).write_bytes(b"x" * size)


def plan(files, rows_by_path, *, parts_dir=None, chunk_size=100, fmt="lines", full=False, spread=1):
    return make_plan(
        files,
        rows_by_path,
        fmt=fmt,
        chunk_size=chunk_size,
        result_key=KEY,
        parts_dir=None if parts_dir is None else str(parts_dir),
        full=full,
        spread=spread,
    )


# --- task ids --------------------------------------------------------------------------


BASE = ("/data/a.log", 0, 100, 1000, MTIME, KEY)


def test_task_id_is_stable_and_compact() -> None:
    first = task_id(*BASE)
    assert first == task_id(*BASE)
    assert len(first) == 32
    int(first, 16)  # hex


@pytest.mark.parametrize(
    "changed",
    [
        ("/data/b.log", 0, 100, 1000, MTIME, KEY),
        ("/data/a.log", 1, 100, 1000, MTIME, KEY),
        ("/data/a.log", 0, 101, 1000, MTIME, KEY),
        ("/data/a.log", 0, None, 1000, MTIME, KEY),
        ("/data/a.log", 0, 100, 1001, MTIME, KEY),
        ("/data/a.log", 0, 100, 1000, MTIME + 1, KEY),
        ("/data/a.log", 0, 100, 1000, MTIME, KEY + "x"),
    ],
    ids=["path", "offset", "length", "whole-file", "size", "mtime", "result_key"],
)
def test_task_id_depends_on_every_part_of_the_identity(changed: tuple) -> None:
    assert task_id(*changed) != task_id(*BASE)


def test_task_id_fields_are_delimited() -> None:
    # "1" + "10" must not collide with "11" + "0"
    assert task_id("/a", 1, 10, 5, 0, "k") != task_id("/a", 11, 0, 5, 0, "k")
    assert task_id("/a1", 0, 1, 5, 0, "k") != task_id("/a", 10, 1, 5, 0, "k")


def test_task_id_works_for_paths_that_are_not_utf8() -> None:
    bad = os.fsdecode(b"/data/bad\xff.log")
    ident = task_id(bad, 0, None, 1, 1, KEY)
    assert ident != task_id(os.fsdecode(b"/data/bad\xfe.log"), 0, None, 1, 1, KEY)


def test_task_id_is_the_same_in_another_process() -> None:
    """Ids name part files across runs, so they must not depend on hash randomisation."""
    code = (
        "from pipeline.planning import task_id; "
        f"print(task_id('/data/a.log', 0, 100, 1000, {MTIME}, '{KEY}'))"
    )
    env = dict(os.environ, PYTHONHASHSEED="12345")
    repo = str(Path(__file__).resolve().parents[2])
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=repo, timeout=30
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == task_id(*BASE)


# --- new_tasks -------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["lines", "jsonl"])
def test_new_tasks_splits_line_formats_by_chunk_size(fmt: str) -> None:
    file = InputFile("/d/a.log", 1000, MTIME)
    tasks = new_tasks(file, fmt, 300, KEY, "new")
    assert len(tasks) == 4  # ceil(1000 / 300)
    offset = 0
    for task in tasks:
        assert task.offset == offset
        assert task.length is not None and 0 < task.length <= 300
        offset += task.length
        assert (task.path, task.size, task.mtime_ns, task.compression, task.reason) == (
            "/d/a.log",
            1000,
            MTIME,
            None,
            "new",
        )
        assert task.task_id == task_id("/d/a.log", task.offset, task.length, 1000, MTIME, KEY)
    assert offset == 1000
    assert len({t.task_id for t in tasks}) == 4


def test_new_tasks_small_file_is_one_range() -> None:
    file = InputFile("/d/a.log", 10, MTIME)
    (task,) = new_tasks(file, "lines", 1 << 20, KEY, "changed")
    assert (task.offset, task.length, task.reason) == (0, 10, "changed")


def test_new_tasks_empty_file_still_gets_a_task() -> None:
    (task,) = new_tasks(InputFile("/d/empty.log", 0, MTIME), "lines", 100, KEY, "new")
    assert (task.offset, task.length) == (0, 0)


@pytest.mark.parametrize(
    ("fmt", "compression"),
    [
        ("csv", None),
        ("bytes", None),
        ("lines", "gz"),
        ("jsonl", "bz2"),
        ("lines", "xz"),
        ("jsonl", "zst"),
        ("csv", "gz"),
    ],
)
def test_new_tasks_whole_file_for_csv_bytes_and_compressed(fmt: str, compression: str | None):
    file = InputFile("/d/a.x", 10_000, MTIME, compression)
    (task,) = new_tasks(file, fmt, 100, KEY, "new")
    assert (task.offset, task.length, task.compression) == (0, None, compression)
    assert task.task_id == task_id("/d/a.x", 0, None, 10_000, MTIME, KEY)
    assert task.describe_range() == "whole file"


@given(
    size=st.integers(0, 1000),
    chunk_size=st.integers(1, 1000),
    fmt=st.sampled_from(["lines", "jsonl", "csv", "bytes"]),
    compression=st.sampled_from([None, "gz", "zst"]),
    full=st.booleans(),
)
def test_the_short_plan_of_a_new_file_is_the_general_one(
    size: int, chunk_size: int, fmt: str, compression: str | None, full: bool
) -> None:
    """``Planner.fresh_task`` (a run's short path) gives the one task ``decide`` gives a
    new file, and nothing for a file ``decide`` cuts in several ranges."""
    planner = Planner(fmt, chunk_size, KEY, None, full)
    file = InputFile("/d/a.x", size, MTIME, compression)
    general = planner.decide(file, []).run
    short = planner.fresh_task(file)
    assert ([short] if short is not None else None) == (general if len(general) == 1 else None)


# --- make_plan: reasons ----------------------------------------------------------------


def test_new_file_runs_with_reason_new() -> None:
    file = InputFile("/d/a.log", 250, MTIME)
    p = plan([file], {}, chunk_size=100)
    assert [t.reason for t in p.run] == ["new"] * 3
    assert p.skip == [] and p.drop_paths == []
    assert sorted(t.offset for t in p.run) == [0, 84, 167]
    assert p.run_bytes == 250
    assert p.reasons() == {"new": 3}


def test_unchanged_done_file_is_skipped(tmp_path: Path) -> None:
    file = InputFile("/d/a.log", 250, MTIME)
    rows = rows_for(file, 100, part_size=7)
    write_parts(tmp_path, rows, size=7)
    p = plan([file], {file.path: rows}, parts_dir=tmp_path)
    assert p.run == [] and p.drop_paths == []
    assert [t.task_id for t in p.skip] == [r.task_id for r in rows]
    assert {t.reason for t in p.skip} == {"unchanged"}
    assert p.reasons() == {"unchanged": 3}
    assert p.run_bytes == 0


def test_unchanged_without_parts_dir_needs_no_part_file() -> None:
    file = InputFile("/d/a.log", 50, MTIME)
    rows = rows_for(file, 100, part=None)
    p = plan([file], {file.path: rows}, parts_dir=None)
    assert [t.reason for t in p.skip] == ["unchanged"]
    assert p.run == []


@pytest.mark.parametrize(
    "now",
    [InputFile("/d/a.log", 251, MTIME), InputFile("/d/a.log", 250, MTIME + 1)],
    ids=["size", "mtime"],
)
def test_changed_file_is_replaced(tmp_path: Path, now: InputFile) -> None:
    before = InputFile("/d/a.log", 250, MTIME)
    rows = rows_for(before, 100)
    write_parts(tmp_path, rows)
    p = plan([now], {now.path: rows}, parts_dir=tmp_path)
    assert p.skip == []
    assert p.drop_paths == ["/d/a.log"]
    assert {t.reason for t in p.run} == {"changed"}
    assert {t.task_id for t in p.run} == {t.task_id for t in new_tasks(now, "lines", 100, KEY, "x")}
    assert not {t.task_id for t in p.run} & {r.task_id for r in rows}
    assert all((t.size, t.mtime_ns) == (now.size, now.mtime_ns) for t in p.run)


def test_changed_file_is_re_cut_with_the_current_chunk_size(tmp_path: Path) -> None:
    before = InputFile("/d/a.log", 1000, MTIME)
    rows = rows_for(before, 1000)  # one task
    now = InputFile("/d/a.log", 1000, MTIME + 5)
    p = plan([now], {now.path: rows}, chunk_size=250)
    assert len(p.run) == 4


def test_config_change_replaces_the_file(tmp_path: Path) -> None:
    file = InputFile("/d/a.log", 250, MTIME)
    rows = rows_for(file, 100, result_key="old-key")
    write_parts(tmp_path, rows)
    p = plan([file], {file.path: rows}, parts_dir=tmp_path)
    assert p.skip == []
    assert p.drop_paths == [file.path]
    assert {t.reason for t in p.run} == {"config-changed"}
    assert {t.task_id for t in p.run} == {
        t.task_id for t in new_tasks(file, "lines", 100, KEY, "x")
    }


def test_one_row_under_another_config_replaces_the_whole_file(tmp_path: Path) -> None:
    file = InputFile("/d/a.log", 250, MTIME)
    rows = rows_for(file, 100)
    rows[1] = row_for(new_tasks(file, "lines", 100, "old", "x")[1], result_key="old")
    write_parts(tmp_path, rows)
    p = plan([file], {file.path: rows}, parts_dir=tmp_path)
    assert {t.reason for t in p.run} == {"config-changed"}
    assert len(p.run) == 3 and p.skip == []
    assert p.drop_paths == [file.path]


def test_failed_task_is_rerun_with_its_old_identity(tmp_path: Path) -> None:
    file = InputFile("/d/a.log", 250, MTIME)
    rows = rows_for(file, 100)
    rows[1] = row_for(new_tasks(file, "lines", 100, KEY, "x")[1], status="failed", part=None)
    write_parts(tmp_path, [rows[0], rows[2]])
    p = plan([file], {file.path: rows}, parts_dir=tmp_path)
    assert [(t.task_id, t.reason) for t in p.run] == [(rows[1].task_id, "failed-before")]
    assert (p.run[0].offset, p.run[0].length) == (rows[1].offset, rows[1].length)
    assert sorted(t.task_id for t in p.skip) == sorted([rows[0].task_id, rows[2].task_id])
    assert p.drop_paths == []  # the file's other results are kept


def test_pending_task_is_interrupted(tmp_path: Path) -> None:
    file = InputFile("/d/a.log", 50, MTIME)
    rows = rows_for(file, 100, status="pending", part=None)
    p = plan([file], {file.path: rows}, parts_dir=tmp_path)
    assert [(t.task_id, t.reason) for t in p.run] == [(rows[0].task_id, "interrupted")]
    # A whole file's only row is replaced whole by its new result (which may land in a
    # batch row of the ledger): the old row goes when the plan is recorded.
    assert p.drop_paths == [file.path]


def test_pending_ranges_of_a_split_file_are_kept(tmp_path: Path) -> None:
    file = InputFile("/d/a.log", 250, MTIME)
    rows = rows_for(file, 100, status="pending", part=None)
    p = plan([file], {file.path: rows}, parts_dir=tmp_path)
    assert [t.reason for t in p.run] == ["interrupted"] * 3
    assert p.drop_paths == []


def test_done_task_whose_part_is_missing_is_interrupted(tmp_path: Path) -> None:
    file = InputFile("/d/a.log", 50, MTIME)
    rows = rows_for(file, 100, part_size=7)
    p = plan([file], {file.path: rows}, parts_dir=tmp_path)
    assert [t.reason for t in p.run] == ["interrupted"]
    assert p.run[0].task_id == rows[0].task_id
    assert p.drop_paths == [file.path]


def test_a_task_records_are_found_at_their_offset_in_a_shared_part(tmp_path: Path) -> None:
    file = InputFile("/d/a.log", 50, MTIME)
    (row,) = rows_for(file, 100, part="batch.jsonl", part_size=10)
    row = dataclasses.replace(row, part_offset=30)
    (tmp_path / "batch.jsonl").write_bytes(b"x" * 39)
    assert [t.reason for t in plan([file], {file.path: [row]}, parts_dir=tmp_path).run] == [
        "interrupted"
    ]
    (tmp_path / "batch.jsonl").write_bytes(b"x" * 40)
    assert [t.reason for t in plan([file], {file.path: [row]}, parts_dir=tmp_path).skip] == [
        "unchanged"
    ]


def test_done_task_whose_part_has_the_wrong_size_is_interrupted(tmp_path: Path) -> None:
    file = InputFile("/d/a.log", 50, MTIME)
    rows = rows_for(file, 100, part_size=10)
    write_parts(tmp_path, rows, size=9)
    p = plan([file], {file.path: rows}, parts_dir=tmp_path)
    assert [t.reason for t in p.run] == ["interrupted"]
    write_parts(tmp_path, rows, size=10)
    p = plan([file], {file.path: rows}, parts_dir=tmp_path)
    assert [t.reason for t in p.skip] == ["unchanged"]


def test_done_task_with_no_records_needs_no_part(tmp_path: Path) -> None:
    file = InputFile("/d/a.log", 50, MTIME)
    rows = rows_for(file, 100, part=None, part_size=0)
    p = plan([file], {file.path: rows}, parts_dir=tmp_path)
    assert [t.reason for t in p.skip] == ["unchanged"]


def test_full_recomputes_everything(tmp_path: Path) -> None:
    known = InputFile("/d/a.log", 250, MTIME)
    fresh = InputFile("/d/b.log", 30, MTIME)
    rows = rows_for(known, 50)  # cut differently before
    write_parts(tmp_path, rows)
    p = plan([known, fresh], {known.path: rows}, parts_dir=tmp_path, chunk_size=100, full=True)
    assert p.skip == []
    assert {t.reason for t in p.run} == {"full"}
    assert p.drop_paths == [known.path]
    assert len([t for t in p.run if t.path == known.path]) == 3  # re-cut at chunk_size
    assert len([t for t in p.run if t.path == fresh.path]) == 1


def test_every_reason_is_a_known_reason(tmp_path: Path) -> None:
    files = [InputFile(f"/d/{n}.log", 50, MTIME) for n in "abcdefg"]
    rows = {
        "/d/b.log": rows_for(files[1], 100, part_size=0),
        "/d/c.log": rows_for(InputFile("/d/c.log", 49, MTIME), 100),
        "/d/d.log": rows_for(files[3], 100, result_key="old"),
        "/d/e.log": rows_for(files[4], 100, status="failed", part=None),
        "/d/f.log": rows_for(files[5], 100, status="pending", part=None),
    }
    write_parts(tmp_path, rows["/d/b.log"])
    p = plan(files, rows, parts_dir=tmp_path)
    by_path = {t.path: t.reason for t in (*p.run, *p.skip)}
    assert by_path == {
        "/d/a.log": "new",
        "/d/b.log": "unchanged",
        "/d/c.log": "changed",
        "/d/d.log": "config-changed",
        "/d/e.log": "failed-before",
        "/d/f.log": "interrupted",
        "/d/g.log": "new",
    }
    assert set(p.reasons()) <= set(REASONS)
    # changed, config-changed, and the whole files that are re-run (replaced whole)
    assert p.drop_paths == ["/d/c.log", "/d/d.log", "/d/e.log", "/d/f.log"]


# --- chunk_size never invalidates results ----------------------------------------------


def test_a_new_big_file_is_cut_in_whole_rounds_of_the_worker_count() -> None:
    file = InputFile("/d/a.log", 1000, MTIME)  # 3 ranges of chunk_size 400
    for spread, count in ((1, 3), (2, 4), (3, 3), (4, 3), (6, 3)):
        p = plan([file], {}, chunk_size=400, spread=spread)
        assert len(p.run) == count
        assert sum(t.length for t in p.run) == 1000


def test_file_keeps_its_ranges_when_only_chunk_size_changes(tmp_path: Path) -> None:
    file = InputFile("/d/a.log", 1000, MTIME)
    rows = rows_for(file, 400)  # 3 ranges
    write_parts(tmp_path, rows)
    for chunk_size, spread in ((50, 1), (400, 2), (10_000, 4)):  # the worker count neither
        p = plan(
            [file], {file.path: rows}, parts_dir=tmp_path, chunk_size=chunk_size, spread=spread
        )
        assert p.run == [] and p.drop_paths == []
        assert [(t.task_id, t.offset, t.length) for t in p.skip] == [
            (r.task_id, r.offset, r.length) for r in rows
        ]


def test_unfinished_task_keeps_its_range_when_chunk_size_changes(tmp_path: Path) -> None:
    file = InputFile("/d/a.log", 1000, MTIME)
    rows = rows_for(file, 400)
    rows[2] = row_for(new_tasks(file, "lines", 400, KEY, "x")[2], status="pending", part=None)
    write_parts(tmp_path, rows[:2])
    p = plan([file], {file.path: rows}, parts_dir=tmp_path, chunk_size=10)
    assert [(t.task_id, t.offset, t.length, t.reason) for t in p.run] == [
        (rows[2].task_id, rows[2].offset, rows[2].length, "interrupted")
    ]
    assert len(p.skip) == 2


# --- drop_paths and ordering -----------------------------------------------------------


def test_drop_paths_lists_only_replaced_files(tmp_path: Path) -> None:
    same = InputFile("/d/same.log", 10, MTIME)
    grown = InputFile("/d/grown.log", 20, MTIME)
    new = InputFile("/d/new.log", 10, MTIME)
    rows = {
        same.path: rows_for(same, 100),
        grown.path: rows_for(InputFile(grown.path, 10, MTIME), 100),
        "/d/vanished.log": rows_for(InputFile("/d/vanished.log", 10, MTIME), 100),
    }
    write_parts(tmp_path, rows[same.path])
    p = plan([same, grown, new], rows, parts_dir=tmp_path)
    # a vanished file is not in the inputs: its results stay (it is not dropped)
    assert p.drop_paths == [grown.path]


def test_batches_put_big_tasks_first_largest_first() -> None:
    files = [
        InputFile("/d/small.log", 10, MTIME),
        InputFile("/d/big.log", 5000, MTIME),  # cut into 300-byte ranges
        InputFile("/d/mid.log", 700, MTIME),
        InputFile("/d/z.gz", 900, MTIME, "gz"),  # whole file: weighs its size
    ]
    p = make_plan(files, {}, fmt="lines", chunk_size=300, result_key=KEY, parts_dir=None)
    assert p.run_bytes == 10 + 5000 + 700 + 900
    batches = make_batches(p.run, workers=2, chunk_size=300)
    assert sorted(t.task_id for b in batches for t in b.tasks) == sorted(t.task_id for t in p.run)
    weights = [b.nbytes for b in batches]
    assert weights[:-1] == sorted(weights[:-1], reverse=True)
    assert (batches[0].tasks[0].path, batches[0].tasks[0].length) == ("/d/z.gz", None)
    assert [t.path for t in batches[-1].tasks] == ["/d/small.log"]  # small: batched last


def test_small_tasks_are_batched_in_path_order_within_limits() -> None:
    files = [InputFile(f"/d/f{i:03d}.log", 10, MTIME) for i in range(200)]
    p = make_plan(files[::-1], {}, fmt="lines", chunk_size=1000, result_key=KEY, parts_dir=None)
    batches = make_batches(p.run, workers=2, chunk_size=1000)
    # 200 small files, 2 workers: 200 // 16 = 12 per batch, and at most 1000 bytes each
    assert all(len(b.tasks) <= 12 and b.nbytes <= 1000 for b in batches)
    assert len(batches) == 17
    paths = [t.path for b in batches for t in b.tasks]
    assert paths == sorted(paths)
    assert len({b.batch_id for b in batches}) == len(batches)
    assert make_batches(p.run, workers=2, chunk_size=1000) == batches  # deterministic


def test_dask_batches_group_a_big_files_ranges_and_small_files_coarsely() -> None:
    """A Dask task costs milliseconds: a big file's consecutive ranges go together, in
    groups that shrink with the work left (the last ones a range each: no worker is left
    with a long batch at the end); small files go in batches of up to four chunks."""
    files = [
        InputFile("/d/big.log", 30000, MTIME),  # a hundred 300-byte ranges
        *(InputFile(f"/d/s{i:02d}.log", 40, MTIME) for i in range(60)),
    ]
    p = make_plan(files, {}, fmt="lines", chunk_size=300, result_key=KEY, parts_dir=None)
    batches = make_batches(p.run, workers=2, chunk_size=300, shape=DASK_BATCHES)
    assert sorted(t.task_id for b in batches for t in b.tasks) == sorted(t.task_id for t in p.run)
    big = [b for b in batches if b.tasks[0].path == "/d/big.log"]
    sizes = [len(b.tasks) for b in big]
    assert sizes[0] == 16 and sizes == sorted(sizes, reverse=True)  # largest first
    assert sizes[-3:] == [1, 1, 1] and len(big) < 40
    for b in big:  # consecutive ranges of the file, in order
        assert all(a.end == b2.offset for a, b2 in zip(b.tasks, b.tasks[1:], strict=False))
    small = [b for b in batches if b.tasks[0].path != "/d/big.log"]
    assert all(b.nbytes <= 4 * 300 for b in small)
    assert len(small) < len(make_batches(p.run, workers=2, chunk_size=300)) - 10


def test_dask_batches_of_a_job_that_writes_records_hold_four_chunks_at_most() -> None:
    """Their records come back to the client at once: a batch stays a few chunks."""
    tasks = [TaskSpec(f"r{i}", "/d/big.log", i * 300, 300, 30000, 1) for i in range(100)]
    batches = make_batches(tasks, workers=2, chunk_size=300, shape=DASK_RECORD_BATCHES)
    assert max(b.nbytes for b in batches) == 4 * 300
    assert sorted(t.task_id for b in batches for t in b.tasks) == sorted(t.task_id for t in tasks)
    assert len(batches[-1].tasks) == 1  # still shrinking to single ranges at the end


def reference_batches(tasks: list[TaskSpec], workers: int, chunk_size: int) -> list[Batch]:
    """The batching rule written plainly, over the whole list at once."""
    threshold = max(1, min(chunk_size // 8, 256 << 10))
    work = [t.size if t.length is None else t.length for t in tasks]
    big = sorted(
        (t for t, w in zip(tasks, work, strict=True) if w >= threshold),
        key=lambda t: t.size if t.length is None else t.length,
        reverse=True,
    )
    small = [t for t, w in zip(tasks, work, strict=True) if w < threshold]
    per_batch = max(1, min(256, len(small) // (workers * 8)))
    out = [Batch.of((t,)) for t in big]
    group: list[TaskSpec] = []
    for task in small:
        if group and (
            len(group) >= per_batch or sum(t.size for t in group) + task.size > chunk_size
        ):
            out.append(Batch.of(tuple(group)))
            group = []
        group.append(task)
    if group:
        out.append(Batch.of(tuple(group)))
    return out


@pytest.mark.parametrize("n_files", [0, 1, 15, 16, 4095, 4096, 4097, 9000])
def test_streamed_batches_spooled_to_disk_equal_the_rule(tmp_path: Path, n_files: int) -> None:
    # 2 workers: the per-batch count is known once 256 x 2 x 8 = 4096 small tasks wait
    files = [InputFile(f"/d/f{i:05d}.log", 3 + i % 50, MTIME) for i in range(n_files)]
    files.append(InputFile("/d/zbig.log", 900, MTIME))
    p = make_plan(files, {}, fmt="lines", chunk_size=800, result_key=KEY, parts_dir=None)
    batcher = Batcher(2, 800, spool_dir=str(tmp_path))
    batcher.SPOOL_AFTER = 1000  # spool early (after 4096 tasks by default)
    for task in p.run:
        batcher.add(task)
    if n_files >= 4097:
        assert batcher._spool is not None  # finished batches went to disk
    got = list(batcher.batches())
    assert got == reference_batches(p.run, 2, 800)
    assert os.listdir(tmp_path) == []  # the spool is an unlinked temporary file


def test_join_rows_pairs_files_with_their_rows_in_byte_order() -> None:
    names = ["/d/a", "/d/b\udce9", "/d/b~", "/d/c", "/d/e"]  # \udce9: byte 0xe9 > "~"
    files = [InputFile(n, 10, MTIME) for n in ["/d/a", "/d/b~", "/d/b\udce9", "/d/d"]]
    rows = [
        row_for(t)
        for name in names
        for t in new_tasks(InputFile(name, 10, MTIME), "lines", 4, KEY, "new")
    ]
    rows.sort(key=lambda r: (os.fsencode(r.path), r.offset))
    pairs = [(f.path, [(r.path, r.offset) for r in rs]) for f, rs in join_rows(files, rows)]
    offsets = [0, 4, 7]  # 10 bytes in 4-byte ranges (the short tail joins the last range)
    assert [r.offset for r in rows if r.path == "/d/a"] == offsets
    assert pairs == [
        ("/d/a", [("/d/a", o) for o in offsets]),
        ("/d/b~", [("/d/b~", o) for o in offsets]),
        ("/d/b\udce9", [("/d/b\udce9", o) for o in offsets]),
        ("/d/d", []),  # /d/c and /d/e are not inputs any more: passed over
    ]


def test_a_touched_file_rerun_uses_its_new_mtime(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    path.write_bytes(b"x\n")
    st = path.stat()
    old = InputFile(str(path), st.st_size, st.st_mtime_ns - 10**9)
    (row,) = rows_for(old, 100, part_size=5)  # its records are gone: re-run
    row = dataclasses.replace(row, content=bytes_digest(path.read_bytes()))
    now = InputFile(str(path), st.st_size, st.st_mtime_ns)
    p = plan([now], {now.path: [row]}, parts_dir=tmp_path / "parts")
    assert p.touched == [(now.path, now.size, now.mtime_ns)]
    assert [(t.reason, t.mtime_ns) for t in p.run] == [("interrupted", now.mtime_ns)]


def test_batch_of_one_is_named_like_its_task() -> None:
    (task,) = new_tasks(InputFile("/d/a.log", 10, MTIME), "lines", 100, KEY, "new")
    assert Batch.of((task,)).batch_id == task.task_id
    assert Batch.of((task,)).part_name == f"{task.task_id}.jsonl"


def test_plan_defaults_are_empty() -> None:
    p = Plan()
    assert (p.run, p.skip, p.drop_paths, p.run_bytes, p.reasons()) == ([], [], [], 0, {})


def test_a_touched_small_file_with_the_same_bytes_is_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    path.write_bytes(b"one\ntwo\n")
    old = InputFile(str(path), 8, MTIME)
    (row,) = rows_for(old, 100, part=None)
    row = dataclasses.replace(row, length=None, content=bytes_digest(path.read_bytes()))
    touched = InputFile(str(path), 8, MTIME + 5)
    p = plan([touched], {touched.path: [row]}, parts_dir=tmp_path)
    assert [t.reason for t in p.skip] == ["unchanged"] and p.run == []
    assert p.touched == [(str(path), 8, MTIME + 5)] and p.drop_paths == []
    path.write_bytes(b"one\nTWO\n")  # same size, other bytes: changed
    p = plan([touched], {touched.path: [row]}, parts_dir=tmp_path)
    assert [t.reason for t in p.run] == ["changed"] and p.touched == []
    no_digest = dataclasses.replace(row, content=None)  # a big file: no content check
    p = plan([touched], {touched.path: [no_digest]}, parts_dir=tmp_path)
    assert [t.reason for t in p.run] == ["changed"]


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=1200), max_size=300),
    takes=st.lists(st.booleans(), min_size=300, max_size=300),
    spool_after=st.sampled_from([0, 10, 4096]),
)
def test_batches_taken_while_planning_keep_the_rule(
    tmp_path_factory: pytest.TempPathFactory, sizes: list[int], takes: list[bool], spool_after: int
) -> None:
    """Batches taken as soon as they exist (the run executes while it plans) are the
    batches of the whole plan: the small ones in the same order and grouping, each task
    once, and the big ones, largest first, as soon as the plan is over."""
    files = [InputFile(f"/d/f{i:04d}.log", size, MTIME) for i, size in enumerate(sizes)]
    p = make_plan(files, {}, fmt="lines", chunk_size=800, result_key=KEY, parts_dir=None)
    batcher = Batcher(2, 800, spool_dir=str(tmp_path_factory.mktemp("spool")))
    batcher.SPOOL_AFTER = spool_after
    taken: list[Batch] = []
    for task, take in zip(p.run, takes, strict=False):
        batcher.add(task)
        while take and (batch := batcher.take()) is not None:
            taken.append(batch)
    before_end = len(taken)
    batcher.finish()
    while (batch := batcher.take()) is not None:
        taken.append(batch)
    batcher.close()
    expected = reference_batches(p.run, 2, 800)
    n_big = sum(1 for t in p.run if (t.size if t.length is None else t.length) >= 100)
    big = expected[:n_big]
    small = expected[n_big:]
    assert taken[before_end : before_end + n_big] == big  # first once the plan is over
    assert taken[:before_end] + taken[before_end + n_big :] == small
    assert sorted(t.task_id for b in taken for t in b.tasks) == sorted(t.task_id for t in p.run)


# --- files that grew ---------------------------------------------------------------------


def digested_rows(path: Path, chunk_size: int) -> list[TaskRow]:
    """Done rows over ``path`` as it is, each with the digest its worker would keep."""
    st_ = path.stat()
    file = InputFile(str(path), st_.st_size, st_.st_mtime_ns)
    return [
        dataclasses.replace(row, content=range_digest(str(path), row.offset, row.length or 0))
        for row in rows_for(file, chunk_size, part=None)
    ]


def reasons_now(path: Path, rows: list[TaskRow], chunk_size: int) -> list[tuple[str, int]]:
    st_ = path.stat()
    now = InputFile(str(path), st_.st_size, st_.st_mtime_ns + 1)
    p = plan([now], {now.path: rows}, chunk_size=chunk_size)
    return sorted((t.reason, t.offset) for t in (*p.run, *p.skip))


def test_a_grown_file_is_proven_by_the_edges_of_its_first_and_last_ranges(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ranges longer than two edges keep the digest of their edges only: an edit there
    is seen, one between them is not (the price of a cheap proof, documented)."""
    monkeypatch.setattr(digest, "EDGE", 4)
    path = tmp_path / "a.log"
    text = b"".join(b"line %03d\n" % i for i in range(40))  # 360 bytes, 9 a line
    path.write_bytes(text)
    rows = digested_rows(path, 120)  # three ranges of 120 bytes
    assert all(row.content and row.content.startswith(digest.EDGES) for row in rows)
    path.write_bytes(text + b"line 040\n")
    assert reasons_now(path, rows, 120) == [
        ("grew", 360),
        ("unchanged", 0),
        ("unchanged", 120),
        ("unchanged", 240),
    ]
    for at, seen in ((1, True), (60, False), (180, False), (358, True), (356, True)):
        path.write_bytes(text[:at] + b"X" + text[at + 1 :] + b"line 040\n")
        reasons = {reason for reason, _ in reasons_now(path, rows, 120)}
        assert reasons == ({"changed"} if seen else {"unchanged", "grew"}), at


def test_a_grown_file_needs_its_processed_part_done_and_ended_at_a_line_end(
    tmp_path: Path,
) -> None:
    path = tmp_path / "a.log"
    path.write_bytes(b"one\ntwo\nthr")
    rows = digested_rows(path, 4)
    path.write_bytes(b"one\ntwo\nthree\n")  # the last processed line was unfinished
    assert {reason for reason, _ in reasons_now(path, rows, 4)} == {"changed"}
    path.write_bytes(b"one\ntwo\n")
    rows = digested_rows(path, 4)
    path.write_bytes(b"one\ntwo\nthree\n")
    assert reasons_now(path, rows, 100) == [("grew", 8), ("unchanged", 0), ("unchanged", 4)]
    failed = [rows[0], dataclasses.replace(rows[1], status="failed")]
    assert {reason for reason, _ in reasons_now(path, failed, 4)} == {"changed"}
    assert {reason for reason, _ in reasons_now(path, rows[1:], 4)} == {"changed"}  # a gap
    no_digest = [rows[0], dataclasses.replace(rows[1], content=None)]
    assert {reason for reason, _ in reasons_now(path, no_digest, 4)} == {"changed"}
    other_config = [dataclasses.replace(r, result_key="other") for r in rows]
    assert {reason for reason, _ in reasons_now(path, other_config, 4)} == {"changed"}


def test_a_grown_file_keeps_its_rows_under_its_new_size(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    path.write_bytes(b"one\ntwo\n")
    rows = digested_rows(path, 100)
    path.write_bytes(b"one\ntwo\nthree\n")
    st_ = path.stat()
    now = InputFile(str(path), st_.st_size, st_.st_mtime_ns)
    p = plan([now], {now.path: rows}, chunk_size=100)
    assert p.touched == [(now.path, 14, now.mtime_ns)] and p.drop_paths == []
    assert [(t.offset, t.length, t.size, t.reason) for t in p.run] == [(8, 6, 14, "grew")]
    assert [(t.offset, t.size, t.mtime_ns) for t in p.skip] == [(0, 14, now.mtime_ns)]
