"""The worker: one TaskSpec in, one part file and a small TaskResult out; never raises."""

from __future__ import annotations

import base64
import json
import multiprocessing
import os
import pickle
import uuid
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from pipeline import worker
from pipeline.models import Batch, InputFile, JobSpec, TaskResult, TaskSpec
from pipeline.planning import new_tasks, task_id
from pipeline.store import parts
from pipeline.worker import TaskRunner, make_encoder, pool_run

LOG_RE = r"^(?P<ip>\S+) (?P<status>\d{3}) (?P<bytes>\d+)"
LOG_STEPS = (
    {"regex": {"pattern": LOG_RE, "field": "line"}},
    {"types": {"fields": {"status": "int", "bytes": "int"}, "nulls": []}},
    {"select": ["ip", "status", "bytes"]},
)
LOG_STATS = {
    "requests": {"kind": "count"},
    "bytes": {"kind": "sum", "field": "bytes"},
    "by_status": {"kind": "count_by", "field": "status"},
    "errors": {"kind": "count", "where": {"status": {">=": 500}}},
}
LOG_TEXT = "1.1.1.1 200 10\ngarbage line\n2.2.2.2 500 5\r\n3.3.3.3 200 7\nünï 404 1\n"


def job(parts_dir: Path, **kw: Any) -> JobSpec:
    values: dict[str, Any] = dict(
        format="lines",
        encoding="utf-8",
        steps=LOG_STEPS,
        stats=LOG_STATS,
        write_records=True,
        parts_dir=str(parts_dir),
    )
    values.update(kw)
    return JobSpec(**values)


def whole_task(path: Path, *, compression: str | None = None, tid: str | None = None) -> TaskSpec:
    st = os.stat(path)
    ident = tid or task_id(str(path), 0, None, st.st_size, st.st_mtime_ns, "k")
    return TaskSpec(ident, str(path), 0, None, st.st_size, st.st_mtime_ns, compression)


def range_tasks(path: Path, chunk: int) -> list[TaskSpec]:
    st = os.stat(path)
    return new_tasks(InputFile(str(path), st.st_size, st.st_mtime_ns), "lines", chunk, "k", "new")


@pytest.fixture
def parts_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "out" / "parts"
    parts.prepare(str(folder))
    return folder


@pytest.fixture
def log_file(tmp_path: Path) -> Path:
    path = tmp_path / "access.log"
    path.write_bytes(LOG_TEXT.encode())
    return path


def part_lines(parts_dir: Path, name: str) -> list[str]:
    return (parts_dir / name).read_bytes().decode("utf-8").splitlines()


