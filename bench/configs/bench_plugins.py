"""The ``call`` plugins of the bench jobs: C (the pipeline has no built-in word counter),
and E-G, a call on every record as users write it. The hand-written baselines of jobs
E-H import this module and call the same functions."""

from __future__ import annotations

import re
from typing import Any


def text_counts(record: dict[str, Any]) -> dict[str, int]:
    """Lines, words (as ``str.split()`` counts them in the UTF-8 text) and bytes of a whole
    file (a ``format: bytes`` record), the way the hand-written baselines count them."""
    data: bytes = record["data"]
    lines = data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)
    words = len(data.decode("utf-8", "replace").split())
    return {"lines": lines, "words": words, "bytes": len(data)}


# --- jobs E-H: a call on every record -----------------------------------------------------

# User agents of crawlers and tools (case-insensitive): "bot" covers Googlebot, bingbot,
# AhrefsBot; the load balancer's health checker counts as a bot too.
BOT_PATTERN = r"bot|crawl|spider|curl|python-requests|HealthChecker"
_BOT_RE = re.compile(BOT_PATTERN, re.IGNORECASE)
_BOT_RE_BYTES = re.compile(BOT_PATTERN.encode(), re.IGNORECASE)


def client_kind(agent: str) -> str:
    """``bot``, ``browser`` (a ``Mozilla/`` agent that is no bot) or ``other`` (``-``)."""
    if _BOT_RE.search(agent):
        return "bot"
    return "browser" if agent.startswith("Mozilla/") else "other"


def client_kind_of_bytes(agent: bytes) -> str:
    """``client_kind`` of an ASCII agent given as bytes (the hand-written bytes script)."""
    if _BOT_RE_BYTES.search(agent):
        return "bot"
    return "browser" if agent.startswith(b"Mozilla/") else "other"


def tag_client(record: dict[str, Any]) -> dict[str, Any]:
    """Jobs E and F, one call per log line: the record with ``client`` added."""
    record["client"] = client_kind(record["agent"])
    return record


def tag_client_batch(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``tag_client`` in the batch form (``call: {function: ..., batch: true}``): a list
    of records in, the same list out, each with ``client`` added."""
    kinds: dict[str, str] = {}
    for record in records:
        agent = record["agent"]
        kind = kinds.get(agent)
        if kind is None:
            kind = kinds[agent] = client_kind(agent)
        record["client"] = kind
    return records


def line_counts(record: dict[str, Any]) -> dict[str, int]:
    """Job G, one call per line: its words (as ``str.split()`` counts them) and its bytes
    in UTF-8, the newline included (the generator's files end every line with one)."""
    line: str = record["line"]
    return {"words": len(line.split()), "bytes": len(line.encode()) + 1}


def same(record: dict[str, Any]) -> dict[str, Any]:
    """A plugin that does nothing: bench/profile_call_path.py puts it at the end of a cut
    chain so that every variant stays on the generic (``call``) path."""
    return record
