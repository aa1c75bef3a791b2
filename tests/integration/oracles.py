"""Expected results of the example configs, computed the slow, obvious way.

Plain Python, independent of the ``pipeline`` package and of ``configs/example_plugins.py``:
each oracle re-reads every file its config matches and applies the SPEC by hand. The
patterns, regex and stats below mirror ``configs/*.yaml``; keep them in step.

``data_dir`` is the folder that holds ``logs/``, ``text/``, ``sales/`` and ``files/``
(``data`` or ``data/generated``).

- ``<example>_expected(data_dir)`` is the ``stats.json`` the example must produce. Integer
  values are exact; float sums and means should be compared with a relative tolerance.
- ``<example>_counts(data_dir)`` is ``report.json``'s ``records``: ``{in, out, malformed,
  undecodable}`` for a full run.

``python tests/integration/oracles.py [DATA_DIR]`` prints them all as JSON.
"""

from __future__ import annotations

import csv
import glob
import gzip
import hashlib
import json
import math
import os
import re
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

ACCESS_PATTERNS = ("logs/*.log", "logs/**/*.gz")
ACCESS_RE = re.compile(
    r'^(?P<ip>\S+) \S+ \S+ \[(?P<ts>[^]]+)\] "(?P<method>\S+) (?P<path>\S+)[^"]*" '
    r"(?P<status>\d{3}) (?P<bytes>\S+)"
)
TEXT_PATTERNS = ("text/*.txt",)
SALES_PATTERNS = ("sales/*.csv",)
FILES_PATTERNS = ("files/**/*.*",)


# --- helpers: the SPEC's input and stats semantics ---------------------------------------


def matched_files(data_dir: str | Path, patterns: Iterable[str]) -> list[Path]:
    """Regular files matched by any of the globs (``**`` recursive), sorted, no duplicates."""
    root = glob.escape(str(data_dir))
    found = {
        path
        for pattern in patterns
        for path in glob.glob(os.path.join(root, pattern), recursive=True)
        if os.path.isfile(path)
    }
    return sorted(Path(path) for path in found)


def read_lines(path: Path, encoding: str = "utf-8") -> Iterator[tuple[str, bool]]:
    """``(line, undecodable)`` per line: only ``\\n`` ends a line and one ``\\r`` right
    before it is dropped; ``.gz`` is decompressed; undecodable bytes are replaced."""
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    lines = data.split(b"\n")
    if lines[-1] == b"":  # the file ends with \n (or is empty): no line after it
        lines.pop()
    for raw in lines:
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        try:
            yield raw.decode(encoding), False
        except UnicodeDecodeError:
            yield raw.decode(encoding, errors="replace"), True


def stat_key(value: Any) -> str:
    """``count_by``/``top`` key: a string as-is, anything else as JSON (200 -> "200")."""
    return value if isinstance(value, str) else json.dumps(value)


def count_by(values: Iterable[Any]) -> dict[str, int]:
    return dict(sorted(Counter(stat_key(v) for v in values).items()))


def top(values: Iterable[Any], k: int) -> list[list[Any]]:
    """``[[key, n], ...]`` by count descending, then key ascending, at most ``k``."""
    counts = Counter(stat_key(v) for v in values)
    return [[key, n] for key, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:k]]


def _present(values: Iterable[Any]) -> list[Any]:
    """What sum/min/max/mean see: missing and null values are skipped, as in SQL."""
    return [v for v in values if v is not None]


def _mean(values: list[float]) -> float | None:
    return math.fsum(values) / len(values) if values else None


def _counts(n_in: int, n_out: int, malformed: int, undecodable: int) -> dict[str, int]:
    return {"in": n_in, "out": n_out, "malformed": malformed, "undecodable": undecodable}


# --- access-logs -----------------------------------------------------------------------


def _access_logs(data_dir: str | Path) -> tuple[dict[str, Any], dict[str, int]]:
    records, n_in, malformed, undecodable = [], 0, 0, 0
    for path in matched_files(data_dir, ACCESS_PATTERNS):
        for line, bad in read_lines(path):
            n_in, undecodable = n_in + 1, undecodable + bad
            match = ACCESS_RE.match(line)  # regex: no match is malformed
            if match is None:
                malformed += 1
                continue
            record = match.groupdict()
            try:  # types {status: int, bytes: int} with nulls ["-"]
                for field in ("status", "bytes"):
                    value = record[field]
                    record[field] = None if value == "-" else int(value)
            except ValueError:
                malformed += 1
                continue
            if record["path"] != "/healthz":  # filter
                records.append(record)
    sizes = _present(r["bytes"] for r in records)
    stats = {
        "requests": len(records),
        "server_errors": sum(1 for r in records if r["status"] >= 500),
        "bytes_sent": sum(sizes),
        "by_status": count_by(r["status"] for r in records),
        "top_paths": top((r["path"] for r in records), 5),
        "largest": max(sizes, default=None),
        "mean_bytes": _mean(sizes),
    }
    return stats, _counts(n_in, len(records), malformed, undecodable)


