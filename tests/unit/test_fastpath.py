"""The columnar fast path gives exactly what the generic record-by-record path gives."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline import fastpath, readers
from pipeline.models import Batch, InputFile, JobSpec, TaskSpec
from pipeline.planning import new_tasks
from pipeline.worker import TaskRunner

LOG = (
    r"^(?P<ip>\S+) (?P<user>\S+) \[(?P<ts>[^]]+)\] (?P<status>\S+) (?P<bytes>\S+)"
    r"(?: (?P<extra>\w+))?"
)

STATS = {
    "n": {"kind": "count", "field": None, "k": None, "where": None},
    "n_bytes": {"kind": "count", "field": "bytes", "k": None, "where": None},
    "errors": {"kind": "count", "field": None, "k": None, "where": {"status": {">=": 500}}},
    "by_status": {"kind": "count_by", "field": "status", "k": None, "where": None},
    "top_ip": {"kind": "top", "field": "ip", "k": 3, "where": None},
    "bytes": {"kind": "sum", "field": "bytes", "k": None, "where": None},
    "mean": {"kind": "mean", "field": "bytes", "k": None, "where": {"ip": {"!=": "x"}}},
    "lo": {"kind": "min", "field": "bytes", "k": None, "where": None},
    "hi": {"kind": "max", "field": "status", "k": None, "where": None},
    "extra": {"kind": "count_by", "field": "extra", "k": None, "where": None},
}

JOBS: dict[str, tuple[dict[str, Any], ...]] = {
    "no steps": (),
    "regex only": ({"regex": {"pattern": LOG, "field": "line"}},),
    "types": (
        {"regex": {"pattern": LOG, "field": "line"}},
        {"types": {"fields": {"status": "int", "bytes": "int"}, "nulls": ["-"]}},
    ),
    "ints without nulls": (
        {"regex": {"pattern": LOG, "field": "line"}},
        {"types": {"fields": {"bytes": "int", "status": "float"}, "nulls": []}},
    ),
    "empty matches": (
        {"regex": {"pattern": r"(?P<bytes>\d*)", "field": "line"}},
        {"types": {"fields": {"bytes": "int"}, "nulls": [""]}},
    ),
    "float and filter": (
        {"regex": {"pattern": LOG, "field": "line"}},
        {"types": {"fields": {"bytes": "float"}, "nulls": []}},
        {"filter": {"status": {"in": ["200", "500"]}, "ip": {"matches": "^1"}}},
    ),
    "select and rename": (
        {"regex": {"pattern": LOG, "field": "line"}},
        {"types": {"fields": {"status": "int"}, "nulls": []}},
        {"filter": {"status": {"<": 600}}},
        {"select": ["bytes", "status", "ip", "nope"]},
        {"rename": {"ip": "client"}},
    ),
    "line kept and referenced": (
        {"regex": {"pattern": r"(?P<ip>\d+)\.", "field": "line"}},
        {"filter": {"line": {"contains": "0"}}},
    ),
    "crossing pattern": (
        {"regex": {"pattern": r"(?P<ip>\S+)\s*(?P<user>[^]]*)", "field": "line"}},
    ),
    "flags": ({"regex": {"pattern": r"(?i)(?P<ip>[0-9A-F.]+) ", "field": "line"}},),
}

line_st = st.one_of(
    st.builds(
        lambda ip, user, status, size, extra: f"{ip} {user} [ts {ip}] {status} {size}{extra}",
        st.sampled_from(["1.2.3.4", "10.0.0.1", "x", "1e3", "ABC.d"]),
        st.sampled_from(["-", "bob", "é"]),
        st.sampled_from(["200", "500", "404", "-", "2x", "503", " 7"]),
        st.sampled_from(["0", "12", "-", "3.5", "1_000", "99999999999999999999", "+4", "nan", ""]),
        st.sampled_from(["", " more", " ünï", "  "]),
    ),
    st.sampled_from(["", "garbage", "1.2.3.4", "\u2028", "a\x0cb", "é ]"]),
)


@st.composite
def files(draw: Any) -> bytes:
    lines = draw(st.lists(line_st, max_size=40))
    out = bytearray()
    for line in lines:
        out += line.encode()
        if draw(st.booleans()) and draw(st.integers(0, 9)) == 0:
            out += b"\xff"  # not UTF-8
        out += b"\r\n" if draw(st.integers(0, 19)) == 0 else b"\n"
    if out and draw(st.booleans()):
        out = out[:-1]  # no final newline
    return bytes(out)


def run_both(data: bytes, steps: tuple, records: bool, chunk: int, block: int):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "in.log"
        path.write_bytes(data)
        st_ = os.stat(path)
        out = []
        for use_fast in (True, False):
            parts = Path(tmp) / f"parts-{use_fast}"
            (parts / ".tmp").mkdir(parents=True)
            job = JobSpec("lines", "utf-8", steps, STATS, records, str(parts))
            runner = TaskRunner(job)
            assert runner.fast is not None or not use_fast
            if not use_fast:
                runner.fast = None
            tasks = new_tasks(
                InputFile(str(path), st_.st_size, st_.st_mtime_ns), "lines", chunk, "k", "new"
            )
            runner.block_size = block
            results = runner.run_batch(Batch.of(tuple(tasks)))
            body = (
                (parts / Batch.of(tuple(tasks)).part_name).read_bytes()
                if records and any(r.part for r in results)
                else b""
            )
            summary = [
                (
                    r.ok,
                    r.error,
                    r.records_in,
                    r.records_out,
                    r.malformed,
                    r.undecodable,
                    r.partials,
                    r.part_offset,
                    r.part_size,
                )
                for r in results
            ]
            out.append((body, summary))
        return out


@pytest.mark.parametrize("name", list(JOBS))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=files(),
    records=st.booleans(),
    chunk=st.integers(1, 400),
    block=st.sampled_from([7, 64, 1 << 20]),
)
def test_fast_path_equals_generic_path(
    name: str, data: bytes, records: bool, chunk: int, block: int
) -> None:
    fast, generic = run_both(data, JOBS[name], records, chunk, block)
    assert fast == generic


def test_fast_path_takes_clean_blocks_and_declines_the_others(tmp_path: Path) -> None:
    lines = [f"1.2.3.{i} bob [t] 200 {i}" for i in range(50)]
    (tmp_path / ".tmp").mkdir()
    runner = TaskRunner(JobSpec("lines", "utf-8", JOBS["types"], STATS, True, str(tmp_path)))
    for text, declined in (("\n".join(lines) + "\n", 0), ("\r\n".join(lines), 1)):
        path = tmp_path / "in.log"
        path.write_text(text)
        st_ = os.stat(path)
        runner.declined_blocks = 0
        result = runner.run(TaskSpec("t", str(path), 0, None, st_.st_size, st_.st_mtime_ns))
        assert result.ok and result.records_out == 50
        assert runner.declined_blocks == declined


def test_fast_path_is_used_for_a_plain_log_job() -> None:
    plan = fastpath.LinePlan.compile("lines", JOBS["types"], False, {"status", "bytes"})
    assert plan is not None
    assert plan.names == ("status", "bytes")  # only what is looked at is extracted
    assert not plan.need_line


@pytest.mark.parametrize(
    "steps",
    [
        ({"call": "x:y"},),
        ({"regex": {"pattern": r"(\d+)", "field": "line"}},),
        ({"regex": {"pattern": r"(?P<a>\d+)", "field": "other"}},),
        ({"regex": {"pattern": r"(?P<a>\d+)", "field": "line"}}, {"call": "m:f"}),
        ({"regex": {"pattern": r"(?P<a>\d+)", "field": "line"}}, {"rename": {"a": "line"}}),
    ],
)
def test_jobs_the_fast_path_declines(steps: tuple) -> None:
    assert fastpath.LinePlan.compile("lines", steps, True, set()) is None


@settings(max_examples=200, deadline=None)
@given(
    data=st.binary(max_size=300).map(lambda b: b.replace(b"\x00", b"\n")),
    chunk=st.integers(1, 120),
    block=st.integers(1, 64),
)
def test_line_blocks_hold_exactly_the_lines_a_task_owns(data: bytes, chunk: int, block: int):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "f"
        path.write_bytes(data)
        size = len(data)
        for offset, length in _ranges(size, chunk):
            task = TaskSpec("t", str(path), offset, length, size, 0)
            want = list(readers.iter_records(task, "lines", "utf-8", readers.ReadCounters()))
            counters = readers.ReadCounters()
            got = [
                rec
                for start, blob in readers.iter_line_blocks(task, counters, block_size=block)
                for rec in readers.block_records(start, blob, "utf-8", counters)
            ]
            assert got == want


def _ranges(size: int, chunk: int) -> list[tuple[int, int]]:
    from pipeline.chunking import split_ranges

    return split_ranges(size, chunk)


TRICKY = [
    "0",
    "7",
    "-3",
    "+4",
    "007",
    " 7",
    "7 ",
    "1_000",
    "٣",
    "1e5",
    ".5",
    "5.",
    "-.5e-3",
    "nan",
    "inf",
    "-",
    "",
    "x",
    "0x10",
    "99999999999999999999",
    "1.5",
    "0",
    "12",
    "3.25",
    None,
]


@settings(max_examples=300, deadline=None)
@given(
    values=st.lists(st.sampled_from(TRICKY), max_size=8),
    kind=st.sampled_from(["int", "float"]),
    nulls=st.sampled_from([frozenset(), frozenset({"-", ""}), frozenset({"0", "1_000", "nan"})]),
)
def test_column_conversion_equals_value_by_value(values: list, kind: str, nulls: frozenset):
    from pipeline.steps import convert_value

    want, bad = [], []
    for i, value in enumerate(values):
        if value is None or value in nulls:
            want.append(None)
            continue
        try:
            want.append(convert_value(kind, value))
        except (ValueError, TypeError, OverflowError):
            want.append(None)
            bad.append(i)
    got, got_bad = fastpath._convert_column(list(values), kind, nulls)
    assert got_bad == bad
    assert [repr(v) for i, v in enumerate(got) if i not in bad] == [
        repr(v) for i, v in enumerate(want) if i not in bad
    ]
