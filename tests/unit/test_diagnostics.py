"""What a run says about its input: line numbers of records, the sample of malformed
records (order, cap, the same whatever the chunking, batching and result order, and the
same from the fast path as from the generic one), per-file counts and the warnings."""

from __future__ import annotations

import gzip
import io
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.diagnostics import InputDiagnostics, saw_nothing, stat_warnings
from pipeline.linenumbers import LineFinder, count_lines
from pipeline.models import MALFORMED_SAMPLE_SIZE, Batch, InputFile, JobSpec, TaskResult, TaskSpec
from pipeline.planning import new_tasks, task_id
from pipeline.readers import ReadCounters, iter_records
from pipeline.reporting import summary_lines
from pipeline.store.packing import slim_results
from pipeline.worker import TaskRunner

WORDS_RE = r"^(?P<ip>\S+) (?P<status>\S+) (?P<bytes>\S+)$"
STEPS = (
    {"regex": {"pattern": WORDS_RE, "field": "line"}},
    {"types": {"fields": {"status": "int", "bytes": "int"}, "nulls": ["-"]}},
    {"filter": {"status": {">=": 200}}},
    {"types": {"fields": {"ip": "int"}, "nulls": []}},  # after a filter: rows are traced
)
STATS = {
    "n": {"kind": "count"},
    "bytes": {"kind": "sum", "field": "bytes"},
    "by_status": {"kind": "count_by", "field": "status"},
}


def job(fmt: str = "lines", steps: tuple = STEPS, **kw: Any) -> JobSpec:
    return JobSpec(fmt, "utf-8", steps, kw.pop("stats", STATS), False, "/nonexistent", **kw)


def whole(path: Path, compression: str | None = None) -> TaskSpec:
    st_ = os.stat(path)
    ident = task_id(str(path), 0, None, st_.st_size, st_.st_mtime_ns, "k")
    return TaskSpec(ident, str(path), 0, None, st_.st_size, st_.st_mtime_ns, compression)


def ranges(path: Path, chunk: int) -> list[TaskSpec]:
    st_ = os.stat(path)
    return new_tasks(InputFile(str(path), st_.st_size, st_.st_mtime_ns), "lines", chunk, "k", "new")


def expected_lines(data: bytes) -> list[int]:
    """The 1-based line of every line start, counted the obvious way."""
    pieces = data.split(b"\n")
    return list(range(1, len(pieces) + (0 if data.endswith(b"\n") else 1)))


# --- line numbers --------------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [1, 7, 64, 10_000])
def test_lines_of_range_tasks_crlf_and_blank_lines(tmp_path: Path, chunk: int) -> None:
    data = b"a\r\n\r\nbb\n\n\nccc\r\nd\n" * 10 + b"last"  # 71 lines: fewer than a sample
    path = tmp_path / "x.jsonl"
    path.write_bytes(data)
    finder = LineFinder()
    found = []
    for task in ranges(path, chunk):  # positions as workers see them, range by range
        counters = ReadCounters()
        list(iter_records(task, "jsonl", "utf-8", counters))
        positions = [p for p, _ in counters.rejected]
        lines = finder.lines_of("jsonl", str(path), None, positions)
        found += [lines[p] for p in positions]
    # no line of this file is a JSON object: every one of them is rejected, in order
    assert found == expected_lines(data) == list(range(1, 72))


def test_count_lines_across_blocks(tmp_path: Path) -> None:
    data = b"".join(b"x" * (i % 300) + b"\n" for i in range(20_000))  # ~3 MB: 3 blocks
    starts = [0]
    for piece in data.split(b"\n")[:-1]:
        starts.append(starts[-1] + len(piece) + 1)
    targets = [*starts[::997], starts[-2]]
    counted = count_lines(io.BytesIO(data), 0, 1, targets)
    assert counted == {t: starts.index(t) + 1 for t in targets}
    assert count_lines(io.BytesIO(data), 0, 1, [len(data) + 5]) == {}  # past the end


