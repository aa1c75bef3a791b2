"""Final outputs, rebuilt from what the ledger says is committed.

``records.*`` concatenates the part files of done tasks in (path bytes, offset) order, so
the bytes are the same whatever the chunking, worker count or interruptions were.
``stats.json`` merges the committed partials in that same order. Every file is written
atomically, so readers only ever see a complete output of committed work.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline import aggregates
from pipeline.store.atomic import atomic_writer
from pipeline.store.ledger import TaskRow

STATS_NAME = "stats.json"
REPORT_NAME = "report.json"
RECORDS_NAMES = {"jsonl": "records.jsonl", "csv": "records.csv"}


def committed(rows: Sequence[TaskRow], result_key: str) -> list[TaskRow]:
    """Done tasks produced under the current result-affecting config, in output order."""
    return [r for r in rows if r.status == "done" and r.result_key == result_key]


def write_json(path: Path, value: Any) -> None:
    with atomic_writer(path) as handle:
        text = json.dumps(value, indent=2, ensure_ascii=False)
        handle.write(text.encode("utf-8", "backslashreplace"))  # lone surrogates -> \\udcXX
        handle.write(b"\n")


def merged_stats(specs: Mapping[str, Mapping[str, Any]], rows: Sequence[TaskRow]) -> dict:
    partials: dict | None = None
    for row in rows:
        partials = aggregates.merge_partials(specs, partials, row.partials)
    return aggregates.finalize(specs, partials)


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _write_jsonl(target: Path, parts: Sequence[str]) -> None:
    with atomic_writer(target) as out:
        for part in parts:
            with open(part, "rb") as handle:
                shutil.copyfileobj(handle, out, 1 << 20)


def _write_csv(target: Path, parts: Sequence[str]) -> None:
    """Columns are every key in order of first appearance, so two passes over the parts."""
    columns: dict[str, None] = {}
    for part in parts:
        with open(part, encoding="utf-8") as handle:
            for line in handle:
                for key in json.loads(line):
                    columns.setdefault(key, None)
    header = list(columns)
    with atomic_writer(target) as out:
        text = io.TextIOWrapper(out, encoding="utf-8", errors="backslashreplace", newline="")
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(header)
        for part in parts:
            with open(part, encoding="utf-8") as handle:
                for line in handle:
                    record = json.loads(line)
                    writer.writerow([_csv_cell(record.get(key)) for key in header])
        text.flush()
        text.detach()


def write_records(out_dir: Path, parts_dir: Path, records: str, rows: Sequence[TaskRow]) -> None:
    """Rebuild records.jsonl / records.csv; the other form is removed if a config changed."""
    for kind, name in RECORDS_NAMES.items():
        if kind != records:
            path = out_dir / name
            if path.exists():
                os.unlink(path)
    if records not in RECORDS_NAMES:
        return
    parts = [str(parts_dir / r.part) for r in rows if r.part]
    target = out_dir / RECORDS_NAMES[records]
    if records == "jsonl":
        _write_jsonl(target, parts)
    else:
        _write_csv(target, parts)
