"""Bad inputs (RELIABILITY.md section 4, test plan 5.9): every input is processed, skipped
with a reason, or a failed task with a reason; never a traceback or a hang; nothing of a
failed task in ``records.jsonl`` or ``stats.json``; exit 0 when everything was processed
or skipped, 1 when a task failed.

Black-box: the CLI runs as a subprocess (``run_cli``) on generated inputs under
``tmp_path``; expected records come from a small oracle of the SPEC's line rules (split
on ``\\n`` only, one ``\\r`` before it dropped, undecodable bytes replaced and counted).
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import os
import random
import re
import socket
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from pipeline.digest import CONTENT_CHECK_MAX
from tests.integration.helpers import CliResult, run_cli, write_config

T = 30  # seconds: hard bound for every CLI subprocess
TRACEBACK = "Traceback (most recent call last)"
PLUGIN = "tests.faults.plugins_inputs:mutate"

pytestmark = pytest.mark.timeout(90)


# --- helpers --------------------------------------------------------------------------


def make_config(
    folder: Path,
    paths: list[str],
    out: Path,
    *,
    fmt: str = "lines",
    chunk_size: str = "8MiB",
    workers: int = 2,
    steps: list[dict[str, Any]] | None = None,
    name: str = "job.yaml",
) -> Path:
    config: dict[str, Any] = {
        "name": "faults",
        "input": {"paths": paths, "format": fmt, "chunk_size": chunk_size},
        "stats": {"n": {"count": True}},
        "output": {"dir": str(out), "records": "jsonl"},
        "execution": {"workers": workers, "retries": 0, "start_method": "fork"},
    }
    if steps:
        config["steps"] = steps
    return write_config(folder, config, name)


def expected_lines(data: bytes) -> tuple[list[str], int]:
    """The SPEC's ``lines`` records of ``data``: (texts, how many were undecodable)."""
    pieces = data.split(b"\n")
    last = pieces.pop()
    raw = [p[:-1] if p.endswith(b"\r") else p for p in pieces]
    if last:
        raw.append(last)  # a last line without "\n" is a record; a "\r" there is data
    texts: list[str] = []
    undecodable = 0
    for item in raw:
        try:
            texts.append(item.decode("utf-8"))
        except UnicodeDecodeError:
            undecodable += 1
            texts.append(item.decode("utf-8", "replace"))
    return texts, undecodable


def read_jsonl(path: Path) -> list[Any]:
    """Every line of a JSONL output: strict UTF-8, newline-terminated, valid JSON."""
    data = path.read_bytes()
    text = data.decode("utf-8")  # raises on anything that is not valid UTF-8
    if not text:
        return []
    assert text.endswith("\n"), f"{path}: last line not terminated"
    return [json.loads(line) for line in text[:-1].split("\n")]


def read_json(path: Path) -> Any:
    return json.loads(path.read_bytes().decode("utf-8"))


def assert_no_traceback(res: CliResult) -> None:
    assert TRACEBACK not in res.stderr, res.stderr
    assert TRACEBACK not in res.stdout, res.stdout


def assert_store_ok(out: Path) -> None:
    """SQLite integrity, no temporary files left, nothing world-writable, JSON parses."""
    db = sqlite3.connect(out / "ledger.sqlite")
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        db.close()
    leftovers = [
        p
        for p in out.rglob("*")
        if p.name.startswith(".tmp-")
        or (p.parent.name == ".tmp" and p.parent.parent.name == "parts")
    ]
    assert leftovers == [], leftovers
    for p in [out, *out.rglob("*")]:
        assert p.lstat().st_mode & 0o002 == 0, f"{p} is world-writable"
    read_json(out / "stats.json")
    read_json(out / "report.json")


def line_records(out: Path) -> list[str]:
    records = read_jsonl(out / "records.jsonl")
    assert all(set(r) == {"line"} for r in records), records[:3]
    return [r["line"] for r in records]


# --- encodings, binary, empty, huge lines, line endings -------------------------------

