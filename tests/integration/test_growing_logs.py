"""Growing logs (``input.growing: true``): a log written, run over, appended to, rotated
by logrotate itself (create, copytruncate, compress, delaycompress) and by hand, with a
writer appending while runs go. After every run the store must equal that of one fresh
run over every line ever written, in the order written: no line missing, none twice."""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.config import load_config
from pipeline.runner import Run, RunOptions
from tests.dask_cluster import DaskCluster
from tests.integration.helpers import lines_config, read_json, run_cli, store_outputs

pytestmark = pytest.mark.timeout(300)

LINE_RE = r"^(?P<n>\d+) (?P<method>[A-Z]+) (?P<path>\S+) (?P<status>\d{3})$"


def log_line(i: int) -> bytes:
    return f"{i:06d} {('GET', 'POST', 'GET')[i % 3]} /p{i % 7} {(200, 404, 500)[i % 3]}\n".encode()


STEPS = [{"regex": LINE_RE}, {"types": {"n": "int", "status": "int"}}]
STATS = {
    "lines": {"count": True},
    "total": {"sum": "n"},
    "by_status": {"count_by": "status"},
    "top_paths": {"top": "path", "k": 3},
}


def config(folder: Path, out: str, paths: list[str], growing: bool, **execution: Any) -> Path:
    return lines_config(
        folder, out, paths, STEPS, STATS, chunk_size="2KiB", growing=growing, **execution
    )


class LogWorld:
    """A log folder and the truth about it: every stream of bytes ever written to the
    live file (a new one starts when the file is re-created or truncated), in order."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.logs = folder / "logs"
        self.logs.mkdir(parents=True)
        self.live = self.logs / "access.log"
        self.streams: list[bytearray] = []
        self.next_line = 0
        self.cfg = config(folder, "out", ["logs/access.log*"], growing=True)
        self.out = folder / "out"

    def write(self, n: int, partial: bytes = b"") -> None:
        """``n`` lines, then maybe the start of one more (to be ended by ``end_line``)."""
        data = b"".join(log_line(i) for i in range(self.next_line, self.next_line + n))
        self.next_line += n
        self.append(data + partial)

    def append(self, data: bytes) -> None:
        if not self.live.exists() or self.live.stat().st_size == 0:
            self.streams.append(bytearray())
        with open(self.live, "ab") as handle:
            handle.write(data)
        self.streams[-1] += data

    def end_line(self, rest: bytes) -> None:
        self.append(rest)

    def reference(self) -> bytes:
        """Every whole line ever written, in order (a line still being written is not one)."""
        text = b"".join(self.streams)
        return text[: text.rfind(b"\n") + 1]

    def run(self) -> None:
        result = run_cli("run", str(self.cfg), "-q")
        assert result.returncode == 0, result.stderr

    def check(self) -> None:
        """The store equals a fresh run's over the reference, in a store of its own."""
        ref = self.folder / "ref"
        shutil.rmtree(ref, ignore_errors=True)
        shutil.rmtree(self.folder / "refout", ignore_errors=True)
        ref.mkdir()
        (ref / "all.log").write_bytes(self.reference())
        cfg = config(self.folder, "refout", ["ref/all.log"], growing=False, executor="serial")
        fresh = Run(load_config(cfg), RunOptions(progress="none", quiet=True)).execute()
        assert fresh.exit_code == 0
        assert store_outputs(self.out) == store_outputs(self.folder / "refout")

    def plan(self) -> dict[str, set[str]]:
        """``{file name: reasons}`` as ``pipeline plan`` lists them."""
        result = run_cli("plan", str(self.cfg))
        assert result.returncode == 0, result.stderr
        reasons: dict[str, set[str]] = {}
        for line in result.stdout.splitlines():
            reason, path, _ = line.split(maxsplit=2)
            reasons.setdefault(Path(path).name, set()).add(reason)
        return reasons


def logrotate_binary() -> str:
    found = shutil.which("logrotate") or "/usr/sbin/logrotate"
    assert os.access(found, os.X_OK), "logrotate is needed: apt-get install logrotate"
    return found


