"""A run whose planned batches overflow to the spool file gives the same store as one
that holds them all: the batches come back from disk whole and in order."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pipeline import planning
from pipeline.config import load_config
from pipeline.runner import Run, RunOptions
from tests.integration.helpers import run_cli, small_logs_config, write_small_log

pytestmark = pytest.mark.timeout(120)


def test_spooled_batches_give_the_same_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(700):
        write_small_log(tmp_path / "data", i)
    spooled: list[int] = []
    real = planning.Batcher._to_spool

    def counting(self: planning.Batcher) -> None:
        spooled.append(len(self._ready))
        real(self)

    monkeypatch.setattr(planning.Batcher, "SPOOL_AFTER", 40)
    monkeypatch.setattr(planning, "SPOOL_CHUNK", 3)
    monkeypatch.setattr(planning.Batcher, "_to_spool", counting)
    cfg = load_config(small_logs_config(tmp_path, "spooled", executor="serial"))
    result = Run(cfg, RunOptions(progress="none", quiet=True)).execute()
    assert result.exit_code == 0
    assert len(spooled) > 3  # several chunks went to disk and came back
    assert result.report["tasks"]["done"] == 700

    reference = run_cli("run", str(small_logs_config(tmp_path, "plain")), "--progress", "none")
    assert reference.returncode == 0, reference.stderr
    spooled_out, plain_out = tmp_path / "spooled", tmp_path / "plain"
    assert (spooled_out / "records.jsonl").read_bytes() == (
        plain_out / "records.jsonl"
    ).read_bytes()
    stats = json.loads((spooled_out / "stats.json").read_text())
    assert stats == json.loads((plain_out / "stats.json").read_text())
    assert stats["lines"] == sum(i % 5 + 1 for i in range(700))
    assert [n for n in os.listdir(spooled_out) if "spool" in n] == []
