"""models: what crosses process boundaries pickles to an equal value, every field kept."""

from __future__ import annotations

import dataclasses
import pickle

from pipeline.models import Batch, PackedTasks, TaskResult, TaskSpec


def test_task_spec_and_batch_round_trip_every_field() -> None:
    mtime = 1_700_000_000_123_456_789
    spec = TaskSpec("id", "/d/caf\udce9.log", 8, 100, 900, mtime, "gz", "changed")
    other = spec._replace(task_id="id2", length=None, compression=None)
    batch = Batch.of((spec, other))
    for value in (spec, other, batch):
        for protocol in (2, pickle.HIGHEST_PROTOCOL):
            assert pickle.loads(pickle.dumps(value, protocol)) == value
    # a batch travels as one marshal blob: its tasks come back as TaskSpecs, not tuples
    # (which would compare equal)
    back = pickle.loads(pickle.dumps(batch, pickle.HIGHEST_PROTOCOL))
    assert [type(t) for t in back.tasks] == [TaskSpec, TaskSpec]
    assert back.tasks[0].covers_file is False


def test_task_result_round_trips_every_field() -> None:
    # every field set away from its default (checked below): a field the pickling forgot
    # would come back as its default and the comparison would fail
    result = TaskResult(
        task_id="t",
        ok=True,
        records_in=1,
        records_out=2,
        malformed=3,
        undecodable=4,
        bytes_read=5,
        partials={"n": 6},
        part="p.jsonl",
        part_offset=7,
        part_size=8,
        duration_s=0.5,
        pid=9,
        content="c0ffee",
        started=1_700_000_000.25,
        host="worker-host",
        error_kind="error",
        error="boom",
        traceback="Traceback ...",
        packed=PackedTasks(frozenset({"t", "u"}), "[]", {"n": 6}, b"/a", (2, 1), "p.jsonl", "r"),
        rejected=((10, "regex did not match"),),
        error_at=11,
    )
    defaults = TaskResult("t", ok=False)
    assert all(
        getattr(result, f.name) != getattr(defaults, f.name)
        for f in dataclasses.fields(TaskResult)
        if f.name != "task_id"
    ), "every field must differ from its default"
    for protocol in (2, pickle.HIGHEST_PROTOCOL):
        assert pickle.loads(pickle.dumps(result, protocol)) == result