def logrotate(world: LogWorld, options: list[str]) -> None:
    """Rotate the live log with logrotate itself (forced), keeping three old ones."""
    conf = world.folder / "logrotate.conf"
    body = "\n    ".join(["rotate 3", "missingok", *options])
    conf.write_text(f"{world.live} {{\n    {body}\n}}\n")
    conf.chmod(0o644)
    state = world.folder / "logrotate.state"
    done = subprocess.run(
        [logrotate_binary(), "-f", "-s", str(state), str(conf)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    if "copytruncate" not in options:
        return
    # the copy holds the stream so far; the live file starts a new one at its next write
    assert world.live.stat().st_size == 0


@pytest.mark.parametrize(
    "options",
    [
        ["create"],
        ["copytruncate"],
        ["create", "compress", "delaycompress"],
        ["create", "compress"],
        ["copytruncate", "compress", "delaycompress"],
    ],
    ids=["create", "copytruncate", "delaycompress", "compress", "copytruncate-delaycompress"],
)
def test_a_logrotate_sequence_counts_every_line_once(tmp_path: Path, options: list[str]) -> None:
    world = LogWorld(tmp_path)
    world.write(120)
    world.run()
    world.check()
    world.write(30, partial=b"000150 GET /p")  # a line still being written waits
    world.run()
    world.check()
    world.end_line(b"3 200\n")
    world.write(20)
    assert world.plan() == {"access.log": {"unchanged", "grew"}}
    world.run()
    world.check()
    for round_ in range(5):  # past "rotate 3": the oldest files are deleted
        world.write(7 + round_)
        logrotate(world, options)
        world.write(11)
        world.run()
        world.check()
    logrotate(world, options)  # two rotations between runs, the second of an empty log
    logrotate(world, options)
    world.write(3)
    world.run()
    world.check()
    world.run()  # nothing new: nothing runs
    assert read_json(tmp_path / "out" / "report.json")["tasks"]["done"] == 0
    world.check()


def test_plan_names_what_happened_to_each_file(tmp_path: Path) -> None:
    world = LogWorld(tmp_path)
    world.write(50)
    world.run()
    os.rename(world.live, world.logs / "access.log.1")
    world.write(5)
    assert world.plan() == {"access.log": {"new"}, "access.log.1": {"renamed"}}
    world.run()
    world.check()
    data = (world.logs / "access.log.1").read_bytes()
    (world.logs / "access.log.2.gz").write_bytes(gzip.compress(data))
    (world.logs / "access.log.1").unlink()
    assert world.plan()["access.log.2.gz"] == {"rotated"}
    world.run()
    world.check()
    shutil.copy(world.live, world.logs / "access.log.1")  # copytruncate, by hand
    world.live.write_bytes(b"")
    world.write(2)
    assert world.plan() == {
        "access.log": {"truncated"},
        "access.log.1": {"rotated"},
        "access.log.2.gz": {"unchanged"},
    }
    world.run()
    world.check()


def test_a_compressed_copy_yields_only_the_lines_never_processed(tmp_path: Path) -> None:
    """Lines written after the last run, before the log was compressed away, count once;
    the compressed file's last line counts even without its newline (it is final)."""
    world = LogWorld(tmp_path)
    world.write(40)
    world.run()
    world.write(9, partial=b"000049 GET /p0 200")  # the line never gets its newline
    data = world.live.read_bytes()
    (world.logs / "access.log.1.gz").write_bytes(gzip.compress(data))
    world.live.unlink()
    world.write(4)
    world.streams[0] += b"\n"  # in the reference, the final line is a whole line
    reasons = world.plan()
    assert reasons["access.log.1.gz"] == {"rotated"}
    # a new file at the same path: "truncated" when it was given the deleted one's inode
    assert reasons["access.log"] in ({"new"}, {"truncated"})
    world.run()
    report = read_json(tmp_path / "out" / "report.json")
    assert report["run"]["records"] == 9 + 1 + 4
    world.check()


def test_growing_logs_on_a_dask_cluster(dask_cluster: DaskCluster) -> None:
    """The same guarantees on a cluster whose workers see the logs (a shared folder) but
    neither the config's folder nor the store: renames, a compressed copy, a copy left by
    copytruncate."""
    world = LogWorld(dask_cluster.shared / "growing")
    private = dask_cluster.private / "growing"
    private.mkdir()
    world.out = private / "out"
    world.cfg = config(
        private,
        "out",
        [str(world.logs / "access.log*")],
        growing=True,
        executor="dask",
        address=dask_cluster.address,
    )
    world.write(200)
    world.run()
    world.check()
    os.rename(world.live, world.logs / "access.log.1")
    world.write(20)
    world.run()
    world.check()
    data = (world.logs / "access.log.1").read_bytes()
    (world.logs / "access.log.2.gz").write_bytes(gzip.compress(data))
    (world.logs / "access.log.1").unlink()
    shutil.copy(world.live, world.logs / "access.log.1")
    world.live.write_bytes(b"")
    world.write(5)
    world.run()
    world.check()


def test_the_last_line_of_a_log_rotated_away_counts_once_it_rests(tmp_path: Path) -> None:
    """A plain file renamed away with an unfinished last line: the line waits while a
    writer may still end it, and counts once a run found the file as it was."""
    world = LogWorld(tmp_path)
    world.write(30, partial=b"000030 GET /p2 2")
    world.run()
    os.rename(world.live, world.logs / "access.log.1")
    world.write(3)
    world.run()  # renamed since the last run: its last line may still be ended
    assert read_json(tmp_path / "out" / "stats.json")["lines"] == 30 + 3
    assert world.plan()["access.log.1"] == {"rotated"}
    world.run()
    world.streams[0] += b"\n"  # in the reference, the final line is a whole line
    world.check()
    assert read_json(tmp_path / "out" / "report.json")["run"]["records"] == 1
    world.run()  # and only once
    world.check()


def test_without_growing_a_renamed_log_counts_again(tmp_path: Path) -> None:
    """Identity stays by path: equal content under two names counts twice."""
    world = LogWorld(tmp_path)
    world.cfg = config(tmp_path, "out", ["logs/access.log*"], growing=False)
    world.write(30)
    world.run()
    shutil.copy(world.live, world.logs / "access.log.1")
    world.run()
    assert read_json(tmp_path / "out" / "stats.json")["lines"] == 60


# --- a writer appending while runs go -----------------------------------------------

WRITER = """
import os, sys, time
live, stop, total = sys.argv[1], sys.argv[2], int(sys.argv[3])
def line(i):
    method, status = ("GET", "POST", "GET")[i % 3], (200, 404, 500)[i % 3]
    return f"{i:06d} {method} /p{i % 7} {status}\\n".encode()
i = 0
while i < total and not os.path.exists(stop):
    data = line(i)
    cut = 1 + i % (len(data) - 1)
    with open(live, "ab") as handle:  # half a line, then the rest: a line being written
        handle.write(data[:cut])
        handle.flush()
        handle.write(data[cut:])
    i += 1
with open(stop + ".done", "w") as handle:
    handle.write(str(i))
"""


def test_a_writer_appending_while_runs_go(tmp_path: Path) -> None:
    world = LogWorld(tmp_path)
    stop = tmp_path / "stop"
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(world.live), str(stop), "200000"],
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not (world.live.exists() and b"\n" in world.live.read_bytes()[:4096]):
            assert time.monotonic() < deadline, "the writer wrote no line"
            time.sleep(0.01)
        counts = []
        for round_ in range(6):
            world.run()
            counts.append(read_json(tmp_path / "out" / "stats.json")["lines"])
            if round_ == 2:  # a rename while the writer writes: its next open makes a new log
                os.rename(world.live, world.logs / "access.log.1")
        stop.write_text("")
        deadline = time.monotonic() + 60
        while not (tmp_path / "stop.done").exists():
            assert time.monotonic() < deadline, "the writer did not stop"
            time.sleep(0.05)
    finally:
        writer.kill()
        writer.wait(timeout=30)
    written = int((tmp_path / "stop.done").read_text())
    assert counts == sorted(counts) and counts[-1] > 0
    world.run()
    files = sorted(world.logs.iterdir(), key=lambda p: p.name, reverse=True)  # .1, then live
    everything = b"".join(p.read_bytes() for p in files)
    assert everything == b"".join(log_line(i) for i in range(written))
    world.streams = [bytearray(everything)]
    assert read_json(tmp_path / "out" / "stats.json")["lines"] == written
    world.check()


# --- any sequence of appends, renames, compressions, truncations and runs -------------

operation = st.one_of(
    st.tuples(st.just("append"), st.integers(0, 30), st.booleans()),
    st.tuples(st.just("rotate")),  # renamed: .N -> .N+1, the log -> .1
    st.tuples(st.just("copytruncate")),
    st.tuples(st.just("compress")),  # the newest plain rotated file, gzipped
    st.tuples(st.just("drop")),  # the oldest rotated file deleted
    st.tuples(st.just("run"), st.sampled_from(["200B", "2KiB", "1MiB"])),
)


class Rotator:
    """logrotate's moves by hand, on a ``LogWorld``. A rotated file is deleted only once a
    run has seen all of it: lines deleted before any run saw them cannot count."""

    def __init__(self, world: LogWorld) -> None:
        self.world = world
        self.pending = b""  # the rest of a line still being written
        self.stream_of: dict[str, int] = {}  # file name -> the stream it holds
        self.unseen: set[int] = set()  # streams written since the last run

    def rotated(self) -> list[Path]:
        found = [p for p in self.world.logs.iterdir() if p.name != "access.log"]
        return sorted(found, key=lambda p: int(p.name.split(".")[2]))

    def rename(self, path: Path, name: str) -> None:
        path.rename(path.with_name(name))
        self.stream_of[name] = self.stream_of.pop(path.name, -1)  # -1: an empty file

    def shift(self) -> None:
        for path in reversed(self.rotated()):
            number = int(path.name.split(".")[2])
            suffix = ".gz" if path.name.endswith(".gz") else ""
            self.rename(path, f"access.log.{number + 1}{suffix}")

    def wrote(self) -> None:
        self.stream_of["access.log"] = len(self.world.streams) - 1
        self.unseen.add(len(self.world.streams) - 1)

    def ran(self) -> None:
        self.unseen.clear()

    def apply(self, op: tuple[Any, ...]) -> None:
        world = self.world
        if self.pending:  # rotations happen between lines; an append ends the line first
            world.end_line(self.pending)
            self.pending = b""
            self.wrote()
        if op[0] == "append":
            line = log_line(world.next_line + op[1])
            world.write(op[1], partial=line[:5] if op[2] else b"")
            if op[2]:
                world.next_line += 1
                self.pending = line[5:]
            if world.live.exists() and world.live.stat().st_size:
                self.wrote()
        elif op[0] == "rotate" and world.live.exists():
            self.shift()
            self.rename(world.live, "access.log.1")
        elif op[0] == "copytruncate" and world.live.exists():
            self.shift()
            shutil.copyfile(world.live, world.logs / "access.log.1")
            self.stream_of["access.log.1"] = self.stream_of.get("access.log", -1)
            world.live.write_bytes(b"")
        elif op[0] == "compress":
            plain = [p for p in self.rotated() if not p.name.endswith(".gz")]
            if plain:
                target = plain[0].with_name(plain[0].name + ".gz")
                target.write_bytes(gzip.compress(plain[0].read_bytes()))
                shutil.copystat(plain[0], target)  # as gzip does: the log's own mtime
                self.stream_of[plain[0].name + ".gz"] = self.stream_of[plain[0].name]
                plain[0].unlink()
                del self.stream_of[plain[0].name]
        elif op[0] == "drop" and self.rotated():
            oldest = self.rotated()[-1]
            if self.stream_of.get(oldest.name, -1) not in self.unseen:
                oldest.unlink()
                del self.stream_of[oldest.name]


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=st.lists(operation, min_size=1, max_size=14))
def test_any_sequence_of_appends_rotations_and_runs(
    tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[Any, ...]]
) -> None:
    """After every run the store is a fresh run's over every line ever written, whatever
    was renamed, copied, truncated, compressed or deleted in between."""
    folder = tmp_path_factory.mktemp("rotation")
    world = LogWorld(folder)
    world.cfg = config(folder, "out", ["logs/access.log*"], growing=True, executor="serial")
    rotator = Rotator(world)
    world.write(5)
    rotator.wrote()
    for op in [*ops, ("run", "2KiB")]:
        if op[0] != "run":
            rotator.apply(op)
            continue
        cfg = load_config(world.cfg, overrides=[f"input.chunk_size={op[1]}"])
        assert Run(cfg, RunOptions(progress="none", quiet=True)).execute().exit_code == 0
        rotator.ran()
        world.check()