def leftovers(parts_dir: Path) -> list[str]:
    return os.listdir(parts_dir / parts.TMP_DIR)


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Write a plugin module with a unique name and make it importable."""

    def make(source: str) -> str:
        name = f"plug_{uuid.uuid4().hex}"
        folder = tmp_path / "plugins"
        folder.mkdir(exist_ok=True)
        (folder / f"{name}.py").write_text(source)
        monkeypatch.syspath_prepend(str(folder))
        return name

    return make


# --- a good task -----------------------------------------------------------------------


def test_task_writes_its_part_and_reports_counts(parts_dir: Path, log_file: Path) -> None:
    task = whole_task(log_file)
    result = TaskRunner(job(parts_dir)).run(task)
    assert result.ok, result.error
    assert (result.error_kind, result.error, result.traceback) == (None, None, None)
    assert result.task_id == task.task_id
    assert result.part == f"{task.task_id}.jsonl"
    assert part_lines(parts_dir, result.part) == [
        '{"ip":"1.1.1.1","status":200,"bytes":10}',
        '{"ip":"2.2.2.2","status":500,"bytes":5}',
        '{"ip":"3.3.3.3","status":200,"bytes":7}',
        '{"ip":"ünï","status":404,"bytes":1}',
    ]
    assert result.part_size == os.path.getsize(parts_dir / result.part)
    assert (parts_dir / result.part).read_bytes().endswith(b"}\n")
    assert (result.records_in, result.records_out, result.malformed, result.undecodable) == (
        5,
        4,
        1,
        0,
    )
    assert result.bytes_read == len(LOG_TEXT.encode())
    assert result.partials == {
        "requests": 4,
        "bytes": {"n": 4, "int": 23},
        "by_status": {"200": 2, "500": 1, "404": 1},
        "errors": 1,
    }
    assert result.pid == os.getpid()
    assert result.duration_s >= 0
    assert leftovers(parts_dir) == []
    pickle.loads(pickle.dumps(result))  # it must travel back to the parent
    json.dumps(result.partials)  # and be stored as JSON


def test_range_tasks_together_give_the_whole_file(parts_dir: Path, log_file: Path) -> None:
    runner = TaskRunner(job(parts_dir))
    whole = runner.run(whole_task(log_file))
    lines: list[str] = []
    counts = [0, 0, 0]
    for task in sorted(range_tasks(log_file, 7), key=lambda t: t.offset):
        result = runner.run(task)
        assert result.ok, result.error
        if result.part is not None:  # a range that owns no line has no part
            lines += part_lines(parts_dir, result.part)
        counts[0] += result.records_in
        counts[1] += result.records_out
        counts[2] += result.malformed
    assert lines == part_lines(parts_dir, whole.part)
    assert counts == [whole.records_in, whole.records_out, whole.malformed]


def test_many_records_are_all_written(parts_dir: Path, tmp_path: Path) -> None:
    """More records than one write buffer holds."""
    path = tmp_path / "big.log"
    path.write_bytes(b"".join(b"%d.0.0.1 200 %d\n" % (i, i) for i in range(10_000)))
    result = TaskRunner(job(parts_dir)).run(whole_task(path))
    assert result.ok
    lines = part_lines(parts_dir, result.part)
    assert result.records_out == len(lines) == 10_000
    assert json.loads(lines[4096]) == {"ip": "4096.0.0.1", "status": 200, "bytes": 4096}
    assert result.partials["bytes"]["int"] == sum(range(10_000))


def test_empty_range_gives_no_part(parts_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "empty.log"
    path.write_bytes(b"")
    (task,) = range_tasks(path, 100)
    result = TaskRunner(job(parts_dir)).run(task)
    assert result.ok
    assert (result.records_in, result.records_out, result.part_size) == (0, 0, 0)
    assert result.part is None
    assert os.listdir(parts_dir) == [parts.TMP_DIR]
    assert result.partials["requests"] == 0


def test_undecodable_bytes_are_counted_not_fatal(parts_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "bad.log"
    path.write_bytes(b"ok\nbad \xff byte\n")
    result = TaskRunner(job(parts_dir, steps=(), stats={})).run(whole_task(path))
    assert result.ok
    assert result.undecodable == 1
    assert part_lines(parts_dir, result.part) == ['{"line":"ok"}', '{"line":"bad \ufffd byte"}']


def test_bytes_format_record_is_base64_in_the_part(parts_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "blob.bin"
    path.write_bytes(b"\x00\xff\x10")
    result = TaskRunner(job(parts_dir, format="bytes", steps=(), stats={})).run(whole_task(path))
    assert result.ok
    (line,) = part_lines(parts_dir, result.part)
    assert json.loads(line) == {"path": str(path), "size": 3, "data": "AP8Q"}


def test_non_utf8_file_name_in_a_record_gives_a_valid_utf8_part(
    parts_dir: Path, tmp_path: Path
) -> None:
    path = tmp_path / os.fsdecode(b"bad\xff.bin")
    path.write_bytes(b"x")
    result = TaskRunner(job(parts_dir, format="bytes", steps=(), stats={})).run(whole_task(path))
    assert result.ok, result.error
    raw = (parts_dir / result.part).read_bytes()
    text = raw.decode("utf-8")  # strict: the part is valid UTF-8
    record = json.loads(text)
    assert os.fsencode(record["path"]) == os.fsencode(str(path))
    assert result.part_size == len(raw)


def test_write_records_false_writes_no_part(tmp_path: Path, log_file: Path) -> None:
    missing = tmp_path / "no-parts-here"
    result = TaskRunner(job(missing, write_records=False)).run(whole_task(log_file))
    assert result.ok, result.error
    assert (result.part, result.part_size) == (None, 0)
    assert (result.records_in, result.records_out, result.malformed) == (5, 4, 1)
    assert result.partials["requests"] == 4
    assert not missing.exists()


def test_the_same_task_twice_gives_identical_parts(parts_dir: Path, log_file: Path) -> None:
    runner = TaskRunner(job(parts_dir))
    task = whole_task(log_file)
    first = runner.run(task)
    data = (parts_dir / first.part).read_bytes()
    second = runner.run(task)
    assert second.part == first.part
    assert (parts_dir / second.part).read_bytes() == data
    assert second.partials == first.partials


# --- failures --------------------------------------------------------------------------

FAILING_PLUGIN = """
def explode_on_three(record):
    if record["line"].startswith("3.3.3.3"):
        raise ValueError("cannot handle 3.3.3.3")
    return record
