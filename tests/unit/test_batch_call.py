"""The batch form of ``call``: a list of records in, a list out, same results as per record.

The property test runs the same random records through a chain twice, once with every
``call`` per record and once with some of them in batch form (each batch function being
its per-record function applied to every record of the list), and wants byte-identical
part files and equal counts and stats, whatever the chunk size and the batch size.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline import fastpath, steps
from pipeline.models import Batch, InputFile, TaskResult
from pipeline.planning import new_tasks
from pipeline.steps import BatchStage, compile_stages, compile_steps, is_batch_call
from pipeline.store import parts
from pipeline.worker import TaskRunner
from tests.unit.test_worker import job, whole_task

PLUGIN = """
from collections.abc import Mapping
from types import MappingProxyType

from pipeline.errors import MalformedRecord

SEEN = []  # the batches the batch functions were handed, as lists of "a" values


def tag(record):
    record["n"] = len(record)  # in place, as plugins do
    return record


def drop_odd(record):
    a = record.get("a")
    return None if type(a) is int and a % 2 else record


def split(record):
    a = record.get("a")
    if type(a) is int:
        return [{"a": a, "k": i} for i in range(a % 3)]
    return [record, record]  # the same dict twice


def spread(record):
    yield MappingProxyType({"b": record.get("b"), "k": 0})
    yield record


def reject(record):
    if str(record.get("b", "")).startswith("x"):
        raise MalformedRecord("b starts with x")
    return record


def _as_list(func, record):
    try:
        out = func(record)
    except MalformedRecord as exc:
        return [exc]
    if out is None:
        return []
    if isinstance(out, Mapping):
        return [out]
    return list(out)


def _batched(func):
    def batch(records):
        SEEN.append([r.get("a") for r in records])
        return [out for record in records for out in _as_list(func, record)]

    return batch


tag_batch = _batched(tag)
drop_odd_batch = _batched(drop_odd)
split_batch = _batched(split)
spread_batch = _batched(spread)
reject_batch = _batched(reject)


def as_generator(records):
    return (r for r in records)


def not_a_list(records):
    return 42


def a_mapping(records):
    return {"a": 1}


def bad_item(records):
    return [*records, "oops"]


def raises_malformed(records):
    raise MalformedRecord("whole batch")


def explodes(records):
    raise ValueError("boom")


def twice_each(records):
    return [r for r in records for _ in range(2)]
"""

CALLS = ("tag", "drop_odd", "split", "spread", "reject")
STATS = {
    "records": {"kind": "count"},
    "n": {"kind": "sum", "field": "n"},
    "by_b": {"kind": "count_by", "field": "b"},
    "k_max": {"kind": "max", "field": "k"},
    "big_a": {"kind": "count", "where": {"a": {">": 1}}},
}


@pytest.fixture(scope="module")
def plugin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The plugin module above, importable under a unique name; yields the module."""
    folder = tmp_path_factory.mktemp("batch_plugins")
    name = f"batchplug_{uuid.uuid4().hex}"
    (folder / f"{name}.py").write_text(textwrap.dedent(PLUGIN))
    sys.path.insert(0, str(folder))
    try:
        __import__(name)
        yield sys.modules[name]
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop(name, None)


def call(module: Any, fn: str, batch: bool = False) -> dict[str, Any]:
    if batch:
        return {"call": {"function": f"{module.__name__}:{fn}", "batch": True}}
    return {"call": f"{module.__name__}:{fn}"}


def run_tasks(
    folder: Path, path: Path, specs: list[dict[str, Any]], *, chunk: int, size: int
) -> tuple[list[TaskResult], bytes]:
    """All tasks of ``path`` in one batch: their results and the part file's bytes."""
    parts_dir = folder / f"parts-{uuid.uuid4().hex}"
    parts.prepare(str(parts_dir))
    st_ = os.stat(path)
    tasks = new_tasks(InputFile(str(path), st_.st_size, st_.st_mtime_ns), "jsonl", chunk, "k", "n")
    runner = TaskRunner(job(parts_dir, format="jsonl", steps=tuple(specs), stats=STATS))
    runner.batch_records = size
    batch = Batch.of(tuple(tasks))
    results = runner.run_batch(batch)
    part = parts_dir / batch.part_name
    return results, part.read_bytes() if part.exists() else b""


def outcome(results: list[TaskResult]) -> list[tuple[Any, ...]]:
    return [(r.ok, r.error, r.records_in, r.records_out, r.malformed, r.partials) for r in results]


# --- the property ------------------------------------------------------------------------

VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 9),
    st.sampled_from(["1", "22", "-", "x", "xy", "7 ", "", "é"]),
)
RECORD = st.dictionaries(st.sampled_from(["a", "b", "c"]), VALUES, max_size=3)
LINE = st.one_of(
    RECORD.map(lambda r: json.dumps(r, ensure_ascii=False)),
    st.sampled_from(["not json", "[1, 2]", '"text"', "{}"]),
)
OTHER_STEPS = (
    {"filter": {"b": {"!=": "xy"}}},
    {"types": {"fields": {"a": "int"}, "nulls": ["-"]}},
    {"select": ["a", "b", "k", "n"]},
    {"rename": {"a": "b", "b": "a"}},
)
STEP = st.one_of(st.sampled_from(OTHER_STEPS), st.sampled_from(CALLS))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lines=st.lists(LINE, max_size=40),
    chain=st.lists(STEP, min_size=1, max_size=5),
    batched=st.lists(st.booleans(), min_size=5, max_size=5),
    chunk=st.one_of(st.integers(1, 120), st.just(1 << 20)),
    size=st.one_of(st.integers(1, 6), st.just(steps.BATCH_RECORDS)),
)
def test_batch_form_equals_per_record_form(
    plugin: Any,
    lines: list[str],
    chain: list[Any],
    batched: list[bool],
    chunk: int,
    size: int,
) -> None:
    per_record = [call(plugin, s) if isinstance(s, str) else s for s in chain]
    batch_form = [
        call(plugin, f"{s}_batch", batched[i])
        if isinstance(s, str) and batched[i]
        else per_record[i]
        for i, s in enumerate(chain)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = folder / "in.jsonl"
        path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        want, want_part = run_tasks(folder, path, per_record, chunk=chunk, size=size)
        got, got_part = run_tasks(folder, path, batch_form, chunk=chunk, size=size)
    assert all(r.ok for r in want), [r.error for r in want]
    assert outcome(got) == outcome(want)
    assert got_part == want_part


# --- batches -----------------------------------------------------------------------------


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_batches_hold_the_records_in_order_up_to_the_cap(plugin: Any, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", [{"a": i} for i in range(10)])
    plugin.SEEN.clear()
    (result,), data = run_tasks(
        tmp_path,
        path,
        [{"filter": {"a": {"!=": 4}}}, call(plugin, "tag_batch", True)],
        chunk=1 << 20,
        size=3,
    )
    assert result.ok, result.error
    # The cap counts records that reached the batch call: the filtered one is not a hole.
    assert plugin.SEEN == [[0, 1, 2], [3, 5, 6], [7, 8, 9]]
    assert [json.loads(line)["a"] for line in data.splitlines()] == [0, 1, 2, 3, 5, 6, 7, 8, 9]


def test_a_batch_never_spans_two_tasks(plugin: Any, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", [{"a": i} for i in range(6)])
    plugin.SEEN.clear()
    results, _ = run_tasks(tmp_path, path, [call(plugin, "tag_batch", True)], chunk=30, size=1000)
    assert len(results) > 1 and all(r.ok for r in results)
    assert len(plugin.SEEN) == len(results)
    assert [a for seen in plugin.SEEN for a in seen] == list(range(6))


def test_several_batch_calls_and_steps_between(plugin: Any, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", [{"a": i, "b": "q"} for i in range(5)])
    specs = [
        call(plugin, "split_batch", True),  # a % 3 copies, with k
        {"filter": {"k": {"==": 1}}},
        call(plugin, "tag_batch", True),
        call(plugin, "twice_each", True),
        {"select": ["a", "n"]},
    ]
    (result,), data = run_tasks(tmp_path, path, specs, chunk=1 << 20, size=2)
    assert result.ok, result.error
    # a=2 gives k=0,1, a=1 and a=4 give k=0: only a=2's k=1 passes, tagged, then doubled.
    assert data.decode().splitlines() == ['{"a":2,"n":2}', '{"a":2,"n":2}']
    assert (result.records_in, result.records_out, result.malformed) == (5, 2, 0)


def test_a_dict_returned_twice_is_copied_before_later_steps(plugin: Any, tmp_path: Path):
    path = write_jsonl(tmp_path / "in.jsonl", [{"a": 1}])
    specs = [call(plugin, "twice_each", True), call(plugin, "tag")]
    (result,), data = run_tasks(tmp_path, path, specs, chunk=1 << 20, size=10)
    assert result.ok, result.error
    # Tagged twice in place, one shared dict would say n=2 the second time.
    assert data.decode().splitlines() == ['{"a":1,"n":1}', '{"a":1,"n":1}']


def test_a_generator_is_accepted(plugin: Any, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", [{"a": 1}, {"a": 2}])
    specs = [call(plugin, "as_generator", True), {"select": ["a"]}]
    (result,), data = run_tasks(tmp_path, path, specs, chunk=1 << 20, size=10)
    assert result.ok, result.error
    assert data.decode().splitlines() == ['{"a":1}', '{"a":2}']


def test_malformed_items_are_counted_with_their_reason(plugin: Any, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", [{"b": "ok"}, {"b": "xx"}, {"b": "xz"}])
    (result,), _ = run_tasks(
        tmp_path, path, [call(plugin, "reject_batch", True)], chunk=1 << 20, size=10
    )
    assert result.ok, result.error
    assert (result.records_out, result.malformed) == (1, 2)
    reason = f"call {plugin.__name__}:reject_batch: b starts with x"
    assert result.rejected == ((0, reason), (0, reason))  # at the batch's first record


# --- failures ----------------------------------------------------------------------------

THREE = [{"a": i} for i in range(3)]


@pytest.mark.parametrize(
    ("fn", "error"),
    [
        (
            "not_a_list",
            "TypeError: step 2 (call {m}:not_a_list, batch): returned int; "
            "expected a list (or another iterable) of records",
        ),
        (
            "a_mapping",
            "TypeError: step 2 (call {m}:a_mapping, batch): returned dict; "
            "expected a list (or another iterable) of records",
        ),
        (
            "bad_item",
            "TypeError: step 2 (call {m}:bad_item, batch): item 3 of the list it "
            "returned is a str; each item must be a record (a mapping) or a MalformedRecord",
        ),
        (
            "raises_malformed",
            "ValueError: step 2 (call {m}:raises_malformed, batch): raised "
            "MalformedRecord('whole batch'); a batch function rejects a record by putting a "
            "MalformedRecord in the list it returns",
        ),
        ("explodes", "ValueError: boom"),
    ],
)
def test_a_bad_batch_fails_the_task_naming_the_batch_s_first_record(
    plugin: Any, tmp_path: Path, fn: str, error: str
) -> None:
    records = [{"a": i} for i in range(5)]
    path = write_jsonl(tmp_path / "in.jsonl", records)
    specs = [{"filter": {"a": {">=": 2}}}, call(plugin, fn, True)]
    (result,), data = run_tasks(tmp_path, path, specs, chunk=1 << 20, size=1000)
    assert not result.ok
    offset = sum(len(json.dumps(r)) + 1 for r in records[:2])  # the first record let through
    assert result.error == f"{path}: record at byte offset {offset}: " + error.format(
        m=plugin.__name__
    )
    assert result.error_at == offset
    assert data == b""  # nothing of a failed task stays in the part


# --- compiling ---------------------------------------------------------------------------


def test_compile_stages_cuts_the_chain_at_batch_calls(plugin: Any) -> None:
    specs = [
        {"select": ["a"]},
        call(plugin, "tag_batch", True),
        {"rename": {"a": "b"}},
        call(plugin, "tag"),
        call(plugin, "twice_each", True),
    ]
    stages = compile_stages(specs)
    assert stages.head_steps == 1
    assert [type(s) for s in stages.batches] == [BatchStage, BatchStage]
    assert stages.batches[0].after is not None and stages.batches[1].after is None
    assert stages.batches[1].where == f"step 5 (call {plugin.__name__}:twice_each, batch)"
    batch: list[dict] = []
    assert stages.head({"a": 1, "z": 2}, batch) == 0
    assert batch == [{"a": 1}]
    out, bad = stages.batches[0].call(batch)
    assert (out, bad) == ([{"a": 1, "n": 1}], 0)
    after: list[dict] = []
    assert stages.batches[0].after(out[0], after) == 0
    assert after == [{"b": 1, "n": 2}]


def test_without_batch_calls_the_head_is_the_whole_chain(plugin: Any) -> None:
    specs = [{"select": ["a"]}, call(plugin, "tag")]
    stages = compile_stages(specs)
    assert (stages.head_steps, stages.batches) == (2, ())
    assert stages.chain({"a": 1, "z": 0}) == compile_steps(specs)({"a": 1, "z": 0})
    out: list[dict] = []
    assert stages.head({"a": 1, "z": 0}, out) == 0
    assert out == [{"a": 1, "n": 1}]


def test_batch_false_mapping_is_the_per_record_call(plugin: Any) -> None:
    spec = {"call": {"function": f"{plugin.__name__}:tag", "batch": False}}
    assert not is_batch_call(spec)
    assert compile_steps([spec])({"a": 1}) == ([{"a": 1, "n": 1}], 0)


def test_compile_steps_refuses_a_batch_call(plugin: Any) -> None:
    with pytest.raises(ValueError, match="step 1: a batch call needs compile_stages"):
        compile_steps([call(plugin, "tag_batch", True)])


@pytest.mark.parametrize(
    "arg", [{"function": "m:f", "batch": "yes"}, {"batch": True}, {"function": 1}, 7]
)
def test_a_bad_call_argument_is_refused(arg: Any) -> None:
    with pytest.raises(ValueError, match=r"step 1 \(call\): expected 'module:function'"):
        compile_stages([{"call": arg}])


def test_whole_file_task_runs_batches_too(plugin: Any, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", THREE)
    parts_dir = tmp_path / "parts"
    parts.prepare(str(parts_dir))
    runner = TaskRunner(
        job(parts_dir, format="jsonl", steps=(call(plugin, "tag_batch", True),), stats=STATS)
    )
    result = runner.run(whole_task(path))
    assert result.ok, result.error
    assert result.records_out == 3 and result.partials is not None


def test_the_fast_path_declines_a_batch_call(plugin: Any) -> None:
    regex = {"regex": {"pattern": r"(?P<a>\d+)", "field": "line"}}
    for specs in ([call(plugin, "tag_batch", True)], [regex, call(plugin, "tag_batch", True)]):
        assert fastpath.LinePlan.compile("lines", specs, True, set()) is None
