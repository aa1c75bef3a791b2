"""The CLI says what was wrong with the input: malformed.jsonl (the run's first malformed
records, with line and reason), per-file counts and warnings in report.json and on
stderr, failures that name their line, and "no input matched" said plainly."""

from __future__ import annotations

import gzip
import json
import os
import random
from pathlib import Path
from typing import Any

import pytest

from tests.integration.helpers import run_cli, write_config

LINE_RE = r"^(?P<ip>\S+) (?P<path>\S+) (?P<status>\S+) (?P<bytes>\S+)$"


def good(rng: random.Random) -> str:
    return f"10.0.0.{rng.randint(1, 9)} /p{rng.randint(1, 5)} {rng.choice([200, 404])} 5"


def mixed_lines(rng: random.Random, n: int) -> list[str]:
    """Lines with malformed ones among them: no match, bad int, blank, CRLF endings."""
    lines = []
    for _ in range(n):
        kind = rng.random()
        if kind < 0.05:
            lines.append("garbage-line")
        elif kind < 0.08:
            lines.append("")
        elif kind < 0.11:
            lines.append("10.0.0.1 /x 2oo 5")
        elif kind < 0.2:
            lines.append(good(rng) + "\r")
        else:
            lines.append(good(rng))
    return lines


def malformed_reason(line: str) -> str | None:
    line = line.removesuffix("\r")
    parts = line.split(" ")
    if len(parts) != 4 or not all(parts):
        return "regex did not match"
    for field, value in (("status", parts[2]), ("bytes", parts[3])):
        if not value.isdigit():
            return f"types: {field}: invalid int {value!r}"
    return None


def config(tmp_path: Path, paths: list[str], **extra: Any) -> Path:
    values: dict[str, Any] = {
        "name": "diag",
        "input": {"paths": paths, "format": "lines", "chunk_size": "2KiB"},
        "steps": [
            {"regex": LINE_RE},
            {"types": {"fields": {"status": "int", "bytes": "int"}}},
        ],
        "stats": {
            "requests": {"count": True},
            "bytes": {"sum": "bytes"},
            "typo": {"sum": "bytse"},
            "by_status": {"count_by": "status"},
        },
        "output": {"dir": str(tmp_path / "out"), "records": "jsonl"},
        "execution": {"workers": 2},
    }
    values.update(extra)
    return write_config(tmp_path, values)


def warnings_of(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("warning")]


def test_malformed_sample_counts_and_warnings(tmp_path: Path) -> None:
    rng = random.Random(13)
    data = tmp_path / "data"
    data.mkdir()
    files = {
        data / "b-mixed.log": mixed_lines(rng, 1000),  # split into several tasks
        data / "a-all-bad.log": ["garbage one", "", "garbage three"],
        data / "c-clean.log": [good(rng) for _ in range(20)],
        data / "d-mixed.log.gz": mixed_lines(rng, 50),  # read whole, decompressed
    }
    for path, lines in files.items():
        raw = "".join(line + "\n" for line in lines).encode()
        path.write_bytes(gzip.compress(raw, mtime=0) if path.suffix == ".gz" else raw)
    job = config(tmp_path, [str(data / "*.log"), str(data / "*.gz")])

    result = run_cli("run", str(job), "--progress", "none")
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out"

    expected = [
        {"path": str(path), "line": number, "reason": reason}
        for path in sorted(files, key=lambda p: os.fsencode(str(p)))
        for number, line in enumerate(files[path], 1)
        if (reason := malformed_reason(line))
    ]
    assert len(expected) > 100  # the sample is cut
    sample = [json.loads(line) for line in (out / "malformed.jsonl").read_text().splitlines()]
    assert sample == expected[:100]
    assert sample[0] == {
        "path": str(data / "a-all-bad.log"),
        "line": 1,
        "reason": "regex did not match",
    }

    report = json.loads((out / "report.json").read_text())
    counts: dict[str, int] = {}
    for entry in expected:
        counts[entry["path"]] = counts.get(entry["path"], 0) + 1
    assert report["malformed_by_file"] == dict(sorted(counts.items(), key=lambda kv: -kv[1]))
    assert report["malformed_files"] == 3
    assert report["run"]["malformed"] == len(expected) == report["records"]["malformed"]
    assert report["complete"] is True
    assert report["warnings"] == [
        f"{data / 'a-all-bad.log'}: every record was malformed (3); the first: line 1: "
        "regex did not match (is the format or the regex right?)",
        "stat 'typo' (sum): field 'bytse' had no numeric value in any record of this run "
        "(a misspelt field name?)",
    ]
    assert warnings_of(result.stderr) == [f"warning: {w}" for w in report["warnings"]]
    assert f"{out}/malformed.jsonl" in result.stderr  # the summary points at the sample

    # a second run has nothing to do: its sample is empty (the last run's malformed
    # records), and its outputs still cover every task
    again = run_cli("run", str(job), "--progress", "none")
    assert again.returncode == 0, again.stderr
    assert (out / "malformed.jsonl").read_text() == ""
    report = json.loads((out / "report.json").read_text())
    assert report["complete"] is True and report["malformed_by_file"] == {}
    assert report["records"]["malformed"] == len(expected) and report["warnings"] == []


