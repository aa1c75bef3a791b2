"""Growing logs' pure parts: reading a file's ready bytes and windows, and the ledger's
stream moves (the matching itself is driven end to end in
tests/integration/test_growing_logs.py)."""

from __future__ import annotations

import gzip
import io
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline import rotation
from pipeline.models import InputFile, TaskSpec
from pipeline.rotation import Probe, _collect
from pipeline.store.ledger import Ledger, SeenRow, StreamRow


def probe(path: Path, compression: str | None = None) -> Probe:
    st_ = path.stat()
    return Probe(InputFile(str(path), st_.st_size, st_.st_mtime_ns, compression), st_)


@given(
    data=st.binary(max_size=300),
    wanted=st.lists(st.tuples(st.integers(0, 320), st.integers(0, 40)), max_size=3),
    end=st.integers(0, 320),
)
def test_collect_gives_the_windows_and_whether_a_byte_follows(
    data: bytes, wanted: list[tuple[int, int]], end: int
) -> None:
    # the windows asked for are those of bytes before ``end`` (a range the stream holds)
    windows = [(min(start, end), min(start + length, end)) for start, length in wanted]

    class Trickle(io.BytesIO):  # a decompressor gives any number of bytes per read
        def read(self, size: int | None = -1) -> bytes:
            return super().read(min(7, size if size is not None and size >= 0 else 7))

    pieces, more = _collect(Trickle(data), windows, end)
    assert pieces == [data[a:b] for a, b in windows]
    assert more == (len(data) > end)


@pytest.mark.parametrize("scan", [3, 64 << 10])
def test_ready_ends_at_the_last_line_end_after_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scan: int
) -> None:
    monkeypatch.setattr(rotation, "SCAN", scan)
    path = tmp_path / "a.log"
    path.write_bytes(b"one\ntwo\nthree, still being writt")
    assert probe(path).ready(0) == 8
    assert probe(path).ready(8) == 8  # nothing whole after byte 8: it waits
    path.write_bytes(b"x" * 20)
    assert probe(path).ready(0) == 0


def test_the_first_bytes_of_a_compressed_file_are_decompressed(tmp_path: Path) -> None:
    text = b"".join(b"line %05d\n" % i for i in range(1000))
    path = tmp_path / "a.log.gz"
    path.write_bytes(gzip.compress(text))
    found = probe(path, "gz")
    assert found.first() == text[: rotation.HEAD]
    assert found.head(10) == probe_of_bytes(tmp_path, text).head(10)
    assert found.head(len(text) + 1) is None


def probe_of_bytes(tmp_path: Path, data: bytes) -> Probe:
    path = tmp_path / "plain.log"
    path.write_bytes(data)
    return probe(path)


def test_streams_pass_their_labels_along_a_rotation(tmp_path: Path) -> None:
    """``.1`` to ``.2`` and the log to ``.1`` in one plan: no label collides."""
    ledger = Ledger(tmp_path)
    run = ledger.start_run("job", "k")
    names = ["/l/a.log", "/l/a.log.1"]
    with ledger.recording_plan("k", run) as recorder:
        recorder.put_streams(StreamRow(i + 1, name, f"h{i}", 3) for i, name in enumerate(names))
        recorder.pending(
            [TaskSpec(f"t{i}", name, 0, 5, 5, 1) for i, name in enumerate(names)], every=True
        )
    with ledger.recording_plan("k", run) as recorder:
        recorder.move_streams([("/l/a.log.1", "/l/a.log.2"), ("/l/a.log", "/l/a.log.1")])
        recorder.replace_seen([SeenRow("/l/a.log.1", 1, 2, 5, 1, 1, 5)])
    assert [(s.seq, s.label) for s in ledger.streams()] == [(1, "/l/a.log.1"), (2, "/l/a.log.2")]
    assert sorted((r.task_id, r.path) for r in ledger.tasks()) == [
        ("t0", "/l/a.log.1"),
        ("t1", "/l/a.log.2"),
    ]
    assert ledger.seen() == [SeenRow("/l/a.log.1", 1, 2, 5, 1, 1, 5)]
    ledger.close()


def test_a_plain_file_without_a_whole_line_waits(tmp_path: Path) -> None:
    from pipeline.planning import Planner

    path = tmp_path / "a.log"
    path.write_bytes(b"no newline yet")
    found = probe(path)
    planner = Planner("lines", 1 << 20, "k", None, growing=True)
    plan = rotation.plan_growing([found.file], [], [], [], planner)
    assert [(d.note, d.run) for d in plan.decisions] == [("waiting", [])]
    assert plan.streams == [] and plan.seen == []
    os.truncate(path, 0)
