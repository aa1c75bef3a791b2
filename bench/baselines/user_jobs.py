"""The work of jobs E-H written by hand, two ways: what users write, measured against the
pipeline running the same steps.

- ``dicts``: exactly what the pipeline's API does per record and nothing else: decode the
  line (``errors="replace"``), a dict ``{"line": text}``, the regex's named groups into it,
  ``int`` on ``status`` and on ``bytes`` (``-`` -> None, the ``nulls`` of ``types``), the
  job's plugin from ``bench/configs/bench_plugins.py`` called with the dict, and the stats
  read from the dict. What the same user logic costs when written by hand.
- ``bytes``: the compiled regex on bytes lines (or, for G, ``bytes`` methods on the whole
  file), never a dict: the practical limit of Python here. The plugin's rule runs once per
  distinct user agent of a range (``client_kind_of_bytes`` remembered in a dict), as a
  hand-tuned script would do it.

Jobs: E and F (one big log, ``.gz`` logs): the 9-group regex, ``types``, a ``call`` per
line (``tag_client``), stats requests, by_status, bytes, errors_5xx, by_client. G (small
text files): a ``call`` per line (``line_counts``), stats lines, words, bytes. H (one big
log): E without the ``call`` and without by_client, the pipeline's declarative fast path.
The data is the generator's: ASCII log lines, UTF-8 text, ``\\n`` endings only, so the
bytes and str forms of the regex and of ``split`` agree on it.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "configs"))
import bench_plugins  # bench/configs/bench_plugins.py: the pipeline's plugins, the same code

Answer = dict[str, Any]
Plugin = Callable[[dict[str, Any]], dict[str, Any]]

# The combined log format with 9 named groups (ident and user are matched, not kept). The
# configs job_[efh].yaml and job_e_batch.yaml spell the same pattern (a test checks it).
COMBINED_PATTERN = (
    r'^(?P<ip>\S+) \S+ \S+ \[(?P<ts>[^]]+)\] "(?P<method>\S+) (?P<path>\S+) (?P<proto>[^"]*)" '
    r'(?P<status>\d{3}) (?P<bytes>\d+|-) "(?P<referer>[^"]*)" "(?P<agent>[^"]*)"'
)
COMBINED_RE = re.compile(COMBINED_PATTERN)
COMBINED_RE_BYTES = re.compile(COMBINED_PATTERN.encode())
_STATUS, _BYTES, _AGENT = 6, 7, 9  # group numbers, for the bytes kernel

JOB_KEYS = {
    "E": ("requests", "by_status", "bytes", "errors_5xx", "by_client"),
    "F": ("requests", "by_status", "bytes", "errors_5xx", "by_client"),
    "G": ("lines", "words", "bytes"),
    "H": ("requests", "by_status", "bytes", "errors_5xx"),
}
KERNELS = ("dicts", "bytes")


def lines_of(data: bytes) -> list[bytes]:
    """The lines the pipeline makes records of: split on ``\\n``, no empty last piece."""
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return lines


def access_dicts(data: bytes, plugin: Plugin | None) -> Answer:
    requests = size = errors = 0
    by_status: Counter[str] = Counter()
    by_client: Counter[str] = Counter()
    match = COMBINED_RE.match
    for raw in lines_of(data):
        record: dict[str, Any] = {"line": raw.decode("utf-8", "replace")}
        found = match(record["line"])
        if found is None:
            continue  # malformed
        record.update(found.groupdict())
        record["status"] = int(record["status"])
        record["bytes"] = None if record["bytes"] == "-" else int(record["bytes"])
        if plugin is not None:
            record = plugin(record)
            by_client[record["client"]] += 1
        requests += 1
        by_status[str(record["status"])] += 1
        if record["bytes"] is not None:
            size += record["bytes"]
        if record["status"] >= 500:
            errors += 1
    answer = {"requests": requests, "by_status": dict(by_status), "bytes": size}
    answer["errors_5xx"] = errors
    if plugin is not None:
        answer["by_client"] = dict(by_client)
    return answer


def access_bytes(data: bytes, with_client: bool) -> Answer:
    requests = size = errors = 0
    by_status: Counter[int] = Counter()
    by_client: Counter[str] = Counter()
    kinds: dict[bytes, str] = {}
    match = COMBINED_RE_BYTES.match
    for line in data.split(b"\n"):
        found = match(line)
        if found is None:
            continue
        status_text, nbytes, agent = found.group(_STATUS, _BYTES, _AGENT)
        status = int(status_text)
        requests += 1
        by_status[status] += 1
        if nbytes != b"-":
            size += int(nbytes)
        if status >= 500:
            errors += 1
        if with_client:
            kind = kinds.get(agent)
            if kind is None:
                kind = kinds[agent] = bench_plugins.client_kind_of_bytes(agent)
            by_client[kind] += 1
    answer = {"requests": requests, "by_status": {str(k): n for k, n in by_status.items()}}
    answer |= {"bytes": size, "errors_5xx": errors}
    if with_client:
        answer["by_client"] = dict(by_client)
    return answer


def words_dicts(data: bytes) -> Answer:
    lines = words = size = 0
    for raw in lines_of(data):
        counts = bench_plugins.line_counts({"line": raw.decode("utf-8", "replace")})
        lines += 1
        words += counts["words"]
        size += counts["bytes"]
    return {"lines": lines, "words": words, "bytes": size}


def words_bytes(data: bytes) -> Answer:
    lines = data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)
    return {"lines": lines, "words": len(data.split()), "bytes": len(data)}


def process(job: str, kernel: str, data: bytes) -> Answer:
    """The answer of job E-H over ``data`` (whole lines), with the ``kernel`` named."""
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {', '.join(KERNELS)}, got {kernel!r}")
    if job == "G":
        return words_dicts(data) if kernel == "dicts" else words_bytes(data)
    with_client = job in ("E", "F")
    if kernel == "bytes":
        return access_bytes(data, with_client)
    return access_dicts(data, bench_plugins.tag_client if with_client else None)
