"""Final outputs, rebuilt from what the ledger says is committed.

``records.*`` concatenates the records of done tasks in (path bytes, offset) order, each
read from its place in its batch's part file, so the bytes are the same whatever the
chunking, batching, worker count or interruptions were.
``stats.json`` merges the committed partials (in any order: merging is exact and
commutes). Every file is written atomically, so readers only ever see a complete output
of committed work.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from pipeline import aggregates
from pipeline.store.atomic import atomic_writer
from pipeline.store.ledger import TaskRow

STATS_NAME = "stats.json"
REPORT_NAME = "report.json"
MALFORMED_NAME = "malformed.jsonl"
RECORDS_NAMES = {"jsonl": "records.jsonl", "csv": "records.csv"}


def write_json(path: Path, value: Any) -> None:
    with atomic_writer(path) as handle:
        text = json.dumps(value, indent=2, ensure_ascii=False)
        handle.write(text.encode("utf-8", "backslashreplace"))  # lone surrogates -> \\udcXX
        handle.write(b"\n")


def write_jsonl(path: Path, entries: Iterable[Any]) -> None:
    """One compact JSON value a line, atomically (an empty file for no entries)."""
    with atomic_writer(path) as handle:
        for entry in entries:
            text = json.dumps(entry, ensure_ascii=False, separators=(",", ":"))
            handle.write(text.encode("utf-8", "backslashreplace") + b"\n")


MERGE_GROUP = 1024  # partials merged at a time: bounded memory, few merges


def merged_stats(specs: Mapping[str, Mapping[str, Any]], partials: Iterable[dict | None]) -> dict:
    """``stats.json``: every partial merged (streamed, ``MERGE_GROUP`` at a time), then
    finalised. The order does not matter: partials are exact and merging commutes."""
    merged: dict | None = None
    group: list[dict | None] = []
    for partial in partials:
        group.append(partial)
        if len(group) >= MERGE_GROUP:
            merged = aggregates.merge_many(specs, [merged, *group])
            group.clear()
    if group:
        merged = aggregates.merge_many(specs, [merged, *group])
    return aggregates.finalize(specs, merged)


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _record_bytes(parts_dir: Path, rows: Iterable[TaskRow]) -> Iterator[bytes]:
    """The committed records, task by task, as byte blocks read from the part files
    (a batch's part holds several tasks; consecutive tasks usually share one)."""
    handle: BinaryIO | None = None
    current = None
    try:
        for row in rows:
            if not row.part or not row.part_size:
                continue
            if row.part != current:
                if handle is not None:
                    handle.close()
                handle = open(parts_dir / row.part, "rb")  # noqa: SIM115 - reused across rows
                current = row.part
            handle.seek(row.part_offset)
            left = row.part_size
            while left:
                block = handle.read(min(left, 1 << 20))
                if not block:
                    raise OSError(f"{parts_dir / row.part}: shorter than the ledger says")
                left -= len(block)
                yield block
    finally:
        if handle is not None:
            handle.close()


def _write_jsonl(target: Path, blocks: Iterable[bytes]) -> None:
    with atomic_writer(target) as out:
        for block in blocks:
            out.write(block)


def _lines(blocks: Iterable[bytes]) -> Iterator[str]:
    """Whole lines from byte blocks (a task's records always end with a newline)."""
    pending = b""
    for block in blocks:
        pending += block
        *lines, pending = pending.split(b"\n")
        for line in lines:
            yield line.decode("utf-8")


def _write_csv(target: Path, parts_dir: Path, rows: Callable[[], Iterable[TaskRow]]) -> None:
    """Columns are every key in order of first appearance, so two passes over the parts."""
    columns: dict[str, None] = {}
    for line in _lines(_record_bytes(parts_dir, rows())):
        for key in json.loads(line):
            columns.setdefault(key, None)
    header = list(columns)
    with atomic_writer(target) as out:
        text = io.TextIOWrapper(out, encoding="utf-8", errors="backslashreplace", newline="")
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(header)
        for line in _lines(_record_bytes(parts_dir, rows())):
            record = json.loads(line)
            writer.writerow([_csv_cell(record.get(key)) for key in header])
        text.flush()
        text.detach()


RowSource = Sequence[TaskRow] | Callable[[], Iterable[TaskRow]]


def write_records(out_dir: Path, parts_dir: Path, records: str, rows: RowSource) -> None:
    """Rebuild records.jsonl / records.csv; the other form is removed if a config changed."""
    for kind, name in RECORDS_NAMES.items():
        if kind != records:
            path = out_dir / name
            if path.exists():
                os.unlink(path)
    if records not in RECORDS_NAMES:
        return
    again = rows if callable(rows) else (lambda: rows)  # csv reads the rows twice
    target = out_dir / RECORDS_NAMES[records]
    if records == "jsonl":
        _write_jsonl(target, _record_bytes(parts_dir, again()))
    else:
        _write_csv(target, parts_dir, again)
