"""``pipeline status``: the live view of the run going on, read from another terminal.

While a run holds the lock on the output folder, it publishes its ``Manager``'s address
and key in ``live.json`` (``pipeline.live``); this module connects to that Manager, reads
the view under its ``Lock`` and prints it. Every connection is bounded in time (a Manager
that stopped answering must not hang a monitor). Without a run going on, or when its
Manager cannot be reached (the run just ended), the last run comes from the store.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from multiprocessing.managers import AcquirerProxy, DictProxy, SyncManager, Token
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.errors import ExitCode
from pipeline.live import LiveAddress, read_address
from pipeline.reporting import format_count
from pipeline.store.ledger import LEDGER_NAME, Ledger
from pipeline.store.lock import lock_holder
from pipeline.storeview import iso_time, run_status
from pipeline.units import format_size

if TYPE_CHECKING:
    from pipeline.config import PipelineConfig

log = logging.getLogger("pipeline")

CONNECT_TIMEOUT_S = 2.0  # connecting and reading the view, at most
WATCH_EVERY_S = 1.0
STATS_SHOWN = 6
STAT_WIDTH = 100
CLEAR_SCREEN = "\x1b[H\x1b[J"


def show(cfg: PipelineConfig, *, as_json: bool, watch: bool) -> int:
    """Print the live view of the run going on (or the last run); the exit code."""
    out_dir = cfg.output.dir
    try:
        state = current_state(out_dir)
        if state is None:
            log.error("%s: no output store yet (run the job first)", out_dir)
            return int(ExitCode.USAGE)
        _print(state, as_json, clear=False)
        if not watch:
            return 0
        while state["running"]:
            time.sleep(WATCH_EVERY_S)
            state = current_state(out_dir) or {"running": False, "last_run": None}
            _print(state, as_json, clear=not as_json and sys.stdout.isatty())
        return 0
    except KeyboardInterrupt:
        return int(ExitCode.SIGINT)


def current_state(out_dir: Path) -> dict[str, Any] | None:
    """The run going on (its live view when it publishes one), else the last run; None
    when there is no store at all."""
    holder = lock_holder(out_dir)
    if holder is None:
        if not (out_dir / LEDGER_NAME).exists():
            return None
        return {"running": False, "last_run": last_run(out_dir)}
    address = read_address(out_dir)
    if address is not None and (holder.pid is None or address.pid == holder.pid):
        view = read_view(address, CONNECT_TIMEOUT_S)
        if view is not None:
            return {"running": True, "live": True, **view}
        if lock_holder(out_dir) is None:  # it ended while we were connecting
            return {"running": False, "last_run": last_run(out_dir)}
    return {
        "running": True,
        "live": False,
        "pid": holder.pid,
        "holder": holder.text,
        "last_run": last_run(out_dir, running=True),
    }


def read_view(address: LiveAddress, timeout: float) -> dict[str, Any] | None:
    """The view in the run's Manager dict, read under its Lock; None if it cannot be
    read within ``timeout`` seconds (the Manager is gone or does not answer)."""
    box: list[dict[str, Any]] = []

    def read() -> None:
        manager = SyncManager(address=address.address, authkey=address.authkey)
        manager.connect()
        mapping = _proxy(DictProxy, "dict", address.dict_id, address, manager)
        lock = _proxy(AcquirerProxy, "Lock", address.lock_id, address, manager)
        if not lock.acquire(True, timeout):
            return
        try:
            box.append(mapping.copy())
        finally:
            lock.release()

    def guarded() -> None:
        try:
            read()
        except Exception as exc:  # gone, refused, a key that does not match: no view
            log.debug("cannot read the live view at %s: %s", address.address, exc)

    # A thread, so that a Manager that accepts but never answers cannot hang us.
    thread = threading.Thread(target=guarded, name="status-read", daemon=True)
    thread.start()
    thread.join(timeout)
    return box[0] if box and box[0] else None


def _proxy(kind: type, typeid: str, ident: str, address: LiveAddress, manager: Any) -> Any:
    """A proxy to one of the run's own objects, by id, without reference counting: this
    reader never keeps it alive nor frees it."""
    token = Token(typeid, address.address, ident)
    return kind(token, "pickle", manager=manager, authkey=address.authkey, incref=False)


def last_run(out_dir: Path, *, running: bool = False) -> dict[str, Any] | None:
    """The newest run in the ledger (its report when it has one), or None; ``running``:
    the newest before the run going on (whose row has no report yet)."""
    try:
        ledger = Ledger(out_dir, readonly=True)
        try:
            runs = ledger.runs(limit=2)
        finally:
            ledger.close()
    except Exception as exc:  # a store being created, or damaged: say so, do not fail
        log.debug("cannot read the ledger in %s: %s", out_dir, exc)
        return None
    if running and runs and not runs[0]["report"]:
        runs = runs[1:]
    if not runs:
        return None
    row = runs[0]
    # A row that never got its report and is not the run going on: that run died.
    return row["report"] or {
        "run_id": row["run_id"],
        "status": run_status(row, newest=True, holder=None),
        "started": iso_time(row["started"]),
    }


def _print(state: dict[str, Any], as_json: bool, *, clear: bool) -> None:
    if as_json:
        text = json.dumps(state, ensure_ascii=False)
    else:
        text = "\n".join(state_lines(state, time.time()))
    sys.stdout.write((CLEAR_SCREEN if clear else "") + text + "\n")
    sys.stdout.flush()


def state_lines(state: dict[str, Any], now: float) -> list[str]:
    """The human view of ``current_state``."""
    if state["running"] and state.get("live"):
        return view_lines(state, now)
    if state["running"]:
        return [
            f"a run is going on ({state['holder']}); it publishes no live view "
            "(it runs in-process, or has not started its workers yet)",
            *_last_run_lines(state["last_run"], "last finished run"),
        ]
    return ["no run is going on", *_last_run_lines(state["last_run"], "last run")]


def _last_run_lines(report: dict[str, Any] | None, label: str) -> list[str]:
    if report is None:
        return [f"{label}: none in the store"]
    if "tasks" not in report:  # a run with no report: it never finished
        return [f"{label} #{report['run_id']}: {report['status']}, started {report['started']}"]
    tasks, run = report["tasks"], report["run"]
    return [
        f"{label} #{report['run_id']}: {report['status']} (exit {report['exit_code']}), "
        f"finished {report['finished']} in {run['duration_s']}s; tasks: {tasks['done']} done, "
        f"{tasks['failed']} failed, {tasks['skipped']} skipped, {tasks['pending']} pending; "
        f"{format_count(run['records'])} records"
    ]


def view_lines(view: dict[str, Any], now: float) -> list[str]:
    """A live view (``live.build_view``) for people: a few lines."""
    started = view.get("started")
    since = time.strftime("%H:%M:%S", time.localtime(started)) if started else "?"
    planning = "" if view.get("planning_done", True) else ", planning goes on"
    eta = view.get("eta_s")
    lines = [
        f"running: run #{view.get('run_id')}, pid {view.get('pid')}, since {since} "
        f"({_duration(view.get('elapsed_s', 0))}), executor {view.get('executor', '?')}",
        f"tasks: {view['tasks_done']}/{view.get('tasks_total', '?')} done, "
        f"{view['tasks_failed']} failed{planning}",
        f"read: {format_size(view['bytes_read'])}/{format_size(view.get('bytes_total', 0))}, "
        f"{format_size(view['bytes_per_s'])}/s" + (f", ETA {_duration(eta)}" if eta else ""),
        f"records: {format_count(view['records_in'])} in, {format_count(view['records_out'])}"
        f" out, {format_count(view['malformed'])} malformed, "
        f"{format_count(round(view['records_per_s']))}/s",
    ]
    stats = view.get("stats") or {}
    if stats:
        lines.append("stats so far:")
        for name, value in list(stats.items())[:STATS_SHOWN]:
            text = json.dumps(value, ensure_ascii=False)
            if len(text) > STAT_WIDTH:
                text = text[: STAT_WIDTH - 1] + "…"
            lines.append(f"  {name}: {text}")
        if len(stats) > STATS_SHOWN:
            lines.append(f"  … and {len(stats) - STATS_SHOWN} more")
    workers = view.get("workers") or []
    if workers:
        lines.append("workers:")
    for entry in workers:
        more = f" and {entry['tasks'] - 1} more files" if entry.get("tasks", 1) > 1 else ""
        for_s = f", for {_duration(now - entry['since'])}" if entry.get("since") else ""
        lines.append(f"  {entry['worker']}: {entry['path']} ({entry['range']}){more}{for_s}")
    age = now - view.get("updated", now)
    if age > 5:
        lines.append(f"(the view was last updated {_duration(age)} ago)")
    return lines


def _duration(seconds: float) -> str:
    seconds = max(round(seconds), 0)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