def test_line_finder_remembers_and_resumes(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    path.write_bytes(b"one\ntwo\nthree\nfour\n")
    finder = LineFinder()
    assert finder.line_of("lines", str(path), None, 14) == 4
    assert finder.lines_of("lines", str(path), None, [8, 0, 4]) == {0: 1, 4: 2, 8: 3}
    assert finder.line_of("lines", str(tmp_path / "gone.log"), None, 3) is None
    assert finder.line_of("csv", str(path), None, 7) == 7  # csv positions are lines
    assert finder.line_of("bytes", str(path), None, 0) is None  # a whole file: no line


def test_line_finder_compressed(tmp_path: Path) -> None:
    data = b"a\n\r\nb\r\nc\n"
    path = tmp_path / "x.log.gz"
    path.write_bytes(gzip.compress(data, mtime=0))
    counters = ReadCounters()
    records = list(iter_records(whole(path, "gz"), "lines", "utf-8", counters))
    positions = [p for p, _ in records]  # decompressed byte offsets
    lines = LineFinder().lines_of("lines", str(path), "gz", positions)
    assert [lines[p] for p in positions] == [1, 2, 3, 4]


def test_csv_rows_start_lines(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes(b'a,b\r\n1,"x\r\ny"\r\n\r\n2,3,4\r\n5,6\n')
    runner = TaskRunner(job("csv", steps=(), stats={}))
    result = runner.run(whole(path))
    assert result.rejected == ((5, "3 fields, the header has 2"),)
    assert result.records_in == 3 and result.malformed == 1


# --- what tasks report -----------------------------------------------------------------------

LINES = [
    "1 200 10",
    "2 404 -",
    "garbage",
    "",
    "3 20x 5",  # types: status
    "4 200 5_0",  # types: bytes ("_" is refused)
    "5 100 x",  # types (bytes) before the filter: malformed although the filter drops it
    "8 150 1",  # dropped by the filter, not malformed: rows after it move up
    "six 300 1",  # types after the filter: ip
    "7 300 2\r",  # CRLF: the generic path takes that block
    "ü 200 3",
]
REASONS = {
    "garbage": "regex did not match",
    "": "regex did not match",
    "3 20x 5": "types: status: invalid int '20x'",
    "4 200 5_0": "types: bytes: invalid int '5_0'",
    "5 100 x": "types: bytes: invalid int 'x'",
    "six 300 1": "types: ip: invalid int 'six'",
    "ü 200 3": "types: ip: invalid int 'ü'",
}


def oracle(files: dict[Path, list[str]]) -> list[dict[str, Any]]:
    """Every malformed record of the files, as malformed.jsonl lists them."""
    out = []
    for path in sorted(files, key=lambda p: os.fsencode(str(p))):
        for number, line in enumerate(files[path], 1):
            if line.rstrip("\r") in REASONS:
                out.append({"path": str(path), "line": number, "reason": REASONS[line]})
    return out


def write_files(folder: Path, files: dict[str, list[str]]) -> dict[Path, list[str]]:
    written = {}
    for name, lines in files.items():
        path = folder / name
        path.write_bytes("".join(line + "\n" for line in lines).encode())
        written[path] = lines
    return written


def diagnose(
    runner: TaskRunner, paths: list[Path], chunk: int, batch_size: int, seed: int
) -> InputDiagnostics:
    """The files run as a run would: cut into ranges, whole files batched (done ones
    packed), results committed in a shuffled order."""
    tasks = [task for path in paths for task in ranges(path, chunk)]
    whole_files = [t for t in tasks if t.covers_file]
    batches = [Batch.of((t,)) for t in tasks if not t.covers_file]
    batches += [
        Batch.of(tuple(whole_files[i : i + batch_size]))
        for i in range(0, len(whole_files), batch_size)
    ]
    random.Random(seed).shuffle(batches)
    diagnosed = InputDiagnostics()
    for batch in batches:
        by_id = {t.task_id: t for t in batch.tasks}
        for result in slim_results(runner.execute(batch).results):
            assert result.ok, result.error
            if result.packed is not None:
                diagnosed.add_packed(result.packed)
            else:
                diagnosed.add(by_id[result.task_id], result)
    return diagnosed


def test_sample_matches_the_oracle_fast_and_generic(tmp_path: Path) -> None:
    files = write_files(
        tmp_path,
        {"b.log": LINES * 3, "a.log": ["garbage"] * 5, "c.log": ["1 200 1"] * 4},
    )
    for fast in (True, False):
        runner = TaskRunner(job())
        assert runner.fast is not None
        if not fast:
            runner.fast = None
        diagnosed = diagnose(runner, list(files), chunk=40, batch_size=3, seed=1)
        assert diagnosed.sample("lines") == oracle(files)
        assert diagnosed.by_file() == {str(tmp_path / "b.log"): 21, str(tmp_path / "a.log"): 5}
        assert diagnosed.malformed_files == 2 and diagnosed.malformed == 26


def test_sample_is_capped_and_ordered(tmp_path: Path) -> None:
    files = write_files(tmp_path, {f"f{i}.log": ["garbage", "1 200 1"] * 60 for i in range(3)})
    diagnosed = diagnose(TaskRunner(job()), list(files), chunk=100, batch_size=2, seed=2)
    sample = diagnosed.sample("lines")
    assert len(sample) == MALFORMED_SAMPLE_SIZE
    assert sample == oracle(files)[:MALFORMED_SAMPLE_SIZE]
    assert [e["line"] for e in sample[:3]] == [1, 3, 5]
    assert {e["path"] for e in sample} == {str(tmp_path / "f0.log"), str(tmp_path / "f1.log")}


def test_a_task_sends_at_most_the_sample_size(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    path.write_bytes(b"garbage\n" * 1000)
    for fast in (True, False):
        runner = TaskRunner(job())
        if not fast:
            runner.fast = None
        result = runner.run(whole(path))
        assert result.malformed == 1000
        assert result.rejected == tuple((8 * i, "regex did not match") for i in range(100))


def test_a_failure_says_where_the_record_is(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"a": 1}\n\n{"a": "boom"}\n')
    module = tmp_path / "diag_plugin_fail.py"
    module.write_text(
        "def check(record):\n"
        "    if record['a'] == 'boom':\n"
        "        raise ValueError('bad a')\n"
        "    return record\n"
    )
    runner = TaskRunner(
        job("jsonl", steps=({"call": "diag_plugin_fail:check"},), import_dirs=(str(tmp_path),))
    )
    result = runner.run(whole(path))
    assert not result.ok and result.error_at == 10
    assert result.error.startswith(f"{path}: record at byte offset 10: ValueError: bad a")
    assert LineFinder().line_of("jsonl", str(path), None, result.error_at) == 3


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    contents=st.lists(st.lists(st.sampled_from(LINES), max_size=30), min_size=1, max_size=4),
    chunk=st.integers(1, 120),
    batch_size=st.integers(1, 4),
    seed=st.integers(0, 1000),
    fast=st.booleans(),
)
def test_sample_and_counts_do_not_depend_on_chunks_batches_or_order(
    contents: list[list[str]], chunk: int, batch_size: int, seed: int, fast: bool
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        files = write_files(Path(folder), {f"f{i}.log": c for i, c in enumerate(contents)})
        paths = list(files)
        reference = diagnose(TaskRunner(job()), paths, chunk=1 << 20, batch_size=1, seed=0)
        runner = TaskRunner(job())
        if not fast:
            runner.fast = None
        diagnosed = diagnose(runner, paths, chunk, batch_size, seed)
        assert diagnosed.sample("lines") == reference.sample("lines")
        assert diagnosed.sample("lines") == oracle(files)[:MALFORMED_SAMPLE_SIZE]
        assert diagnosed.by_file() == reference.by_file()
        assert diagnosed.warnings("lines", {}, None) == reference.warnings("lines", {}, None)


# --- warnings ----------------------------------------------------------------------------


def test_every_record_malformed_warns_with_the_first_reason(tmp_path: Path) -> None:
    files = write_files(tmp_path, {"bad.log": ["", "garbage"] * 10, "ok.log": LINES})
    diagnosed = diagnose(TaskRunner(job()), list(files), chunk=16, batch_size=2, seed=3)
    assert diagnosed.warnings("lines", {}, None) == [
        f"{tmp_path / 'bad.log'}: every record was malformed (20); the first: line 1: "
        "regex did not match (is the format or the regex right?)"
    ]


def test_stat_warnings_from_partials() -> None:
    specs = {
        "n": {"kind": "count"},
        "typo_sum": {"kind": "sum", "field": "byts"},
        "ok_sum": {"kind": "sum", "field": "bytes"},
        "typo_top": {"kind": "top", "field": "pth", "k": 3},
        "typo_max": {"kind": "max", "field": "x"},
        "errors": {"kind": "count", "where": {"status": {">=": 500}}},  # none tonight
        "typo_where": {"kind": "count", "where": {"stauts": {">=": 500}}},
        "by_status": {"kind": "count_by", "field": "status"},
    }
    partials = {
        "n": 5,
        "typo_sum": {"n": 0, "int": 0},
        "ok_sum": {"n": 5, "int": 50},
        "typo_top": {"null": 5},
        "typo_max": {"num": None, "str": None},
        "errors": 0,
        "typo_where": 0,
        "by_status": {"200": 5},
    }
    assert stat_warnings(specs, partials, records=5) == [
        "stat 'typo_sum' (sum): field 'byts' had no numeric value in any record of this "
        "run (a misspelt field name?)",
        "stat 'typo_top' (top): field 'pth' had no value in any record of this run "
        "(a misspelt field name?)",
        "stat 'typo_max' (max): field 'x' had no value in any record of this run "
        "(a misspelt field name?)",
        "stat 'typo_where' (count, with where:) saw no record of this run; no stat saw a "
        "value of 'stauts' (a misspelt field name?)",
    ]
    assert stat_warnings(specs, partials, records=0) == []  # nothing reached the stats
    assert stat_warnings(specs, None, records=0) == []


@pytest.mark.parametrize(
    ("kind", "partial", "empty"),
    [
        ("count", 0, True),
        ("count", 3, False),
        ("mean", {"n": 0, "int": 0}, True),
        ("sum", {"n": 1, "int": 2}, False),
        ("min", {"num": None, "str": "a"}, False),
        ("count_by", {}, True),
        ("count_by", {"null": 2, "x": 1}, False),
        ("top", None, True),
    ],
)
def test_saw_nothing(kind: str, partial: Any, empty: bool) -> None:
    assert saw_nothing(kind, partial) is empty


def test_results_without_malformed_cost_no_entry(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    path.write_bytes(b"1 200 1\n")
    diagnosed = InputDiagnostics()
    diagnosed.add(whole(path), TaskResult("t", ok=True, records_in=1, records_out=1))
    assert diagnosed.by_file() == {} and diagnosed.sample("lines") == []
    assert diagnosed.records_out == 1


# --- the end summary -------------------------------------------------------------------------


def report_of(status: str, pending: int, **extra: Any) -> dict[str, Any]:
    return {
        "name": "job",
        "status": status,
        "tasks": {
            "total": 9,
            "done": 9 - pending - 1,
            "failed": 1,
            "skipped": 0,
            "pending": pending,
        },
        "run": {"records": 5, "bytes_read": 10, "duration_s": 1.0, "malformed": 0},
        "records": {"in": 5, "out": 5, "malformed": 0, "undecodable": 0},
        "failures": [],
        **extra,
    }


@pytest.mark.parametrize(
    ("report", "said"),
    [
        (report_of("interrupted", 3), "interrupted: 3 task(s) pending; run again to resume"),
        (
            report_of("failed", 4, stopped_by="max_failures (1)"),
            "stopped by max_failures (1): 4 task(s) pending; run again to retry the failed "
            "task(s) and run the rest",
        ),
        (
            report_of("failed", 2, error="cluster lost"),
            "cluster lost: 2 task(s) pending; run again to resume",
        ),
        (report_of("ok", 0), None),
    ],
)
def test_summary_says_what_is_pending(report: dict[str, Any], said: str | None) -> None:
    lines = summary_lines(report, {}, "/out")
    pending = [line for line in lines if "pending;" in line and "tasks:" not in line]
    assert pending == ([said] if said else [])
    assert lines[-1] == "outputs in /out"


def test_summary_points_at_the_sample() -> None:
    report = report_of("ok", 0, malformed_files=2)
    report["run"]["malformed"] = 7
    assert (
        "7 malformed record(s) in 2 file(s) this run: the first ones, with their line and "
        "reason, in /out/malformed.jsonl"
    ) in summary_lines(report, {}, "/out")
