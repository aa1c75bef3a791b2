"""Security-relevant behaviour (RELIABILITY.md section 4, test plan R44-R46, R48): the
config is loaded safely, nothing is written outside ``output.dir`` whatever the input
names and globs, nothing created is world-writable even under ``umask 000``, and the live
stats Manager of every run has its own random authkey.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.integration.helpers import REPO, CliResult, run_cli, write_config

T = 30  # seconds: hard bound for every CLI subprocess
TRACEBACK = "Traceback (most recent call last)"

pytestmark = pytest.mark.timeout(60)


def make_config(folder: Path, paths: list[str], out: str, **execution: Any) -> Path:
    config: dict[str, Any] = {
        "name": "security",
        "input": {"paths": paths, "format": "lines", "chunk_size": "1KiB"},
        "stats": {"n": {"count": True}},
        "output": {"dir": out, "records": "jsonl"},
        "execution": {"workers": 2, "retries": 0, "start_method": "fork", **execution},
    }
    return write_config(folder, config, "job.yaml")


def assert_no_traceback(res: CliResult) -> None:
    assert TRACEBACK not in res.stderr, res.stderr
    assert TRACEBACK not in res.stdout, res.stdout


def snapshot(root: Path, exclude: Path) -> dict[str, tuple[int, int, int]]:
    """(mode, size, mtime_ns) of every entry under ``root`` except the ``exclude`` tree,
    symlinks not followed."""
    found: dict[str, tuple[int, int, int]] = {}
    for folder, dirs, files in os.walk(root, followlinks=False):
        if Path(folder) == exclude or exclude in Path(folder).parents:
            dirs[:] = []
            continue
        for name in [*dirs, *files]:
            path = os.path.join(folder, name)
            if Path(path) == exclude:
                continue
            st = os.lstat(path)
            mtime = 0 if stat.S_ISDIR(st.st_mode) else st.st_mtime_ns
            found[path] = (st.st_mode, st.st_size if not stat.S_ISDIR(st.st_mode) else 0, mtime)
    return found


# --- safe YAML ------------------------------------------------------------------------

PAYLOADS = {
    "apply-os-system": "!!python/object/apply:os.system [{cmd!r}]",
    "new-subprocess": "!!python/object/new:subprocess.check_output [[sh, -c, {cmd!r}]]",
    "name-tag": "!!python/name:os.system",
}


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("payload", "command"),
    [
        ("apply-os-system", "run"),
        ("apply-os-system", "validate"),
        ("apply-os-system", "plan"),
        ("new-subprocess", "run"),
        ("name-tag", "run"),
    ],
)
def test_python_yaml_tags_are_rejected_not_executed(
    tmp_path: Path, payload: str, command: str
) -> None:
    pwned = tmp_path / "pwned"
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.log").write_text("x\n")
    cmd = f"touch {pwned}"
    text = (
        f"name: {PAYLOADS[payload].format(cmd=cmd)}\n"
        "input:\n"
        "  paths: [data/*.log]\n"
        "output:\n"
        "  dir: out\n"
    )
    cfg = tmp_path / "evil.yaml"
    cfg.write_text(text)
    res = run_cli(command, str(cfg), timeout=20)
    assert res.returncode == 2, (res.returncode, res.stderr)
    assert_no_traceback(res)
    assert not pwned.exists(), "the YAML tag was executed"
    assert "evil.yaml" in res.stderr
    assert re.search(r"python|tag", res.stderr, re.IGNORECASE), res.stderr
    assert not (tmp_path / "out").exists(), "a rejected config created the output store"


# --- nothing escapes output.dir -------------------------------------------------------

ODD_NAMES = [
    "..evil.log",
    "...log",
    "..\\..\\evil.log",  # a backslash is an ordinary character on POSIX
    "a\\b.log",
    "-rf.log",
    " leading space.log",
    "new\nline.log",
    "x" * 240 + ".log",
    os.fsdecode(b"\xff..\xfe.log"),
]


@pytest.mark.timeout(60)
def test_nothing_is_written_outside_output_dir(tmp_path: Path) -> None:
    """Odd names, globs with ``..`` segments and a symlinked folder that leads outside the
    input root: every file the run creates is inside output.dir, part files have hash
    names, and nothing outside output.dir is created or modified."""
    root = tmp_path / "job"
    data = root / "data"
    (data / "sub").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "o.log").write_bytes(b"outside 1\noutside 2\n")
    os.symlink(outside, data / "linked")
    expected: list[str] = []
    for i, name in enumerate(ODD_NAMES):
        lines = [f"odd {i} line {j}" for j in range(60)]  # > 1 KiB: several range tasks
        (data / name).write_text("\n".join(lines) + "\n")
        expected.extend(lines)
    (data / "sub" / "deep.log").write_text("deep 1\n")
    expected += ["deep 1", "outside 1", "outside 2"]
    paths = [
        "data/sub/../*.log",  # ".." inside the glob
        str(root / "data" / ".." / "data" / "sub" / "*.log"),
        "data/linked/*.log",  # through a symlink that points outside the input root
        "../job/data/sub/../linked/../*.log",
        "data/.*.log",  # wildcards skip dot files (as glob does): name them explicitly
    ]
    # output.dir given with ".." segments too: it is still one well-defined folder
    (tmp_path / "store").mkdir()
    cfg = make_config(root, paths, "../store/x/../out")
    out = tmp_path / "store" / "out"

    before = snapshot(tmp_path, exclude=out)
    res = run_cli("run", str(cfg), timeout=T)
    after = snapshot(tmp_path, exclude=out)
    assert res.returncode == 0, res.stderr
    assert_no_traceback(res)

    created = sorted(set(after) - set(before))
    changed = sorted(p for p in set(after) & set(before) if after[p] != before[p])
    removed = sorted(set(before) - set(after))
    assert created == [] and changed == [] and removed == [], (created, changed, removed)

    real_out = os.path.realpath(out)
    for path in out.rglob("*"):
        assert os.path.realpath(path).startswith(real_out + os.sep), path
        assert not path.is_symlink(), path
    for part in (out / "parts").iterdir():
        assert part.name == ".tmp" or re.fullmatch(r"[0-9a-f]{32}\.jsonl", part.name), part
    assert {p.name for p in out.iterdir()} <= {
        ".lock",
        "ledger.sqlite",
        "parts",
        "records.jsonl",
        "stats.json",
        "report.json",
        "malformed.jsonl",
    }

    text = (out / "records.jsonl").read_bytes().decode("utf-8")
    got = [json.loads(line)["line"] for line in text.splitlines()]
    assert sorted(got) == sorted(expected)  # every file once, however the globs reach it


# --- file modes whatever the umask ----------------------------------------------------


def _store_after_runs(tmp_path: Path, umask: int) -> list[Path]:
    """Two runs under ``umask`` (the first creates everything, the second rewrites the
    outputs); every path of the store and the folders the run created above it."""
    data = tmp_path / "data"
    data.mkdir()
    for i in range(3):
        (data / f"f{i}.log").write_text("".join(f"f{i} line {j}\n" for j in range(200)))
    (data / "broken.gz").write_bytes(b"\x1f\x8b\x08\x00 not really gzip")  # a failed task
    # output.dir does not exist yet, nor do its parents: they are created by the run
    cfg = make_config(tmp_path, [str(data / "*")], "store/nested/out")
    out = tmp_path / "store" / "nested" / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for _ in range(2):
        proc = subprocess.run(
            [sys.executable, "-m", "pipeline", "run", str(cfg), "--workers", "2"],
            cwd=tmp_path,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=T,
            preexec_fn=lambda: os.umask(umask),
            check=False,
        )
        assert proc.returncode == 1, proc.stderr  # broken.gz fails, the rest is done
        assert TRACEBACK not in proc.stderr, proc.stderr
    entries = [out.parent.parent, out.parent, out, *out.rglob("*")]
    assert len(entries) > 5
    assert any(p.parent.name == "parts" for p in entries)  # a part file is among them
    assert (out / ".lock").exists()
    return entries


@pytest.mark.timeout(60)
def test_nothing_created_is_world_writable_under_umask_000(tmp_path: Path) -> None:
    entries = _store_after_runs(tmp_path, 0o000)
    loose = [
        f"{p} {stat.filemode(p.lstat().st_mode)}" for p in entries if p.lstat().st_mode & 0o002
    ]
    assert loose == [], loose


@pytest.mark.timeout(60)
def test_files_are_0644_and_folders_0755_under_umask_077(tmp_path: Path) -> None:
    entries = _store_after_runs(tmp_path, 0o077)
    wrong = [
        f"{p} {stat.filemode(p.lstat().st_mode)}"
        for p in entries
        if stat.S_IMODE(p.lstat().st_mode) != (0o755 if p.is_dir() else 0o644)
    ]
    assert wrong == [], wrong


# --- the Manager's authkey ------------------------------------------------------------


@pytest.mark.timeout(60)
def test_each_manager_gets_its_own_random_authkey(tmp_path: Path) -> None:
    """Run._start_manager must pass an explicit random authkey: by default a Manager
    inherits the creating process's authkey, which every forked worker (and anything
    else started by that process) knows, and which is the same for every run."""
    from pipeline.config import load_config
    from pipeline.runner import Run, RunOptions

    (tmp_path / "data").mkdir()
    cfg = load_config(make_config(tmp_path, ["data/*.log"], "out"), [])
    run = Run(cfg, RunOptions(progress="none", quiet=True))
    managers = []
    try:
        for _ in range(2):
            managers.append(run._start_manager())
        keys = [bytes(m._authkey) for m in managers]
    finally:
        for manager in managers:
            manager.shutdown()
    assert all(len(key) >= 32 for key in keys), [len(k) for k in keys]
    assert keys[0] != keys[1]
    default = bytes(multiprocessing.current_process().authkey)
    assert default not in keys
