"""Progress while a run goes, and the summary at its end.

On a terminal: two tqdm bars on stderr (tasks, and bytes with rate and ETA). Under cron
(stderr not a terminal): one log line every few seconds. Only the main process reports.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import TYPE_CHECKING, Any

from pipeline.units import format_size

if TYPE_CHECKING:
    from pipeline.live import LiveStats

log = logging.getLogger("pipeline")

LOG_EVERY_S = 5.0
POSTFIX_EVERY_S = 0.25  # the bars' counters from the live view, at most this often


def choose_mode(requested: str, quiet: bool) -> str:
    if quiet and requested == "auto":
        return "none"
    if requested != "auto":
        return requested
    return "bar" if sys.stderr.isatty() else "log"


def format_count(value: float) -> str:
    """A count or a stat for people: thousands separated, floats to a few digits."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int) or abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.4g}"


def headline(stats: dict[str, Any]) -> tuple[str, float] | None:
    """The stat the bars show: the first numeric one."""
    for name, value in stats.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return name, value
    return None


def live_counters(view: dict[str, Any]) -> dict[str, str]:
    """The counters the bars and log lines show, from a published live view
    (``live.build_view``): records in, malformed, failed and the headline stat."""
    if not view:
        return {}
    counters = {
        "records": format_count(view["records_in"]),
        "malformed": format_count(view["malformed"]),
        "failed": format_count(view["tasks_failed"]),
    }
    first = headline(view.get("stats") or {})
    if first is not None:
        counters[first[0]] = format_count(first[1])
    return counters


class Progress:
    """The bars (or log lines) of a run. Task and byte counts come from the commits;
    records, malformed, failed and the headline stat from the view ``live`` published."""

    def __init__(
        self, mode: str, total_tasks: int, total_bytes: int, live: LiveStats | None = None
    ) -> None:
        self.mode = mode
        self.total_tasks = total_tasks
        self.total_bytes = total_bytes
        self.done_tasks = 0
        self.done_bytes = 0
        self.failed = 0
        self._live = live
        self._started = time.monotonic()
        self._last_log = self._started
        self._last_postfix = float("-inf")
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
            now = time.monotonic()
            if failed or now - self._last_postfix >= POSTFIX_EVERY_S:
                self._last_postfix = now
                self._bars[0].set_postfix(self._counters(), refresh=False)
            self._bars[0].update(tasks)
            self._bars[1].update(nbytes)
        elif self.mode == "log":
            now = time.monotonic()
            if now - self._last_log >= LOG_EVERY_S:
                self._last_log = now
                self.log_line()

    def _counters(self) -> dict[str, str]:
        counters = live_counters(self._live.view if self._live is not None else {})
        if "failed" not in counters and self.failed:
            counters["failed"] = format_count(self.failed)
        return counters

    def log_line(self) -> None:
        elapsed = max(time.monotonic() - self._started, 1e-9)
        rate = self.done_bytes / elapsed
        left = self.total_bytes - self.done_bytes
        eta = f", ETA {left / rate:.0f}s" if rate > 0 and left > 0 else ""
        counters = self._counters()
        counters.pop("failed", None)  # said with the tasks
        extra = "".join(f", {name}={value}" for name, value in counters.items())
        log.info(
            "progress: %d/%d tasks (%d failed), %s/%s, %s/s%s%s",
            self.done_tasks,
            self.total_tasks,
            self.failed,
            format_size(self.done_bytes),
            format_size(self.total_bytes),
            format_size(rate),
            eta,
            extra,
        )

    def close(self) -> None:
        """End the bars; in log mode, a last progress line (cron logs show the totals)."""
        if self.mode == "log" and self.done_tasks and not self._closed:
            self.log_line()
        self._closed = True
        if self._bars:
            self._bars[0].set_postfix(self._counters(), refresh=False)
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
    if run.get("malformed"):
        lines.append(
            f"{run['malformed']} malformed record(s) in {report.get('malformed_files', 0)} "
            f"file(s) this run: the first ones, with their line and reason, in "
            f"{out_dir}/malformed.jsonl"
        )
    pending = _pending_line(report)
    if pending:
        lines.append(pending)
    lines.append(f"outputs in {out_dir}")
    return lines


def _pending_line(report: dict[str, Any]) -> str | None:
    """Why tasks are left, and that the next run picks them up (it resumes: what is
    committed stays done)."""
    pending = report["tasks"]["pending"]
    if report["status"] == "interrupted":
        return f"interrupted: {pending} task(s) pending; run again to resume"
    if "stopped_by" in report:
        return (
            f"stopped by {report['stopped_by']}: {pending} task(s) pending; run again to "
            "retry the failed task(s) and run the rest"
        )
    if pending:
        reason = report.get("error", "stopped early")
        return f"{reason}: {pending} task(s) pending; run again to resume"
    return None


def _short(value: dict | list, limit: int = 6) -> str:
    if isinstance(value, dict):
        shown = [f"{k}: {v}" for k, v in list(value.items())[:limit]]
        brackets = "{}"
    else:
        shown = [json.dumps(v, ensure_ascii=False) for v in value[:limit]]
        brackets = "[]"
    more = [f"… ({len(value)} in all)"] if len(value) > limit else []
    return brackets[0] + ", ".join(shown + more) + brackets[1]
