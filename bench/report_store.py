"""A synthetic output store of one run of N tasks, for timing ``report --html`` at sizes
no bench job reaches quickly (10,000 and 100,000 task rows).

Two workers run ranges of a few big files back to back; one task in a hundred fails its
first attempt (crashed, error or timeout, in turn) and is done by its second; the report,
``stats.json`` and the run row are written as a run writes them. Seeded: the same N gives
the same store.

    .venv/bin/python bench/report_store.py OUT_DIR N
"""

from __future__ import annotations

import json
import random
import sqlite3
import sys
import time
from pathlib import Path

from pipeline.models import TaskResult, TaskSpec
from pipeline.store.ledger import LEDGER_NAME, Ledger

CHUNK = 8 << 20
TASKS_PER_FILE = 128
KINDS = ("crashed", "error", "timeout")


def build(out: Path, n_tasks: int, seed: int = 2026) -> None:
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    ledger = Ledger(out)
    run = ledger.start_run("synthetic", "k")
    start = time.time() - n_tasks * 0.05
    clocks = [start, start]
    failures = []
    batch: list[tuple[TaskSpec, TaskResult, list[tuple[int, TaskResult]]]] = []

    def flush() -> None:
        for spec, result, earlier in batch:
            attempts = 1 + len(earlier)
            ledger.commit_tasks({spec.task_id: spec}, [result], attempts, run, "k", earlier)
        batch.clear()

    for i in range(n_tasks):
        path = f"/data/logs/app-{i // TASKS_PER_FILE:05}.log"
        offset = (i % TASKS_PER_FILE) * CHUNK
        spec = TaskSpec(f"t{i}", path, offset, CHUNK, TASKS_PER_FILE * CHUNK, 1)
        w = i % 2
        earlier = []
        if i % 100 == 7:
            kind = KINDS[(i // 100) % 3]
            took = rng.uniform(0.01, 0.2)
            earlier.append(
                (
                    1,
                    TaskResult(
                        spec.task_id, ok=False, error_kind=kind, error=f"{path}: {kind}",
                        started=clocks[w], duration_s=took, host="bench", pid=1000 + w,
                    ),
                )
            )  # fmt: skip
            clocks[w] += took
        took = rng.uniform(0.02, 0.08)
        records = rng.randint(20_000, 40_000)
        result = TaskResult(
            spec.task_id, ok=True, records_in=records, records_out=records, bytes_read=CHUNK,
            started=clocks[w], duration_s=took, host="bench", pid=1000 + w, partials={},
        )  # fmt: skip
        clocks[w] += took
        batch.append((spec, result, earlier))
        if len(batch) >= 1000:
            flush()
    flush()
    duration = max(clocks) - start
    report = {
        "name": "synthetic",
        "run_id": run,
        "status": "ok",
        "exit_code": 0,
        "started": "",
        "finished": "",
        "config": "synthetic",
        "tasks": {"total": n_tasks, "done": n_tasks, "failed": 0, "skipped": 0, "pending": 0},
        "records": {"in": 0, "out": 0, "malformed": 0, "undecodable": 0},
        "run": {"records": 0, "bytes_read": n_tasks * CHUNK, "duration_s": duration},
        "failures": failures,
        "executor": "process (2 workers)",
        "workers": 2,
    }
    ledger.finish_run(run, "ok", 0, report)
    ledger.close()
    with sqlite3.connect(out / LEDGER_NAME) as db:  # the run row spans its tasks
        db.execute("UPDATE runs SET started = ?, finished = ?", (start, start + duration))
    (out / "stats.json").write_text(json.dumps({"n": n_tasks, "by": {"a": 3, "b": 1}}))
    # A name for ``pipeline report CONFIG``: the config only has to point at the store.
    config = out.parent / f"{out.name}.yaml"
    config.write_text(json.dumps({"input": {"paths": ["none/*.log"]}, "output": {"dir": str(out)}}))


if __name__ == "__main__":
    build(Path(sys.argv[1]), int(sys.argv[2]))