"""


def test_step_that_raises_fails_the_task_cleanly(parts_dir: Path, log_file: Path, plugin) -> None:
    module = plugin(FAILING_PLUGIN)
    steps = ({"call": f"{module}:explode_on_three"}, *LOG_STEPS)
    task = whole_task(log_file)
    result = TaskRunner(job(parts_dir, steps=steps)).run(task)
    assert result.ok is False
    assert result.error_kind == "error"
    offset = LOG_TEXT.encode().index(b"3.3.3.3")
    assert result.error == (
        f"{log_file}: record at byte offset {offset}: ValueError: cannot handle 3.3.3.3"
    )
    assert "explode_on_three" in result.traceback
    assert result.part is None
    assert os.listdir(parts_dir) == [parts.TMP_DIR]  # no final part
    assert leftovers(parts_dir) == []  # and no temporary one
    pickle.loads(pickle.dumps(result))


def test_step_that_raises_in_a_later_range_names_the_absolute_offset(
    parts_dir: Path, log_file: Path, plugin
) -> None:
    module = plugin(FAILING_PLUGIN)
    runner = TaskRunner(job(parts_dir, steps=({"call": f"{module}:explode_on_three"},)))
    offset = LOG_TEXT.encode().index(b"3.3.3.3")
    results = [runner.run(t) for t in range_tasks(log_file, 10)]
    failed = [r for r in results if not r.ok]
    assert len(failed) == 1
    assert f"record at byte offset {offset}:" in failed[0].error
    published = {r.part for r in results if r.ok and r.part}
    assert sorted(os.listdir(parts_dir)) == sorted([*published, parts.TMP_DIR])
    assert not any(r.part for r in failed)


def test_a_batch_shares_one_part_and_a_failed_task_leaves_nothing_in_it(
    parts_dir: Path, tmp_path: Path, plugin
) -> None:
    module = plugin(FAILING_PLUGIN)
    runner = TaskRunner(job(parts_dir, steps=({"call": f"{module}:explode_on_three"},)))
    texts = {"a.log": "1.1.1.1 200 1\n", "b.log": "3.3.3.3 200 3\n", "c.log": "2.2.2.2 200 2\n"}
    tasks = []
    for name, text in texts.items():
        (tmp_path / name).write_text(text)
        (task,) = range_tasks(tmp_path / name, 1000)
        tasks.append(task)
    batch = Batch.of(tuple(tasks))
    a, b, c = runner.run_batch(batch)
    assert (a.ok, b.ok, c.ok) == (True, False, True)
    assert a.part == c.part == batch.part_name and b.part is None
    data = (parts_dir / batch.part_name).read_bytes()
    assert data[a.part_offset : a.part_offset + a.part_size] == b'{"line":"1.1.1.1 200 1"}\n'
    assert data[c.part_offset : c.part_offset + c.part_size] == b'{"line":"2.2.2.2 200 2"}\n'
    assert len(data) == a.part_size + c.part_size  # nothing of b
    assert leftovers(parts_dir) == []


def test_step_that_raises_without_writing_records(tmp_path: Path, log_file: Path, plugin):
    module = plugin(FAILING_PLUGIN)
    steps = ({"call": f"{module}:explode_on_three"},)
    result = TaskRunner(job(tmp_path / "p", steps=steps, write_records=False)).run(
        whole_task(log_file)
    )
    assert (result.ok, result.error_kind) == (False, "error")
    assert "record at byte offset" in result.error and str(log_file) in result.error


def test_csv_failure_names_the_row(parts_dir: Path, tmp_path: Path, plugin) -> None:
    module = plugin(
        "def check(record):\n"
        "    if record['a'] == 'bad':\n"
        "        raise KeyError('no')\n"
        "    return record\n"
    )
    path = tmp_path / "t.csv"
    path.write_text("a,b\nx,1\ny,2\nbad,3\n")
    result = TaskRunner(
        job(parts_dir, format="csv", steps=({"call": f"{module}:check"},), stats={})
    ).run(whole_task(path))
    assert not result.ok
    assert result.error.startswith(f"{path}: line 4: KeyError")
    assert leftovers(parts_dir) == [] and os.listdir(parts_dir) == [parts.TMP_DIR]


def test_unreadable_input_is_an_error_result_naming_the_file(parts_dir: Path, tmp_path):
    path = tmp_path / "gone.log"
    task = TaskSpec("t-gone", str(path), 0, None, 10, 1)
    result = TaskRunner(job(parts_dir)).run(task)
    assert (result.ok, result.error_kind) == (False, "error")
    assert result.error.startswith(f"{path}: FileNotFoundError")
    assert "record at" not in result.error
    assert os.listdir(parts_dir) == [parts.TMP_DIR] and leftovers(parts_dir) == []


def test_corrupt_compressed_input_is_an_error_result(parts_dir: Path, tmp_path: Path):
    path = tmp_path / "bad.gz"
    path.write_bytes(b"\x1f\x8b\x08\x00not really gzip data")
    result = TaskRunner(job(parts_dir)).run(whole_task(path, compression="gz"))
    assert (result.ok, result.error_kind) == (False, "error")
    assert str(path) in result.error
    assert os.listdir(parts_dir) == [parts.TMP_DIR] and leftovers(parts_dir) == []


# --- pool_run / init_worker ------------------------------------------------------------


def test_pool_run_before_init_returns_an_error_result(
    monkeypatch: pytest.MonkeyPatch, log_file: Path
) -> None:
    monkeypatch.setattr(worker, "_PROCESS", {})
    task = whole_task(log_file)
    output = pool_run(Batch.of((task,)))
    (result,) = output.results
    assert output.batch_id == task.task_id and output.part is None
    assert isinstance(result, TaskResult)
    assert (result.task_id, result.ok, result.error_kind) == (task.task_id, False, "error")
    assert str(log_file) in result.error
    assert "not initialised" in result.error


def test_pool_run_reports_a_failed_init(monkeypatch: pytest.MonkeyPatch, log_file: Path):
    monkeypatch.setattr(worker, "_PROCESS", {"error": "ValueError: step 1: bad regex"})
    (result,) = pool_run(Batch.of((whole_task(log_file),))).results
    assert not result.ok
    assert "cannot start the worker" in result.error
    assert "bad regex" in result.error


def in_pool(ctx: Any, job_spec: JobSpec, task: TaskSpec) -> TaskResult:
    pool = ctx.Pool(1, initializer=worker.init_worker, initargs=(job_spec,))
    try:
        (result,) = pool.apply_async(pool_run, (Batch.of((task,)),)).get(30).results
        return result
    finally:
        pool.close()  # workers leave on the sentinel (they ignore SIGTERM)
        pool.join()


@pytest.mark.timeout(60)
def test_in_a_pool(parts_dir: Path, log_file: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    good = job(parts_dir)
    bad = job(parts_dir, steps=({"nope": 1},))
    task = whole_task(log_file)
    result = in_pool(ctx, good, task)
    assert result.ok and result.pid != os.getpid()
    assert len(part_lines(parts_dir, result.part)) == 4
    # a job that cannot compile does not kill the worker: every task gets an error result
    result = in_pool(ctx, bad, task)
    assert not result.ok
    assert "cannot start the worker" in result.error and "unknown step" in result.error


# --- make_encoder ----------------------------------------------------------------------


def test_encoder_is_compact_keeps_non_ascii_and_base64s_bytes() -> None:
    encode = make_encoder()
    record = {
        "s": "é日本\u2028",
        "b": b"\x00\xffhi",
        "ba": bytearray(b"\x01"),
        "n": [1, 2.5, None, True],
        "d": {"k": "v"},
    }
    text = encode(record)
    assert text == (
        '{"s":"é日本\u2028","b":"AP9oaQ==","ba":"AQ==","n":[1,2.5,null,true],"d":{"k":"v"}}'
    )
    assert "\n" not in text
    assert base64.b64decode(json.loads(text)["b"]) == b"\x00\xffhi"


def test_encoder_handles_sets_and_other_objects_deterministically() -> None:
    encode = make_encoder()
    assert encode({"s": {3, 1, 2}}) == '{"s":[1,2,3]}'
    assert encode({"p": Path("/x/y")}) == '{"p":"/x/y"}'


def test_encoded_record_is_one_line_even_with_newlines_in_values() -> None:
    """Part files hold one JSON object per line."""
    text = make_encoder()({"a": "x\ny\r", "b": None})
    assert "\n" not in text and "\r" not in text
    assert json.loads(text) == {"a": "x\ny\r", "b": None}


# --- the generic path: a block split at once, or line by line -----------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from pipeline import readers  # noqa: E402
from pipeline.errors import MalformedRecord  # noqa: E402


def reject_odd(record: dict) -> dict:
    """A per-record plugin that rejects, drops and fans out by the record's status."""
    status = record["status"]
    if status % 7 == 0:
        raise MalformedRecord(f"status {status} is not wanted")
    if status % 5 == 0:
        return None
    if status % 3 == 0:
        return [record, {**record, "copy": True}]
    return record


