"""What every hand-written baseline shares: the inputs of a job, the work on one piece
(a byte range of a big file, or one whole file) and the merge of partial answers.

An answer is a dict of numbers (and, for A/B, ``by_status``: a dict of numbers), so
partials merge by adding them up (``merge``), in any order. The pipeline's ``stats.json``
is converted to the same form by ``bench/run.py``.

- A/B (access logs): ``{"requests", "by_status", "bytes", "errors_5xx"}`` over the lines
  that ``LOG_RE`` matches (the pipeline drops the others as malformed).
- C (text): ``{"lines", "words", "bytes"}``; words as ``str.split()``, bytes of the file
  (the generator writes only ``\\n`` endings and a final newline, so this equals the
  pipeline's per-line ``len(line.encode()) + 1``).
- D (tiny files): ``{"records"}``, the number of lines.
- E-H (what users write: a ``call`` on every record, the combined-format regex): see
  ``user_jobs.py``; they read the data of A, B, C and A (``DATA_OF``), and take a
  ``--kernel``: ``dicts`` (what the pipeline's API does per record) or ``bytes``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import resource
import sys
from collections import Counter
from collections.abc import Iterable
from functools import partial
from pathlib import Path
from typing import Any

import user_jobs

BLOCK = 8 * 1024 * 1024  # bytes per range of job A: the pipeline's chunk_size too
LOG_RE = re.compile(
    r'^(?P<ip>\S+) \S+ \S+ \[(?P<ts>[^]]+)\] "(?P<method>\S+) (?P<path>\S+)[^"]*" '
    r"(?P<status>\d{3}) (?P<bytes>\d+)"
)

Answer = dict[str, Any]
Item = Any  # a str path, or a (path, start, end) range
JOBS = "ABCDEFGH"
DATA_OF = {"E": "A", "F": "B", "G": "C", "H": "A"}  # jobs E-H reuse the data of A-C


def data_job(job: str) -> str:
    """The job whose generated data ``job`` reads (itself for A-D)."""
    return DATA_OF.get(job, job)


# --- inputs ------------------------------------------------------------------------------


def input_files(job: str, data: Path) -> list[str]:
    """The job's input files, sorted (the same set the pipeline's globs find)."""
    pattern = {"A": "*.log", "B": "*.log.gz", "C": "**/*.txt", "D": "**/*.txt"}[data_job(job)]
    return sorted(str(p) for p in data.glob(pattern) if p.is_file())


def ranges(path: str, block: int = BLOCK) -> list[tuple[str, int, int]]:
    size = os.path.getsize(path)
    return [(path, start, min(start + block, size)) for start in range(0, size, block)]


def work_items(job: str, data: Path) -> list[Item]:
    """What goes to the workers: 8 MiB ranges for A, whole files otherwise."""
    files = input_files(job, data)
    if data_job(job) == "A":
        return [r for path in files for r in ranges(path)]
    return files


def chunksize(n_items: int, workers: int) -> int:
    """Items per message for whole-file jobs: about four batches per worker."""
    return max(1, n_items // (workers * 4))


def items_per_message(job: str, n_items: int, workers: int) -> int:
    """One range of a big file per message, ``chunksize`` whole files otherwise."""
    return 1 if data_job(job) == "A" else chunksize(n_items, workers)


# --- reading -----------------------------------------------------------------------------


def read_range(path: str, start: int, end: int) -> bytes:
    """The lines whose first byte lies in [start, end): skip the line that straddles
    ``start`` (the previous range owns it) and finish the one that straddles ``end``."""
    with open(path, "rb") as f:
        if start > 0:
            f.seek(start - 1)
            if f.read(1) != b"\n":
                f.readline()
        pos = f.tell()
        if pos >= end:
            return b""
        data = f.read(end - pos)
        if not data.endswith(b"\n"):
            data += f.readline()
        return data


def read_file(path: str) -> bytes:
    if path.endswith(".gz"):
        with gzip.open(path, "rb") as f:
            return f.read()
    with open(path, "rb") as f:
        return f.read()


def read_item(item: Item) -> bytes:
    return read_range(*item) if isinstance(item, tuple) else read_file(item)


# --- the work ----------------------------------------------------------------------------


def access_stats(lines: Iterable[str]) -> Answer:
    requests = size = errors = 0
    by_status: Counter[str] = Counter()
    match = LOG_RE.match
    for line in lines:
        m = match(line)
        if m is None:
            continue
        status, nbytes = int(m["status"]), int(m["bytes"])
        requests += 1
        by_status[str(status)] += 1
        size += nbytes
        if status >= 500:
            errors += 1
    return {"requests": requests, "by_status": dict(by_status), "bytes": size, "errors_5xx": errors}


def count_lines(data: bytes) -> int:
    return data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)


def process_bytes(job: str, data: bytes, kernel: str = "dicts") -> Answer:
    """The answer over ``data`` (whole lines or a whole file); ``kernel`` is for E-H."""
    if job in DATA_OF:
        return user_jobs.process(job, kernel, data)
    if job in ("A", "B"):
        return access_stats(data.decode("utf-8", "replace").split("\n"))
    if job == "C":
        text = data.decode("utf-8", "replace")
        return {"lines": count_lines(data), "words": len(text.split()), "bytes": len(data)}
    return {"records": count_lines(data)}


def process_item(job: str, item: Item, kernel: str = "dicts") -> Answer:
    return process_bytes(job, read_item(item), kernel)


# Top-level, one-argument task functions per job (picklable by reference everywhere).
def task_a(item: Item) -> Answer:
    return process_item("A", item)


def task_b(item: Item) -> Answer:
    return process_item("B", item)


def task_c(item: Item) -> Answer:
    return process_item("C", item)


def task_d(item: Item) -> Answer:
    return process_item("D", item)


TASKS = {"A": task_a, "B": task_b, "C": task_c, "D": task_d}


def task_for(job: str, kernel: str = "dicts") -> Any:
    """The one-argument task function of ``job`` (a ``partial``, picklable, for E-H)."""
    return TASKS[job] if job in TASKS else partial(process_item, job, kernel=kernel)


def merge(total: Answer, part: Answer) -> Answer:
    """Add ``part`` into ``total`` (numbers add up, nested dicts merge) and return it."""
    for key, value in part.items():
        if isinstance(value, dict):
            merge(total.setdefault(key, {}), value)
        else:
            total[key] = total.get(key, 0) + value
    return total


def merge_all(parts: Iterable[Answer]) -> Answer:
    total: Answer = {}
    for part in parts:
        merge(total, part)
    return total


def empty_answer(job: str) -> Answer:
    if job in DATA_OF:
        return {key: {} if key.startswith("by_") else 0 for key in user_jobs.JOB_KEYS[job]}
    if job in ("A", "B"):
        return {"requests": 0, "by_status": {}, "bytes": 0, "errors_5xx": 0}
    return {"lines": 0, "words": 0, "bytes": 0} if job == "C" else {"records": 0}


# --- command line ------------------------------------------------------------------------


def parse_args(description: str, argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--job", choices=JOBS, required=True)
    parser.add_argument("--data", type=Path, required=True, help="the job's data folder")
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument(
        "--kernel",
        choices=user_jobs.KERNELS,
        default="dicts",
        help="jobs E-H: per record through dicts and the plugin, or on bytes (A-D: one way)",
    )
    return parser.parse_args(argv)


def emit(job: str, answer: Answer) -> None:
    """Print the answer as one JSON line; with BENCH_RSS_FILE set, also write this
    process's own peak RSS (KiB, children not included) there for bench/run.py."""
    full = merge(empty_answer(job), answer)
    full = {k: dict(sorted(v.items())) if isinstance(v, dict) else v for k, v in full.items()}
    sys.stdout.write(json.dumps(full, sort_keys=True) + "\n")
    sys.stdout.flush()
    rss_file = os.environ.get("BENCH_RSS_FILE")
    if rss_file:
        Path(rss_file).write_text(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))
