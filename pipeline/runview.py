"""What the HTML report shows of a run, computed from the output store alone.

Pure data, no plotting: the timeline's bars (one row per worker), throughput over time,
the duration histogram, the slowest tasks, the stats, failures, the malformed sample and
the run history. ``htmlreport`` draws it. Kept apart so the numbers can be tested without
a plotting library, and so a report of an old ledger (no timings) still has the rest.
"""

from __future__ import annotations

import heapq
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.models import MALFORMED_SAMPLE_SIZE, TaskSpec
from pipeline.store import merge
from pipeline.store.ledger import Activity, Ledger
from pipeline.store.lock import lock_holder
from pipeline.storeview import run_status

# The timeline draws at most this many bars (unless failures and retried attempts alone
# are more): beyond it, consecutive successful tasks of a worker are merged into one bar.
MAX_BARS = 4000
THROUGHPUT_BINS = 120  # at most; a run of few tasks gets about one bin a task
HISTOGRAM_BINS = 30
SLOWEST_SHOWN = 10
HISTORY_RUNS = 50
UNKNOWN_WORKER = "unknown"


@dataclass(frozen=True, slots=True)
class Bar:
    """One bar of the timeline; seconds from the run's start. ``outcome`` is the colour
    (done | error | crashed | timeout | abandoned); ``retried``: an attempt that went round
    again; ``tasks`` > 1: a batch of files, or successful tasks merged for room."""

    worker: str
    start: float
    end: float
    outcome: str
    retried: bool
    tasks: int
    path: str
    range: str
    attempts: int
    records: int
    nbytes: int
    error: str

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class Throughput:
    """Rates in equal time bins from the run's start: ``times`` are the bins' starts."""

    width: float
    times: list[float]
    records_per_s: list[float]
    mb_per_s: list[float]


@dataclass(frozen=True)
class Histogram:
    edges: list[float]
    counts: list[int]


@dataclass(frozen=True)
class HistoryEntry:
    run_id: int
    started: float
    status: str
    exit_code: int | None
    duration_s: float | None
    records: int | None


@dataclass
class RunView:
    """Everything the report page shows."""

    report: dict[str, Any]
    run_started: float
    bars: list[Bar] = field(default_factory=list)
    merged: int = 0  # tasks drawn inside merged bars
    workers: list[str] = field(default_factory=list)
    throughput: Throughput | None = None
    histogram: Histogram | None = None
    slowest: list[Bar] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    malformed: list[dict[str, Any]] = field(default_factory=list)
    history: list[HistoryEntry] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def tasks_drawn(self) -> int:
        """Tasks in the timeline (their last attempts: earlier ones are bars of their own)."""
        return sum(bar.tasks for bar in self.bars if not bar.retried)


def worker_order(worker: str) -> tuple[str, int, str]:
    """``host:pid`` by host, then pid as a number (pid 999 before pid 1000)."""
    host, _, pid = worker.rpartition(":")
    return (host, int(pid), "") if pid.isdigit() else (worker, 0, worker)


def describe_range(activity: Activity) -> str:
    if activity.tasks > 1:
        return f"{activity.tasks} files (batch)"
    spec = TaskSpec("", activity.path, activity.offset, activity.length, 0, 0, None, "")
    return spec.describe_range()


def outcome_of(activity: Activity) -> str:
    return "done" if activity.status == "done" else (activity.error_kind or "error")


def to_bar(activity: Activity, t0: float) -> Bar:
    return Bar(
        activity.worker or UNKNOWN_WORKER,
        activity.started - t0,
        max(activity.ended, activity.started) - t0,
        outcome_of(activity),
        activity.retried,
        activity.tasks,
        activity.path,
        describe_range(activity),
        activity.attempts,
        activity.records_in or 0,
        activity.bytes_read or 0,
        activity.error or "",
    )


def timeline(bars: Sequence[Bar], max_bars: int = MAX_BARS) -> tuple[list[Bar], int]:
    """The bars to draw, and how many tasks went into merged ones. Failures and retried
    attempts are kept; successful bars of a worker are merged, in start order, in runs of
    ``g`` so that at most ``max_bars`` remain (when the failures alone leave room): each
    worker's last run may be short, so the room is shared out less one bar a worker."""
    if len(bars) <= max_bars:
        return sorted(bars, key=lambda b: (worker_order(b.worker), b.start)), 0
    kept = [b for b in bars if b.outcome != "done" or b.retried]
    by_worker: dict[str, list[Bar]] = {}
    for bar in bars:
        if bar.outcome == "done" and not bar.retried:
            by_worker.setdefault(bar.worker, []).append(bar)
    done = len(bars) - len(kept)
    group = math.ceil(done / max(1, max_bars - len(kept) - len(by_worker)))
    merged_tasks = 0
    out = list(kept)
    for worker_bars in by_worker.values():
        worker_bars.sort(key=lambda b: b.start)
        for i in range(0, len(worker_bars), group):
            run = worker_bars[i : i + group]
            if len(run) == 1:
                out.append(run[0])
                continue
            merged_tasks += sum(b.tasks for b in run)
            out.append(_merge(run))
    return sorted(out, key=lambda b: (worker_order(b.worker), b.start)), merged_tasks