def explode_at(record: dict) -> dict:
    if record["status"] == 999:
        raise ValueError("999 is too much")
    return record


def status_of_line(record: dict) -> dict | None:
    """The status a log line's second word gives, or the line dropped (no regex step)."""
    words = record["line"].split()
    if len(words) < 2 or not words[1].isdecimal():
        return None
    record["status"] = int(words[1])
    return record


def _then_reject(record: dict) -> Any:
    yield record
    raise MalformedRecord("half way")


def odd_returns(record: dict) -> Any:
    """Every other kind of return a plugin may give: a mapping that is not a dict, a
    generator (rejecting half way for some), a tuple holding a non-mapping (the task fails)."""
    status = record["status"]
    if status % 4 == 0:
        return MappingProxyType({**record, "proxy": True})
    if status % 6 == 1:
        return (dict(record) for _ in range(2))
    if status % 10 == 3:
        return _then_reject(record)
    if status % 13 == 0:
        raise MalformedRecord()
    if status == 997:
        return (record, "no mapping")
    return record


def reject_odd_of_line(record: dict) -> Any:
    """``reject_odd`` of the line's status: a chain that is one call, handed the lines."""
    found = status_of_line(record)
    return None if found is None else reject_odd(found)


def explode_at_of_line(record: dict) -> Any:
    found = status_of_line(record)
    return None if found is None else explode_at(found)