HUGE = b"Y" * (1 << 20)


def mixed_inputs() -> dict[str, bytes]:
    rng = random.Random(5_8_10)
    binary = bytes(rng.randrange(256) for _ in range(48 * 1024))
    binary += b"\x00" * 300 + b"\r\n\x00\x00\n" + bytes(rng.randrange(256) for _ in range(5000))
    return {
        # invalid UTF-8 in the middle, at the start, and a truncated sequence at the end
        "a_invalid.log": (
            b"caf\xe9 au lait\nplain ascii\n\xff\xfe\xfd\nmid \xc3( end\ntail \xe2\x82"
        ),
        "b_binary.log": binary,
        "c_empty.log": b"",
        # one line of 1 MiB (chunk_size is 4 KiB): exactly one record
        "d_huge.log": b"head\n" + HUGE + b"\ntail-without-newline",
        "e_crlf.log": b"one\r\ntwo\r\nthree\r\n\r\nlast-no-newline\r",
        "f_separators.log": (
            "a\rb\n"
            "c\x0cd\n"
            "e\x85f\n"
            "g\u2028h\n"
            "i\u2029j\x1c\x1d\x1ek\x0b\n"
            "\rleading cr\n"
            "trailing cr\r\r\n"
            "nul\x00inside\n"
        ).encode("utf-8"),
    }


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One run over every kind of odd-but-valid text input, with a 4 KiB chunk size so
    task boundaries fall inside the huge line, CRLF pairs and multibyte characters; then
    a second run over the same inputs."""
    root = tmp_path_factory.mktemp("mixed")
    data = root / "data"
    data.mkdir()
    inputs = mixed_inputs()
    for name, content in inputs.items():
        (data / name).write_bytes(content)
    out = root / "out"
    cfg = make_config(root, [str(data / "*.log")], out, chunk_size="4KiB")
    first = run_cli("run", str(cfg), timeout=T)
    records = (out / "records.jsonl").read_bytes()
    report = read_json(out / "report.json")
    stats = read_json(out / "stats.json")
    second = run_cli("run", str(cfg), timeout=T)
    return {
        "inputs": inputs,
        "out": out,
        "first": first,
        "records": records,
        "report": report,
        "stats": stats,
        "second": second,
        "report2": read_json(out / "report.json"),
    }


@pytest.mark.timeout(90)
def test_odd_text_inputs_are_processed_exit_0(mixed_run: dict[str, Any]) -> None:
    res = mixed_run["first"]
    assert res.returncode == 0, res.stderr
    assert_no_traceback(res)
    report = mixed_run["report"]
    assert report["status"] == "ok"
    assert report["failures"] == []
    assert report["tasks"]["failed"] == 0
    assert report["tasks"]["pending"] == 0
    assert_store_ok(mixed_run["out"])


@pytest.mark.timeout(90)
def test_odd_text_inputs_records_exact(mixed_run: dict[str, Any]) -> None:
    """Invalid UTF-8 and binary files are lines with U+FFFD; CRLF loses its CR; a lone
    CR, FF, NEL, LS, PS, NUL... are data; no record lost, duplicated, split or invented."""
    expected: list[str] = []
    for name in sorted(mixed_run["inputs"], key=os.fsencode):
        texts, _ = expected_lines(mixed_run["inputs"][name])
        expected.extend(texts)
    got = line_records(mixed_run["out"])
    assert len(got) == len(expected)
    assert got == expected
    assert mixed_run["stats"] == {"n": len(expected)}
    report = mixed_run["report"]
    assert report["records"]["in"] == len(expected)
    assert report["records"]["out"] == len(expected)


@pytest.mark.timeout(90)
def test_undecodable_bytes_are_counted(mixed_run: dict[str, Any]) -> None:
    bad = {name: expected_lines(content)[1] for name, content in mixed_run["inputs"].items()}
    assert bad["a_invalid.log"] == 4
    assert bad["b_binary.log"] > 0
    report = mixed_run["report"]
    assert report["records"]["undecodable"] == sum(bad.values())
    assert report["records"]["malformed"] == 0
    got = line_records(mixed_run["out"])
    assert "caf\ufffd au lait" in got
    assert "mid \ufffd( end" in got


@pytest.mark.timeout(90)
def test_line_longer_than_chunk_is_one_record(mixed_run: dict[str, Any]) -> None:
    got = line_records(mixed_run["out"])
    assert got.count(HUGE.decode()) == 1
    start = got.index("head")
    assert got[start : start + 3] == ["head", HUGE.decode(), "tail-without-newline"]


@pytest.mark.timeout(90)
def test_line_endings_and_separators_are_data(mixed_run: dict[str, Any]) -> None:
    got = line_records(mixed_run["out"])
    start = got.index("one")
    assert got[start : start + 5] == ["one", "two", "three", "", "last-no-newline\r"]
    start = got.index("a\rb")
    assert got[start : start + 8] == [
        "a\rb",
        "c\x0cd",
        "e\x85f",
        "g\u2028h",
        "i\u2029j\x1c\x1d\x1ek\x0b",
        "\rleading cr",
        "trailing cr\r",
        "nul\x00inside",
    ]


@pytest.mark.timeout(90)
def test_empty_file_is_a_done_task_and_rerun_skips_everything(mixed_run: dict[str, Any]) -> None:
    report, second = mixed_run["report"], mixed_run["second"]
    assert report["tasks"]["done"] == report["tasks"]["total"]
    assert second.returncode == 0, second.stderr
    assert_no_traceback(second)
    report2 = mixed_run["report2"]
    assert report2["tasks"]["total"] == report["tasks"]["total"]
    assert report2["tasks"]["skipped"] == report2["tasks"]["total"]  # the empty file too
    assert report2["tasks"]["done"] == 0
    assert (mixed_run["out"] / "records.jsonl").read_bytes() == mixed_run["records"]


# --- compressed inputs ----------------------------------------------------------------


def tagged(tag: str, n: int) -> bytes:
    return "".join(f"{tag} L{i:05d} payload é\n" for i in range(n)).encode()


def flip(data: bytes, index: int) -> bytes:
    out = bytearray(data)
    out[index] ^= 0x55
    return bytes(out)


@pytest.mark.timeout(60)
def test_corrupt_and_truncated_compressed_inputs_fail_alone(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    good = {
        "good.gz": tagged("GZ1", 300) + tagged("GZ2", 200),
        "good.bz2": tagged("BZ", 400),
        "good.xz": tagged("XZ", 400),
        "plain.log": tagged("PLAIN", 100),
    }
    # two gzip members: both are read
    (data / "good.gz").write_bytes(
        gzip.compress(tagged("GZ1", 300), mtime=0) + gzip.compress(tagged("GZ2", 200), mtime=0)
    )
    (data / "good.bz2").write_bytes(bz2.compress(good["good.bz2"]))
    (data / "good.xz").write_bytes(lzma.compress(good["good.xz"]))
    (data / "plain.log").write_bytes(good["plain.log"])

    gz = gzip.compress(tagged("BADGZ", 3000), mtime=0)
    bz = bz2.compress(tagged("BADBZ", 3000))
    xz = lzma.compress(tagged("BADXZ", 3000))
    bad = {
        "trunc.gz": (gz[: len(gz) // 2], "ended before the end-of-stream"),
        "trunc.bz2": (bz[: len(bz) // 2], "ended before the end-of-stream"),
        "trunc.xz": (xz[: len(xz) // 2], "ended before the end-of-stream"),
        "crc.gz": (flip(gz, len(gz) - 8), "CRC check failed"),
        "corrupt.bz2": (flip(bz, len(bz) // 2), "Invalid data stream"),
        "corrupt.xz": (flip(xz, len(xz) // 2), "Corrupt input data"),
        "notgz.gz": (tagged("NOTGZ", 50), "Not a gzipped file"),
        "short-trailer.gz": (gz[:-4], "ended before the end-of-stream"),
    }
    for name, (content, _) in bad.items():
        (data / name).write_bytes(content)

    out = tmp_path / "out"
    cfg = make_config(tmp_path, [str(data / "*")], out)
    res = run_cli("run", str(cfg), timeout=T)
    assert res.returncode == 1, res.stderr
    assert_no_traceback(res)

    report = read_json(out / "report.json")
    assert report["status"] == "failed"
    assert report["exit_code"] == 1
    assert report["tasks"]["failed"] == len(bad)
    assert report["tasks"]["done"] == len(good)
    failures = {os.path.basename(f["path"]): f for f in report["failures"]}
    assert set(failures) == set(bad)
    for name, (_, message) in bad.items():
        failure = failures[name]
        assert failure["kind"] == "error"
        assert failure["path"] == str(data / name)
        assert failure["range"] is None
        assert str(data / name) in failure["error"]
        assert message in failure["error"], failure

    # nothing of a failed task leaks: records and stats are exactly the good files'
    expected: list[str] = []
    for name in sorted(good, key=os.fsencode):
        expected.extend(expected_lines(good[name])[0])
    assert line_records(out) == expected
    assert read_json(out / "stats.json") == {"n": len(expected)}
    assert report["records"]["in"] == len(expected)
    assert_store_ok(out)


@pytest.mark.timeout(60)
def test_failed_task_with_undecodable_name_is_reported(tmp_path: Path) -> None:
    """A corrupt .gz whose name holds a byte that is not UTF-8 is a failed task like any
    other: report.json stays valid UTF-8 JSON and names it (escaped); the rest runs."""
    data = tmp_path / "data"
    data.mkdir()
    name = os.fsdecode(b"trunc \xff \xc3\xbcni.gz")
    gz = gzip.compress(tagged("BADGZ", 2000), mtime=0)
    (data / name).write_bytes(gz[: len(gz) // 2])
    for i in range(4):
        (data / f"ok{i}.log").write_bytes(tagged(f"OK{i}", 50))
    out = tmp_path / "out"
    cfg = make_config(tmp_path, [str(data / "*")], out, workers=1)
    res = run_cli("run", str(cfg), timeout=T)
    assert_no_traceback(res)
    assert "internal error" not in res.stderr, res.stderr
    assert res.returncode == 1, res.stderr
    report = read_json(out / "report.json")  # strict UTF-8
    assert report["tasks"]["done"] == 4
    assert [f["path"] for f in report["failures"]] == [str(data / name)]
    assert "ended before the end-of-stream" in report["failures"][0]["error"]
    assert "\\udcff" in (out / "report.json").read_text("utf-8")  # escaped, not dropped
    assert len(line_records(out)) == 200
    assert_store_ok(out)


# --- special files, symlink loops -----------------------------------------------------


@pytest.mark.timeout(60)
def test_special_files_and_symlink_loops_are_skipped(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "dir.log").mkdir()  # a directory whose name matches the glob
    real = {
        "real.log": tagged("REAL", 20),
        "sub/inner.log": tagged("INNER", 10),
        "dir.log/nested.log": tagged("NESTED", 5),
    }
    for name, content in real.items():
        (data / name).write_bytes(content)
    os.mkfifo(data / "fifo.log")  # no writer: opening it would block for ever
    os.symlink("..", data / "sub" / "up")  # a directory cycle under **
    os.symlink(data, data / "sub" / "again")  # another way round the cycle
    os.symlink("loop_b.log", data / "loop_a.log")  # a -> b -> a
    os.symlink("loop_a.log", data / "loop_b.log")
    os.symlink("real.log", data / "alias.log")  # same file twice: processed once
    os.symlink("/dev/zero", data / "zero.log")  # endless
    sock = socket.socket(socket.AF_UNIX)
    sock_path = data / "sock.log"
    try:
        sock.bind(str(sock_path))
    except OSError:
        sock_path = None  # path too long for AF_UNIX: the other specials still count
    finally:
        sock.close()

    out = tmp_path / "out"
    cfg = make_config(tmp_path, [str(data / "**" / "*.log")], out)
    res = run_cli("run", str(cfg), timeout=20)
    assert res.returncode == 0, res.stderr
    assert_no_traceback(res)
    for name in ("fifo.log", "loop_a.log", "loop_b.log", "zero.log", "dir.log"):
        assert re.search(rf"warning: .*{re.escape(name)}", res.stderr), (name, res.stderr)
    if sock_path is not None:
        assert "sock.log" in res.stderr

    got = line_records(out)
    expected = [t for content in real.values() for t in expected_lines(content)[0]]
    assert sorted(got) == sorted(expected)  # each real file once, whatever path found it
    assert len(set(got)) == len(got)
    report = read_json(out / "report.json")
    assert report["tasks"]["failed"] == 0
    assert report["tasks"]["done"] == len(real)
    assert_store_ok(out)


# --- files changing between discovery and read ----------------------------------------

CASES = [
    # (action, when): "before" = another task changes the file before its task starts;
    # "during" = the file's own first record changes it while its task is reading (a
    # file read as a stream, over CONTENT_CHECK_MAX: small ones, read in one call, are
    # test_small_file_changed_after_its_read_is_processed_as_read).
    ("delete", "before"),
    ("truncate", "before"),
    ("append", "before"),
    ("delete", "during"),
    ("truncate", "during"),
    ("append", "during"),
]


def run_mutating(
    tmp_path: Path, out: Path, action: str, target: Path
) -> tuple[Path, dict[str, str], CliResult]:
    """One worker runs ``data/*.log`` through the mutate plugin, which does ``action`` to
    ``target`` once (on its first ``@@MUTATE@@`` record): the config, the plugin's
    environment (for the runs after) and the first run's result."""
    data = tmp_path / "data"
    cfg = make_config(tmp_path, [str(data / "*.log")], out, workers=1, steps=[{"call": PLUGIN}])
    env = {
        "FAULTS_MUTATE": f"{action}:{target}",
        "FAULTS_MUTATE_ONCE": str(tmp_path / "mutated.once"),
    }
    res = run_cli("run", str(cfg), timeout=T, env=env)
    assert (tmp_path / "mutated.once").exists(), "the plugin never fired"
    return cfg, env, res


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("action", "when"), CASES, ids=[f"{a}-{w}" for a, w in CASES])
def test_file_changed_after_discovery_fails_then_reruns(
    tmp_path: Path, action: str, when: str
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    trigger = data / "a_trigger.log"
    target = data / "b_target.log"
    other = data / "c_other.log"
    # workers: 1 and largest task first: the trigger's task runs before the target's
    trigger.write_bytes(b"@@MUTATE@@ trigger\n" + tagged("TRIG", 400))
    if when == "before":
        target_content = b"target first line\n" + tagged("TARGET", 50)
    else:  # read as a stream: its task sees the file before and after its records
        target_content = b"@@MUTATE@@ target first line\n" + tagged("TARGET", 50_000)
        assert len(target_content) > CONTENT_CHECK_MAX
    target.write_bytes(target_content)
    other.write_bytes(tagged("OTHER", 30))

    out = tmp_path / "out"
    cfg, env, res = run_mutating(tmp_path, out, action, target)
    assert res.returncode == 1, res.stderr
    assert_no_traceback(res)
    report = read_json(out / "report.json")
    assert report["status"] == "failed"
    assert [f["path"] for f in report["failures"]] == [str(target)]
    failure = report["failures"][0]
    assert failure["kind"] == "error"
    assert str(target) in failure["error"]
    if action == "delete":
        assert "FileNotFoundError" in failure["error"] or "No such file" in failure["error"]
    else:
        assert "changed since the run started" in failure["error"]
    # nothing of the failed task leaks into the outputs
    first_expected = expected_lines(trigger.read_bytes())[0] + expected_lines(other.read_bytes())[0]
    assert line_records(out) == first_expected
    assert read_json(out / "stats.json") == {"n": len(first_expected)}
    assert_store_ok(out)

    if action == "delete":
        target.write_bytes(target_content)  # it comes back: the next run must read it
    res2 = run_cli("run", str(cfg), timeout=T, env=env)
    assert res2.returncode == 0, res2.stderr
    assert_no_traceback(res2)
    report2 = read_json(out / "report.json")
    assert report2["tasks"]["done"] == 1  # the target, afresh
    assert report2["tasks"]["skipped"] == 2

    clean_out = tmp_path / "clean"
    res3 = run_cli("run", str(cfg), "--set", f"output.dir={clean_out}", timeout=T, env=env)
    assert res3.returncode == 0, res3.stderr
    assert (out / "records.jsonl").read_bytes() == (clean_out / "records.jsonl").read_bytes()
    assert read_json(out / "stats.json") == read_json(clean_out / "stats.json")
    assert (
        read_json(out / "report.json")["records"] == read_json(clean_out / "report.json")["records"]
    )
    assert_store_ok(out)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("action", ["truncate", "append"])
def test_small_file_changed_after_its_read_is_processed_as_read(
    tmp_path: Path, action: str
) -> None:
    """A small file is read in one call, of its planned length: one version of its bytes,
    named by its content digest. A change after that read is not a failure: the run
    commits what it read, and the next run, seeing the new size or mtime, processes the
    file again, ending where a clean run of the changed file ends."""
    data = tmp_path / "data"
    data.mkdir()
    target = data / "b_target.log"
    other = data / "c_other.log"
    target_content = b"@@MUTATE@@ target first line\n" + tagged("TARGET", 50)
    target.write_bytes(target_content)
    other.write_bytes(tagged("OTHER", 30))
    out = tmp_path / "out"
    cfg, env, res = run_mutating(tmp_path, out, action, target)
    assert res.returncode == 0, res.stderr
    assert read_json(out / "report.json")["tasks"]["done"] == 2
    as_read = expected_lines(target_content)[0] + expected_lines(other.read_bytes())[0]
    assert line_records(out) == as_read  # the version it read, whole
    assert target.read_bytes() != target_content

    res2 = run_cli("run", str(cfg), timeout=T, env=env)
    assert res2.returncode == 0, res2.stderr
    report2 = read_json(out / "report.json")
    # appended: only the new bytes run, the target's first task stays (skipped)
    skipped = 2 if action == "append" else 1
    assert (report2["tasks"]["done"], report2["tasks"]["skipped"]) == (1, skipped)
    clean_out = tmp_path / "clean"
    res3 = run_cli("run", str(cfg), "--set", f"output.dir={clean_out}", timeout=T, env=env)
    assert res3.returncode == 0, res3.stderr
    assert (out / "records.jsonl").read_bytes() == (clean_out / "records.jsonl").read_bytes()
    assert read_json(out / "stats.json") == read_json(clean_out / "stats.json")
    assert_store_ok(out)


# --- hostile file names ---------------------------------------------------------------

HOSTILE_NAMES = [
    "sp ace.log",
    "ünï côdé.log",
    "日本語.log",
    os.fsdecode(b"bad\xff name.log"),
    os.fsdecode(b"\xfe\xfdonly-bad.log"),
    "new\nline.log",
    "-dash.log",
    'quote"back\\slash.log',
    "x" * 240 + ".log",
]


@pytest.mark.timeout(60)
def test_hostile_file_names_are_processed(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for i, name in enumerate(HOSTILE_NAMES):
        (data / name).write_bytes(f"content {i}\n".encode())
    out = tmp_path / "out"
    # format bytes: every record carries its path, so the names reach records.jsonl
    cfg = make_config(tmp_path, [str(data / "*")], out, fmt="bytes")
    res = run_cli("run", str(cfg), timeout=T)
    assert res.returncode == 0, res.stderr
    assert_no_traceback(res)

    records = read_jsonl(out / "records.jsonl")  # strict UTF-8, json.loads on every line
    expected_paths = sorted((str(data / n) for n in HOSTILE_NAMES), key=os.fsencode)
    assert [r["path"] for r in records] == expected_paths
    assert [os.fsencode(r["path"]) for r in records] == [os.fsencode(p) for p in expected_paths]
    raw = (out / "records.jsonl").read_text("utf-8")
    assert "\\udcff" in raw  # the undecodable byte is escaped, not lost or replaced
    report = read_json(out / "report.json")
    assert report["status"] == "ok"
    assert report["tasks"]["done"] == len(HOSTILE_NAMES)
    assert read_json(out / "stats.json") == {"n": len(HOSTILE_NAMES)}
    for part in (out / "parts").iterdir():
        assert part.name == ".tmp" or re.fullmatch(r"[0-9a-f]{32}\.jsonl", part.name), part
    assert_store_ok(out)


# --- jsonl and csv --------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_jsonl_invalid_lines_and_non_objects_are_malformed(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    lines = [
        b'{"id": 1, "v": "ok"}',
        b"not json at all",
        b'{"id": 2, "v": "trunc',
        b"[1, 2, 3]",
        b'"a string"',
        b"42",
        b"null",
        b"",
        b"   ",
        b'{"id": 3, "v": "caf\xe9"}',  # undecodable, still an object
        b'{"id": 4, "nested": {"a": [1, {"b": null}]}}\r',
        b"[" * 20_000,  # deep nesting: must not crash the worker
        b'{"id": 5}',
    ]
    (data / "events.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    out = tmp_path / "out"
    cfg = make_config(tmp_path, [str(data / "*.jsonl")], out, fmt="jsonl", chunk_size="256")
    res = run_cli("run", str(cfg), timeout=T)
    assert res.returncode == 0, res.stderr
    assert_no_traceback(res)
    records = read_jsonl(out / "records.jsonl")
    assert records == [
        {"id": 1, "v": "ok"},
        {"id": 3, "v": "caf\ufffd"},
        {"id": 4, "nested": {"a": [1, {"b": None}]}},
        {"id": 5},
    ]
    report = read_json(out / "report.json")
    assert report["records"]["malformed"] == 9
    assert report["records"]["undecodable"] == 1
    assert report["records"]["in"] == len(lines)
    assert report["records"]["out"] == 4
    assert read_json(out / "stats.json") == {"n": 4}
    assert_store_ok(out)


@pytest.mark.timeout(60)
def test_csv_long_row_is_malformed_and_quoted_newline_kept(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "rows.csv").write_bytes(
        b"id,name,note\r\n"
        b"1,alice,plain\r\n"
        b"2,bob,too,many,fields\r\n"
        b'3,"carol\nsmith","multi\r\nline, with comma"\r\n'
        b'4,"dan ""quoted""",x\n'
        b"5,\xe9ve,latin1 byte\n"
    )
    out = tmp_path / "out"
    # a tiny chunk_size must not split a CSV file (a quoted field holds a newline)
    cfg = make_config(tmp_path, [str(data / "*.csv")], out, fmt="csv", chunk_size="16")
    res = run_cli("run", str(cfg), timeout=T)
    assert res.returncode == 0, res.stderr
    assert_no_traceback(res)
    records = read_jsonl(out / "records.jsonl")
    assert records == [
        {"id": "1", "name": "alice", "note": "plain"},
        {"id": "3", "name": "carol\nsmith", "note": "multi\r\nline, with comma"},
        {"id": "4", "name": 'dan "quoted"', "note": "x"},
        {"id": "5", "name": "\ufffdve", "note": "latin1 byte"},
    ]
    report = read_json(out / "report.json")
    assert report["records"]["malformed"] == 1
    assert report["records"]["undecodable"] == 1
    assert report["records"]["out"] == 4
    assert report["tasks"]["total"] == 1
    assert read_json(out / "stats.json") == {"n": 4}
    assert_store_ok(out)
