"""The ``call`` plugin of bench job C (the pipeline has no built-in word counter)."""

from __future__ import annotations

from typing import Any


def words_and_bytes(record: dict[str, Any]) -> dict[str, int]:
    """Words as ``str.split()`` counts them, and the line's UTF-8 bytes plus its ``\\n``
    (bench data has only ``\\n`` endings and a final newline, so this adds up to the
    file size, which is what the baselines count)."""
    line = record["line"]
    return {"words": len(line.split()), "bytes": len(line.encode()) + 1}
