"""The four jobs of ``bench/`` give the right answer on small data: the pipeline (with
the configs ``make bench`` runs, on a pool and in-process) agrees with the hand-written
baselines. Timing is ``make bench``'s business, never asserted here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.integration.helpers import REPO, run_cli

BENCH = REPO / "bench"
T = 120

# Small enough for CI, big enough for several tasks: job A is cut into 64 KiB ranges.
SMALL = {
    "A": {"size": 1 << 20},
    "B": {"files": 6, "size": 1 << 20},
    "C": {"files": 150},
    "D": {"files": 300},
}


GENERATE = """
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import generate
root, jobs = Path(sys.argv[2]), json.loads(sys.argv[3])
print(json.dumps({job: str(generate.ensure(job, root=root, **p)) for job, p in jobs.items()}))
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The bench generator's data at small sizes (run as ``make bench`` runs it: its own
    process, whose worker pool gzips job B's files)."""
    root = tmp_path_factory.mktemp("bench-data")
    proc = subprocess.run(
        [sys.executable, "-c", GENERATE, str(BENCH), str(root), json.dumps(SMALL)],
        capture_output=True,
        text=True,
        timeout=T,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr
    return {job: Path(folder) for job, folder in json.loads(proc.stdout).items()}


def baseline_answer(script: str, job: str, folder: Path) -> dict[str, Any]:
    command = [sys.executable, str(BENCH / "baselines" / script), "--job", job]
    proc = subprocess.run(
        [*command, "--data", str(folder), "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=T,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def pipeline_answer(job: str, folder: Path, out: Path, *sets: str) -> dict[str, Any]:
    options = [arg for setting in sets for arg in ("--set", setting)]
    result = run_cli(
        "run",
        str(BENCH / "configs" / f"job_{job.lower()}.yaml"),
        "--full",
        "--progress",
        "none",
        "--set",
        f"output.dir={out}",
        *options,
        env={"BENCH_DATA": str(folder)},
        timeout=T,
    )
    assert result.returncode == 0, result.stderr
    return json.loads((out / "stats.json").read_text())


@pytest.mark.timeout(300)
@pytest.mark.parametrize("job", ["A", "B", "C", "D"])
def test_pipeline_and_baselines_agree(job: str, data: dict[str, Path], tmp_path: Path) -> None:
    folder = data[job]
    expected = baseline_answer("plain_loop.py", job, folder)
    assert baseline_answer("raw_pool.py", job, folder) == expected
    assert all(expected.values()), expected  # the data exercises every part of the answer
    runs = {
        "pool": ("execution.workers=2", "input.chunk_size=64KiB"),
        "serial": ("execution.executor=serial",),
    }
    for label, sets in runs.items():
        stats = pipeline_answer(job, folder, tmp_path / label, *sets)
        assert {key: stats[key] for key in expected} == expected, label
