"""Where a record's time goes on the generic (``call``) path, stage by stage.

``worker.execute`` runs job E (bench/configs/job_e.yaml: the combined format's 9 groups,
``types`` with nulls, a ``call`` per line, five stats) over one 64 MiB log as one task, in
this process, for the chain cut after each step (``bench_plugins:same`` at the end keeps
every variant on the generic path) and for each stat on its own. The differences between
variants are the per-stage figures: microseconds per record, best of 3 (bench/PROFILE.md,
seventh round).

    PYTHONPATH=. .venv/bin/python bench/profile_call_path.py
"""

from __future__ import annotations

import gc
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

from pipeline import worker
from pipeline.config import load_config
from pipeline.models import Batch, TaskSpec
from pipeline.runner import job_spec

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from generate import ensure  # noqa: E402  (bench/ is not a package)

CONFIG = BENCH / "configs" / "job_e.yaml"
SAME = {"call": "bench_plugins:same"}
STEP_LABELS = ("regex (9 named groups)", "types (2 fields, nulls)", "the plugin's own work")


def main() -> None:
    data = ensure("A", size=64 * 2**20)
    path = str(data / "access.log")
    size = os.path.getsize(path)
    task = TaskSpec("t", path, 0, size, size, os.stat(path).st_mtime_ns, None, "new")
    with CONFIG.open(encoding="utf-8") as handle:
        doc = yaml.safe_load(handle)
    steps, stats = doc["steps"], doc["stats"]
    os.environ["BENCH_DATA"] = str(data)
    parts = Path(tempfile.mkdtemp(prefix="profile-"))
    (parts / ".tmp").mkdir()
    gc.freeze()

    def timed(k: int, names: list[str]) -> tuple[float, int]:
        chain = steps[:k] if k == len(steps) else [*steps[:k], SAME]
        cfg = load_config(
            CONFIG,
            [
                "steps=" + yaml.safe_dump(chain, default_flow_style=True).strip(),
                "stats=" + yaml.safe_dump({n: stats[n] for n in names}, default_flow_style=True),
            ],
        )
        job = job_spec(cfg, parts)
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            out = worker.execute(job, Batch.of((task,)))
            best = min(best, time.perf_counter() - started)
        result = out.results[0]
        assert result.ok, result.error
        return best, result.records_in

    rows = []
    first, n = timed(0, [])
    rows.append(("reading, the record dicts, the loop, a plugin that returns its record", first))
    previous = first
    for k, label in enumerate(STEP_LABELS, 1):
        seconds, _ = timed(k, [])
        rows.append((label, seconds - previous))
        previous = seconds
    chain_only = previous
    for name in stats:
        seconds, _ = timed(len(steps), [name])
        rows.append((f"stat {name}", seconds - chain_only))
    whole, _ = timed(len(steps), list(stats))
    rows.append(("all the stats", whole - chain_only))
    rows.append(("**the whole per-record path**", whole))
    print(f"{n} records; microseconds per record")
    for label, seconds in rows:
        print(f"| {label} | {seconds / n * 1e6:.2f} |")


if __name__ == "__main__":
    main()
