"""Results are identical whatever the executor, submit mode, worker count, start method
and chunk size, and equal to a straightforward independent computation."""

from __future__ import annotations

import gzip
import json
import math
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.integration.helpers import ACCESS_REGEX, access_config, run_cli, write_config

pytestmark = pytest.mark.timeout(300)


def _lines(data: bytes) -> list[str]:
    pieces = data.split(b"\n")
    if pieces and pieces[-1] == b"":
        pieces.pop()
    return [p.removesuffix(b"\r").decode("utf-8", "replace") for p in pieces]


def oracle(data: Path) -> tuple[bytes, dict[str, Any], dict[str, int]]:
    """records.jsonl bytes, stats and record counts, computed the obvious way."""
    files = [p for p in (data / "logs").rglob("*") if p.suffix in (".log", ".gz")]
    files.sort(key=lambda p: os.fsencode(str(p)))
    pattern = re.compile(ACCESS_REGEX)
    out: list[dict[str, Any]] = []
    counts = {"in": 0, "malformed": 0}
    for path in files:
        raw = path.read_bytes()
        if path.suffix == ".gz":
            raw = gzip.decompress(raw)
        for line in _lines(raw):
            counts["in"] += 1
            m = pattern.match(line)
            if not m:
                counts["malformed"] += 1
                continue
            rec = {"line": line, **m.groupdict()}
            try:
                rec["status"] = int(rec["status"])
                rec["bytes"] = None if rec["bytes"] == "-" else int(rec["bytes"])
            except ValueError:
                counts["malformed"] += 1
                continue
            if rec["status"] >= 200:
                out.append({k: rec[k] for k in ("ip", "path", "status", "bytes")})
    sizes = [r["bytes"] for r in out if r["bytes"] is not None]
    by_status = Counter(str(r["status"]) for r in out)
    paths = Counter(r["path"] for r in out)
    stats = {
        "requests": len(out),
        "server_errors": sum(1 for r in out if r["status"] >= 500),
        "bytes_sent": sum(sizes),
        "mean_bytes": sum(sizes) / len(sizes),
        "by_status": dict(sorted(by_status.items())),
        "top_paths": [[k, n] for k, n in sorted(paths.items(), key=lambda kv: (-kv[1], kv[0]))[:3]],
        "largest": max(sizes),
        "smallest": min(sizes),
    }
    body = "".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in out)
    return body.encode(), stats, counts


def _assert_stats_equal(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert got.keys() == want.keys()
    for key, value in want.items():
        if isinstance(value, float):
            assert math.isclose(got[key], value, rel_tol=1e-9), key
        else:
            assert got[key] == value, key


CASES = [
    pytest.param({"executor": "serial"}, id="serial"),
    pytest.param({"executor": "process", "workers": 1, "submit": "async"}, id="async-1"),
    pytest.param(
        {"executor": "process", "workers": 2, "submit": "async", "chunk_size": "4KiB"},
        id="async-2-4KiB",
    ),
    pytest.param(
        {"executor": "process", "workers": 2, "submit": "imap", "chunk_size": "64KiB"},
        id="imap-2-64KiB",
    ),
    pytest.param(
        {
            "executor": "process",
            "workers": 2,
            "submit": "async",
            "start_method": "spawn",
            "chunk_size": "100KB",
        },
        id="spawn-async",
    ),
    pytest.param(
        {
            "executor": "process",
            "workers": 2,
            "submit": "imap",
            "start_method": "forkserver",
            "chunk_size": "16KiB",
        },
        id="forkserver-imap",
    ),
    pytest.param(
        {
            "executor": "process",
            "workers": 2,
            "submit": "async",
            "start_method": "fork",
            "chunk_size": "8MiB",
        },
        id="fork-8MiB",
    ),
]


@pytest.mark.parametrize("execution", CASES)
def test_results_match_the_oracle(
    edge_data: Path, tmp_path: Path, execution: dict[str, Any]
) -> None:
    out = tmp_path / "out"
    config = write_config(tmp_path, access_config(edge_data, out, **execution))
    result = run_cli("run", str(config), "--progress", "none")
    assert result.returncode == 0, result.stderr
    want_records, want_stats, counts = oracle(edge_data)
    assert (out / "records.jsonl").read_bytes() == want_records
    _assert_stats_equal(json.loads((out / "stats.json").read_text()), want_stats)
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "ok"
    assert report["records"]["in"] == counts["in"]
    assert report["records"]["malformed"] == counts["malformed"]
    assert report["records"]["out"] == want_stats["requests"]
    assert report["records"]["undecodable"] > 0
    tasks = report["tasks"]
    assert tasks["done"] == tasks["total"] and tasks["failed"] == tasks["pending"] == 0
    assert not list((out / "parts" / ".tmp").iterdir())
