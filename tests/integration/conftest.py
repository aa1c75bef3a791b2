"""Fixtures for the integration tests: generated input folders full of edge cases."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import pytest

from tests.integration.helpers import edge_case_lines


@pytest.fixture
def edge_data(tmp_path: Path) -> Path:
    """A data folder: a big-ish plain log, small logs (one without a trailing newline,
    one empty), a gzip log, and a JSON-lines file."""
    rng = random.Random(20261127)
    data = tmp_path / "data"
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
