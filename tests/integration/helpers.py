"""Helpers for tests that run the CLI as a subprocess on generated data."""

from __future__ import annotations

import gzip
import json
import os
import random
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


def run_cli(
    *args: str, cwd: Path | None = None, timeout: float = 120, env: dict[str, str] | None = None
) -> CliResult:
    """``python -m pipeline ARGS`` with a hard time limit."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        cwd=cwd or REPO,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def store_outputs(out: Path) -> tuple[bytes, Any, Any]:
    """What two stores that should be equal are compared by: ``records.jsonl``,
    ``stats.json`` and ``report.json``'s record counts."""
    return (
        (out / "records.jsonl").read_bytes(),
        read_json(out / "stats.json"),
        read_json(out / "report.json")["records"],
    )


def lines_config(
    folder: Path,
    out: str,
    paths: list[str],
    steps: list[dict[str, Any]],
    stats: dict[str, Any],
    *,
    chunk_size: str,
    growing: bool = False,
    **execution: Any,
) -> Path:
    """``folder/<out>.yaml``: a ``lines`` job over ``paths`` writing ``out/records.jsonl``,
    2 workers and no retries unless ``execution`` says otherwise."""
    body: dict[str, Any] = {
        "name": Path(out).name,
        "input": {"paths": paths, "format": "lines", "chunk_size": chunk_size},
        "steps": steps,
        "stats": stats,
        "output": {"dir": out, "records": "jsonl"},
        "execution": {"workers": 2, "retries": 0, **execution},
    }
    if growing:
        body["input"]["growing"] = True
    return write_config(folder, body, name=f"{out}.yaml")


def write_config(folder: Path, config: dict[str, Any], name: str = "job.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    return path


def edge_case_lines(rng: random.Random, n: int) -> bytes:
    """Access-log-like lines full of edge cases: CRLF, empty lines, multibyte UTF-8,
    invalid bytes, lone CR / form feed / NEL / LS inside lines, long lines, garbage."""
    statuses = [200, 200, 200, 301, 304, 404, 500, 503]
    paths = ["/", "/index.html", "/api/v1/items", "/café/menü", "/日本語/ページ", "/a b"]
    out = bytearray()
    for i in range(n):
        kind = rng.random()
        if kind < 0.03:
            out += b"\n"
            continue
        if kind < 0.05:
            out += b"garbage line \xff\xfe not matching\n"
            continue
        path = rng.choice(paths)
        if kind < 0.08:
            path += "/" + "x" * rng.randint(5000, 20000)  # long line
        ip = f"10.0.{rng.randint(0, 9)}.{rng.randint(0, 255)}"
        size = "-" if rng.random() < 0.03 else str(rng.randint(0, 50000))
        line = (
            f'{ip} - - [27/Nov/2026:10:{i % 60:02d}:00 +0000] "GET {path} HTTP/1.1" '
            f'{rng.choice(statuses)} {size} "ref\x0cerer" "agent\r\u2028\x85"'
        ).encode()
        if rng.random() < 0.02:
            line += b" \xc3("  # invalid UTF-8
        out += line + (b"\r\n" if rng.random() < 0.1 else b"\n")
    return bytes(out)


def write_edge_data(data: Path) -> Path:
    """The edge-case data folder (``edge_data``): a big-ish plain log, small logs (one
    without a trailing newline, one empty), a gzip log, and a JSON-lines file."""
    rng = random.Random(20261127)
    (data / "logs" / "nested").mkdir(parents=True)
    (data / "logs" / "big.log").write_bytes(edge_case_lines(rng, 3000))
    (data / "logs" / "small.log").write_bytes(edge_case_lines(rng, 40).rstrip(b"\n"))
    (data / "logs" / "empty.log").write_bytes(b"")
    (data / "logs" / "nested" / "old.log.gz").write_bytes(
        gzip.compress(edge_case_lines(rng, 500), mtime=0)
    )
    rows = []
    for i in range(400):
        rows.append(json.dumps({"id": i, "v": rng.choice([1, 2.5, None, "x", True])}))
        if i % 50 == 0:
            rows.append("not json")
        if i % 70 == 0:
            rows.append("")
    (data / "events.jsonl").write_text("\n".join(rows) + "\n")
    return data


ACCESS_REGEX = (
    r'^(?P<ip>\S+) \S+ \S+ \[(?P<ts>[^]]+)\] "(?P<method>\S+) (?P<path>\S+)[^"]*" '
    r"(?P<status>\d{3}) (?P<bytes>\S+)"
)


def access_config(data: Path, out: Path, **execution: Any) -> dict[str, Any]:
    return {
        "name": "edge",
        "input": {
            "paths": [str(data / "logs" / "**" / "*.log"), str(data / "logs" / "**" / "*.gz")],
            "format": "lines",
            "chunk_size": execution.pop("chunk_size", "8MiB"),
        },
        "steps": [
            {"regex": ACCESS_REGEX},
            {"types": {"fields": {"status": "int", "bytes": "int"}, "nulls": ["-"]}},
            {"filter": {"status": {">=": 200}}},
            {"select": ["ip", "path", "status", "bytes"]},
        ],
        "stats": {
            "requests": {"count": True},
            "server_errors": {"count": True, "where": {"status": {">=": 500}}},
            "bytes_sent": {"sum": "bytes"},
            "mean_bytes": {"mean": "bytes"},
            "by_status": {"count_by": "status"},
            "top_paths": {"top": "path", "k": 3},
            "largest": {"max": "bytes"},
            "smallest": {"min": "bytes"},
        },
        "output": {"dir": str(out), "records": execution.pop("records", "jsonl")},
        "execution": execution,
    }


SMALL_LOG_RE = r"^(?P<ip>\S+) (?P<method>\S+) (?P<path>\S+) (?P<status>\d+) (?P<n>\d+)$"


def small_log_path(data: Path, i: int) -> Path:
    return data / f"d{i % 7}" / f"f{i:04d}.log"


def write_small_log(data: Path, i: int, salt: str = "") -> None:
    """Small file number ``i`` (1-5 access-log-like lines) in one of seven folders;
    ``salt`` changes its bytes (and so its size)."""
    path = small_log_path(data, i)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "".join(
            f"10.0.{i % 250}.{j} GET /p{j}{salt} {200 + j % 3} {i * 10 + j}\n"
            for j in range(i % 5 + 1)
        )
    )


def small_logs_config(folder: Path, out: str, **execution: Any) -> Path:
    """``data/**/*.log`` (``write_small_log``): regex, types, a count, a sum, a count_by;
    records to ``out/records.jsonl``; 2 workers unless ``execution`` says otherwise."""
    body: dict[str, Any] = {
        "name": out,
        "input": {"paths": ["data/**/*.log"], "format": "lines"},
        "steps": [{"regex": SMALL_LOG_RE}, {"types": {"status": "int", "n": "int"}}],
        "stats": {"lines": {"count": True}, "total": {"sum": "n"}, "by": {"count_by": "status"}},
        "output": {"dir": out, "records": "jsonl"},
        "execution": {"workers": 2, **execution},
    }
    return write_config(folder, body, name=f"{out}.yaml")