PLUGIN = """
def check(record):
    if record.get("boom"):
        raise ValueError("boom in the plugin")
    return record
"""


@pytest.mark.parametrize("crlf", [False, True])
def test_a_failure_names_its_line(tmp_path: Path, crlf: bool) -> None:
    (tmp_path / "diagplug.py").write_text(PLUGIN)
    data = tmp_path / "data"
    data.mkdir()
    end = "\r\n" if crlf else "\n"
    rows = [json.dumps({"i": i}) for i in range(300)]
    rows[5] = ""  # blank lines are lines too
    rows[250] = json.dumps({"i": 250, "boom": True})  # line 251, in a later task
    (data / "events.jsonl").write_text(end.join(rows) + end, newline="")
    job = config(
        tmp_path,
        [str(data / "*.jsonl")],
        input={"paths": [str(data / "*.jsonl")], "format": "jsonl", "chunk_size": "1KiB"},
        steps=[{"call": "diagplug:check"}],
        stats={"n": {"count": True}},
    )
    result = run_cli("run", str(job), "--progress", "none")
    assert result.returncode == 1, result.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    (failure,) = report["failures"]
    offset = sum(len(row) + len(end) for row in rows[:250])
    where = f"{data / 'events.jsonl'}: line 251 (byte offset {offset})"
    assert failure["error"].startswith(f"{where}: ValueError: boom in the plugin"), failure
    assert f"{where}: ValueError" in result.stderr
    assert report["complete"] is False
    sample = [json.loads(line) for line in (tmp_path / "out" / "malformed.jsonl").open()]
    assert sample == [{"path": str(data / "events.jsonl"), "line": 6, "reason": "blank line"}]


def test_no_input_matched_is_said_plainly(tmp_path: Path) -> None:
    (tmp_path / "incoming").mkdir()
    patterns = [str(tmp_path / "incoming" / "*.log"), str(tmp_path / "archive" / "*.gz")]
    result = run_cli("run", str(config(tmp_path, patterns)), "--progress", "none")
    assert result.returncode == 0, result.stderr
    shown = ", ".join(repr(p) for p in patterns)
    assert warnings_of(result.stderr) == [
        f"warning: no input matched input.paths ({shown}): nothing to do"
    ]


def test_a_pattern_matching_nothing_beside_others_is_named(tmp_path: Path) -> None:
    (tmp_path / "a.log").write_text("10.0.0.1 /x 200 5\n")
    patterns = [str(tmp_path / "*.log"), str(tmp_path / "none" / "*.gz")]
    result = run_cli("run", str(config(tmp_path, patterns)), "--progress", "none")
    assert result.returncode == 0, result.stderr
    warnings = warnings_of(result.stderr)
    assert f"warning: no file matches {patterns[1]!r}" in warnings
    assert not [w for w in warnings if "no input matched" in w]