def access_logs_expected(data_dir: str | Path) -> dict[str, Any]:
    """``stats.json`` of ``configs/access-logs.yaml``."""
    return _access_logs(data_dir)[0]


def access_logs_counts(data_dir: str | Path) -> dict[str, int]:
    return _access_logs(data_dir)[1]


# --- wordcount -------------------------------------------------------------------------


def _wordcount(data_dir: str | Path) -> tuple[dict[str, Any], dict[str, int]]:
    words, n_in, undecodable = [], 0, 0
    for path in matched_files(data_dir, TEXT_PATTERNS):
        for line, bad in read_lines(path):
            n_in, undecodable = n_in + 1, undecodable + bad
            letters_only = "".join(ch if ch.isalpha() else " " for ch in line)
            words += [word.lower() for word in letters_only.split()]
    stats = {"words": len(words), "top_words": top(words, 20)}
    return stats, _counts(n_in, len(words), 0, undecodable)


def wordcount_expected(data_dir: str | Path) -> dict[str, Any]:
    """``stats.json`` of ``configs/wordcount.yaml``."""
    return _wordcount(data_dir)[0]


def wordcount_counts(data_dir: str | Path) -> dict[str, int]:
    return _wordcount(data_dir)[1]


# --- sales-csv -------------------------------------------------------------------------


def _sales(data_dir: str | Path) -> tuple[dict[str, Any], dict[str, int]]:
    rows, n_in, malformed = [], 0, 0
    for path in matched_files(data_dir, SALES_PATTERNS):
        with path.open(encoding="utf-8", newline="") as f:
            for row in csv.DictReader(f):
                n_in += 1
                try:  # types {units: int, price: float}
                    row["units"], row["price"] = int(row["units"]), float(row["price"])
                except ValueError:
                    malformed += 1
                    continue
                row["revenue"] = round(row["units"] * row["price"], 2)  # call revenue
                rows.append(row)
    prices = [r["price"] for r in rows]
    stats = {
        "rows": len(rows),
        "units": sum(r["units"] for r in rows),
        "revenue": math.fsum(r["revenue"] for r in rows),
        "by_region": count_by(r["region"] for r in rows),
        "max_price": max(prices, default=None),
        "mean_price": _mean(prices),
    }
    return stats, _counts(n_in, len(rows), malformed, 0)


def sales_expected(data_dir: str | Path) -> dict[str, Any]:
    """``stats.json`` of ``configs/sales-csv.yaml``."""
    return _sales(data_dir)[0]


def sales_counts(data_dir: str | Path) -> dict[str, int]:
    return _sales(data_dir)[1]


# --- checksums -------------------------------------------------------------------------


def checksums_expected(data_dir: str | Path) -> dict[str, Any]:
    """``stats.json`` of ``configs/checksums.yaml``."""
    sizes = [path.stat().st_size for path in matched_files(data_dir, FILES_PATTERNS)]
    return {"files": len(sizes), "total_bytes": sum(sizes), "largest": max(sizes, default=None)}


def checksums_counts(data_dir: str | Path) -> dict[str, int]:
    n = len(matched_files(data_dir, FILES_PATTERNS))
    return _counts(n, n, 0, 0)


def checksums_digests(data_dir: str | Path) -> dict[str, str]:
    """``{absolute path: sha256 hex}``, to check the records of the checksums example."""
    return {
        str(path.resolve()): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in matched_files(data_dir, FILES_PATTERNS)
    }


# --- by config name --------------------------------------------------------------------

EXPECTED = {
    "access-logs": access_logs_expected,
    "wordcount": wordcount_expected,
    "sales-csv": sales_expected,
    "checksums": checksums_expected,
}
COUNTS = {
    "access-logs": access_logs_counts,
    "wordcount": wordcount_counts,
    "sales-csv": sales_counts,
    "checksums": checksums_counts,
}

if __name__ == "__main__":
    data = sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[2] / "data"
    report = {
        name: {"stats": EXPECTED[name](data), "records": COUNTS[name](data)} for name in EXPECTED
    }
    print(json.dumps(report, indent=2, ensure_ascii=False))
