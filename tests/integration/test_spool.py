"""A run whose planned batches overflow to the spool file gives the same store as one
that holds them all: the batches come back from disk whole and in order."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from pipeline import planning
from pipeline.config import load_config
from pipeline.runner import Run, RunOptions
from tests.integration.helpers import run_cli, write_config

pytestmark = pytest.mark.timeout(120)


def make_inputs(data: Path, n: int) -> None:
    for i in range(n):
        folder = data / f"d{i % 7}"
        folder.mkdir(parents=True, exist_ok=True)
        lines = "".join(
            f"10.0.{i % 250}.{j} GET /p{j} {200 + j % 3} {i * 10 + j}\n" for j in range(i % 5 + 1)
        )
        (folder / f"f{i:04d}.log").write_text(lines)


def config(tmp_path: Path, out: str, executor: str) -> Path:
    body: dict[str, Any] = {
        "name": "spool",
        "input": {"paths": ["data/**/*.log"], "format": "lines"},
        "steps": [
            {"regex": r"^(?P<ip>\S+) (?P<method>\S+) (?P<path>\S+) (?P<status>\d+) (?P<n>\d+)$"},
            {"types": {"status": "int", "n": "int"}},
        ],
        "stats": {"lines": {"count": True}, "total": {"sum": "n"}, "by": {"count_by": "status"}},
        "output": {"dir": out, "records": "jsonl"},
        "execution": {"executor": executor, "workers": 2},
    }
    return write_config(tmp_path, body, name=f"{out}.yaml")


def test_spooled_batches_give_the_same_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_inputs(tmp_path / "data", 700)
    spooled: list[int] = []
    real = planning.Batcher._to_spool

    def counting(self: planning.Batcher) -> None:
        spooled.append(len(self._ready))
        real(self)

    monkeypatch.setattr(planning.Batcher, "SPOOL_AFTER", 40)
    monkeypatch.setattr(planning, "SPOOL_CHUNK", 3)
    monkeypatch.setattr(planning.Batcher, "_to_spool", counting)
    cfg = load_config(config(tmp_path, "spooled", "serial"))
    result = Run(cfg, RunOptions(progress="none", quiet=True)).execute()
    assert result.exit_code == 0
    assert len(spooled) > 3  # several chunks went to disk and came back
    assert result.report["tasks"]["done"] == 700

    reference = run_cli("run", str(config(tmp_path, "plain", "process")), "--progress", "none")
    assert reference.returncode == 0, reference.stderr
    spooled_out, plain_out = tmp_path / "spooled", tmp_path / "plain"
    assert (spooled_out / "records.jsonl").read_bytes() == (
        plain_out / "records.jsonl"
    ).read_bytes()
    stats = json.loads((spooled_out / "stats.json").read_text())
    assert stats == json.loads((plain_out / "stats.json").read_text())
    assert stats["lines"] == sum(i % 5 + 1 for i in range(700))
    assert [n for n in os.listdir(spooled_out) if "spool" in n] == []