def odd_returns_of_line(record: dict) -> Any:
    found = status_of_line(record)
    return None if found is None else odd_returns(found)


log_lines = st.lists(
    st.one_of(
        st.builds(
            lambda s, b: f"10.0.0.{s % 9} {s} {b}", st.integers(100, 998), st.integers(0, 99)
        ),
        st.sampled_from(["garbage", "", "ünï 404 1", "1.1.1.1 abc 3", "x 999 1"]),
    ),
    max_size=60,
)


def run_both(parts_dir: Path, path: Path, steps: tuple, chunk: int, monkeypatch) -> tuple:
    """The task results and parts with blocks decoded and split at once, and line by line
    (the reference: no encoding is taken to split like its bytes)."""
    outs = []
    for line_by_line in (False, True):
        with monkeypatch.context() as patched:
            if line_by_line:
                patched.setattr(readers, "BLOCK_SPLIT_ENCODINGS", frozenset())
            runner = TaskRunner(job(parts_dir, steps=steps))
            runner.block_size = 64
            results = []
            for task in range_tasks(path, chunk):
                output = runner.execute(Batch.of((task,)))
                result = output.results[0]
                part = (parts_dir / result.part).read_bytes() if result.part else b""
                results.append(
                    (
                        result.ok,
                        result.error,
                        result.records_in,
                        result.records_out,
                        result.malformed,
                        result.rejected,
                        json.dumps(result.partials, sort_keys=True),
                        part,
                    )
                )
            outs.append(results)
    return outs[0], outs[1]


@settings(max_examples=60, deadline=None)
@given(lines=log_lines, chunk=st.sampled_from([40, 200, 10_000]), crlf=st.booleans())
def test_a_block_split_at_once_gives_what_line_by_line_gives(
    tmp_path_factory: pytest.TempPathFactory, lines: list[str], chunk: int, crlf: bool
) -> None:
    folder = tmp_path_factory.mktemp("blocks")
    parts_dir = folder / "parts"
    parts.prepare(str(parts_dir))
    path = folder / "in.log"
    path.write_bytes(("\r\n" if crlf else "\n").join(lines).encode() + b"\n")
    monkeypatch = pytest.MonkeyPatch()
    try:
        for plugin_fn in ("reject_odd", "explode_at", "odd_returns"):
            call = {"call": f"tests.unit.test_worker:{plugin_fn}"}
            # the log job's shape (a regex on line first, a call last: both run inline),
            # then other shapes: a call in the middle, two calls, a call on its own
            for steps in (
                (*LOG_STEPS[:2], call),
                (*LOG_STEPS[:2], call, {"filter": {"status": {"<": 900}}}),
                ({"call": "tests.unit.test_worker:status_of_line"}, call),
                ({"call": f"tests.unit.test_worker:{plugin_fn}_of_line"},),
            ):
                blocks, line_by_line = run_both(parts_dir, path, steps, chunk, monkeypatch)
                assert blocks == line_by_line
    finally:
        monkeypatch.undo()