def _merge(run: Sequence[Bar]) -> Bar:
    first, last = run[0], run[-1]
    tasks = sum(b.tasks for b in run)
    path = first.path if first.path == last.path else f"{first.path} … {last.path}"
    return Bar(
        first.worker,
        min(b.start for b in run),
        max(b.end for b in run),
        "done",
        False,
        tasks,
        path,
        f"{tasks} tasks (merged)",
        max(b.attempts for b in run),
        sum(b.records for b in run),
        sum(b.nbytes for b in run),
        "",
    )


def throughput(bars: Iterable[Bar], span: float, bins: int = THROUGHPUT_BINS) -> Throughput:
    """Records/s and MB/s (10^6 bytes) over time: each bar's records and bytes spread
    evenly over its span (an instant bar counts in its bin)."""
    span = max(span, 1e-3)
    width = span / bins
    records = [0.0] * bins
    nbytes = [0.0] * bins
    for bar in bars:
        if bar.retried:
            continue
        start, end = max(bar.start, 0.0), min(max(bar.end, bar.start), span)
        first = min(int(start / width), bins - 1)
        last = min(int(end / width), bins - 1)
        length = end - start
        for i in range(first, last + 1):
            if length <= 0:
                share = 1.0
            else:
                lo, hi = max(start, i * width), min(end, (i + 1) * width)
                share = max(hi - lo, 0.0) / length
            records[i] += bar.records * share
            nbytes[i] += bar.nbytes * share
    return Throughput(
        width,
        [i * width for i in range(bins)],
        [r / width for r in records],
        [b / width / 1e6 for b in nbytes],
    )


def histogram(durations: Sequence[float], bins: int = HISTOGRAM_BINS) -> Histogram:
    """Equal-width bins from 0 to the longest duration."""
    top = max(durations, default=0.0) or 1e-3
    width = top / bins
    counts = [0] * bins
    for d in durations:
        counts[min(int(d / width), bins - 1)] += 1
    return Histogram([i * width for i in range(bins + 1)], counts)


def slowest(bars: Iterable[Bar], n: int = SLOWEST_SHOWN) -> list[Bar]:
    return heapq.nlargest(n, bars, key=lambda b: b.duration)


def history_entry(entry: dict[str, Any], status: str) -> HistoryEntry:
    rep = entry["report"] or {}
    finished = entry["finished"]
    duration = rep.get("run", {}).get("duration_s")  # as the summary shows it
    if duration is None and finished is not None:
        duration = finished - entry["started"]
    return HistoryEntry(
        entry["run_id"],
        entry["started"],
        status,
        entry["exit_code"],
        duration,
        rep.get("run", {}).get("records"),
    )


def _read_json(path: Path, default: Any) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return default


def _read_jsonl(path: Path, limit: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    try:
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                if len(rows) >= limit:
                    break
                try:
                    row = json.loads(line)
                except ValueError:
                    continue
                if isinstance(row, dict):
                    rows.append(row)
    except OSError:
        pass
    return rows


class NoRunError(LookupError):
    """The store has no finished run to report."""


def load(out_dir: Path, ledger: Ledger | None = None, *, run_holds_lock: bool = False) -> RunView:
    """The last finished run of the store at ``out_dir`` (``NoRunError`` when none), read
    through ``ledger`` when given (the run's own connection), else a read-only one. The
    run that holds the store's lock says so: no other run can be going on, so the lock's
    holder need not be looked up (reading /proc/locks was a third of the page's cost)."""
    if ledger is None:
        own = Ledger(out_dir, readonly=True)
        try:
            return load(out_dir, own, run_holds_lock=run_holds_lock)
        finally:
            own.close()
    runs = ledger.runs(HISTORY_RUNS)
    holder = None if run_holds_lock else lock_holder(out_dir)
    statuses = [run_status(e, newest=i == 0, holder=holder) for i, e in enumerate(runs)]
    last = next((e for e in runs if e["report"]), None)
    if last is None:
        raise NoRunError(f"{out_dir}: no finished run recorded yet (run the job first)")
    t0 = last["started"]
    all_bars = [to_bar(a, t0) for a in ledger.run_activity(last["run_id"])]
    report = last["report"]
    span = (last["finished"] or t0) - t0
    view = RunView(report, t0)
    if runs[0] is not last:
        view.notes.append(
            f"run #{runs[0]['run_id']} ({statuses[0]}) wrote no report; "
            f"this is the last finished run, #{last['run_id']}"
        )
    view.bars, view.merged = timeline(all_bars)
    view.workers = sorted({bar.worker for bar in all_bars}, key=worker_order)
    finals = [b for b in all_bars if not b.retried]
    if all_bars:
        bins = min(THROUGHPUT_BINS, max(10, len(finals)))
        view.throughput = throughput(finals, span, bins)
        view.histogram = histogram([b.duration for b in all_bars])
        view.slowest = slowest(all_bars)
    elif report["tasks"]["done"] or report["tasks"]["failed"]:
        view.notes.append(
            "this run's ledger rows have no timings (a store from before they were kept): "
            "no timeline"
        )
    view.stats = _read_json(out_dir / merge.STATS_NAME, {})
    view.malformed = _read_jsonl(out_dir / merge.MALFORMED_NAME, limit=MALFORMED_SAMPLE_SIZE)
    view.history = [history_entry(e, s) for e, s in zip(runs, statuses, strict=True)][::-1]
    return view
