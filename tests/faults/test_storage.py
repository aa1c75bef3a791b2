"""Storage faults (RELIABILITY.md section 3, test plan 5.8): the ledger's SQLite settings
and integrity, atomic outputs and the clean-up of what a ``kill -9`` leaves, damaged part
files, a full disk (a 1 MiB tmpfs; needs root), and a corrupt ledger.

Black-box: the CLI runs as a subprocess (``run_cli``); the store is inspected with
``sqlite3`` and the file system. A module-scoped clean run is the reference that damaged
copies of its store are compared with, byte for byte.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.helpers import CliResult, run_cli, write_config

T = 30  # seconds: hard bound for every CLI subprocess
TRACEBACK = "Traceback (most recent call last)"

pytestmark = pytest.mark.timeout(60)


# --- helpers --------------------------------------------------------------------------


def make_config(
    folder: Path, paths: list[str], out: Path, *, chunk_size: str = "2KiB", workers: int = 2
) -> Path:
    config: dict[str, Any] = {
        "name": "storage",
        "input": {"paths": paths, "format": "lines", "chunk_size": chunk_size},
        "steps": [
            {"regex": r"^(?P<file>F\d+) L(?P<n>\d+) (?P<payload>.*)$"},
            {"types": {"n": "int"}},
            {"select": ["file", "n", "payload"]},
        ],
        "stats": {
            "n": {"count": True},
            "n_sum": {"sum": "n"},
            "by_file": {"count_by": "file"},
        },
        "output": {"dir": str(out), "records": "jsonl"},
        "execution": {"workers": workers, "retries": 0, "start_method": "fork"},
    }
    return write_config(folder, config, "job.yaml")


def log_text(file_no: int, n: int, width: int = 40) -> bytes:
    pad = "é" * (width // 2)
    return "".join(f"F{file_no:04d} L{i:06d} {pad}\n" for i in range(n)).encode()


def read_json(path: Path) -> Any:
    return json.loads(path.read_bytes().decode("utf-8"))


def assert_no_traceback(res: CliResult) -> None:
    assert TRACEBACK not in res.stderr, res.stderr
    assert TRACEBACK not in res.stdout, res.stdout


def integrity(out: Path) -> str:
    db = sqlite3.connect(out / "ledger.sqlite")
    try:
        return db.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        db.close()


def temp_leftovers(out: Path) -> list[Path]:
    """Temporary files anywhere in the store: ``.tmp-*`` atomic-write temps and anything
    in ``parts/.tmp`` (part temps, worker announcement files)."""
    found = [p for p in out.rglob("*") if p.name.startswith(".tmp-")]
    tmp = out / "parts" / ".tmp"
    if tmp.is_dir():
        found.extend(tmp.iterdir())
    return sorted(found)


def assert_store_ok(out: Path) -> None:
    assert integrity(out) == "ok"
    assert temp_leftovers(out) == []
    for p in [out, *out.rglob("*")]:
        assert p.lstat().st_mode & 0o002 == 0, f"{p} is world-writable"
    read_json(out / "stats.json")
    read_json(out / "report.json")


def store_files(out: Path) -> dict[str, bytes]:
    """Every file of a store except the lock (which holds the last holder's pid)."""
    return {
        str(p.relative_to(out)): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


# --- a clean reference run ------------------------------------------------------------


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Three inputs cut into ~12 tasks, run once; tests work on copies of this store."""
    root = tmp_path_factory.mktemp("storage")
    data = root / "data"
    data.mkdir()
    for no, n in ((1, 300), (2, 150), (3, 40)):
        (data / f"f{no}.log").write_bytes(log_text(no, n))
    out = root / "out"
    cfg = make_config(root, [str(data / "*.log")], out)
    res = run_cli("run", str(cfg), timeout=T)
    assert res.returncode == 0, res.stderr
    assert_no_traceback(res)
    return {
        "cfg": cfg,
        "out": out,
        "records": (out / "records.jsonl").read_bytes(),
        "stats": read_json(out / "stats.json"),
        "report": read_json(out / "report.json"),
        "files": store_files(out),
    }


def copy_store(baseline: dict[str, Any], tmp_path: Path) -> Path:
    out = tmp_path / "out"
    shutil.copytree(baseline["out"], out, symlinks=True)
    return out


def run_on(baseline: dict[str, Any], out: Path, *args: str) -> CliResult:
    return run_cli(*args, str(baseline["cfg"]), "--set", f"output.dir={out}", timeout=T)


# --- SQLite settings, atomic outputs --------------------------------------------------


@pytest.mark.timeout(60)
def test_ledger_is_wal_and_intact_after_a_run(baseline: dict[str, Any]) -> None:
    out = baseline["out"]
    assert baseline["report"]["tasks"]["total"] >= 10
    db = sqlite3.connect(out / "ledger.sqlite")
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        db.close()


@pytest.mark.timeout(60)
def test_no_temporary_files_after_a_successful_run(baseline: dict[str, Any]) -> None:
    out = baseline["out"]
    assert temp_leftovers(out) == []
    assert (out / "parts" / ".tmp").is_dir()
    assert list((out / "parts" / ".tmp").iterdir()) == []
    assert not [p for p in out.rglob("*") if ".tmp" in p.name and p.name != ".tmp"]
    assert_store_ok(out)


@pytest.mark.timeout(60)
def test_no_temporary_files_after_a_run_with_failed_tasks(tmp_path: Path) -> None:
    """'whatever its exit code': a run with a failed task cleans up too."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "ok.log").write_bytes(log_text(1, 200))
    gz = gzip.compress(log_text(2, 500), mtime=0)
    (data / "broken.log.gz").write_bytes(gz[: len(gz) // 2])
    out = tmp_path / "out"
    cfg = make_config(tmp_path, [str(data / "*")], out)
    res = run_cli("run", str(cfg), timeout=T)
    assert res.returncode == 1, res.stderr
    assert_no_traceback(res)
    assert read_json(out / "report.json")["tasks"]["failed"] == 1
    assert_store_ok(out)


@pytest.mark.timeout(60)
def test_leftovers_of_a_kill9_are_removed_by_the_next_run(
    baseline: dict[str, Any], tmp_path: Path
) -> None:
    out = copy_store(baseline, tmp_path)
    some_part = sorted((out / "parts").glob("*.jsonl"))[0].name
    leftovers = [
        out / "parts" / ".tmp" / f"{some_part}.424242",  # a worker's unfinished part
        out / "parts" / ".tmp" / "worker-424242",  # a dead worker's announcement
        out / ".tmp-k9xq2a1b.tmp",  # an interrupted atomic write of an output
        out / ".tmp-records0.tmp",
    ]
    for path in leftovers:
        path.write_bytes(b'{"partial": tr')
    # a part renamed into place whose commit never happened (kill -9 in between)
    stray = out / "parts" / ("0123456789abcdef" * 2 + ".jsonl")
    stray.write_bytes(b'{"line":"never committed"}\n')

    res = run_on(baseline, out, "run")
    assert res.returncode == 0, res.stderr
    assert_no_traceback(res)
    for path in [*leftovers, stray]:
        assert not path.exists(), f"{path.name} survived the next run"
    assert (out / "records.jsonl").read_bytes() == baseline["records"]
    report = read_json(out / "report.json")
    assert report["tasks"]["skipped"] == report["tasks"]["total"]
    assert_store_ok(out)


# --- damaged part files ---------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("damage", ["delete", "truncate", "empty"])
def test_damaged_part_file_reruns_its_task(
    baseline: dict[str, Any], tmp_path: Path, damage: str
) -> None:
    out = copy_store(baseline, tmp_path)
    part = max((out / "parts").glob("*.jsonl"), key=lambda p: p.stat().st_size)
    if damage == "delete":
        part.unlink()
    elif damage == "truncate":
        part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])
    else:
        part.write_bytes(b"")

    plan = run_on(baseline, out, "plan")
    assert plan.returncode == 0, plan.stderr
    assert_no_traceback(plan)
    reasons = [line.split()[0] for line in plan.stdout.splitlines() if line.strip()]
    assert reasons.count("interrupted") == 1, plan.stdout
    assert set(reasons) == {"interrupted", "unchanged"}, plan.stdout
    assert len(reasons) == baseline["report"]["tasks"]["total"]

    res = run_on(baseline, out, "run")
    assert res.returncode == 0, res.stderr
    assert_no_traceback(res)
    report = read_json(out / "report.json")
    assert report["tasks"]["done"] == 1
    assert report["tasks"]["skipped"] == report["tasks"]["total"] - 1
    assert (out / "records.jsonl").read_bytes() == baseline["records"]
    assert read_json(out / "stats.json") == baseline["stats"]
    assert report["records"] == baseline["report"]["records"]
    assert_store_ok(out)


# --- a full disk ----------------------------------------------------------------------


def _mount(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=20, check=False)


@pytest.fixture(scope="module")
def full_disk_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Output store on a 1 MiB tmpfs; each part is ~600 KB, so with one worker the first
    task fits and the next one hits ENOSPC, and so does rewriting records.jsonl. Then the
    tmpfs is remounted at 64 MiB (contents kept) and the job runs again."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tmpfs")
    root = tmp_path_factory.mktemp("enospc")
    mnt = root / "mnt"
    mnt.mkdir()
    mounted = _mount(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", str(mnt)])
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.strip() or mounted.returncode}")
    try:
        data = root / "data"
        data.mkdir()
        for no in (1, 2, 3):
            (data / f"big{no}.log").write_bytes(log_text(no, 600 - no, width=1000))
        out = mnt / "out"
        cfg = make_config(root, [str(data / "*.log")], out, chunk_size="8MiB", workers=1)
        full = run_cli("run", str(cfg), timeout=T)
        after_full = {
            "leftovers": temp_leftovers(out),
            "report_exists": (out / "report.json").exists(),
        }
        remount = _mount(["mount", "-o", "remount,size=64m", str(mnt)])
        assert remount.returncode == 0, remount.stderr
        integrity_after_full = integrity(out)
        again = run_cli("run", str(cfg), timeout=T)
        clean_out = root / "clean"
        clean = run_cli("run", str(cfg), "--set", f"output.dir={clean_out}", timeout=T)
        yield {
            "full": full,
            "after_full": after_full,
            "integrity_after_full": integrity_after_full,
            "again": again,
            "clean": clean,
            "out": out,
            "clean_out": clean_out,
        }
    finally:
        if _mount(["umount", str(mnt)]).returncode != 0:
            _mount(["umount", "-l", str(mnt)])


@pytest.mark.timeout(90)
def test_full_disk_gives_a_clear_error(full_disk_runs: dict[str, Any]) -> None:
    res = full_disk_runs["full"]
    assert res.returncode not in (0, 75), res.stderr
    assert "No space left on device" in res.stderr
    assert_no_traceback(res)
    assert "internal error" not in res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert errors, res.stderr
    assert all("\n" not in e for e in errors)


@pytest.mark.timeout(90)
def test_full_disk_store_stays_consistent_and_next_run_completes(
    full_disk_runs: dict[str, Any],
) -> None:
    assert full_disk_runs["integrity_after_full"] == "ok"
    again, clean = full_disk_runs["again"], full_disk_runs["clean"]
    assert again.returncode == 0, again.stderr
    assert_no_traceback(again)
    assert clean.returncode == 0, clean.stderr
    out, clean_out = full_disk_runs["out"], full_disk_runs["clean_out"]
    assert read_json(out / "stats.json") == read_json(clean_out / "stats.json")
    assert (out / "records.jsonl").read_bytes() == (clean_out / "records.jsonl").read_bytes()
    assert (
        read_json(out / "report.json")["records"] == read_json(clean_out / "report.json")["records"]
    )
    assert_store_ok(out)


@pytest.mark.timeout(90)
def test_full_disk_run_leaves_no_temporary_files(full_disk_runs: dict[str, Any]) -> None:
    assert full_disk_runs["after_full"]["leftovers"] == []


# --- a corrupt ledger -----------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("corruption", ["garbage", "header", "pages"])
def test_corrupt_ledger_is_reported_not_recreated(
    baseline: dict[str, Any], tmp_path: Path, corruption: str
) -> None:
    out = copy_store(baseline, tmp_path)
    ledger = out / "ledger.sqlite"
    original = ledger.read_bytes()
    noise = bytes((i * 197 + 89) % 256 for i in range(len(original)))
    if corruption == "garbage":  # the whole file
        damaged = noise[:8192]
    elif corruption == "header":  # the first 100 bytes: the SQLite header
        damaged = noise[:100] + original[100:]
    else:  # pages 2-3, header intact: only a check of the pages finds it
        damaged = original[:4096] + noise[4096:12288] + original[12288:]
    ledger.write_bytes(damaged)
    before = store_files(out)

    res = run_on(baseline, out, "run")
    assert res.returncode not in (0, 75), res.stderr
    assert_no_traceback(res)
    assert "ledger.sqlite" in res.stderr
    assert "internal error" not in res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert 1 <= len(errors) <= 3, res.stderr
    assert re.search(r"ledger\.sqlite", errors[0]), errors
    assert ledger.read_bytes() == damaged, "the damaged ledger was rewritten or recreated"
    assert store_files(out) == before, "the store changed although nothing could run"
