"""The ``call`` plugin of bench job C (the pipeline has no built-in word counter)."""

from __future__ import annotations

from typing import Any


def text_counts(record: dict[str, Any]) -> dict[str, int]:
    """Lines, words (as ``str.split()`` counts them in the UTF-8 text) and bytes of a whole
    file (a ``format: bytes`` record), the way the hand-written baselines count them."""
    data: bytes = record["data"]
    lines = data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)
    words = len(data.decode("utf-8", "replace").split())
    return {"lines": lines, "words": words, "bytes": len(data)}
