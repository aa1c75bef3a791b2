"""``configs/wordcount-batch.yaml``, the batch form of ``call``, through the CLI: the
same stats, counts and records as ``wordcount.yaml``, whose plugin works record by record.

Records are written (``output.records=jsonl``) so that the two runs' record files can be
compared byte for byte; small chunks make several tasks per file, each with its batches.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration import oracles
from tests.integration.test_examples import DATA, assert_close, run_example

pytestmark = pytest.mark.timeout(90)


def test_batch_example_gives_the_per_record_example_s_results(tmp_path: Path) -> None:
    outcomes = {}
    for name in ("wordcount", "wordcount-batch"):
        out = tmp_path / name
        stats, report, _ = run_example(
            name,
            out,
            tmp_path,
            "--set",
            "output.records=jsonl",
            "--set",
            "input.chunk_size=8KiB",
            "--set",
            "execution.workers=2",
        )
        assert report["status"] == "ok", report
        assert report["records"] == oracles.COUNTS["wordcount"](DATA)
        assert report["tasks"]["total"] > len(list((DATA / "text").glob("*.txt")))
        outcomes[name] = stats, (out / "records.jsonl").read_bytes()
    assert_close(outcomes["wordcount"][0], oracles.EXPECTED["wordcount"](DATA))
    assert outcomes["wordcount-batch"] == outcomes["wordcount"]
