"""Progress while a run goes, and the summary at its end.

On a terminal: two tqdm bars on stderr (tasks, and bytes with rate and ETA). Under cron
(stderr not a terminal): one log line every few seconds. Only the main process reports.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from pipeline.units import format_size

log = logging.getLogger("pipeline")

LOG_EVERY_S = 5.0


def choose_mode(requested: str, quiet: bool) -> str:
    if quiet and requested == "auto":
        return "none"
    if requested != "auto":
        return requested
    return "bar" if sys.stderr.isatty() else "log"


class Progress:
    def __init__(self, mode: str, total_tasks: int, total_bytes: int) -> None:
        self.mode = mode
        self.total_tasks = total_tasks
        self.total_bytes = total_bytes
        self.done_tasks = 0
        self.done_bytes = 0
        self.failed = 0
        self._started = time.monotonic()
        self._last_log = self._started
        self._bars: list[Any] = []
        self._closed = False
        if mode == "bar" and total_tasks:
            from tqdm import tqdm

            self._bars = [
                tqdm(
                    total=total_tasks,
                    desc="tasks",
                    unit="task",
                    position=0,
                    leave=True,
                    dynamic_ncols=True,
                    file=sys.stderr,
                ),
                tqdm(
                    total=total_bytes,
                    desc="bytes",
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    position=1,
                    leave=True,
                    dynamic_ncols=True,
                    file=sys.stderr,
                ),
            ]

    def set_totals(self, tasks: int, nbytes: int) -> None:
        """The plan grew (it is made while the run goes)."""
        if tasks == self.total_tasks and nbytes == self.total_bytes:
            return
        self.total_tasks, self.total_bytes = tasks, nbytes
        if self._bars:
            self._bars[0].total = tasks
            self._bars[1].total = nbytes
            for bar in self._bars:
                bar.refresh()

    def advance(self, nbytes: int, tasks: int = 1, failed: int = 0) -> None:
        self.done_tasks += tasks
        self.done_bytes += nbytes
        self.failed += failed
        if self._bars:
            self._bars[0].update(tasks)
            self._bars[1].update(nbytes)
            if failed:
                self._bars[0].set_postfix(failed=self.failed, refresh=False)
        elif self.mode == "log":
            now = time.monotonic()
            if now - self._last_log >= LOG_EVERY_S:
                self._last_log = now
                self.log_line()

    def log_line(self) -> None:
        elapsed = max(time.monotonic() - self._started, 1e-9)
        rate = self.done_bytes / elapsed
        left = self.total_bytes - self.done_bytes
        eta = f", ETA {left / rate:.0f}s" if rate > 0 and left > 0 else ""
        log.info(
            "progress: %d/%d tasks (%d failed), %s/%s, %s/s%s",
            self.done_tasks,
            self.total_tasks,
            self.failed,
            format_size(self.done_bytes),
            format_size(self.total_bytes),
            format_size(rate),
            eta,
        )

    def close(self) -> None:
        """End the bars; in log mode, a last progress line (cron logs show the totals)."""
        if self.mode == "log" and self.done_tasks and not self._closed:
            self.log_line()
        self._closed = True
        for bar in self._bars:
            bar.close()
        self._bars = []


def summary_lines(report: dict[str, Any], stats: dict[str, Any], out_dir: str) -> list[str]:
    """A short human summary of a finished run."""
    tasks = report["tasks"]
    run = report["run"]
    records = report["records"]
    lines = [
        f"{report['name']}: {report['status']} in {run['duration_s']:.2f}s — tasks: "
        f"{tasks['done']} done, {tasks['failed']} failed, {tasks['skipped']} skipped, "
        f"{tasks['pending']} pending; this run read {format_size(run['bytes_read'])}, "
        f"{run['records']} records",
        f"records (all committed): {records['in']} in, {records['out']} out, "
        f"{records['malformed']} malformed, {records['undecodable']} undecodable",
    ]
    for name, value in list(stats.items())[:8]:
        text = repr(value) if not isinstance(value, (dict, list)) else _short(value)
        lines.append(f"  {name}: {text}")
    for failure in report["failures"][:5]:
        lines.append(f"  FAILED {failure['path']} ({failure['range']}): {failure['error']}")
    if len(report["failures"]) > 5:
        lines.append(f"  ... and {len(report['failures']) - 5} more failures in report.json")
    lines.append(f"outputs in {out_dir}")
    return lines


def _short(value: dict | list, limit: int = 6) -> str:
    if isinstance(value, dict):
        shown = [f"{k}: {v}" for k, v in list(value.items())[:limit]]
        brackets = "{}"
    else:
        shown = [json.dumps(v, ensure_ascii=False) for v in value[:limit]]
        brackets = "[]"
    more = [f"… ({len(value)} in all)"] if len(value) > limit else []
    return brackets[0] + ", ".join(shown + more) + brackets[1]
